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
//! Durability: a [`Durability::Synced`] record (session-level: logins, logouts, session
//! start and end, grants, administrative actions) is also fdatasync'd before
//! [`AuditLog::record`] returns; per-request access decisions keep the group commit.
//!
//! With a signing key ([`AuditOptions`]) the syncer also signs checkpoints of the synced
//! head (see [`super::checkpoint`]) and keeps the signed head file apart from the log; a log
//! shorter than that head is refused at open (a cut tail), never chained onto.
//!
//! Several processes (the server and a CLI recording an admin action) share a directory
//! through a lock file: a writer holds it while it appends and the syncer releases it after
//! each sync, so another process waits at most about one sync interval. A writer that finds
//! it taken retries without blocking its thread. Whoever takes the lock back checks the
//! newest segment and re-reads the chain head when someone else appended.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::chain::AuditKey;
use super::checkpoint::ChainHead;
use super::event::Durability;
use super::segment::{ChainState, Segment, io_err, recover};
use super::signing::AuditSigner;
use super::{AuditEvent, head};
use crate::alert::Alerter;
use crate::error::AuditError;

mod batch;
mod pen;
mod sync;
use pen::{Pen, Waiting};
use sync::{CkptState, SyncState, syncer};

/// Finds `"incident_id":"` in a record (built once: building a finder per record showed in
/// the request path's profile).
static INCIDENT_FIELD: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"incident_id\":\""));

/// Longest time a confirmed record may stay in the page cache before fdatasync.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);
/// How long a writer holding the pen tries to write its queue before refusing it (closed).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a caller retries the directory lock while another process holds it.
const LOCK_RETRY: Duration = Duration::from_millis(2);
/// How long the idle syncer sleeps between checks for a lock to release (and for a due
/// checkpoint).
const SYNCER_IDLE: Duration = Duration::from_secs(1);
/// Longest time between signed checkpoints while records flow.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// What a log does beyond the HMAC chain: sign checkpoints and keep the signed head apart
/// from the log, and raise alerts for records with an incident id.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Signs checkpoints and the head file; `None`: neither is written (tests, tools).
    pub signer: Option<Arc<AuditSigner>>,
    /// The signed head this log last confirmed, kept apart from the log directory.
    pub head_file: Option<PathBuf>,
    /// Longest time between checkpoints while records flow (at most a minute).
    pub checkpoint_interval: Duration,
    /// Where alerts of records with an incident id go (always also the log).
    pub alerter: Alerter,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            signer: None,
            head_file: None,
            checkpoint_interval: CHECKPOINT_INTERVAL,
            alerter: Alerter::log_only(),
        }
    }
}

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
    opts: AuditOptions,
    head: Mutex<Head>,
    /// Records waiting for a writer, one queue per thread slot.
    shards: Box<[Shard]>,
    syncer: std::thread::Thread,
    /// Records without a waiter (a response's answers) wait in a queue because another
    /// process held the directory lock: the syncer thread writes them (see
    /// `Inner::write_deferred`).
    deferred: std::sync::atomic::AtomicBool,
    /// What is on disk; held while syncing (durable callers wait on it).
    sync: Mutex<SyncState>,
    /// Next sequence number not yet known to be on disk (read without the lock).
    synced_next: AtomicU64,
    /// Next sequence number not yet written (shipping backlog).
    written_next: AtomicU64,
    /// Checkpoints and the head file written so far.
    ckpt: Mutex<CkptState>,
    /// Woken after every write (shippers).
    watchers: Mutex<Vec<Arc<Notify>>>,
    /// Shipping counters, shared by every shipper of this log.
    ship_metrics: super::ship::ShipMetrics,
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
    /// The head that sync makes durable: updated in place (no allocation per batch), cloned
    /// by the syncer.
    unsynced_head: ChainHead,
    /// Records this log has written so far (the next sequence number it confirmed): a
    /// re-read head behind it means the directory was moved, truncated or replaced.
    written: u64,
    /// Segments closed by the records written (their last record, the next segment's date):
    /// each gets a signed `close` checkpoint. Already on disk (synced at roll-over).
    closes: Vec<(ChainHead, String)>,
}

static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// This thread's slot: its shard in every log.
    static SLOT: usize = NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Lock file serialising writers of one log directory across processes.
const LOCK_FILE: &str = ".audit.lock";

impl AuditLog {
    /// Opens (creating) the log directory, continues the chain from its last record, and
    /// starts the syncer thread. A last record whose MAC does not verify is refused. No
    /// checkpoints, no head file, alerts to the log only.
    pub fn open(dir: &Path, key: AuditKey) -> Result<AuditLog, AuditError> {
        Self::open_with(dir, key, AuditOptions::default())
    }

