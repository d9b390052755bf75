//! The response body type: a streamed upstream body, a small page, or a stream Gatehouse
//! writes itself (the reviewer console's live view and exports, fed through a bounded
//! channel), carrying the connection's in-flight guard so idle tracking sees a response
//! until it is fully sent, and, for an allowed request, its [`Done`]: the bytes sent are
//! counted, and when the body ends or is dropped (the client went away) its answer (status,
//! bytes, duration) goes to the connection, which writes the answers of its requests as
//! `requests_completed` records. The request's other facts are in its `access_allowed`
//! record, written before it went upstream: nothing is written twice.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use gatehouse_core::audit::Answer;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use tokio::sync::mpsc;

use crate::conn::{ConnShared, InFlight};
use crate::request_id::RequestId;

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
        done: Option<Done>,
    }
}

/// The answer of an allowed request, handed to its connection (`requests_completed`) when
/// dropped.
pub struct Done {
    conn: Arc<ConnShared>,
    session: String,
    request_id: RequestId,
    status: u16,
    start: Instant,
    bytes: u64,
}

impl Done {
    /// The answer (`status`) to request `request_id` of web session `session` (its id's
    /// hash), which began at `start`.
    pub fn new(
        conn: &Arc<ConnShared>,
        session: String,
        request_id: RequestId,
        status: u16,
        start: Instant,
    ) -> Done {
        Done {
            conn: conn.clone(),
            session,
            request_id,
            status,
            start,
            bytes: 0,
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        // One clock read for the duration and the connection's batching.
        let now = Instant::now();
        let took = now.saturating_duration_since(self.start);
        self.conn.answered(
            std::mem::take(&mut self.session),
            Answer {
                request_id: self.request_id.text(),
                status: self.status,
                bytes: self.bytes,
                duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            },
            now,
        );
    }
}

impl ResBody {
    pub fn page(bytes: impl Into<Bytes>) -> Self {
        ResBody {
            inner: Either::Right(Either::Left(Full::new(bytes.into()))),
            guard: None,
            done: None,
        }
    }

    pub fn streamed(body: Incoming) -> Self {
        ResBody {
            inner: Either::Left(body),
            guard: None,
            done: None,
        }
    }

    /// A body of the chunks sent on `rx`, ended when every sender is dropped.
    pub fn channel(rx: mpsc::Receiver<Bytes>) -> Self {
        ResBody {
            inner: Either::Right(Either::Right(Channel { rx })),
            guard: None,
            done: None,
        }
    }

    pub fn with_guard(mut self, guard: InFlight) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Records the request's completion when this body ends (see [`Done`]).
    pub fn with_done(mut self, done: Done) -> Self {
        self.done = Some(done);
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
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(done), Some(data)) = (this.done.as_mut(), frame.data_ref()) {
                    done.bytes = done.bytes.saturating_add(data.len() as u64);
                }
            }
            Poll::Ready(None) => {
                // Fully sent: recorded, and the connection may count as idle from now on.
                this.done.take();
                this.guard.take();
            }
            _ => {}
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
