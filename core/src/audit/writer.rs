//! The writer: group commit without a writer thread.
//!
//! A caller chains its record under a short lock (sequence, timestamp, `prev`, MAC) and
//! appends it to the pending batch. If nobody is writing, the caller becomes the writer: it
//! yields once, so requests already runnable on its worker join the batch, then takes the
//! batch and appends it with one write(2), outside the lock (under load, one write confirms
//! a dozen records or more). Callers that arrive
//! meanwhile wait; when the write returns, the writer confirms its batch and hands the next
//! one to the first waiter, which writes it in turn. A record is confirmed once the kernel
//! holds it (a crash of the process loses nothing confirmed); a small syncer thread forces it
//! to disk (fdatasync) at once when the log was idle and at most [`SYNC_INTERVAL`] later under
//! load. Per-request fsyncs would put a disk flush on every proxied request's critical path;
//! a writer thread would put two cross-thread wake-ups on it.
//!
//! Fail closed: a failed write refuses its batch and every record chained on it, and the
//! chain head is re-read from disk before the next record. Every write first checks that the
//! segment path still names the open file (a moved, deleted or replaced directory is an
//! error, not records written into the void). After a failed sync the head is re-read too.
//! A re-read head behind what this log already wrote (the directory was moved, truncated or
//! replaced) is refused, not continued as a new chain over the missing records.
//!
//! Several processes (the server and a CLI recording an admin action) share a directory
//! through a lock file: the writer holds it while it appends and the syncer releases it after
//! each sync when nobody is writing, so another process waits at most about one sync
//! interval. A caller that finds the lock taken retries without blocking its thread. Whoever takes the lock back checks the newest segment and re-reads the chain
//! head when someone else appended.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use super::AuditEvent;
use super::chain::{self, AuditKey};
use super::segment::{
    ChainState, Segment, Tail, io_err, newest_tail, recover, seg_len, write_batch,
};
use crate::error::AuditError;

/// Longest time a confirmed record may stay in the page cache before fdatasync.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);
/// How long `record` waits for its record to be written before failing (closed).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a caller retries the directory lock while another process holds it.
const LOCK_RETRY: Duration = Duration::from_millis(2);
/// How long the idle syncer sleeps between checks for a lock to release.
const SYNCER_IDLE: Duration = Duration::from_secs(1);

/// What a caller gets once its record is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    /// Set for alerting events (denies, lockouts).
    pub incident_id: Option<String>,
}

/// Handle to the audit log; cheap to clone. The last handle dropped syncs the log.
#[derive(Clone, Debug)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    key: AuditKey,
    head: Mutex<Head>,
    syncer: std::thread::Thread,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A waiting caller's turn: its batch's outcome, or the pen (write the next batch).
enum Turn {
    Done(Result<(), AuditError>),
    Write,
}

/// Records chained but not yet written, by segment date (a batch crosses midnight at most).
#[derive(Default)]
struct Batch {
    chunks: Vec<(String, String)>,
    waiters: VecDeque<oneshot::Sender<Turn>>,
    /// The sequence number after the batch's last record.
    end_seq: u64,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

struct Head {
    /// `None`: re-read from disk before the next record (start, failure, foreign append).
    chain: Option<ChainState>,
    /// The cross-process lock file, and whether we hold its lock.
    lock_file: File,
    locked: bool,
    pending: Batch,
    /// Someone holds the pen: appenders wait instead of writing.
    writing: bool,
    /// The newest open segment (taken out while a writer writes).
    segment: Option<Segment>,
    /// What the syncer must fdatasync next (written since its last sync).
    unsynced: Option<Arc<File>>,
    /// Records this log has written so far (the next sequence number it confirmed): a
    /// re-read head behind it means the directory was moved, truncated or replaced.
    written: u64,
}

/// Lock file serialising writers of one log directory across processes.
const LOCK_FILE: &str = ".audit.lock";

/// A copy of an error for every record of a failed batch (io errors do not clone).
fn copy_err(e: &AuditError) -> AuditError {
    match e {
        AuditError::Io { path, source } => AuditError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), "audit write failed"),
        },
        _ => AuditError::Closed,
    }
}

