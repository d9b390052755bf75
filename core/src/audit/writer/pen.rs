//! The two roles of a caller of [`AuditLog::record`](super::AuditLog::record) on a shard: the
//! writer holding the pen, and a caller waiting for its record to be written by it.

use tokio::sync::oneshot;

use super::{CONFIRM_TIMEOUT, Inner, LOCK_RETRY, Shard, Turn};
use crate::error::AuditError;

/// What one attempt to write a queue came to.
pub(super) enum Attempt {
    /// Written (or refused); the writer's own outcome, when its record was in the batch.
    Wrote(Option<Result<u64, AuditError>>),
    /// The log's lock is held by another thread's writer: try again shortly.
    Contended,
    /// Another process holds the directory lock: try again after [`LOCK_RETRY`].
    DirBusy,
}

/// The pen of one queue. Cancellation-safe: a writer dropped while it holds the pen (its
/// request went away during the group-commit yield or a retry) writes the queue on drop,
/// so the pen is never lost and nobody waits forever.
pub(super) struct Pen<'a> {
    inner: &'a Inner,
    shard: &'a Shard,
    held: bool,
}

impl<'a> Pen<'a> {
    /// The pen of `shard`'s queue, just taken.
    pub(super) fn new(inner: &'a Inner, shard: &'a Shard) -> Self {
        Pen {
            inner,
            shard,
            held: true,
        }
    }

    /// Writes the queue (with the record `own` in it) and returns `own`'s sequence number;
    /// hands the pen on when more records queued meanwhile. Refuses the queue when it cannot
    /// write within [`CONFIRM_TIMEOUT`].
    pub(super) async fn write(mut self, own: u64) -> Result<u64, AuditError> {
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        let mut mine = None;
        loop {
            match self.inner.try_write(self.shard, own) {
                Ok(Attempt::Wrote(r)) => {
                    if let Some(r) = r {
                        mine = Some(r);
                    }
                    if self.inner.pass_pen(self.shard) {
                        self.held = false;
                        return mine.unwrap_or(Err(AuditError::Closed));
                    }
                    // More records queued and nobody to hand them to: write them too.
                }
                Ok(wait @ (Attempt::Contended | Attempt::DirBusy)) => {
                    if tokio::time::Instant::now() >= deadline {
                        self.held = false;
                        self.inner.refuse_queue(self.shard, &AuditError::Busy);
                        return mine.unwrap_or(Err(AuditError::Busy));
                    }
                    if matches!(wait, Attempt::Contended) {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(LOCK_RETRY).await;
                    }
                }
                Err(e) => {
                    // Nothing of the queue was written: refuse it (this caller's record
                    // too, unless an earlier round already wrote it).
                    self.held = false;
                    self.inner.refuse_queue(self.shard, &e);
                    return mine.unwrap_or(Err(e));
                }
            }
        }
    }
}

impl Drop for Pen<'_> {
    fn drop(&mut self) {
        if self.held {
            self.inner.write_now(self.shard);
        }
    }
}

/// A caller waiting for its record. Cancellation-safe: if the caller goes away (its request
/// was dropped) after the pen was handed to it, the guard writes the queue on drop, so the
/// pen is never lost and nobody else waits forever.
pub(super) struct Waiting<'a> {
    rx: Option<oneshot::Receiver<Turn>>,
    inner: &'a Inner,
    shard: &'a Shard,
}

impl<'a> Waiting<'a> {
    pub(super) fn new(rx: oneshot::Receiver<Turn>, inner: &'a Inner, shard: &'a Shard) -> Self {
        Waiting {
            rx: Some(rx),
            inner,
            shard,
        }
    }

    pub(super) async fn turn(&mut self) -> Result<Turn, AuditError> {
        let Some(rx) = self.rx.as_mut() else {
            return Err(AuditError::Closed);
        };
        // No timer of its own (one per waiting request was a visible cost): the pen's holder
        // answers every record queued behind it by its deadline. It writes them, refuses
        // them when it cannot write by then, or writes them when it is dropped; and a
        // holder blocked outside those would block this worker thread too.
        let turn = match rx.await {
            Ok(turn) => turn,
            Err(_) => return Err(AuditError::Closed),
        };
        self.rx = None;
        Ok(turn)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // After close() no turn can be sent; one sent before is still received here.
            rx.close();
            if let Ok(Turn::Write) = rx.try_recv() {
                self.inner.write_now(self.shard);
            }
        }
    }
}
