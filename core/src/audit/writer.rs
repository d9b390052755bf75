//! The writer: group commit per thread, without a writer thread.
//!
//! Each thread has its own queue of records waiting to be written (a shard, picked by a
//! per-thread slot). A caller queues its serialized event; if nobody on its shard is writing,
//! it becomes the writer: it yields once, so requests already runnable on its worker queue
//! theirs too, then takes the log's lock, chains the whole queue (sequence, timestamp,
//! `prev`, MAC) and appends it with one write(2) before letting the lock go, so the file's
//! order is the chain's order. The callers it wrote for are woken on their own thread: a
//! worker never wakes another worker to confirm a record, and two workers meet only on the
//! log's lock, which the one that finds it taken does not wait for (it yields and retries,
//! gathering more records meanwhile). A record is confirmed once the kernel holds it (a
//! crash of the process loses nothing confirmed); a small syncer thread forces it to disk
//! (fdatasync) at once when the log was idle and at most [`SYNC_INTERVAL`] later under load.
//! Per-request fsyncs would put a disk flush on every proxied request's critical path; a
//! writer thread would put two cross-thread wake-ups on it.
//!
//! Fail closed: a failed write refuses every record of its batch, and the chain head is
//! re-read from disk before the next record. Every write first checks that the segment path
//! still names the open file (a moved, deleted or replaced directory is an error, not
//! records written into the void). After a failed sync the head is re-read too. A re-read
//! head behind what this log already wrote (the directory was moved, truncated or replaced)
//! is refused, not continued as a new chain over the missing records. A writer that cannot
//! write within [`CONFIRM_TIMEOUT`] of taking the pen refuses its whole queue.
//!
//! Several processes (the server and a CLI recording an admin action) share a directory
//! through a lock file: a writer holds it while it appends and the syncer releases it after
//! each sync, so another process waits at most about one sync interval. A writer that finds
//! it taken retries without blocking its thread. Whoever takes the lock back checks the
//! newest segment and re-reads the chain head when someone else appended.

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

mod pen;
use pen::{Attempt, Pen, Waiting};

/// Longest time a confirmed record may stay in the page cache before fdatasync.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);
/// How long a writer holding the pen tries to write its queue before refusing it (closed).
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
    /// Records waiting for a writer, one queue per thread slot.
    shards: Box<[Shard]>,
    syncer: std::thread::Thread,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Queues per log: threads beyond this share them (still correct, only less local).
const SHARDS: usize = 16;

/// One thread slot's queue, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Queue>);

#[derive(Default)]
struct Queue {
    records: Vec<Queued>,
    /// Someone holds this queue's pen: callers queue and wait instead of writing.
    writing: bool,
    next_ticket: u64,
}

/// A serialized event waiting to be chained, and who waits for it (`None`: its writer).
struct Queued {
    ticket: u64,
    json: String,
    waiter: Option<oneshot::Sender<Turn>>,
}

/// A waiting caller's turn: its record's outcome, or the pen (write the queue).
enum Turn {
    Done(Result<u64, AuditError>),
    Write,
}

struct Head {
    /// `None`: re-read from disk before the next record (start, failure, foreign append).
    chain: Option<ChainState>,
    /// The cross-process lock file, and whether we hold its lock.
    lock_file: File,
    locked: bool,
    /// The newest open segment.
    segment: Option<Segment>,
    /// What the syncer must fdatasync next (written since its last sync).
    unsynced: Option<Arc<File>>,
    /// Records this log has written so far (the next sequence number it confirmed): a
    /// re-read head behind it means the directory was moved, truncated or replaced.
    written: u64,
}

