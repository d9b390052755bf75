//! The index's tables, its health check, and the statements that fill it.
//!
//! `sessions` holds one row per recording (SSH channel or web session); `apps` the web apps a
//! web session used; `commands` and `files` what was typed or run and what moved, each with
//! an FTS5 trigram table over its text (external content, kept in step by triggers;
//! `detail=none`: a third of the size, candidates found by their trigrams and confirmed by a
//! substring test); `stats` the longest session, which bounds time-range searches.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, Transaction, params};

use super::index_err;
use crate::recording::cast::FileTransfer;
use crate::recording::sidecar::Sidecar;
use crate::recording::{RecordingError, RecordingId, unix_ms};

/// Bumped whenever the tables change: an index of another version is rebuilt.
pub const VERSION: i64 = 2;

const TABLES: &str = "
CREATE TABLE sessions(
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    user TEXT NOT NULL,
    target TEXT,
    login TEXT,
    app TEXT,
    session TEXT,
    request TEXT,
    command TEXT,
    pty INTEGER NOT NULL DEFAULT 0,
    format TEXT,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER
);
CREATE INDEX sessions_started ON sessions(started_ms);
CREATE INDEX sessions_user ON sessions(user, started_ms);
CREATE INDEX sessions_target ON sessions(target, started_ms);
CREATE INDEX sessions_session ON sessions(session);
CREATE INDEX sessions_request ON sessions(request);
CREATE INDEX sessions_live ON sessions(started_ms) WHERE ended_ms IS NULL;
CREATE TABLE stats(k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE apps(rid INTEGER NOT NULL, app TEXT NOT NULL, PRIMARY KEY(rid, app)) WITHOUT ROWID;
CREATE INDEX apps_app ON apps(app, rid);
CREATE TABLE commands(
    cid INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX commands_rid ON commands(rid, at_ms);
CREATE VIRTUAL TABLE commands_fts USING fts5(
    text, content='commands', content_rowid='cid', tokenize='trigram', detail='none'
);
CREATE TRIGGER commands_ai AFTER INSERT ON commands BEGIN
    INSERT INTO commands_fts(rowid, text) VALUES (new.cid, new.text);
END;
CREATE TRIGGER commands_ad AFTER DELETE ON commands BEGIN
    INSERT INTO commands_fts(commands_fts, rowid, text) VALUES ('delete', old.cid, old.text);
END;
CREATE TABLE files(
    fid INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    direction TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    path TEXT NOT NULL
);
CREATE INDEX files_rid ON files(rid, at_ms);
CREATE VIRTUAL TABLE files_fts USING fts5(
    path, content='files', content_rowid='fid', tokenize='trigram', detail='none'
);
CREATE TRIGGER files_ai AFTER INSERT ON files BEGIN
    INSERT INTO files_fts(rowid, path) VALUES (new.fid, new.path);
END;
CREATE TRIGGER files_ad AFTER DELETE ON files BEGIN
    INSERT INTO files_fts(files_fts, rowid, path) VALUES ('delete', old.fid, old.path);
END;
";

/// Settings of every connection that writes: WAL (readers never block the writer), normal
/// sync (the recordings are the source of truth; a crash loses at most the newest updates,
/// which a rebuild restores).
pub fn tune(conn: &Connection) -> Result<(), RecordingError> {
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .map_err(index_err("cannot set the journal mode"))
}

/// Creates the tables in an empty database.
pub fn create(conn: &Connection) -> Result<(), RecordingError> {
    tune(conn)?;
    conn.execute_batch(TABLES)
        .map_err(index_err("cannot create the tables"))?;
    conn.pragma_update(None, "user_version", VERSION)
        .map_err(index_err("cannot set the schema version"))
}

/// Whether the index at `path` can be used: it opens, is of this version, and passes
/// SQLite's quick check.
pub fn check(path: &Path) -> Result<(), RecordingError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(index_err("cannot open"))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(index_err("cannot read the schema version"))?;
    if version != VERSION {
        return Err(RecordingError::IndexState(format!(
            "schema version {version}, expected {VERSION}"
        )));
    }
    let ok: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(index_err("quick check failed"))?;
    if ok != "ok" {
        return Err(RecordingError::IndexState(format!("quick check: {ok}")));
    }
    Ok(())
}

fn opt_ms(t: Option<std::time::SystemTime>) -> Option<i64> {
    t.map(|t| unix_ms(t) as i64)
}

/// Adds a session or updates what may change (end, apps).
pub fn upsert(tx: &Transaction<'_>, s: &Sidecar) -> Result<(), RecordingError> {
    let m = &s.meta;
    tx.execute(
        "INSERT INTO sessions(id, kind, user, target, login, app, session, request, command, pty, \
         format, started_ms, ended_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT(id) DO UPDATE SET ended_ms = excluded.ended_ms, app = excluded.app",
        params![
            m.id.as_str(),
            m.kind.as_str(),
            m.user,
            m.target,
            m.login,
            m.app,
            m.session,
            m.request,
            m.command,
            s.pty,
            s.format.map(|f| f.extension()),
            unix_ms(m.started_at) as i64,
            opt_ms(m.ended_at),
        ],
    )
    .map_err(index_err("cannot add a session"))?;
    if let Some(end) = m.ended_at {
        let len = unix_ms(end).saturating_sub(unix_ms(m.started_at)) as i64;
        tx.execute(
            "INSERT INTO stats(k, v) VALUES ('longest_ms', ?1) \
             ON CONFLICT(k) DO UPDATE SET v = max(v, excluded.v)",
            params![len],
        )
        .map_err(index_err("cannot update the longest session"))?;
    }
    for app in m.apps.iter().chain(m.app.iter()) {
        tx.execute(
            "INSERT OR IGNORE INTO apps(rid, app) SELECT rid, ?2 FROM sessions WHERE id = ?1",
            params![m.id.as_str(), app],
        )
        .map_err(index_err("cannot add an app"))?;
    }
    Ok(())
}

pub fn add_file(
    tx: &Transaction<'_>,
    id: &RecordingId,
    at_ms: u64,
    t: &FileTransfer,
) -> Result<(), RecordingError> {
    let protocol = match t.protocol {
        crate::audit::FileProtocol::Scp => "scp",
        crate::audit::FileProtocol::Sftp => "sftp",
    };
    let direction = match t.direction {
        crate::audit::TransferDirection::Upload => "upload",
        crate::audit::TransferDirection::Download => "download",
    };
    tx.execute(
        "INSERT INTO files(rid, at_ms, protocol, direction, bytes, path) \
         SELECT rid, ?2, ?3, ?4, ?5, ?6 FROM sessions WHERE id = ?1",
        params![
            id.as_str(),
            at_ms as i64,
            protocol,
            direction,
            i64::try_from(t.bytes).unwrap_or(i64::MAX),
            t.path
        ],
    )
    .map_err(index_err("cannot add a file"))?;
    Ok(())
}
