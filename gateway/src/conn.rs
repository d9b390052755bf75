//! Per-connection state shared by the IO wrapper, the request handler and the connection task:
//! activity and in-flight tracking for the idle timeout, and the HTTP/1 framing verdicts.
//!
//! Threat: idle keep-alive connections holding slots forever (hyper has no idle timeout), and
//! framing ambiguities hyper hides from the handler. Mitigation: [`TrackedIo`] marks every
//! read/write as activity and feeds read bytes to the [`Scanner`]; the connection task closes a
//! connection with no request in flight and no bytes moving for `gateway.idle_timeout`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::guard::Verdicts;
use crate::guard::scan::Scanner;

#[derive(Debug)]
pub struct ConnShared {
    pub peer: SocketAddr,
    activity: AtomicBool,
    in_flight: AtomicUsize,
    served: AtomicUsize,
    upgraded: AtomicBool,
    tunnel: Mutex<Option<Tunnel>>,
    pub verdicts: Verdicts,
}

/// A WebSocket upgrade agreed by both sides, run by the connection task once hyper hands the
/// connection over (so the tunnel keeps its connection slot and is cut on shutdown).
#[derive(Debug)]
pub struct Tunnel {
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
    pub app: Arc<str>,
    /// Closes the tunnel when its session is revoked (logout, `session revoke`).
    pub registration: crate::revoke::Registration,
}

impl ConnShared {
    pub fn new(peer: SocketAddr) -> Self {
        ConnShared {
            peer,
            activity: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            upgraded: AtomicBool::new(false),
            tunnel: Mutex::new(None),
            verdicts: Verdicts::default(),
        }
    }

    /// Marks a request in flight until the guard (moved into the response body) drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// True (and reset) when bytes moved since the last call.
    pub fn take_activity(&self) -> bool {
        self.activity.swap(false, Ordering::AcqRel)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// The connection switches protocols (WebSocket): stop HTTP/1 scanning and hand the
    /// tunnel to the connection task.
    pub fn upgrade(&self, tunnel: Tunnel) {
        self.upgraded.store(true, Ordering::Release);
        match self.tunnel.lock() {
            Ok(mut g) => *g = Some(tunnel),
            Err(p) => *p.into_inner() = Some(tunnel),
        }
    }

    pub fn take_tunnel(&self) -> Option<Tunnel> {
        match self.tunnel.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<ConnShared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity.store(true, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// The client stream as hyper sees it.
    pub struct TrackedIo<T> {
        #[pin]
        inner: T,
        shared: Arc<ConnShared>,
        scanner: Option<Scanner>,
    }
}

impl<T> TrackedIo<T> {
    /// `scan_http1` is false when ALPN chose HTTP/2.
    pub fn new(inner: T, shared: Arc<ConnShared>, scan_http1: bool) -> Self {
        TrackedIo {
            inner,
            shared,
            scanner: scan_http1.then(Scanner::default),
        }
    }
}

impl<T: AsyncRead> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let new = buf.filled().get(before..).unwrap_or_default();
            if !new.is_empty() {
                this.shared.activity.store(true, Ordering::Release);
                if let Some(scanner) = this.scanner {
                    if this.shared.upgraded.load(Ordering::Acquire) || scanner.is_off() {
                        *this.scanner = None;
                    } else {
                        scanner.feed(new, &this.shared.verdicts);
                    }
                }
            }
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            this.shared.activity.store(true, Ordering::Release);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            this.shared.activity.store(true, Ordering::Release);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
