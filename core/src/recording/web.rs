//! Web sessions as recordings. The per-request facts (time, user, method, app, path,
//! decision, request id) are already in the audit log, written once per request on the
//! gateway's hot path; a web session's recording is a view over those records, found by the
//! session's id hash. What the recordings directory keeps of a web session is its entry:
//! who, which apps, when it started and ended — a metadata file and an index row, written
//! at the session's start, at its first request to each app, and at its end.
//!
//! The gateway calls [`Recordings::web_session_started`] when a session is created (login,
//! SSO callback, handoff to an app host), keeps the returned id with the session, calls
//! [`Recordings::web_app_used`] the first time the session reaches an app (beside the
//! signed identity assertion it already caches per session and app), and
//! [`Recordings::web_session_ended`] at logout, expiry or revocation.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::index::Op;
use super::sidecar::Sidecar;
use super::store::Recordings;
use super::{RecordingError, RecordingId, RecordingKind, RecordingMeta};

/// One request of a web session, as `recordings export` writes it (JSON lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebRequest {
    /// RFC 3339, as in the audit record.
    pub time: String,
    pub method: String,
    /// The app's host (from the configuration), when known.
    pub host: Option<String>,
    pub app: String,
    /// The normalised path the policy saw.
    pub path: String,
    /// `null` while the gateway's audit record does not carry it.
    pub status: Option<u16>,
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
    /// `allow` or `deny`.
    pub decision: String,
    pub request_id: Option<String>,
    /// The deciding policy line.
    pub rule: Option<String>,
    /// Set on a denial (an alert).
    pub incident_id: Option<String>,
    /// Sequence number of the audit record.
    pub seq: u64,
}

#[derive(Deserialize)]
struct AuditLine {
    seq: u64,
    ts: String,
    event: AuditFields,
}

#[derive(Deserialize)]
struct AuditFields {
    event: String,
    #[serde(default)]
    object: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    incident_id: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    answers: Vec<crate::audit::Answer>,
}

/// The requests of web session `session_hash` among audit record lines, in log order.
/// `hosts` maps app names to their hosts.
pub fn web_timeline<I, S>(
    lines: I,
    session_hash: &str,
    hosts: &HashMap<String, String>,
) -> Vec<WebRequest>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = Vec::new();
    if session_hash.is_empty() {
        return out;
    }
    for line in lines {
        let line = line.as_ref();
        // Most records are another session's: a substring test before any parsing.
        if !line.contains(session_hash) {
            continue;
        }
        let Ok(rec) = serde_json::from_str::<AuditLine>(line) else {
            continue;
        };
        let e = rec.event;
        if e.session.as_deref() != Some(session_hash) {
            continue;
        }
        let decision = match e.event.as_str() {
            "access_allowed" => "allow",
            "access_denied" => "deny",
            "request_completed" => {
                if let Some(id) = e.request_id.as_deref() {
                    complete(&mut out, id, e.status, e.bytes, e.duration_ms);
                }
                continue;
            }
            "requests_completed" => {
                for a in &e.answers {
                    complete(
                        &mut out,
                        &a.request_id,
                        Some(a.status),
                        Some(a.bytes),
                        Some(a.duration_ms),
                    );
                }
                continue;
            }
            _ => continue,
        };
        let Some(rest) = e.object.strip_prefix("app:") else {
            continue;
        };
        let (app, path) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or(rest), rest.get(i..).unwrap_or("/")),
            None => (rest, "/"),
        };
        out.push(WebRequest {
            time: rec.ts,
            method: e.action,
            host: hosts.get(app).cloned(),
            app: app.to_string(),
            path: path.to_string(),
            // A policy deny is always answered 403; an allowed request's answer is in its
            // `request_completed` record, further on.
            status: if decision == "deny" {
                Some(403)
            } else {
                e.status
            },
            bytes: e.bytes,
            duration_ms: e.duration_ms,
            decision: decision.to_string(),
            request_id: e.request_id,
            rule: e.rule,
            incident_id: e.incident_id,
            seq: rec.seq,
        });
    }
    out
}

/// Fills in the answer of request `id` (the newest allowed request of the session with that
/// request id) from a `requests_completed` (or an older `request_completed`) record.
fn complete(
    out: &mut [WebRequest],
    id: &str,
    status: Option<u16>,
    bytes: Option<u64>,
    duration_ms: Option<u64>,
) {
    if let Some(r) = out
        .iter_mut()
        .rev()
        .find(|r| r.decision == "allow" && r.request_id.as_deref() == Some(id))
    {
        r.status = status;
        r.bytes = bytes;
        r.duration_ms = duration_ms;
    }
}

