//! Getting records onto the disk and signing what is there: the syncer thread, the durable
//! wait of session-level records, checkpoints and the head file.
//!
//! Order matters: a checkpoint or head is signed only for records already fdatasync'd, so a
//! power loss never leaves a signed head beyond the log on disk (which would later read as
//! a cut tail).

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Inner, SYNC_INTERVAL, SYNCER_IDLE, lock_any, release_lock};
use crate::alert::Alert;
use crate::audit::checkpoint::{self, ChainHead, Checkpoint, CheckpointKind};
use crate::audit::head;
use crate::error::AuditError;

/// What is known to be on disk.
pub(super) struct SyncState {
    /// The newest record known durable.
    head: Option<ChainHead>,
}

impl SyncState {
    pub(super) fn new(head: Option<ChainHead>) -> SyncState {
        SyncState { head }
    }
}

/// Checkpoints and head file written so far.
pub(super) struct CkptState {
    last_at: Instant,
    last_seq: Option<u64>,
    head_seq: Option<u64>,
    /// A failure was already alerted (one alert per outage, not per attempt).
    failing: bool,
}

impl CkptState {
    pub(super) fn new() -> CkptState {
        CkptState {
            last_at: Instant::now(),
            last_seq: None,
            head_seq: None,
            failing: false,
        }
    }
}

impl Inner {
    /// Syncs what was written since the last sync (if anything); true when it synced. A
    /// failed sync drops the chain head (re-read before the next record).
    fn sync_pending(&self) -> Result<bool, AuditError> {
        let mut st = lock_any(&self.sync);
        let pending = {
            let mut h = self.head();
            h.unsynced.take().map(|f| (f, h.unsynced_head.clone()))
        };
        let Some((file, head)) = pending else {
            return Ok(false);
        };
        if let Err(source) = file.sync_data() {
            tracing::error!(error = %source, "audit log sync failed; re-reading the log");
            let mut h = self.head();
            h.chain = None;
            h.segment = None;
            return Err(AuditError::Io {
                path: self.dir.clone(),
                source,
            });
        }
        self.synced_next.fetch_max(head.seq + 1, Ordering::AcqRel);
        if st.head.as_ref().is_none_or(|h| h.seq <= head.seq) {
            st.head = Some(head);
        }
        Ok(true)
    }

    /// Blocks until every record before `next` is on disk.
    pub(super) fn sync_through(&self, next: u64) -> Result<(), AuditError> {
        if self.synced_next.load(Ordering::Acquire) >= next {
            return Ok(());
        }
        self.sync_pending()?;
        if self.synced_next.load(Ordering::Acquire) >= next {
            // The syncer writes the head file soon; wake it rather than wait for its tick.
            self.syncer.unpark();
            Ok(())
        } else {
            // Another sync took the pending file and failed.
            Err(AuditError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("the audit log could not be synced"),
            })
        }
    }

    /// One round of the syncer: sync, hand the cross-process lock back when nobody writes,
    /// then checkpoints and the head file. Whether anything was synced.
    fn sync_once(&self) -> bool {
        let synced = self.sync_pending().unwrap_or(true);
        // Writes happen under the log's lock: holding it, nobody is writing.
        release_lock(&mut self.head());
        self.checkpoint_work(false);
        synced
    }

    /// Signs and writes what is due: `close` checkpoints of closed segments, a periodic (or,
    /// when `last`, a final) checkpoint of the synced head, and the head file.
    pub(super) fn checkpoint_work(&self, last: bool) {
        let Some(signer) = self.opts.signer.as_deref() else {
            return;
        };
        let closes = std::mem::take(&mut self.head().closes);
        let synced = lock_any(&self.sync).head.clone();
        let mut ck = lock_any(&self.ckpt);
        let mut failure = None;
        for (h, next) in &closes {
            let cp = Checkpoint::sign(signer, CheckpointKind::Close, h, Some(next));
            if let Err(e) = checkpoint::append(&self.dir, &cp) {
                failure = Some(format!("writing a checkpoint: {e}"));
            }
        }
        if let Some(h) = &synced {
            let due = last || ck.last_at.elapsed() >= self.opts.checkpoint_interval;
            if due && ck.last_seq.is_none_or(|s| s < h.seq) {
                let kind = if last {
                    CheckpointKind::Stop
                } else {
                    CheckpointKind::Minute
                };
                match checkpoint::append(&self.dir, &Checkpoint::sign(signer, kind, h, None)) {
                    Ok(()) => {
                        ck.last_seq = Some(h.seq);
                        ck.last_at = Instant::now();
                    }
                    Err(e) => failure = Some(format!("writing a checkpoint: {e}")),
                }
            }
            if let Some(path) = &self.opts.head_file
                && ck.head_seq != Some(h.seq)
            {
                match head::store(path, signer, h) {
                    Ok(()) => ck.head_seq = Some(h.seq),
                    Err(e) => {
                        failure = Some(format!("writing the head file {}: {e}", path.display()))
                    }
                }
            }
        }
        match failure {
            Some(why) if !ck.failing => {
                ck.failing = true;
                drop(ck);
                self.opts.alerter.raise(Alert::system(
                    "audit_checkpoint_failed",
                    crate::audit::new_incident_id(),
                    &why,
                ));
            }
            Some(_) => {}
            None => ck.failing = false,
        }
    }

    /// Syncs, signs a final checkpoint and the head file, and releases the directory lock.
    pub(super) fn close_now(&self) {
        if let Err(e) = self.sync_pending() {
            tracing::error!(error = %e, "audit log: final sync failed");
        }
        self.checkpoint_work(true);
        release_lock(&mut self.head());
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close_now();
        self.syncer.unpark();
    }
}

/// The syncer: fdatasync soon after the first write following a sync, then at most every
/// [`SYNC_INTERVAL`]; hands the cross-process lock back between syncs; checkpoints.
pub(super) fn syncer(inner: Weak<Inner>) {
    loop {
        std::thread::park_timeout(SYNCER_IDLE);
        let Some(log) = inner.upgrade() else { return };
        log.write_deferred();
        let synced = log.sync_once();
        drop(log);
        if synced {
            std::thread::sleep(SYNC_INTERVAL);
        }
    }
}
