//! Searching the log: by user, event kind, time range, target or app, decision, incident
//! id and client address. The library API behind `gatehouse audit search` and the reviewer
//! console's audit view.
//!
//! Fast over a year of records: segments are daily files, so a time range skips whole days
//! by name; inside a segment each line is first matched as bytes (the time at a fixed
//! place, each filter's value as a substring) and only candidates are parsed as JSON.
//! Segments are searched on two threads; results come out oldest first (newest last).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use memchr::memmem::Finder;

use super::chain;
use super::record::{Decision, Record};
use crate::error::AuditError;

/// What to look for; every given filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The user (`user`, `actor` of administrative actions, a lockout's user).
    pub user: Option<String>,
    /// The event kind, e.g. `access_denied`, `login_success`.
    pub event: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// SSH target name (`target`, or an `ssh:TARGET/...` object).
    pub target: Option<String>,
    /// Web app name (`app`, or an `app:APP/...` object).
    pub app: Option<String>,
    pub decision: Option<Decision>,
    pub incident_id: Option<String>,
    /// Client address.
    pub client: Option<String>,
    /// Only the newest N matches (still returned oldest first).
    pub newest: Option<usize>,
}

/// How much a search read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    pub segments_read: usize,
    pub segments_skipped: usize,
    pub bytes_read: u64,
    pub matched: u64,
}

/// Parses a time given on the command line: RFC 3339 (`2026-03-01T12:00:00Z`, with an
/// offset, or a bare date `2026-03-01` meaning its midnight UTC), or a duration back from
/// `now_ms` (`24h`, `90d`, `15m`). Unix milliseconds.
pub fn parse_when(text: &str, now_ms: u64) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(d) = humantime::parse_duration(t) {
        return Ok(now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    }
    let bad = || {
        format!(
            "`{text}` is not an RFC 3339 time (2026-03-01T12:00:00Z) or a duration back from now (24h, 90d)"
        )
    };
    if t.len() == 10 {
        // humantime validates the calendar (no month 13, no February 30).
        let st = humantime::parse_rfc3339(&format!("{t}T00:00:00Z")).map_err(|_| bad())?;
        let ms = st
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| bad())?
            .as_millis();
        return u64::try_from(ms).map_err(|_| bad());
    }
    // An offset (`+02:00`) is applied by hand: humantime reads UTC only.
    let (base, offset_secs) = match t
        .len()
        .checked_sub(6)
        .and_then(|i| t.get(i..).map(|s| (i, s)))
    {
        Some((i, off))
            if (off.starts_with('+') || off.starts_with('-'))
                && off.as_bytes().get(3) == Some(&b':') =>
        {
            let h: i64 = off.get(1..3).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            let m: i64 = off.get(4..6).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            let sign = if off.starts_with('-') { -1 } else { 1 };
            (t.get(..i).unwrap_or_default(), sign * (h * 3600 + m * 60))
        }
        _ => (t.trim_end_matches(['Z', 'z']), 0),
    };
    let st = humantime::parse_rfc3339_weak(base).map_err(|_| bad())?;
    let ms = st
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_millis();
    let ms = i64::try_from(ms).map_err(|_| bad())? - offset_secs * 1000;
    u64::try_from(ms).map_err(|_| bad())
}

/// A query with its byte-level pre-filters built once.
struct Matcher<'q> {
    q: &'q Query,
    since: Option<String>,
    until: Option<String>,
    needles: Vec<Finder<'static>>,
}

