//! Graceful close: the client reads the answer before the connection goes.
//!
//! Threat: a connection closed while the client's bytes are still unread (the rest of an
//! oversized head after its 431, a body the answer did not need) makes the kernel send a TCP
//! reset, and many client stacks (Windows, the BSDs) throw away an answer they had received
//! but not yet read: the client sees "connection reset" instead of its 431. Mitigation (as
//! Apache's lingering close): once hyper is done with a connection, it is shut down (TLS
//! close_notify, TCP FIN) and what the client still sends is read and discarded, for at most
//! [`LINGER_TIME`] and [`LINGER_BYTES`], before the socket is closed.
//!
//! hyper owns the stream while it serves and drops it when done; [`Returning`] hands it back
//! to the connection task at that drop instead of closing it. When the task only wants the
//! stream back to park an idle connection (see `connection`), [`Slot::park`] makes hyper's
//! closing shutdown a no-op.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How long a closing connection is read and discarded at most.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(1);
/// How many bytes a closing connection may still send before it is closed anyway (more than
/// the largest refused head; a large body is not waited for).
pub(crate) const LINGER_BYTES: usize = 512 * 1024;
/// The discard buffer, in the (boxed, short-lived) linger future: most closing clients send
/// nothing more, and ten thousand closing at once should not cost 8 KiB each.
const LINGER_BUF: usize = 2 * 1024;

/// Where [`Returning`] puts the stream back.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    stream: Mutex<Option<Box<T>>>,
    /// Shutting the stream down does nothing: it is being parked, not closed.
    parking: AtomicBool,
}

impl<T> Slot<T> {
    /// From now on, hyper's shutdown of the stream leaves it open (and hyper ends).
    pub(crate) fn park(&self) {
        self.parking.store(true, Ordering::Release);
    }

    /// Takes the stream back once its user dropped it.
    pub(crate) fn take(&self) -> Option<Box<T>> {
        self.stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A stream that, when dropped, puts itself in its slot instead of closing.
#[derive(Debug)]
pub(crate) struct Returning<T> {
    inner: Option<T>,
    slot: Arc<Slot<T>>,
}

impl<T> Returning<T> {
    pub(crate) fn new(inner: T) -> (Returning<T>, Arc<Slot<T>>) {
        let slot = Arc::new(Slot {
            stream: Mutex::new(None),
            parking: AtomicBool::new(false),
        });
        (
            Returning {
                inner: Some(inner),
                slot: slot.clone(),
            },
            slot,
        )
    }

    fn inner(&mut self) -> io::Result<&mut T> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl<T> Drop for Returning<T> {
    fn drop(&mut self) {
        if let Some(t) = self.inner.take() {
            *self
                .slot
                .stream
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(t));
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Returning<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().inner() {
            Ok(t) => Pin::new(t).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Returning<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().inner() {
            Ok(t) => Pin::new(t).poll_write(cx, data),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().inner() {
            Ok(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner() {
            Ok(t) => Pin::new(t).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.slot.parking.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        match self.get_mut().inner() {
            Ok(t) => Pin::new(t).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Shuts the connection down and discards what the client still sends (bounded, see the
/// module documentation); `hard` (the end of the shutdown grace) cuts it short.
pub(crate) async fn linger(tls: TlsStream<TcpStream>, hard: &CancellationToken) {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let discard = async move {
        let mut tls = tls;
        // close_notify, then FIN: the client learns the answer is complete.
        if tls.shutdown().await.is_err() {
            return;
        }
        let (mut tcp, _) = tls.into_inner();
        let mut buf = [0u8; LINGER_BUF];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    tokio::select! {
        () = hard.cancelled() => {}
        _ = tokio::time::timeout_at(deadline, discard) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_stream_comes_back_through_its_slot() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut r, slot) = Returning::new(a);
        r.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        assert!(slot.take().is_none(), "still in use");
        drop(r);
        let mut back = slot.take().expect("handed back");
        back.write_all(b"ok").await.unwrap();
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok", "the same stream, still open");
    }

    #[tokio::test]
    async fn a_parking_stream_is_not_shut_down() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut r, slot) = Returning::new(a);
        slot.park();
        r.shutdown().await.unwrap();
        drop(r);
        let mut back = slot.take().expect("handed back");
        back.write_all(b"on").await.unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"on", "still open after hyper's shutdown");
    }
}