/// The requests of a web session from the audit log in `audit_dir`: the daily segments
/// (`audit-YYYYMMDD.jsonl`) from its start to its end (or today), read line by line.
pub fn web_timeline_from_log(
    audit_dir: &Path,
    meta: &RecordingMeta,
    hosts: &HashMap<String, String>,
) -> Result<Vec<WebRequest>, RecordingError> {
    let Some(hash) = meta.session.as_deref() else {
        return Ok(Vec::new());
    };
    let day = |t: SystemTime| {
        super::format_time(t)
            .get(..10)
            .unwrap_or("")
            .replace('-', "")
    };
    let first = day(meta.started_at);
    let last = day(meta.ended_at.unwrap_or_else(SystemTime::now));
    let rd = std::fs::read_dir(audit_dir).map_err(|source| RecordingError::Open {
        path: audit_dir.to_path_buf(),
        source,
    })?;
    let mut segments: Vec<_> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let date = name
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .to_string();
            (date.len() == 8 && date >= first && date <= last).then(|| (date, e.path()))
        })
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for (_, path) in segments {
        let f = std::fs::File::open(&path).map_err(|source| RecordingError::Open {
            path: path.clone(),
            source,
        })?;
        let lines = std::io::BufReader::new(f).lines().map_while(Result::ok);
        out.extend(web_timeline(lines, hash, hosts));
    }
    Ok(out)
}

impl Recordings {
    fn web_update(
        &self,
        id: &RecordingId,
        f: impl FnOnce(&mut RecordingMeta) -> bool,
    ) -> Result<Option<Sidecar>, RecordingError> {
        let _guard = self.web_lock();
        let mut s = match Sidecar::read(self.dir(), id) {
            Ok(s) => s,
            Err(RecordingError::Sidecar { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(RecordingError::NotFound(id.to_string()));
            }
            Err(e) => return Err(e),
        };
        if s.meta.kind != RecordingKind::Web {
            return Err(RecordingError::NotFound(id.to_string()));
        }
        if !f(&mut s.meta) {
            return Ok(None);
        }
        s.write(self.dir())?;
        Ok(Some(s))
    }

    /// A web session started: its entry (metadata file, index row). Its id is
    /// [`RecordingId::for_web_session`] of the session's hash. An error must refuse the
    /// session (it would run unrecorded).
    pub async fn web_session_started(
        &self,
        user: &str,
        session_hash: &str,
    ) -> Result<RecordingId, RecordingError> {
        let id = RecordingId::for_web_session(session_hash);
        let mut meta = RecordingMeta::web(id.clone(), user, "");
        meta.app = None;
        meta.apps.clear();
        meta.session = Some(session_hash.to_string());
        meta.request = Some("web".to_string());
        let s = Sidecar {
            meta,
            format: None,
            pty: false,
            cut: false,
        };
        let dir = self.dir().to_path_buf();
        let w = s.clone();
        tokio::task::spawn_blocking(move || w.write(&dir))
            .await
            .map_err(|_| RecordingError::Closed)??;
        if let Some(index) = self.index_writer() {
            index.send(Op::Upsert(Box::new(s))).await;
        }
        Ok(id)
    }

    /// The session reached `app` (call once per session and app; repeats are ignored).
    pub async fn web_app_used(&self, id: &RecordingId, app: &str) -> Result<(), RecordingError> {
        let this = self.clone();
        let (id2, app2) = (id.clone(), app.to_string());
        let updated = tokio::task::spawn_blocking(move || {
            this.web_update(&id2, |m| {
                if m.apps.iter().any(|a| a == &app2) {
                    return false;
                }
                m.apps.push(app2.clone());
                m.app.get_or_insert(app2);
                true
            })
        })
        .await
        .map_err(|_| RecordingError::Closed)??;
        if let (Some(s), Some(index)) = (updated, self.index_writer()) {
            index.send(Op::Upsert(Box::new(s))).await;
        }
        Ok(())
    }

    /// The web sessions whose recording has no end yet (as the index has them).
    pub fn web_sessions_live(&self) -> Result<Vec<RecordingMeta>, RecordingError> {
        self.index().search(&super::index::Query {
            kind: Some(RecordingKind::Web),
            live: true,
            ..Default::default()
        })
    }

    /// The session ended (logout, expiry, revocation).
    pub async fn web_session_ended(&self, id: &RecordingId) -> Result<(), RecordingError> {
        let this = self.clone();
        let id2 = id.clone();
        let updated = tokio::task::spawn_blocking(move || {
            this.web_update(&id2, |m| {
                if m.ended_at.is_some() {
                    return false;
                }
                m.ended_at = Some(SystemTime::now());
                true
            })
        })
        .await
        .map_err(|_| RecordingError::Closed)??;
        if let (Some(s), Some(index)) = (updated, self.index_writer()) {
            index.send(Op::Upsert(Box::new(s))).await;
        }
        Ok(())
    }
}
