//! A session's page: its summary, the player (SSH) or the live terminal, the form that ends
//! it, its commands as a timeline, its file transfers, its HTTP requests (web) and its audit
//! records. Every value from a recording, the index or the audit log is escaped.

use std::fmt::Write as _;
use std::time::SystemTime;

use http::{Response, StatusCode};

use gatehouse_core::audit::search::{Query as AuditQuery, search};
use gatehouse_core::audit::{Record, parse_timestamp};
use gatehouse_core::recording::{
    CommandEntry, FileEntry, RecordingId, RecordingKind, RecordingMeta, WebRequest, unix_ms,
    web_timeline_from_log,
};

use super::pages::{length, place, what, when};
use super::{REVIEW_PATH, Reviewer, audited, page};
use crate::body::ResBody;
use crate::pages::escape;
use crate::request_id::RequestId;
use crate::respond;
use crate::state::State;
use crate::web::csrf::purpose;

/// Audit records a session page shows at most.
const AUDIT_LIMIT: usize = 500;

/// What a session page shows besides its metadata.
struct Details {
    meta: RecordingMeta,
    commands: Vec<CommandEntry>,
    files: Vec<FileEntry>,
    requests: Vec<WebRequest>,
    audit: Vec<Record>,
    /// Seconds from the start to the end (or now).
    duration: f64,
}

/// Where a session page reads from (owned: it is read on a blocking thread).
struct Sources {
    rec: gatehouse_core::recording::Recordings,
    audit_dir: std::path::PathBuf,
    hosts: std::collections::HashMap<String, String>,
}

