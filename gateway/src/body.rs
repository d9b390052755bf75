//! The response body type: a streamed upstream body, a small page, or a stream Gatehouse
//! writes itself (the reviewer console's live view and exports, fed through a bounded
//! channel), carrying the connection's in-flight guard so idle tracking sees a response
//! until it is fully sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use tokio::sync::mpsc;

use crate::conn::InFlight;

/// A body fed by a bounded channel: a slow client slows the producer, memory stays bounded.
pub struct Channel {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for Channel {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    pub struct ResBody {
        #[pin]
        inner: Either<Incoming, Either<Full<Bytes>, Channel>>,
        guard: Option<InFlight>,
    }
}

impl ResBody {
    pub fn page(bytes: impl Into<Bytes>) -> Self {
        ResBody {
            inner: Either::Right(Either::Left(Full::new(bytes.into()))),
            guard: None,
        }
    }

    pub fn streamed(body: Incoming) -> Self {
        ResBody {
            inner: Either::Left(body),
            guard: None,
        }
    }

    /// A body of the chunks sent on `rx`, ended when every sender is dropped.
    pub fn channel(rx: mpsc::Receiver<Bytes>) -> Self {
        ResBody {
            inner: Either::Right(Either::Right(Channel { rx })),
            guard: None,
        }
    }

    pub fn with_guard(mut self, guard: InFlight) -> Self {
        self.guard = Some(guard);
        self
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = &polled {
            // Fully sent: the connection may count as idle from now on.
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