impl AuditLog {
    /// Opens (creating) the log directory, continues the chain from its last record, and
    /// starts the syncer thread. A last record whose MAC does not verify is refused.
    pub fn open(dir: &Path, key: AuditKey) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock_file.lock().map_err(io_err(&lock_path))?;
        let state = recover(dir, &key);
        let _ = lock_file.unlock();
        let state = state?;
        let written = state.next_seq;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Weak<Inner>>();
        let thread = std::thread::Builder::new()
            .name("gatehouse-audit".into())
            .spawn(move || {
                if let Ok(inner) = ready_rx.recv() {
                    syncer(inner);
                }
            })
            .map_err(|source| AuditError::Io {
                path: PathBuf::from("<audit syncer thread>"),
                source,
            })?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            key,
            head: Mutex::new(Head {
                chain: Some(state),
                lock_file,
                locked: false,
                pending: Batch::default(),
                writing: false,
                segment: None,
                unsynced: None,
                written,
            }),
            syncer: thread.thread().clone(),
        });
        let _ = ready_tx.send(Arc::downgrade(&inner));
        Ok(AuditLog { inner })
    }

    /// Appends `event` and returns once it is written (see the module doc for when it is
    /// synced). An error means the record is not written: the caller must refuse the action
    /// it records.
    pub async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        self.record_ref(&event).await
    }

    /// [`record`](AuditLog::record) for a caller that keeps the event's fields afterwards.
    pub async fn record_ref(&self, event: &AuditEvent) -> Result<Receipt, AuditError> {
        let incident_id = event.incident_id().map(str::to_string);
        let kind = event.kind();
        // One allocation sized for a typical record (to_string starts small and regrows).
        let mut buf = Vec::with_capacity(512);
        serde_json::to_writer(&mut buf, event).map_err(AuditError::Encode)?;
        let json =
            String::from_utf8(buf).map_err(|e| AuditError::Encode(serde::ser::Error::custom(e)))?;
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        let (seq, wait) = loop {
            {
                let mut h = self.inner.head();
                if self.inner.take_lock(&mut h)? {
                    let seq = self.inner.append(&mut h, &json)?;
                    if h.writing {
                        let (tx, rx) = oneshot::channel();
                        h.pending.waiters.push_back(tx);
                        break (seq, Some(rx));
                    }
                    h.writing = true;
                    break (seq, None);
                }
            }
            // Another process (a CLI command) holds the directory lock for a moment: wait
            // without blocking this thread.
            if tokio::time::Instant::now() >= deadline {
                return Err(AuditError::Busy);
            }
            tokio::time::sleep(LOCK_RETRY).await;
        };
        match wait {
            None => {
                // Group commit: give the requests already runnable on this worker one turn
                // to join the batch, so one write(2) confirms them all. When nothing else
                // is runnable this returns at once.
                let pen = Pen {
                    inner: &self.inner,
                    held: true,
                };
                tokio::task::yield_now().await;
                pen.write()?
            }
            Some(rx) => {
                let mut waiting = Waiting {
                    rx: Some(rx),
                    inner: &self.inner,
                };
                match waiting.turn().await? {
                    Turn::Done(r) => r?,
                    Turn::Write => self.inner.write_round()?,
                }
            }
        }
        if let Some(id) = &incident_id {
            tracing::warn!(alert = true, incident_id = %id, event = kind, seq, "security alert");
        }
        Ok(Receipt { seq, incident_id })
    }
}

/// The pen, held across the group-commit yield. Cancellation-safe: a caller dropped while it
/// holds the pen writes the batch on drop, so the pen is never lost.
struct Pen<'a> {
    inner: &'a Inner,
    held: bool,
}

impl Pen<'_> {
    fn write(mut self) -> Result<(), AuditError> {
        self.held = false;
        self.inner.write_round()
    }
}

