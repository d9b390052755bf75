//! Connection workers: one single-threaded runtime per core, connections dealt round-robin.
//!
//! Why: a connection's request path (client TLS, handler, upstream connection, audit) all
//! runs in one task. On a work-stealing runtime that task still pays for cross-thread
//! wake-ups, a shared I/O driver and parked workers being woken to look for work on every
//! readiness event. Here each worker owns its epoll, its timers and its run queue; a
//! connection, and everything it opens, stays on the worker it was dealt to.
//!
//! Shutdown: the workers outlive the drain (the gateway's `TaskTracker` counts their
//! connection tasks like any other); dropping [`Workers`] stops them, and a runtime that stops
//! drops whatever it still holds.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads.
    pub(crate) fn start(n: usize) -> io::Result<Workers> {
        let stop = CancellationToken::new();
        // Threads already started stop again if a later one cannot be.
        let started = stop.clone().drop_guard();
        let mut handles = Vec::with_capacity(n.max(1));
        let mut threads = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let rt = Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gatehouse-conn-{i}"))
                    .spawn(move || rt.block_on(stop.cancelled()))?,
            );
        }
        drop(started.disarm());
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// One worker per available core.
    pub(crate) fn per_core() -> io::Result<Workers> {
        Workers::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Runs `task` on the next worker.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        if let Some(h) = self.handles.get(i) {
            drop(h.spawn(task));
        }
    }
}

impl Workers {
    /// Stops every worker: tasks still on them are dropped.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits for the stopped workers' threads to end (blocking: not on a runtime thread).
    pub(crate) fn join(&self) {
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("workers", &self.handles.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The thread each of `n` spawned tasks ran on.
    fn threads_of(w: &Workers, n: usize) -> Vec<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..n {
            let tx = tx.clone();
            w.spawn(async move {
                let name = std::thread::current().name().map(str::to_string);
                let _ = tx.send(name.unwrap_or_default());
            });
        }
        (0..n)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default())
            .collect()
    }

    #[test]
    fn connections_are_dealt_round_robin() {
        let w = Workers::start(2).unwrap_or_else(|e| panic!("start: {e}"));
        let seen = threads_of(&w, 4);
        let count = |name: &str| seen.iter().filter(|s| *s == name).count();
        assert_eq!(count("gatehouse-conn-0"), 2, "{seen:?}");
        assert_eq!(count("gatehouse-conn-1"), 2, "{seen:?}");
    }

    #[test]
    fn a_stopped_worker_runs_nothing() {
        let w = Workers::start(1).unwrap_or_else(|e| panic!("start: {e}"));
        assert_eq!(threads_of(&w, 1), ["gatehouse-conn-0"]);
        w.stop();
        w.join();
        // The runtime is gone: a task spawned now is dropped unrun (its sender with it).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        w.spawn(async move {
            let _ = tx.send(());
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