fn load(src: &Sources, id: &RecordingId) -> Result<Option<Details>, String> {
    let rec = &src.rec;
    let err = |e: gatehouse_core::recording::RecordingError| gatehouse_core::error_chain(&e);
    let meta = match rec.index().get(id).map_err(err)? {
        Some(m) => m,
        None => match rec.meta(id) {
            Ok(s) => s.meta,
            Err(gatehouse_core::recording::RecordingError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        },
    };
    let commands = rec.index().commands(id).map_err(err)?;
    let files = rec.index().files(id).map_err(err)?;
    let requests = if meta.kind == RecordingKind::Web {
        web_timeline_from_log(&src.audit_dir, &meta, &src.hosts).map_err(err)?
    } else {
        Vec::new()
    };
    let end = meta.ended_at.unwrap_or_else(SystemTime::now);
    let duration = end
        .duration_since(meta.started_at)
        .map_or(0.0, |d| d.as_secs_f64());
    let audit = session_audit(&src.audit_dir, &meta, end)?;
    Ok(Some(Details {
        meta,
        commands,
        files,
        requests,
        audit,
        duration,
    }))
}

/// The audit records of a session: the user's records from its start to its end that name
/// its session id or its recording.
fn session_audit(
    dir: &std::path::Path,
    meta: &RecordingMeta,
    end: SystemTime,
) -> Result<Vec<Record>, String> {
    let q = AuditQuery {
        user: Some(meta.user.clone()),
        since_ms: Some(unix_ms(meta.started_at).saturating_sub(60_000)),
        until_ms: Some(unix_ms(end).saturating_add(60_000)),
        ..AuditQuery::default()
    };
    let id = meta.id.as_str();
    let mut out = Vec::new();
    search(dir, &q, |r| {
        let s = |k: &str| r.event.get(k).and_then(|v| v.as_str());
        let ours = s("recording_id") == Some(id)
            || (meta.session.is_some() && s("session") == meta.session.as_deref());
        if ours {
            out.push(r);
        }
        if out.len() >= AUDIT_LIMIT {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .map_err(|e| gatehouse_core::error_chain(&e))?;
    Ok(out)
}

/// GET `/.gatehouse/review/s/<id>`.
pub(super) async fn page_of(
    state: &State,
    reviewer: &Reviewer,
    rec: &RecordingId,
    id: RequestId,
) -> Response<ResBody> {
    if let Err(resp) = audited(state, reviewer, "open", Some(rec), None, id).await {
        return resp;
    }
    let src = Sources {
        rec: state.services.recordings.clone(),
        audit_dir: state.review.audit_dir.clone(),
        hosts: state.review.hosts.clone(),
    };
    let rid = rec.clone();
    let loaded = tokio::task::spawn_blocking(move || load(&src, &rid))
        .await
        .unwrap_or_else(|_| Err("the read was cut short".to_string()));
    let d = match loaded {
        Ok(Some(d)) => d,
        Ok(None) => return respond::error(StatusCode::NOT_FOUND, id, false),
        Err(e) => {
            tracing::error!(request_id = %id, error = %e, "review: cannot load a session");
            return respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false);
        }
    };
    let m = &d.meta;
    let live = m.ended_at.is_none();
    let mut body = summary(&d);
    let watchable = live
        && m.kind == RecordingKind::Ssh
        && state.services.recordings.live().feed(rec).is_some();
    if watchable {
        let _ = write!(
            body,
            "<section class=\"player\" id=\"live\" data-live=\"{REVIEW_PATH}/s/{rec}/live\">\n\
             <h2>Live terminal <span class=\"badge\">live</span></h2>\n\
             <pre class=\"screen\" id=\"live-screen\" aria-label=\"Live terminal\">Connecting…</pre>\n\
             <p class=\"muted\" id=\"live-status\">Watching as it happens.</p>\n</section>\n"
        );
    }
    if m.kind == RecordingKind::Ssh && !watchable {
        body.push_str(&player(rec, d.duration));
    }
    if live {
        body.push_str(&terminate_form(state, reviewer, rec));
    }
    body.push_str(&commands(
        &d.commands,
        m.kind == RecordingKind::Ssh && !watchable,
    ));
    body.push_str(&files(&d.files));
    if m.kind == RecordingKind::Web {
        body.push_str(&requests(&d.requests));
    }
    body.push_str(&audit_table(&d.audit));
    let _ = writeln!(
        body,
        "<script src=\"{REVIEW_PATH}/static/player.js\"></script>\n"
    );
    let title = format!("{} session of {}", m.kind.as_str().to_uppercase(), m.user);
    page(StatusCode::OK, &title, &body)
}

fn summary(d: &Details) -> String {
    let m = &d.meta;
    let mut rows = vec![
        ("User", m.user.clone()),
        ("Where", place(m)),
        ("Started", when(m.started_at)),
        ("Ended", m.ended_at.map_or_else(|| "live".to_string(), when)),
        ("Length", length(d.duration as u64)),
    ];
    let w = what(m);
    if !w.is_empty() {
        rows.push(("Request", w));
    }
    if let Some(s) = &m.session {
        rows.push(("Session", s.clone()));
    }
    rows.push(("Recording", m.id.to_string()));
    let mut s = String::from("<dl class=\"summary\">");
    for (k, v) in rows {
        let _ = writeln!(s, "<div><dt>{k}</dt><dd>{}</dd></div>", escape(&v));
    }
    let _ = write!(
        s,
        "</dl>\n<p><a class=\"button small\" href=\"{REVIEW_PATH}/s/{}/export\">Export for an outside auditor</a></p>\n",
        m.id
    );
    s
}

fn player(rec: &RecordingId, duration: f64) -> String {
    format!(
        "<section class=\"player\" id=\"player\" data-frames=\"{REVIEW_PATH}/s/{rec}/frames\" data-duration=\"{duration:.3}\">\n\
         <h2>Replay</h2>\n\
         <pre class=\"screen\" id=\"screen\" aria-label=\"Terminal\"></pre>\n\
         <div class=\"controls\">\n\
         <button type=\"button\" id=\"play\">Play</button>\n\
         <input type=\"range\" id=\"seek\" min=\"0\" max=\"{duration:.3}\" step=\"0.1\" value=\"0\" aria-label=\"Position\">\n\
         <span id=\"clock\" class=\"clock\">0:00 / {}</span>\n\
         <label class=\"speed\">Speed <select id=\"speed\"><option value=\"0.5\">0.5×</option>\
         <option value=\"1\" selected>1×</option><option value=\"2\">2×</option>\
         <option value=\"4\">4×</option><option value=\"8\">8×</option></select></label>\n\
         </div>\n</section>\n",
        clock(duration)
    )
}

/// `m:ss` (or `h:mm:ss`).
fn clock(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn terminate_form(state: &State, reviewer: &Reviewer, rec: &RecordingId) -> String {
    let csrf = state
        .services
        .csrf
        .token(purpose::REVIEW, reviewer.session());
    format!(
        "<section class=\"terminate\">\n<h2>End this session</h2>\n\
         <form method=\"post\" action=\"{REVIEW_PATH}/s/{rec}/terminate\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
         <label>Reason (goes in the audit log)<input type=\"text\" name=\"reason\" required maxlength=\"500\"></label>\n\
         <button type=\"submit\" class=\"danger\">End session</button>\n</form>\n</section>\n",
        escape(&csrf)
    )
}

fn commands(list: &[CommandEntry], jump: bool) -> String {
    let mut s = String::from("<section>\n<h2>Commands</h2>\n");
    if list.is_empty() {
        s.push_str("<p class=\"muted\">No command recorded.</p>\n</section>\n");
        return s;
    }
    s.push_str("<ol class=\"commands\">\n");
    for c in list {
        let label = format!(
            "<span class=\"at\">{}</span> <code>{}</code> <span class=\"source\">{}</span>",
            clock(c.time),
            escape(&c.text),
            c.source
        );
        if jump {
            let _ = writeln!(
                s,
                "<li><button type=\"button\" class=\"jump\" data-time=\"{:.3}\">{label}</button></li>",
                c.time
            );
        } else {
            let _ = writeln!(s, "<li>{label}</li>");
        }
    }
    s.push_str("</ol>\n</section>\n");
    s
}

fn files(list: &[FileEntry]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<section>\n<h2>File transfers</h2>\n<table>\n<thead><tr><th>At</th><th>Protocol</th>\
         <th>Direction</th><th>File</th><th>Bytes</th></tr></thead>\n<tbody>\n",
    );
    for f in list {
        let t = serde_json::to_value(&f.transfer).unwrap_or_default();
        let field = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            clock(f.time),
            escape(&field("protocol")),
            escape(&field("direction")),
            escape(&f.transfer.path),
            f.transfer.bytes
        );
    }
    s.push_str("</tbody>\n</table>\n</section>\n");
    s
}

fn requests(list: &[WebRequest]) -> String {
    let mut s = String::from("<section>\n<h2>HTTP requests</h2>\n");
    if list.is_empty() {
        s.push_str("<p class=\"muted\">No request recorded.</p>\n</section>\n");
        return s;
    }
    s.push_str(
        "<table class=\"requests\">\n<thead><tr><th>Time</th><th>Decision</th><th>Method</th>\
         <th>Host</th><th>Path</th><th>Status</th><th>Bytes</th><th>ms</th><th>Request id</th></tr></thead>\n<tbody>\n",
    );
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    for r in list {
        let _ = writeln!(
            s,
            "<tr class=\"{decision}\"><td>{}</td><td>{decision}</td><td>{}</td><td>{}</td><td><code>{}</code></td>\
             <td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&r.time),
            escape(&r.method),
            escape(r.host.as_deref().unwrap_or(&r.app)),
            escape(&r.path),
            opt(r.status.map(u64::from)),
            opt(r.bytes),
            opt(r.duration_ms),
            escape(r.request_id.as_deref().unwrap_or("")),
            decision = if r.decision == "allow" {
                "allow"
            } else {
                "deny"
            },
        );
    }
    s.push_str("</tbody>\n</table>\n</section>\n");
    s
}

/// The fields of an audit record worth a column, besides its kind and time.
const SKIP: &[&str] = &["event", "user", "session", "recording_id", "request_id"];

fn audit_table(records: &[Record]) -> String {
    let mut s = String::from("<section>\n<h2>Audit records</h2>\n");
    if records.is_empty() {
        s.push_str("<p class=\"muted\">No audit record names this session.</p>\n</section>\n");
        return s;
    }
    s.push_str(
        "<table class=\"audit\">\n<thead><tr><th>Time</th><th>#</th><th>Event</th><th>Details</th></tr></thead>\n<tbody>\n",
    );
    for r in records {
        let kind = r.event.get("event").and_then(|v| v.as_str()).unwrap_or("");
        let mut details = Vec::new();
        for (k, v) in &r.event {
            if SKIP.contains(&k.as_str()) {
                continue;
            }
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            details.push(format!("{k}={v}"));
        }
        let t = parse_timestamp(&r.ts)
            .map(|ms| when(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)))
            .unwrap_or_else(|| r.ts.clone());
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"details\">{}</td></tr>",
            escape(&t),
            r.seq,
            escape(kind),
            escape(&details.join("  "))
        );
    }
    s.push_str("</tbody>\n</table>\n</section>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks() {
        assert_eq!(clock(65.9), "1:05");
        assert_eq!(clock(3725.0), "1:02:05");
    }

    #[test]
    fn typed_text_is_escaped_everywhere() {
        let c = vec![CommandEntry {
            time: 1.0,
            source: "typed",
            text: "echo '<script>alert(1)</script>'".into(),
        }];
        let html = commands(&c, true);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }
}