static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// This thread's slot: its shard in every log.
    static SLOT: usize = NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        AuditError::Tampered {
            path,
            line,
            problem,
        } => AuditError::Tampered {
            path: path.clone(),
            line: *line,
            problem: problem.clone(),
        },
        AuditError::Busy => AuditError::Busy,
        AuditError::Closed | AuditError::Encode(_) => AuditError::Closed,
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
                segment: None,
                unsynced: None,
                written,
            }),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
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
        super::json::write_event(&mut buf, event).map_err(AuditError::Encode)?;
        let json =
            String::from_utf8(buf).map_err(|e| AuditError::Encode(serde::ser::Error::custom(e)))?;
        let shard = self.inner.shard().ok_or(AuditError::Closed)?;
        let (ticket, wait) = {
            let mut q = lock(&shard.0);
            let ticket = q.next_ticket;
            q.next_ticket += 1;
            if q.writing {
                let (tx, rx) = oneshot::channel();
                q.records.push(Queued {
                    ticket,
                    json,
                    waiter: Some(tx),
                });
                (ticket, Some(rx))
            } else {
                q.writing = true;
                q.records.push(Queued {
                    ticket,
                    json,
                    waiter: None,
                });
                (ticket, None)
            }
        };
        let seq = match wait {
            None => {
                // Group commit: give the requests already runnable on this worker one turn
                // to queue theirs, so one write(2) confirms them all. When nothing else is
                // runnable this returns at once.
                let pen = Pen::new(&self.inner, shard);
                tokio::task::yield_now().await;
                pen.write(ticket).await?
            }
            Some(rx) => {
                let mut waiting = Waiting::new(rx, &self.inner, shard);
                match waiting.turn().await? {
                    Turn::Done(r) => r?,
                    Turn::Write => Pen::new(&self.inner, shard).write(ticket).await?,
                }
            }
        };
        if let Some(id) = &incident_id {
            tracing::warn!(alert = true, incident_id = %id, event = kind, seq, "security alert");
        }
        Ok(Receipt { seq, incident_id })
    }
}

