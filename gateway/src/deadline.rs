//! A connection's response deadline, one timer reused by its requests.
//!
//! `tokio::time::timeout` registers a timer in the runtime's wheel on each request and
//! removes it when the request ends: two passes through the timer driver's lock per proxied
//! request. An HTTP/1 connection has one request at a time, so it keeps one timer and moves
//! its deadline forward per request (tokio does that without the lock: the wheel finds the
//! later deadline when the earlier one comes round). A request that finds the timer in use
//! (HTTP/2 requests side by side) takes a timer of its own, so every request always has its
//! own full deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Deadlines {
    spare: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl Deadlines {
    /// Drops the spare timer (an idle connection holds none).
    pub fn clear(&self) {
        drop(
            self.spare
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    /// `fut`'s output, or `None` when `limit` passed first.
    pub fn within<F: Future>(&self, limit: Duration, fut: F) -> Within<'_, F> {
        let until = Instant::now() + limit;
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let timer = match spare {
            Some(mut t) => {
                t.as_mut().reset(until);
                t
            }
            None => Box::pin(tokio::time::sleep_until(until)),
        };
        Within {
            deadlines: self,
            timer: Some(timer),
            fut,
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`Deadlines::within`]. A plain future, not an `async fn`: that would keep `fut`
    /// twice (argument and pinned local) and move it between them, and this wraps the
    /// largest part of every proxied request.
    pub struct Within<'a, F> {
        deadlines: &'a Deadlines,
        timer: Option<Pin<Box<Sleep>>>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match this.fut.poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => match this.timer.as_mut() {
                Some(t) => match t.as_mut().poll(cx) {
                    Poll::Ready(()) => None,
                    Poll::Pending => return Poll::Pending,
                },
                // Only after completion; a finished future is not polled again.
                None => return Poll::Pending,
            },
        };
        if let Some(t) = this.timer.take() {
            let mut slot = this
                .deadlines
                .spare
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(t);
            }
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_quick_future_beats_the_deadline() {
        let d = Deadlines::default();
        let out = d
            .within(LIMIT, async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                7
            })
            .await;
        assert_eq!(out, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_future_is_cut_at_the_limit() {
        let d = Deadlines::default();
        let start = Instant::now();
        let out = d.within(LIMIT, std::future::pending::<()>()).await;
        assert_eq!(out, None);
        assert_eq!(start.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_timer_counts_from_each_request_not_the_first() {
        let d = Deadlines::default();
        // Several quick requests, 4 s apart: past the first request's deadline.
        for _ in 0..5 {
            let quick = d.within(LIMIT, tokio::time::sleep(Duration::from_secs(4)));
            assert_eq!(quick.await, Some(()));
        }
        assert!(
            d.spare.lock().unwrap().is_some(),
            "the timer is kept for reuse"
        );
        // A hung request now still gets its whole limit, measured from its own start.
        let start = Instant::now();
        assert_eq!(d.within(LIMIT, std::future::pending::<()>()).await, None);
        assert_eq!(start.elapsed(), LIMIT);
        // And after a timeout, the (fired) timer is reset for the next one.
        let start = Instant::now();
        assert_eq!(
            d.within(LIMIT / 2, std::future::pending::<()>()).await,
            None
        );
        assert_eq!(start.elapsed(), LIMIT / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_side_by_side_each_have_their_own_deadline() {
        let d = Deadlines::default();
        let start = Instant::now();
        let long = async {
            let out = d.within(LIMIT, std::future::pending::<()>()).await;
            (out, start.elapsed())
        };
        let short = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let out = d.within(LIMIT, std::future::pending::<()>()).await;
            (out, start.elapsed())
        };
        let (a, b) = tokio::join!(long, short);
        assert_eq!(a, (None, LIMIT));
        assert_eq!(b, (None, LIMIT + Duration::from_secs(1)));
    }
}
