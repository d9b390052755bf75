//! Searching the index: the query type of `gatehouse recordings list` and of the reviewer
//! console's session list, and the per-session timelines (commands, files).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::ToSql;
use rusqlite::{Connection, Row, params};
use serde::Serialize;

use super::{CommandSource, RecordingIndex, index_err};
use crate::audit::{FileProtocol, TransferDirection};
use crate::recording::cast::FileTransfer;
use crate::recording::{RecordingError, RecordingId, RecordingKind, RecordingMeta, unix_ms};

/// What to look for; every given filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub user: Option<String>,
    /// SSH target name.
    pub target: Option<String>,
    /// Web app name (any app the web session used).
    pub app: Option<String>,
    /// Sessions still running at or after this time.
    pub since: Option<SystemTime>,
    /// Sessions started at or before this time.
    pub until: Option<SystemTime>,
    /// A command containing this text (case-insensitive) was typed or executed.
    pub command: Option<String>,
    /// A file whose path contains this text (case-insensitive) was transferred (for legacy
    /// SCP also: the path in its exec command).
    pub file: Option<String>,
    pub kind: Option<RecordingKind>,
    /// The SSH connection's session id or the web session's id hash.
    pub session: Option<String>,
    /// Only sessions still live (no end yet).
    pub live: bool,
    /// At most this many (the newest), still returned oldest first.
    pub limit: Option<usize>,
}

/// Parses a time given on a command line or in a console filter: RFC 3339
/// (`2026-03-01T12:00:00Z`, with an offset, or a bare date meaning its midnight UTC) or a
/// duration back from `now` (`24h`, `90d`, `15m`).
pub fn parse_when(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    // One parser for every time filter (audit search and recordings alike).
    let now_ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    crate::audit::search::parse_when(text, now_ms)
        .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms))
}

/// A command of a session, for the console's clickable timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandEntry {
    /// Seconds from the start of the recording.
    pub time: f64,
    pub source: &'static str,
    pub text: String,
}

/// A file transfer of a session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileEntry {
    pub time: f64,
    #[serde(flatten)]
    pub transfer: FileTransfer,
}

fn ms(t: SystemTime) -> i64 {
    unix_ms(t) as i64
}

