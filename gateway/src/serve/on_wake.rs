//! A rarely-ready future selected beside a busy one, polled only when it was woken.
//!
//! `select!` polls every branch on every wake-up of the task. A connection task wakes
//! several times per request, and each poll of a shutdown token's future takes that token's
//! lock (and of the idle tick, the timer's state). [`OnWake`] gives the inner future a waker of its own: the inner future is polled
//! on the first poll and after that waker fired, and otherwise costs one atomic swap.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// See the module documentation.
pub(super) struct OnWake<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The task waker last handed to `flag` (compared without taking its lock).
    task: Option<Waker>,
}

struct Flag {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

impl<F: Future> OnWake<F> {
    pub(super) fn new(inner: F) -> Self {
        OnWake {
            inner: Box::pin(inner),
            flag: Arc::new(Flag {
                // Fired: the first poll polls the inner future (and registers its waker).
                fired: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
            task: None,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            *this
                .flag
                .task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(w.clone());
            this.task = Some(w);
        }
        // A plain load first: the common answer (not fired) then needs no atomic write.
        if !this.flag.fired.load(Ordering::Acquire)
            || !this.flag.fired.swap(false, Ordering::AcqRel)
        {
            return Poll::Pending;
        }
        let waker = Waker::from(this.flag.clone());
        let out = this.inner.as_mut().poll(&mut Context::from_waker(&waker));
        if out.is_ready() {
            // A future polled again after finishing (an interval's next tick) must be polled
            // then to arm itself again.
            this.flag.fired.store(true, Ordering::Release);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `open` is set (woken through the waker it was given).
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn inner_is_polled_only_when_it_was_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(Mutex::new(None::<Waker>));
        let mut f = Box::pin(OnWake::new(Gate {
            polls: polls.clone(),
            open: open.clone(),
            waker: slot.clone(),
        }));
        let task_woken = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(task_woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(f.as_mut().poll(&mut cx).is_pending());
        for _ in 0..10 {
            // Wake-ups for other reasons: the inner future is left alone.
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        open.store(true, Ordering::SeqCst);
        let inner_waker = slot.lock().unwrap().take().unwrap();
        inner_waker.wake();
        assert_eq!(task_woken.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(f.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_inside_ticks_again_and_again() {
        let period = std::time::Duration::from_secs(1);
        let start = tokio::time::Instant::now();
        let mut interval = tokio::time::interval_at(start + period, period);
        let mut f = Box::pin(OnWake::new(std::future::poll_fn(move |cx| {
            interval.poll_tick(cx)
        })));
        for n in 1..=3u32 {
            let at = tokio::time::timeout(period * 10, &mut f)
                .await
                .unwrap_or_else(|_| panic!("tick {n} never came"));
            assert_eq!(at, start + period * n, "tick {n}");
        }
    }

    #[tokio::test]
    async fn a_cancelled_token_ends_it() {
        let token = tokio_util::sync::CancellationToken::new();
        let child = token.child_token();
        let f = OnWake::new(child.cancelled());
        let t = token.clone();
        tokio::spawn(async move { t.cancel() });
        tokio::time::timeout(std::time::Duration::from_secs(5), f)
            .await
            .expect("the cancellation reaches the wrapped future");
    }
}