    /// [`open`](AuditLog::open) with checkpoints, the head file and alerts. With a signer, a
    /// log that ends before (or differs at) the head this server last confirmed, or before
    /// its newest signed checkpoint, is refused with [`AuditError::CutTail`].
    pub fn open_with(
        dir: &Path,
        key: AuditKey,
        opts: AuditOptions,
    ) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock_file.lock().map_err(io_err(&lock_path))?;
        let state = recover(dir, &key).and_then(|st| {
            if let Some(signer) = &opts.signer {
                head::check_start(dir, opts.head_file.as_deref(), signer, &st)?;
            }
            Ok(st)
        });
        let _ = lock_file.unlock();
        let state = state?;
        let written = state.next_seq;
        let durable_head = (state.next_seq > 0).then(|| ChainHead {
            seq: state.next_seq - 1,
            hash: state.prev.clone(),
            date: state.head_date.clone(),
        });
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
                unsynced_head: ChainHead {
                    seq: 0,
                    hash: String::with_capacity(64),
                    date: String::with_capacity(8),
                },
                written,
                closes: Vec::new(),
            }),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            syncer: thread.thread().clone(),
            deferred: std::sync::atomic::AtomicBool::new(false),
            sync: Mutex::new(SyncState::new(durable_head)),
            synced_next: AtomicU64::new(written),
            written_next: AtomicU64::new(written),
            ckpt: Mutex::new(CkptState::new()),
            watchers: Mutex::new(Vec::new()),
            ship_metrics: super::ship::ShipMetrics::default(),
            opts,
        });
        // The head as found is on disk: the head file starts from it.
        inner.checkpoint_work(false);
        let _ = ready_tx.send(Arc::downgrade(&inner));
        Ok(AuditLog { inner })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The MAC key (verification, export).
    pub fn key(&self) -> &AuditKey {
        &self.inner.key
    }

    /// The signing key, when this log signs checkpoints.
    pub fn signer(&self) -> Option<&Arc<AuditSigner>> {
        self.inner.opts.signer.as_ref()
    }

    /// Where alerts go.
    pub fn alerter(&self) -> &Alerter {
        &self.inner.opts.alerter
    }

    /// The sequence number the next record written by this process would get at most (the
    /// records written so far, for backlog gauges).
    pub fn written(&self) -> u64 {
        self.inner.written_next.load(Ordering::Acquire)
    }

    /// The shipping counters of this log's shippers.
    pub fn ship_metrics(&self) -> &super::ship::ShipMetrics {
        &self.inner.ship_metrics
    }

    /// Registers the audit log's metrics (shipping, alerts) on `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.ship_metrics.register(registry);
        self.inner.opts.alerter.metrics().register(registry);
    }

    /// The next sequence number not yet known to be on disk.
    pub fn synced(&self) -> u64 {
        self.inner.synced_next.load(Ordering::Acquire)
    }

    /// A notifier woken after every write to this log (shippers tail the files on it).
    pub fn watch(&self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        lock_any(&self.inner.watchers).push(n.clone());
        n
    }

    /// Forces what was written to disk, writes a final checkpoint and the head file, and
    /// hands the directory lock back (graceful shutdown, end of a CLI command). The log
    /// stays usable.
    pub fn close(&self) {
        self.inner.close_now();
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
        // One allocation sized for a typical record (to_string starts small and regrows).
        let mut buf = Vec::with_capacity(512);
        super::json::write_event(&mut buf, event).map_err(AuditError::Encode)?;
        let json =
            String::from_utf8(buf).map_err(|e| AuditError::Encode(serde::ser::Error::custom(e)))?;
        // Any record with an incident id raises an alert, whatever its variant.
        let alerting = (incident_id.is_some() || INCIDENT_FIELD.find(json.as_bytes()).is_some())
            .then(|| json.clone());
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
        if event.durability() == Durability::Synced {
            self.sync_to(seq).await?;
        }
        if let Some(json) = alerting
            && let Some(alert) = super::record::alert_of(seq, &json)
        {
            self.inner.opts.alerter.raise(alert);
        }
        Ok(Receipt { seq, incident_id })
    }

    /// Appends `event` without waiting for it, from any context (a response body's drop):
    /// queued behind this thread's writer when there is one (it writes it with its batch),
    /// else written at once, blocking briefly on the log's lock. Only for the facts of an
    /// action already done, which nothing can refuse any more (a response's status and
    /// size); a group-commit record. False when it could not be queued or written.
    pub fn record_detached(&self, event: &AuditEvent) -> bool {
        let mut buf = Vec::with_capacity(256);
        if super::json::write_event(&mut buf, event).is_err() {
            return false;
        }
        let Ok(json) = String::from_utf8(buf) else {
            return false;
        };
        let Some(shard) = self.inner.shard() else {
            return false;
        };
        let write = {
            let mut q = lock(&shard.0);
            let ticket = q.next_ticket;
            q.next_ticket += 1;
            // No waiter: the pen's holder writes it with the rest of the queue (a record
            // without a waiter is never handed the pen).
            q.records.push(Queued {
                ticket,
                json,
                waiter: None,
            });
            !std::mem::replace(&mut q.writing, true)
        };
        if write {
            self.inner.write_now(shard);
        }
        true
    }

    /// Returns once record `seq` is on disk (fdatasync).
    async fn sync_to(&self, seq: u64) -> Result<(), AuditError> {
        if self.inner.synced_next.load(Ordering::Acquire) > seq {
            return Ok(());
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.sync_through(seq + 1))
            .await
            .map_err(|_| AuditError::Closed)?
    }
}

/// A mutex's guard, also after a panic elsewhere (the guarded values are plain data).
fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
}

fn release_lock(h: &mut Head) {
    if h.locked {
        let _ = h.lock_file.unlock();
        h.locked = false;
    }
}
