//! The writer: one thread fed by a bounded channel. It appends a batch of records with one
//! write(2) and only then confirms each record to its caller, so a record is confirmed once
//! the kernel holds it (a crash of the process loses nothing confirmed). The data is forced
//! to disk (fdatasync) at most [`SYNC_INTERVAL`] later, and at once when the writer falls
//! idle; a failed write or sync refuses that batch and every later one until the chain head
//! has been re-read from disk (fail closed). Per-request fsyncs would put a disk flush on
//! every proxied request's critical path.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::AuditEvent;
use super::chain::{self, AuditKey, BodyIn, GENESIS};
use crate::error::AuditError;

/// Records waiting for the writer. When full, `record` waits (up to [`CONFIRM_TIMEOUT`]):
/// back-pressure stops new access rather than dropping records.
pub const AUDIT_CHANNEL_CAPACITY: usize = 1024;
/// Most records written per fsync.
const MAX_BATCH: usize = 256;
/// Longest time a confirmed record may stay in the page cache before fdatasync.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);
/// How long `record` waits for its record to be durable before failing (closed).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// What a caller gets once its record is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    /// Set for alerting events (denies, lockouts).
    pub incident_id: Option<String>,
}

type Job = (AuditEvent, oneshot::Sender<Result<u64, AuditError>>);

/// Handle to the audit log; cheap to clone. The writer thread stops when the last handle
/// is dropped, after writing what was queued.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
}

struct ChainState {
    next_seq: u64,
    prev: String,
    last_ms: u64,
    /// Newest segment and its length when this state was taken: if another process (the
    /// CLI recording an admin action) appended since, the head is re-read.
    tail: Option<(PathBuf, u64)>,
}

/// Lock file serialising writers of one log directory across processes.
const LOCK_FILE: &str = ".audit.lock";

fn newest_tail(dir: &Path) -> std::io::Result<Option<(PathBuf, u64)>> {
    Ok(match chain::segments(dir)?.pop() {
        Some(p) => {
            let len = std::fs::metadata(&p)?.len();
            Some((p, len))
        }
        None => None,
    })
}

impl AuditLog {
    /// Opens (creating) the log directory, continues the chain from its last record, and
    /// starts the writer thread. A last record whose MAC does not verify is refused.
    pub fn open(dir: &Path, key: AuditKey) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(|source| AuditError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let state = recover(dir, &key)?;
        let (tx, rx) = mpsc::channel(AUDIT_CHANNEL_CAPACITY);
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("gatehouse-audit".into())
            .spawn(move || writer_loop(dir, key, Some(state), rx))
            .map_err(|source| AuditError::Io {
                path: PathBuf::from("<audit writer thread>"),
                source,
            })?;
        Ok(AuditLog { tx })
    }

    /// Appends `event` and returns once it is written (see the module doc for when it is
    /// synced). An error means the record is not written: the caller must refuse the action
    /// it records.
    pub async fn record(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        let incident_id = event.incident_id().map(str::to_string);
        let kind = event.kind();
        let (done_tx, done_rx) = oneshot::channel();
        let seq = tokio::time::timeout(CONFIRM_TIMEOUT, async {
            self.tx
                .send((event, done_tx))
                .await
                .map_err(|_| AuditError::Closed)?;
            done_rx.await.map_err(|_| AuditError::Closed)?
        })
        .await
        .map_err(|_| AuditError::Busy)??;
        if let Some(id) = &incident_id {
            tracing::warn!(alert = true, incident_id = %id, event = kind, seq, "security alert");
        }
        Ok(Receipt { seq, incident_id })
    }
}

/// Reads the chain head from the newest segment, cutting off a torn last line (a record
/// that was never confirmed).
fn recover(dir: &Path, key: &AuditKey) -> Result<ChainState, AuditError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    let segs = chain::segments(dir).map_err(io(dir))?;
    // The newest non-empty segment holds the head.
    for path in segs.iter().rev() {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(io(path))?;
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            f.set_len(complete as u64).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
        }
        let Some(last) = text.get(..complete).and_then(|t| t.lines().last()) else {
            continue;
        };
        let tampered = |problem: &str| AuditError::Tampered {
            path: path.clone(),
            line: 0,
            problem: problem.to_string(),
        };
        let (body, mac) =
            chain::split_line(last).ok_or_else(|| tampered("last record is malformed"))?;
        if !key.mac_ok(body.as_bytes(), mac) {
            return Err(tampered(
                "last record's mac does not verify (wrong secret key or tampering)",
            ));
        }
        let parsed: BodyIn =
            serde_json::from_str(&body).map_err(|_| tampered("last record is not json"))?;
        let last_ms = chain::parse_timestamp(&parsed.ts).unwrap_or(0);
        let tail = newest_tail(dir).map_err(io(dir))?;
        return Ok(ChainState {
            next_seq: parsed.seq + 1,
            prev: chain::line_hash(last),
            last_ms,
            tail,
        });
    }
    Ok(ChainState {
        next_seq: 0,
        prev: GENESIS.to_string(),
        last_ms: 0,
        tail: newest_tail(dir).map_err(io(dir))?,
    })
}

/// An open segment written since its last fdatasync.
struct Dirty {
    file: File,
    since: std::time::Instant,
}

