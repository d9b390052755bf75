//! The sessions index: every recorded session (SSH and web) by user, target or app, time,
//! typed or executed command and transferred file name, in SQLite (compiled in, no server)
//! beside the recordings (`<dir>/.index.sqlite3`, hidden so recording retention leaves it).
//!
//! Commands and file names are searched as substrings, case-insensitively, through FTS5
//! trigram tables: a search over 100,000 sessions answers in milliseconds (see
//! `benches/recordings_index.rs`); text shorter than three characters falls back to a scan.
//!
//! The recordings and their metadata files stay the source of truth: the index is updated
//! as sessions run (start, commands, files, end) by one writer thread, and rebuilt from the
//! recordings when it is missing, unreadable, of another schema version, or fails SQLite's
//! check (see `rebuild`). A failed index update is logged and marks the index for a
//! rebuild at the next start; it never ends a session.
//!
//! What the index holds is in clear (users, targets, times, commands, file names) so that it
//! can be searched, also when the recordings are encrypted: it needs the same protection as
//! the audit log (the directory is created owner-only).

mod query;
mod rebuild;
mod schema;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{mpsc, oneshot};

pub use query::{CommandEntry, FileEntry, Query, parse_when};
pub use rebuild::RebuildReport;

use super::cast::FileTransfer;
use super::sidecar::Sidecar;
use super::{RecordingError, RecordingId, unix_ms};

/// File name of the index in the recordings directory.
pub const INDEX_FILE: &str = ".index.sqlite3";
/// Written beside the index when an update failed: the next start rebuilds it.
const DIRTY_FILE: &str = ".index.dirty";
/// Updates queued for the index thread; when full, sessions wait (never dropped).
const INDEX_QUEUE: usize = 4096;
/// How long a connection waits for another writer (the server and a CLI rebuild).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandSource {
    /// Typed at a terminal (as the terminal showed it when Enter was pressed).
    Typed,
    /// The command of an exec request.
    Exec,
    /// A line of a script fed to a shell without a terminal.
    Script,
    /// A subsystem (`sftp`).
    Subsystem,
}

impl CommandSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandSource::Typed => "typed",
            CommandSource::Exec => "exec",
            CommandSource::Script => "script",
            CommandSource::Subsystem => "subsystem",
        }
    }

    pub(super) fn parse(s: &str) -> CommandSource {
        match s {
            "exec" => CommandSource::Exec,
            "script" => CommandSource::Script,
            "subsystem" => CommandSource::Subsystem,
            _ => CommandSource::Typed,
        }
    }
}

pub(super) enum Op {
    Upsert(Box<Sidecar>),
    Command {
        id: RecordingId,
        at_ms: u64,
        source: CommandSource,
        text: String,
    },
    File {
        id: RecordingId,
        at_ms: u64,
        transfer: FileTransfer,
    },
    Flush(oneshot::Sender<()>),
}

/// A session with what it ran and moved, for [`RecordingIndex::insert_sessions`].
#[derive(Debug, Clone)]
pub struct IndexedSession {
    pub sidecar: Sidecar,
    /// Milliseconds from the start, source, text.
    pub commands: Vec<(u64, CommandSource, String)>,
    pub files: Vec<(u64, FileTransfer)>,
}

/// The index of a recordings directory.
#[derive(Debug, Clone)]
pub struct RecordingIndex {
    path: PathBuf,
}

/// Sends updates to the index thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct IndexWriter {
    tx: mpsc::Sender<Op>,
}

fn index_err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> RecordingError {
    move |source| RecordingError::Index { what, source }
}