impl Drop for Pen<'_> {
    fn drop(&mut self) {
        if self.held {
            let _ = self.inner.write_round();
        }
    }
}

/// A caller waiting for its batch. Cancellation-safe: if the caller goes away (its request
/// was dropped, or it timed out) after the pen was handed to it, the guard writes the batch
/// on drop, so the pen is never lost and nobody else waits forever.
struct Waiting<'a> {
    rx: Option<oneshot::Receiver<Turn>>,
    inner: &'a Inner,
}

impl Waiting<'_> {
    async fn turn(&mut self) -> Result<Turn, AuditError> {
        let Some(rx) = self.rx.as_mut() else {
            return Err(AuditError::Closed);
        };
        let turn = match tokio::time::timeout(CONFIRM_TIMEOUT, rx).await {
            Ok(Ok(turn)) => turn,
            Ok(Err(_)) => return Err(AuditError::Closed),
            Err(_) => return Err(AuditError::Busy),
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
                let _ = self.inner.write_round();
            }
        }
    }
}

impl Inner {
    /// The head, also after a panic elsewhere (its state is checked before every use).
    fn head(&self) -> MutexGuard<'_, Head> {
        self.head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Chains one record onto the pending batch (the caller holds the directory lock); its
    /// sequence number.
    fn append(&self, h: &mut Head, json: &str) -> Result<u64, AuditError> {
        let st = match h.chain.as_mut() {
            Some(st) => st,
            None => {
                let st = recover(&self.dir, &self.key)?;
                if st.next_seq < h.written {
                    // Records this server confirmed are gone: never start a new chain over
                    // them. Refused until the directory is restored or the server restarts.
                    return Err(AuditError::Tampered {
                        path: self.dir.clone(),
                        line: 0,
                        problem: format!(
                            "the log holds {} records but this server wrote {}: the directory was moved, truncated or replaced",
                            st.next_seq, h.written
                        ),
                    });
                }
                h.chain.insert(st)
            }
        };
        // Timestamps never go backwards within the chain.
        let ms = crate::store::now_ms().max(st.last_ms);
        if ms != st.last_ms || st.last_ts.0.is_empty() {
            st.last_ts = chain::timestamp(ms);
            st.last_ms = ms;
        }
        let (ts, date) = &st.last_ts;
        let chunks = &mut h.pending.chunks;
        if chunks.last().is_none_or(|(d, _)| d != date) {
            chunks.push((date.clone(), String::with_capacity(512)));
        }
        let Some((_, text)) = chunks.last_mut() else {
            return Err(AuditError::Closed);
        };
        let start = text.len();
        chain::push_line(text, &self.key, st.next_seq, ts, &st.prev, json);
        chain::set_line_hash(&mut st.prev, text.get(start..).unwrap_or_default());
        text.push('\n');
        let seq = st.next_seq;
        st.next_seq += 1;
        h.pending.end_seq = st.next_seq;
        Ok(seq)
    }

