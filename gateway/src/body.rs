//! The response body type: a streamed upstream body or a small page, carrying the
//! connection's in-flight guard so idle tracking sees a response until it is fully sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::conn::InFlight;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    pub struct ResBody {
        #[pin]
        inner: Either<Incoming, Full<Bytes>>,
        guard: Option<InFlight>,
    }
}

impl ResBody {
    pub fn page(bytes: impl Into<Bytes>) -> Self {
        ResBody {
            inner: Either::Right(Full::new(bytes.into())),
            guard: None,
        }
    }

    pub fn streamed(body: Incoming) -> Self {
        ResBody {
            inner: Either::Left(body),
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