impl<'q> Matcher<'q> {
    fn new(q: &'q Query) -> Matcher<'q> {
        let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut needles: Vec<String> = Vec::new();
        if let Some(u) = &q.user {
            needles.push(json(u));
        }
        if let Some(e) = &q.event {
            needles.push(format!("\"event\":{}", json(e)));
        }
        if let Some(i) = &q.incident_id {
            needles.push(json(i));
        }
        for v in [&q.target, &q.app, &q.client].into_iter().flatten() {
            let j = json(v);
            needles.push(
                j.get(1..j.len().saturating_sub(1))
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        Matcher {
            q,
            since: q.since_ms.map(|ms| chain::timestamp(ms).0),
            until: q.until_ms.map(|ms| chain::timestamp(ms).0),
            needles: needles
                .into_iter()
                .map(|n| Finder::new(n.as_bytes()).into_owned())
                .collect(),
        }
    }

    /// Whether a segment of `date` can hold a match.
    fn date_in_range(&self, date: &str) -> bool {
        let day = |ts: &Option<String>| ts.as_deref().and_then(chain::date_of_ts);
        day(&self.since).is_none_or(|d| date >= d.as_str())
            && day(&self.until).is_none_or(|d| date <= d.as_str())
    }

    /// The byte-level test; `Some(false)` past `until` (the rest of the segment is later).
    fn candidate(&self, line: &[u8]) -> Option<bool> {
        if self.since.is_some() || self.until.is_some() {
            let ts = ts_of(line)?;
            if self.since.as_deref().is_some_and(|s| ts < s.as_bytes()) {
                return Some(false);
            }
            if self.until.as_deref().is_some_and(|u| ts > u.as_bytes()) {
                return None;
            }
        }
        Some(self.needles.iter().all(|f| f.find(line).is_some()))
    }

    /// The exact test on a parsed record.
    fn matches(&self, r: &Record) -> bool {
        let q = self.q;
        q.user.as_deref().is_none_or(|u| r.user() == Some(u))
            && q.event.as_deref().is_none_or(|e| r.kind() == e)
            && q.incident_id
                .as_deref()
                .is_none_or(|i| r.incident_id() == Some(i))
            && q.target.as_deref().is_none_or(|t| r.is_target(t))
            && q.app.as_deref().is_none_or(|a| r.is_app(a))
            && q.decision.is_none_or(|d| r.decision() == Some(d))
            && q.client
                .as_deref()
                .is_none_or(|c| r.client().as_deref() == Some(c))
    }

    /// The matches of one segment, oldest first.
    fn segment(&self, path: &Path) -> Result<(Vec<Record>, u64), AuditError> {
        let text = std::fs::read(path).map_err(|source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut out = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            match self.candidate(line) {
                None => break,
                Some(false) => continue,
                Some(true) => {}
            }
            // A torn or edited line is not a record: search skips it (verify reports it).
            let Some(r) = std::str::from_utf8(line).ok().and_then(Record::parse) else {
                continue;
            };
            if self.matches(&r) {
                out.push(r);
            }
        }
        Ok((out, text.len() as u64))
    }
}

/// The `ts` value of a line (`{"seq":N,"ts":"...",`), as bytes.
fn ts_of(line: &[u8]) -> Option<&[u8]> {
    let head = line.get(..48.min(line.len()))?;
    let at = memchr::memmem::find(head, b",\"ts\":\"")? + 7;
    line.get(at..at + 24)
}

/// Threads searching segments at once.
const THREADS: usize = 2;

/// Calls `emit` with every record of the log in `dir` matching `q`, oldest first, until it
/// breaks. With `q.newest`, only the newest N are emitted (oldest of them first).
pub fn search(
    dir: &Path,
    q: &Query,
    mut emit: impl FnMut(Record) -> ControlFlow<()>,
) -> Result<SearchStats, AuditError> {
    let m = Matcher::new(q);
    let mut stats = SearchStats::default();
    let mut segs: Vec<PathBuf> = Vec::new();
    for p in chain::segments(dir).map_err(|source| AuditError::Io {
        path: dir.to_path_buf(),
        source,
    })? {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if chain::segment_date(&name).is_some_and(|d| m.date_in_range(d)) {
            segs.push(p);
        } else {
            stats.segments_skipped += 1;
        }
    }
    let mut newest: std::collections::VecDeque<Record> = std::collections::VecDeque::new();
    let mut stop = false;
    // Segments are searched ahead on worker threads and delivered in order; at most a few
    // segments' matches wait in memory (the channel is bounded).
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<(), AuditError> {
        let (tx, rx) = mpsc::sync_channel::<(usize, SegmentResult)>(THREADS);
        for _ in 0..THREADS.min(segs.len()) {
            let tx = tx.clone();
            let (segs, m, next) = (&segs, &m, &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = segs.get(i) else { return };
                    // A receiver gone (the caller stopped, or an error) ends the worker.
                    if tx.send((i, m.segment(p))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = std::collections::BTreeMap::new();
        let mut want = 0;
        for (i, r) in rx {
            pending.insert(i, r);
            while let Some(r) = pending.remove(&want) {
                want += 1;
                let (batch, bytes) = r?;
                stats.segments_read += 1;
                stats.bytes_read += bytes;
                for r in batch {
                    stats.matched += 1;
                    match q.newest {
                        Some(0) => {}
                        Some(n) => {
                            if newest.len() == n {
                                newest.pop_front();
                            }
                            newest.push_back(r);
                        }
                        None => {
                            if emit(r).is_break() {
                                stop = true;
                                break;
                            }
                        }
                    }
                }
                if stop {
                    return Ok(());
                }
            }
        }
        Ok(())
    })?;
    for r in newest {
        if emit(r).is_break() {
            break;
        }
    }
    Ok(stats)
}

type SegmentResult = Result<(Vec<Record>, u64), AuditError>;

/// Every match of `q`, oldest first (the newest `q.newest` when set).
pub fn search_all(dir: &Path, q: &Query) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    search(dir, q, |r| {
        out.push(r);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests;