/// A queue's lock, also after a panic elsewhere (a queue is consistent between statements).
fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    /// This thread's queue (`None` only if the log had no queues, which `open` rules out).
    fn shard(&self) -> Option<&Shard> {
        let slot = SLOT.with(|s| *s);
        self.shards.get(slot % SHARDS)
    }

    /// The head, also after a panic elsewhere (its state is checked before every use).
    fn head(&self) -> MutexGuard<'_, Head> {
        self.head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Chains one record onto `chunks` (the batch being built; the caller holds the log's
    /// lock and the directory lock); its sequence number.
    fn append(
        &self,
        h: &mut Head,
        chunks: &mut Vec<(String, String)>,
        json: &str,
        size: usize,
    ) -> Result<u64, AuditError> {
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
        if chunks.last().is_none_or(|(d, _)| d != date) {
            chunks.push((date.clone(), String::with_capacity(size)));
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

    /// One attempt to write `shard`'s queue: takes the log's lock without waiting for it,
    /// takes the directory lock, chains every queued record and appends them with one
    /// write(2) before letting the lock go. The callers of the batch get their outcome; the
    /// return value carries `own`'s.
    fn try_write(&self, shard: &Shard, own: u64) -> Result<Attempt, AuditError> {
        let mut h = match self.head.try_lock() {
            Ok(h) => h,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(Attempt::Contended),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        self.write_locked(&mut h, shard, own)
    }

    /// [`try_write`](Inner::try_write) with the log's lock held.
    fn write_locked(&self, h: &mut Head, shard: &Shard, own: u64) -> Result<Attempt, AuditError> {
        if !self.take_lock(h)? {
            return Ok(Attempt::DirBusy);
        }
        let records = std::mem::take(&mut lock(&shard.0).records);
        // The batch's text in one allocation: each line is its event plus the chain fields.
        let size: usize = records
            .iter()
            .map(|r| r.json.len() + chain::LINE_OVERHEAD)
            .sum();
        let mut chunks: Vec<(String, String)> = Vec::new();
        let mut first = None;
        let mut chained = Ok(());
        for r in &records {
            match self.append(h, &mut chunks, &r.json, size) {
                Ok(seq) => {
                    first.get_or_insert(seq);
                }
                Err(e) => {
                    chained = Err(e);
                    break;
                }
            }
        }
        let result = chained.and_then(|()| self.commit(h, &chunks));
        if result.is_err() {
            // Nothing of the batch is confirmed: re-read the head before the next record.
            h.chain = None;
            h.segment = None;
            release_lock(h);
        }
        let first = first.unwrap_or(0);
        let mut own_seq = None;
        for (i, r) in records.into_iter().enumerate() {
            let seq = first + i as u64;
            if r.ticket == own {
                own_seq = Some(seq);
            } else if let Some(w) = r.waiter {
                let outcome = match &result {
                    Ok(()) => Ok(seq),
                    Err(e) => Err(copy_err(e)),
                };
                let _ = w.send(Turn::Done(outcome));
            }
        }
        match (result, own_seq) {
            (Ok(()), seq) => Ok(Attempt::Wrote(seq.map(Ok))),
            (Err(e), seq) => {
                tracing::error!(error = %e, "audit log write failed; refusing the recorded actions");
                match seq {
                    Some(_) => Ok(Attempt::Wrote(Some(Err(e)))),
                    None => Err(e),
                }
            }
        }
    }

    /// Appends a chained batch to its segment(s) and notes what the syncer must sync.
    fn commit(&self, h: &mut Head, chunks: &[(String, String)]) -> Result<(), AuditError> {
        let mut segment = h.segment.take();
        let len = write_batch(&self.dir, chunks, &mut segment)?;
        if let Some(st) = h.chain.as_mut()
            && let Some(seg) = &segment
        {
            let len = match len {
                Tail::Grew(n) => match &st.tail {
                    Some((p, l)) if *p == seg.path => l + n,
                    _ => seg_len(seg),
                },
                Tail::Is(n) => n,
            };
            st.tail = Some((seg.path.clone(), len));
        }
        if let Some(st) = h.chain.as_ref() {
            h.written = h.written.max(st.next_seq);
        }
        let first_dirty = h.unsynced.is_none();
        h.unsynced = segment.as_ref().map(|s| s.file.clone());
        h.segment = segment;
        if first_dirty {
            self.syncer.unpark();
        }
        Ok(())
    }

    /// After a write: puts the pen down when the queue is empty, or hands it to the first
    /// caller still waiting in it. False when records are queued and nobody waits for them
    /// (their callers gave up): the holder writes them itself.
    fn pass_pen(&self, shard: &Shard) -> bool {
        let mut q = lock(&shard.0);
        if q.records.is_empty() {
            q.writing = false;
            return true;
        }
        for r in &mut q.records {
            if let Some(w) = r.waiter.take()
                && w.send(Turn::Write).is_ok()
            {
                return true;
            }
        }
        false
    }

    /// Refuses every queued record with `e` and puts the pen down (the writer gave up).
    fn refuse_queue(&self, shard: &Shard, e: &AuditError) {
        let records = {
            let mut q = lock(&shard.0);
            q.writing = false;
            std::mem::take(&mut q.records)
        };
        for r in records {
            if let Some(w) = r.waiter {
                let _ = w.send(Turn::Done(Err(copy_err(e))));
            }
        }
    }

    /// Writes the queue now, blocking (a dropped pen); refuses it when the directory lock
    /// is taken. The pen is put down or handed on.
    fn write_now(&self, shard: &Shard) {
        loop {
            let mut h = self.head();
            let attempt = self.write_locked(&mut h, shard, u64::MAX);
            drop(h);
            match attempt {
                Ok(Attempt::Wrote(_)) => {
                    if self.pass_pen(shard) {
                        return;
                    }
                }
                Ok(Attempt::Contended | Attempt::DirBusy) => {
                    self.refuse_queue(shard, &AuditError::Busy);
                    return;
                }
                Err(e) => {
                    self.refuse_queue(shard, &e);
                    return;
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
        // Writes happen under the log's lock: holding it, nobody is writing.
        release_lock(&mut self.head());
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