fn time_of(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// An FTS5 query for rows holding trigrams that cover `text` (every third one, and the
/// last): a superset of the rows containing it, confirmed by a substring test. Fewer terms
/// than every trigram: each costs a posting list, and common ones are long.
fn trigrams(text: &str) -> String {
    let chars: Vec<char> = text.to_lowercase().chars().collect();
    let n = chars.len().saturating_sub(2);
    let mut starts: Vec<usize> = (0..n).step_by(3).collect();
    if n > 0 && starts.last() != Some(&(n - 1)) {
        starts.push(n - 1);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut terms = Vec::new();
    for i in starts {
        let t: String = chars.iter().skip(i).take(3).collect();
        if seen.insert(t.clone()) {
            terms.push(format!("\"{}\"", t.replace('"', "\"\"")));
        }
    }
    terms.join(" AND ")
}

/// The rids of sessions with a row of `table` whose `col` contains `text` (case-insensitive).
fn contains_rids(table: &str, col: &str, text: &str, args: &mut Vec<Box<dyn ToSql>>) -> String {
    args.push(Box::new(text.to_lowercase()));
    let needle = args.len();
    if text.chars().count() >= 3 {
        args.push(Box::new(trigrams(text)));
        format!(
            "SELECT t.rid FROM {table} t WHERE t.rowid IN \
             (SELECT rowid FROM {table}_fts WHERE {table}_fts MATCH ?{}) \
             AND instr(lower(t.{col}), ?{needle}) > 0",
            args.len()
        )
    } else {
        format!("SELECT t.rid FROM {table} t WHERE instr(lower(t.{col}), ?{needle}) > 0")
    }
}

fn meta_of(row: &Row<'_>) -> rusqlite::Result<Option<RecordingMeta>> {
    let id: String = row.get(0)?;
    let kind: String = row.get(1)?;
    let Ok(id) = RecordingId::parse(&id) else {
        return Ok(None);
    };
    let kind = match kind.as_str() {
        "web" => RecordingKind::Web,
        _ => RecordingKind::Ssh,
    };
    let apps: Option<String> = row.get(11)?;
    Ok(Some(RecordingMeta {
        id,
        kind,
        user: row.get(2)?,
        target: row.get(3)?,
        app: row.get(5)?,
        started_at: time_of(row.get(9)?),
        ended_at: row.get::<_, Option<i64>>(10)?.map(time_of),
        login: row.get(4)?,
        session: row.get(6)?,
        request: row.get(7)?,
        command: row.get(8)?,
        apps: apps
            .map(|a| a.split('\u{1f}').map(str::to_string).collect())
            .unwrap_or_default(),
    }))
}

const COLUMNS: &str = "s.id, s.kind, s.user, s.target, s.login, s.app, s.session, s.request, \
    s.command, s.started_ms, s.ended_ms, \
    (SELECT group_concat(a.app, char(31)) FROM apps a WHERE a.rid = s.rid)";

impl RecordingIndex {
    /// The sessions matching `q`, oldest first.
    pub fn search(&self, q: &Query) -> Result<Vec<RecordingMeta>, RecordingError> {
        search_on(&self.read()?, q)
    }

    /// One session.
    pub fn get(&self, id: &RecordingId) -> Result<Option<RecordingMeta>, RecordingError> {
        let conn = self.read()?;
        let sql = format!("SELECT {COLUMNS} FROM sessions s WHERE s.id = ?1");
        let mut st = conn.prepare(&sql).map_err(index_err("cannot prepare"))?;
        let mut rows = st
            .query(params![id.as_str()])
            .map_err(index_err("cannot query"))?;
        match rows.next().map_err(index_err("cannot read a row"))? {
            Some(r) => meta_of(r).map_err(index_err("cannot read a row")),
            None => Ok(None),
        }
    }

    /// The commands of a session, in order.
    pub fn commands(&self, id: &RecordingId) -> Result<Vec<CommandEntry>, RecordingError> {
        let conn = self.read()?;
        let mut st = conn
            .prepare(
                "SELECT c.at_ms, c.source, c.text FROM commands c JOIN sessions s ON s.rid = c.rid \
                 WHERE s.id = ?1 ORDER BY c.at_ms, c.cid",
            )
            .map_err(index_err("cannot prepare"))?;
        let rows = st
            .query_map(params![id.as_str()], |r| {
                let source: String = r.get(1)?;
                Ok(CommandEntry {
                    time: r.get::<_, i64>(0)? as f64 / 1000.0,
                    source: CommandSource::parse(&source).as_str(),
                    text: r.get(2)?,
                })
            })
            .map_err(index_err("cannot query"))?;
        rows.collect::<Result<_, _>>()
            .map_err(index_err("cannot read a row"))
    }

    /// The file transfers of a session, in order.
    pub fn files(&self, id: &RecordingId) -> Result<Vec<FileEntry>, RecordingError> {
        let conn = self.read()?;
        let mut st = conn
            .prepare(
                "SELECT f.at_ms, f.protocol, f.direction, f.bytes, f.path FROM files f \
                 JOIN sessions s ON s.rid = f.rid WHERE s.id = ?1 ORDER BY f.at_ms, f.fid",
            )
            .map_err(index_err("cannot prepare"))?;
        let rows = st
            .query_map(params![id.as_str()], |r| {
                let protocol: String = r.get(1)?;
                let direction: String = r.get(2)?;
                Ok(FileEntry {
                    time: r.get::<_, i64>(0)? as f64 / 1000.0,
                    transfer: FileTransfer {
                        protocol: if protocol == "scp" {
                            FileProtocol::Scp
                        } else {
                            FileProtocol::Sftp
                        },
                        direction: if direction == "upload" {
                            TransferDirection::Upload
                        } else {
                            TransferDirection::Download
                        },
                        bytes: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        path: r.get(4)?,
                    },
                })
            })
            .map_err(index_err("cannot query"))?;
        rows.collect::<Result<_, _>>()
            .map_err(index_err("cannot read a row"))
    }
}

/// Sessions narrower than this (by user, target, time...) are checked command by command
/// instead of through the trigram index, which is faster when the text is common.
const SCAN_BELOW: i64 = 20_000;

struct Sql {
    clauses: Vec<String>,
    args: Vec<Box<dyn ToSql>>,
}

impl Sql {
    fn arg(&mut self, v: impl ToSql + 'static) -> usize {
        self.args.push(Box::new(v));
        self.args.len()
    }

    fn filter(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn refs(&self) -> Vec<&dyn ToSql> {
        self.args.iter().map(|a| a.as_ref()).collect()
    }
}

/// The filters on the sessions themselves; `live`: the live part of a `since` search.
fn base(conn: &Connection, q: &Query, live: bool) -> Result<Sql, RecordingError> {
    let mut sql = Sql {
        clauses: Vec::new(),
        args: Vec::new(),
    };
    for (col, v) in [
        ("s.user", &q.user),
        ("s.target", &q.target),
        ("s.session", &q.session),
    ] {
        if let Some(v) = v {
            let i = sql.arg(v.clone());
            sql.clauses.push(format!("{col} = ?{i}"));
        }
    }
    if let Some(k) = q.kind {
        let i = sql.arg(k.as_str());
        sql.clauses.push(format!("s.kind = ?{i}"));
    }
    if let Some(app) = &q.app {
        let i = sql.arg(app.clone());
        sql.clauses.push(format!(
            "s.rid IN (SELECT a.rid FROM apps a WHERE a.app = ?{i})"
        ));
    }
    if let Some(t) = q.until {
        let i = sql.arg(ms(t));
        sql.clauses.push(format!("s.started_ms <= ?{i}"));
    }
    if live || q.live {
        sql.clauses.push("s.ended_ms IS NULL".into());
    } else if let Some(t) = q.since {
        // A session that ended after `since` started at most the longest session's length
        // before it: a range of the start index, not a scan.
        let longest: i64 = conn
            .query_row("SELECT v FROM stats WHERE k = 'longest_ms'", [], |r| {
                r.get(0)
            })
            .unwrap_or(0);
        let lo = sql.arg(ms(t).saturating_sub(longest));
        let since = sql.arg(ms(t));
        sql.clauses
            .push(format!("s.started_ms >= ?{lo} AND s.ended_ms >= ?{since}"));
    }
    Ok(sql)
}

/// Adds the command and file filters: through the trigram index, or session by session
/// when the other filters leave few sessions.
fn text_filters(conn: &Connection, q: &Query, sql: &mut Sql) -> Result<(), RecordingError> {
    if q.command.is_none() && q.file.is_none() {
        return Ok(());
    }
    let count: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM sessions s {}", sql.filter()),
            sql.refs().as_slice(),
            |r| r.get(0),
        )
        .map_err(index_err("cannot count sessions"))?;
    let scan = count < SCAN_BELOW && !sql.clauses.is_empty();
    if let Some(c) = &q.command {
        if scan {
            let i = sql.arg(c.to_lowercase());
            sql.clauses.push(format!(
                "EXISTS (SELECT 1 FROM commands c WHERE c.rid = s.rid AND instr(lower(c.text), ?{i}) > 0)"
            ));
        } else {
            let rids = contains_rids("commands", "text", c, &mut sql.args);
            sql.clauses.push(format!("s.rid IN ({rids})"));
        }
    }
    if let Some(f) = &q.file {
        // Legacy SCP names the file by its source name in the protocol and by its place on
        // the target in the exec command (`scp -t /srv/x.csv`): both count.
        let rids = contains_rids("files", "path", f, &mut sql.args);
        let i = sql.arg(f.to_lowercase());
        sql.clauses.push(format!(
            "s.rid IN ({rids} UNION SELECT rid FROM sessions WHERE request = 'scp' \
             AND instr(lower(command), ?{i}) > 0)"
        ));
    }
    Ok(())
}

fn run(
    conn: &Connection,
    q: &Query,
    live: bool,
) -> Result<Vec<(i64, i64, RecordingMeta)>, RecordingError> {
    let mut sql = base(conn, q, live)?;
    text_filters(conn, q, &mut sql)?;
    let limit = q.limit.map(|n| format!("LIMIT {n}")).unwrap_or_default();
    let text = format!(
        "SELECT {COLUMNS}, s.rid FROM sessions s {} ORDER BY s.started_ms DESC, s.rid DESC {limit}",
        sql.filter()
    );
    let mut st = conn
        .prepare(&text)
        .map_err(index_err("cannot prepare a search"))?;
    let rows = st
        .query_map(sql.refs().as_slice(), |r| {
            Ok((r.get::<_, i64>(9)?, r.get::<_, i64>(12)?, meta_of(r)?))
        })
        .map_err(index_err("cannot search"))?;
    let mut out = Vec::new();
    for r in rows {
        let (started, rid, meta) = r.map_err(index_err("cannot read a row"))?;
        if let Some(m) = meta {
            out.push((started, rid, m));
        }
    }
    Ok(out)
}

pub(super) fn search_on(
    conn: &Connection,
    q: &Query,
) -> Result<Vec<RecordingMeta>, RecordingError> {
    let mut found = run(conn, q, false)?;
    if q.since.is_some() && !q.live {
        // Sessions still live at `since` or after, whenever they started.
        found.extend(run(conn, q, true)?);
        found.sort_by_key(|f| std::cmp::Reverse((f.0, f.1)));
        found.dedup_by_key(|f| f.1);
    }
    if let Some(n) = q.limit {
        found.truncate(n);
    }
    // Oldest first.
    found.reverse();
    Ok(found.into_iter().map(|(_, _, m)| m).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_back() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at =
            |s: &str| parse_when(s, now).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(at("24h"), Ok(1_800_000_000 - 86_400));
        assert_eq!(at("90d"), Ok(1_800_000_000 - 90 * 86_400));
        assert_eq!(at("2026-03-01T12:00:00Z"), Ok(1_772_366_400));
        assert_eq!(at("2026-03-01T14:00:00+02:00"), Ok(1_772_366_400));
        assert_eq!(at("2026-03-01T10:00:00-02:00"), Ok(1_772_366_400));
        assert_eq!(at("2026-03-01"), Ok(1_772_323_200));
        for bad in ["yesterday", "", "2026-13-01", "12:00"] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }
}