fn writer_loop(
    dir: PathBuf,
    key: AuditKey,
    mut state: Option<ChainState>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut dirty: Option<Dirty> = None;
    loop {
        let first = match rx.try_recv() {
            Ok(job) => job,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Idle: make what was confirmed durable before sleeping.
                if let Some(d) = dirty.take()
                    && let Err(e) = d.file.sync_data()
                {
                    tracing::error!(error = %e, "audit log sync failed; refusing new records");
                    state = None;
                }
                match rx.blocking_recv() {
                    Some(job) => job,
                    None => break,
                }
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = locked_batch(&dir, &key, &mut state, &batch).and_then(|(seqs, file)| {
            let rolled = file
                .metadata()
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                != dirty
                    .as_ref()
                    .and_then(|d| d.file.metadata().ok())
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
            match dirty.take() {
                Some(d) if !rolled && d.since.elapsed() < SYNC_INTERVAL => {
                    // Same cadence window: the newest segment's handle is the one to sync.
                    dirty = Some(Dirty {
                        file,
                        since: d.since,
                    });
                }
                Some(d) => {
                    d.file.sync_data().map_err(|source| AuditError::Io {
                        path: dir.clone(),
                        source,
                    })?;
                    dirty = Some(Dirty {
                        file,
                        since: std::time::Instant::now(),
                    });
                }
                None => {
                    dirty = Some(Dirty {
                        file,
                        since: std::time::Instant::now(),
                    })
                }
            }
            Ok(seqs)
        });
        match result {
            Ok(seqs) => {
                for ((_, done), seq) in batch.into_iter().zip(seqs) {
                    let _ = done.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; refusing the recorded actions");
                // Re-read the head from disk before the next batch.
                state = None;
                dirty = None;
                for (_, done) in batch {
                    let _ = done.send(Err(match &e {
                        AuditError::Io { path, source } => AuditError::Io {
                            path: path.clone(),
                            source: std::io::Error::new(source.kind(), "audit write failed"),
                        },
                        _ => AuditError::Closed,
                    }));
                }
            }
        }
    }
    if let Some(d) = dirty {
        let _ = d.file.sync_data();
    }
}

/// Takes the directory lock, brings the chain head up to date (another process may have
/// appended), and writes the batch.
fn locked_batch(
    dir: &Path,
    key: &AuditKey,
    state: &mut Option<ChainState>,
    batch: &[Job],
) -> Result<(Vec<u64>, File), AuditError> {
    let lock_path = dir.join(LOCK_FILE);
    let io = |source| AuditError::Io {
        path: lock_path.clone(),
        source,
    };
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    lock.lock().map_err(io)?;
    // Fast check: today's segment is the one we last wrote and nobody appended since (one
    // stat). Otherwise (new day, another writer, first batch) list the directory.
    let today = chain::segment_name(&chain::timestamp(crate::store::now_ms()).1);
    let unchanged = state
        .as_ref()
        .and_then(|st| st.tail.as_ref())
        .is_some_and(|(p, len)| {
            p.file_name().is_some_and(|n| *n == *today)
                && std::fs::metadata(p).is_ok_and(|m| m.len() == *len)
        });
    if !unchanged {
        let current = newest_tail(dir).map_err(io)?;
        if state.as_ref().is_none_or(|st| st.tail != current) {
            *state = Some(recover(dir, key)?);
        }
    }
    let result = match state.as_mut() {
        Some(st) => write_batch(dir, key, st, batch),
        None => Err(AuditError::Closed),
    };
    // Dropping the file releases the lock.
    drop(lock);
    result
}

/// Appends the batch; returns each record's seq once everything is written, and the newest
/// segment's handle (for the caller's fdatasync cadence). The chain state advances only on
/// success.
fn write_batch(
    dir: &Path,
    key: &AuditKey,
    st: &mut ChainState,
    batch: &[Job],
) -> Result<(Vec<u64>, File), AuditError> {
    let mut next_seq = st.next_seq;
    let mut prev = st.prev.clone();
    let mut last_ms = st.last_ms;
    let mut files: Vec<(String, String)> = Vec::new(); // (date, text)
    let mut seqs = Vec::with_capacity(batch.len());
    for (event, _) in batch {
        // Timestamps never go backwards within the chain.
        let ms = crate::store::now_ms().max(last_ms);
        last_ms = ms;
        let (ts, date) = chain::timestamp(ms);
        let line =
            chain::make_line(key, next_seq, &ts, &prev, event).map_err(AuditError::Encode)?;
        prev = chain::line_hash(&line);
        seqs.push(next_seq);
        next_seq += 1;
        match files.last_mut() {
            Some((d, text)) if *d == date => {
                text.push_str(&line);
                text.push('\n');
            }
            _ => files.push((date, format!("{line}\n"))),
        }
    }
    let mut newest: Option<File> = None;
    for (date, text) in &files {
        let path = dir.join(chain::segment_name(date));
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let existed = path.exists();
        let mut f: File = opts.open(&path).map_err(io)?;
        f.seek(SeekFrom::End(0)).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        if !existed {
            // A new segment and its directory entry are made durable at once.
            f.sync_data().map_err(io)?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        if let Some(older) = newest.replace(f) {
            // Rolled over to a new segment within the batch: the older one is done.
            older.sync_data().map_err(io)?;
        }
    }
    let newest = newest.ok_or(AuditError::Closed)?;
    if let Some((date, _)) = files.last() {
        let path = dir.join(chain::segment_name(date));
        let len = newest.metadata().map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        st.tail = Some((path, len.len()));
    }
    st.next_seq = next_seq;
    st.prev = prev;
    st.last_ms = last_ms;
    Ok((seqs, newest))
}