    /// Takes the cross-process lock if we do not hold it (false: another process holds it),
    /// and drops the chain head if another process appended since we last held it.
    fn take_lock(&self, h: &mut Head) -> Result<bool, AuditError> {
        if h.locked {
            return Ok(true);
        }
        match h.lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(AuditError::Io {
                    path: self.dir.join(LOCK_FILE),
                    source: e,
                });
            }
        }
        h.locked = true;
        let today = chain::segment_name(&chain::timestamp(crate::store::now_ms()).1);
        let unchanged = h
            .chain
            .as_ref()
            .and_then(|st| st.tail.as_ref())
            .is_some_and(|(p, len)| {
                p.file_name().is_some_and(|n| *n == *today)
                    && std::fs::metadata(p).is_ok_and(|m| m.len() == *len)
            });
        if !unchanged {
            let current = newest_tail(&self.dir).map_err(io_err(&self.dir))?;
            if h.chain.as_ref().is_none_or(|st| st.tail != current) {
                h.chain = None;
                h.segment = None;
            }
        }
        Ok(true)
    }

    /// Writes pending batches while holding the pen: its own batch, then hands the pen to
    /// the first waiter of the next batch (or writes that too when nobody waits for it).
    /// The outcome of the caller's own batch.
    fn write_round(&self) -> Result<(), AuditError> {
        let mut own: Option<Result<(), AuditError>> = None;
        loop {
            let (batch, segment) = {
                let mut h = self.head();
                (std::mem::take(&mut h.pending), h.segment.take())
            };
            let mut segment = segment;
            let result = write_batch(&self.dir, &batch.chunks, &mut segment);
            let mut h = self.head();
            match &result {
                Ok(len) => {
                    if let Some(st) = h.chain.as_mut()
                        && let Some(seg) = &segment
                    {
                        let len = match len {
                            Tail::Grew(n) => match &st.tail {
                                Some((p, l)) if *p == seg.path => l + n,
                                _ => seg_len(seg),
                            },
                            Tail::Is(n) => *n,
                        };
                        st.tail = Some((seg.path.clone(), len));
                    }
                    h.written = h.written.max(batch.end_seq);
                    let first_dirty = h.unsynced.is_none();
                    h.unsynced = segment.as_ref().map(|s| s.file.clone());
                    h.segment = segment;
                    if first_dirty {
                        self.syncer.unpark();
                    }
                    for w in batch.waiters {
                        let _ = w.send(Turn::Done(Ok(())));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit log write failed; refusing the recorded actions");
                    // Everything chained on the failed batch is void: re-read the head.
                    h.chain = None;
                    h.segment = None;
                    release_lock(&mut h);
                    let later = std::mem::take(&mut h.pending);
                    for w in batch.waiters.into_iter().chain(later.waiters) {
                        let _ = w.send(Turn::Done(Err(copy_err(e))));
                    }
                }
            }
            if own.is_none() {
                own = Some(result.map(|_| ()));
            }
            // Hand the pen to the first caller still waiting for the next batch; when
            // nobody waits for it any more (its callers gave up), write it ourselves.
            loop {
                if h.pending.is_empty() {
                    h.writing = false;
                    return own.unwrap_or(Err(AuditError::Closed));
                }
                match h.pending.waiters.pop_front() {
                    Some(w) => {
                        if w.send(Turn::Write).is_ok() {
                            return own.unwrap_or(Err(AuditError::Closed));
                        }
                    }
                    None => break,
                }
            }
        }
    }

    /// Syncs what was written since the last sync; releases the cross-process lock when
    /// nobody is writing. Whether anything was synced.
    fn sync_once(&self) -> bool {
        let file = self.head().unsynced.take();
        let synced = match file {
            Some(f) => {
                if let Err(e) = f.sync_data() {
                    // Re-read the head (and reopen the segment) before the next record.
                    tracing::error!(error = %e, "audit log sync failed; re-reading the log");
                    let mut h = self.head();
                    h.chain = None;
                    h.segment = None;
                }
                true
            }
            None => false,
        };
        let mut h = self.head();
        if !h.writing && h.pending.is_empty() {
            release_lock(&mut h);
        }
        synced
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let h = self.head.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = h.unsynced.take() {
            let _ = f.sync_data();
        }
        release_lock(h);
        self.syncer.unpark();
    }
}

fn release_lock(h: &mut Head) {
    if h.locked {
        let _ = h.lock_file.unlock();
        h.locked = false;
    }
}

/// The syncer: fdatasync soon after the first write following a sync, then at most every
/// [`SYNC_INTERVAL`]; hands the cross-process lock back between syncs.
fn syncer(inner: Weak<Inner>) {
    loop {
        std::thread::park_timeout(SYNCER_IDLE);
        let Some(log) = inner.upgrade() else { return };
        let synced = log.sync_once();
        drop(log);
        if synced {
            std::thread::sleep(SYNC_INTERVAL);
        }
    }
}