pub(super) fn open_rw(path: &Path) -> Result<Connection, RecordingError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(index_err("cannot open"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(index_err("cannot set the busy timeout"))?;
    Ok(conn)
}

impl RecordingIndex {
    /// The index of `dir`: opened, or created and filled from the recordings when it is
    /// missing, broken or marked for a rebuild.
    pub fn open(
        dir: &Path,
        key: Option<&super::crypt::RecordingKey>,
    ) -> Result<(RecordingIndex, Option<RebuildReport>), RecordingError> {
        let path = dir.join(INDEX_FILE);
        let dirty = dir.join(DIRTY_FILE);
        let healthy = path.exists() && !dirty.exists() && schema::check(&path).is_ok();
        let report = if healthy {
            None
        } else {
            if path.exists() {
                // Keep the broken one for a post-mortem; never build on top of it.
                let aside = dir.join(format!(".index.broken-{}", unix_ms(SystemTime::now())));
                let _ = std::fs::rename(&path, &aside);
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.join(format!("{INDEX_FILE}{suffix}")));
                }
            }
            let conn = open_rw(&path)?;
            schema::create(&conn)?;
            let r = rebuild::rebuild(dir, key, &conn)?;
            let _ = std::fs::remove_file(&dirty);
            tracing::info!(
                sessions = r.sessions,
                skipped = r.skipped,
                "recordings index rebuilt"
            );
            Some(r)
        };
        Ok((RecordingIndex { path }, report))
    }

    pub(super) fn at(dir: &Path) -> RecordingIndex {
        RecordingIndex {
            path: dir.join(INDEX_FILE),
        }
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the writer thread (the server; a CLI only reads).
    pub fn writer(&self) -> Result<IndexWriter, RecordingError> {
        let conn = open_rw(&self.path)?;
        schema::tune(&conn)?;
        let (tx, rx) = mpsc::channel(INDEX_QUEUE);
        let dirty = self
            .path
            .parent()
            .map_or_else(|| PathBuf::from(DIRTY_FILE), |d| d.join(DIRTY_FILE));
        std::thread::Builder::new()
            .name("recordings-index".into())
            .spawn(move || writer_thread(conn, rx, &dirty))
            .map_err(|e| {
                RecordingError::IndexState(format!("cannot start the writer thread: {e}"))
            })?;
        Ok(IndexWriter { tx })
    }

    /// Adds or updates sessions at once (start-up: recordings a crash left live).
    pub fn upsert_now(&self, sessions: &[Sidecar]) -> Result<(), RecordingError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut conn = open_rw(&self.path)?;
        let tx = conn
            .transaction()
            .map_err(index_err("cannot begin a transaction"))?;
        for s in sessions {
            schema::upsert(&tx, s)?;
        }
        tx.commit().map_err(index_err("cannot commit"))
    }

    /// Adds whole sessions with their commands and files in one transaction (imports, and
    /// the search benchmark's 100,000 generated sessions).
    pub fn insert_sessions(&self, sessions: &[IndexedSession]) -> Result<(), RecordingError> {
        let mut conn = open_rw(&self.path)?;
        schema::tune(&conn)?;
        let tx = conn
            .transaction()
            .map_err(index_err("cannot begin a transaction"))?;
        for s in sessions {
            schema::upsert(&tx, &s.sidecar)?;
            for (at_ms, source, text) in &s.commands {
                rebuild::add_command(&tx, &s.sidecar.meta.id, *at_ms, *source, text)?;
            }
            for (at_ms, t) in &s.files {
                schema::add_file(&tx, &s.sidecar.meta.id, *at_ms, t)?;
            }
        }
        tx.commit().map_err(index_err("cannot commit"))
    }

    /// Removes sessions whose recordings are gone (retention pruning calls this with the ids
    /// it removed; a rebuild would drop them too).
    pub fn forget(&self, ids: &[RecordingId]) -> Result<(), RecordingError> {
        let mut conn = open_rw(&self.path)?;
        let tx = conn
            .transaction()
            .map_err(index_err("cannot begin a transaction"))?;
        for id in ids {
            for table in ["commands", "files", "apps"] {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE rid IN (SELECT rid FROM sessions WHERE id = ?1)"
                    ),
                    params![id.as_str()],
                )
                .map_err(index_err("cannot forget a session"))?;
            }
            tx.execute("DELETE FROM sessions WHERE id = ?1", params![id.as_str()])
                .map_err(index_err("cannot forget a session"))?;
        }
        tx.commit().map_err(index_err("cannot commit"))
    }

    /// A connection for reading.
    fn read(&self) -> Result<Connection, RecordingError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(index_err("cannot open for reading"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(index_err("cannot set the busy timeout"))?;
        Ok(conn)
    }
}

impl IndexWriter {
    pub(super) async fn send(&self, op: Op) {
        if self.tx.send(op).await.is_err() {
            tracing::error!(
                "recordings index writer stopped; the index will be rebuilt at the next start"
            );
        }
    }

    /// Waits until every update sent before is in the index.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx)).await;
        let _ = rx.await;
    }
}

/// Most updates applied in one transaction.
const BATCH: usize = 512;

fn writer_thread(mut conn: Connection, mut rx: mpsc::Receiver<Op>, dirty: &Path) {
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut waiters = Vec::new();
        let result = apply(&mut conn, ops, &mut waiters);
        if let Err(e) = result {
            tracing::error!(error = %super::error_chain(&e), "recordings index update failed; it will be rebuilt at the next start");
            let _ = std::fs::write(dirty, b"an update failed\n");
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

fn apply(
    conn: &mut Connection,
    ops: Vec<Op>,
    waiters: &mut Vec<oneshot::Sender<()>>,
) -> Result<(), RecordingError> {
    let tx = conn
        .transaction()
        .map_err(index_err("cannot begin a transaction"))?;
    for op in ops {
        match op {
            Op::Upsert(s) => schema::upsert(&tx, &s)?,
            Op::Command {
                id,
                at_ms,
                source,
                text,
            } => {
                tx.execute(
                    "INSERT INTO commands(rid, at_ms, source, text) \
                     SELECT rid, ?2, ?3, ?4 FROM sessions WHERE id = ?1",
                    params![id.as_str(), at_ms as i64, source.as_str(), text],
                )
                .map_err(index_err("cannot add a command"))?;
            }
            Op::File {
                id,
                at_ms,
                transfer,
            } => schema::add_file(&tx, &id, at_ms, &transfer)?,
            Op::Flush(w) => waiters.push(w),
        }
    }
    tx.commit().map_err(index_err("cannot commit"))
}
