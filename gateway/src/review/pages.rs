//! The console's sessions list: filters, the search for typed commands and file names, the
//! live sessions and the recorded ones (a session's own page is `session`). Every value
//! from the index is escaped.

use std::fmt::Write as _;
use std::time::SystemTime;

use http::{Response, StatusCode};

use gatehouse_core::recording::{Query, RecordingKind, RecordingMeta, format_time, parse_when};

use super::{REVIEW_PATH, Reviewer, audited, page};
use crate::body::ResBody;
use crate::pages::escape;
use crate::request_id::RequestId;
use crate::respond;
use crate::state::State;
use crate::web::form::Form;

/// Sessions a list shows at most (the newest).
const LIST_LIMIT: usize = 200;

/// The list's filters, as given in the query string.
#[derive(Debug, Default)]
struct Filters {
    q: String,
    user: String,
    target: String,
    app: String,
    since: String,
    until: String,
}

impl Filters {
    fn parse(query: &str) -> Filters {
        let form = Form::parse(query.as_bytes()).unwrap_or_default();
        let get = |k: &str| {
            form.get(k)
                .map(|v| v.trim().chars().take(200).collect())
                .unwrap_or_default()
        };
        Filters {
            q: get("q"),
            user: get("user"),
            target: get("target"),
            app: get("app"),
            since: get("since"),
            until: get("until"),
        }
    }

    /// The index query (without the text search), or what is wrong with a time.
    fn query(&self, now: SystemTime) -> Result<Query, String> {
        let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
        let when = |s: &String| (!s.is_empty()).then(|| parse_when(s, now)).transpose();
        Ok(Query {
            user: opt(&self.user),
            target: opt(&self.target),
            app: opt(&self.app),
            since: when(&self.since)?,
            until: when(&self.until)?,
            limit: Some(LIST_LIMIT),
            ..Query::default()
        })
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("q", &self.q),
            ("user", &self.user),
            ("target", &self.target),
            ("app", &self.app),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={v:?}"));
            }
        }
        parts.join(" ")
    }
}

/// Searches the index off the async threads: the filters, and the text as a command or a
/// file name (either matches); newest first.
async fn find(state: &State, q: Query, text: String) -> Result<Vec<RecordingMeta>, String> {
    let rec = state.services.recordings.clone();
    let found = tokio::task::spawn_blocking(move || {
        let index = rec.index();
        if text.is_empty() {
            return index.search(&q);
        }
        let mut by_command = index.search(&Query {
            command: Some(text.clone()),
            ..q.clone()
        })?;
        let by_file = index.search(&Query {
            file: Some(text),
            ..q
        })?;
        for m in by_file {
            if !by_command.iter().any(|c| c.id == m.id) {
                by_command.push(m);
            }
        }
        by_command.sort_by_key(|m| m.started_at);
        Ok(by_command)
    })
    .await
    .map_err(|_| "the search was cut short".to_string())?
    .map_err(|e| gatehouse_core::error_chain(&e))?;
    Ok(found.into_iter().rev().collect())
}

/// GET `/.gatehouse/review`: the filters, the live sessions and the matching sessions.
pub(super) async fn list(
    state: &State,
    reviewer: &Reviewer,
    query: &str,
    id: RequestId,
) -> Response<ResBody> {
    let f = Filters::parse(query);
    if let Err(resp) = audited(state, reviewer, "list", None, Some(f.describe()), id).await {
        return resp;
    }
    let mut body = filter_form(&f);
    let q = match f.query(SystemTime::now()) {
        Ok(q) => q,
        Err(e) => {
            let _ = writeln!(body, "<p class=\"error\" role=\"alert\">{}</p>", escape(&e));
            return page(StatusCode::BAD_REQUEST, "Sessions", &body);
        }
    };
    let live_q = Query {
        live: true,
        limit: Some(LIST_LIMIT),
        ..Query::default()
    };
    let (live, found) = match (
        find(state, live_q, String::new()).await,
        find(state, q, f.q.clone()).await,
    ) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(request_id = %id, error = %e, "review: index search failed");
            return respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false);
        }
    };
    body.push_str("<section class=\"live\">\n<h2>Live now</h2>\n");
    if live.is_empty() {
        body.push_str("<p class=\"muted\">No session is live.</p>\n");
    } else {
        body.push_str(&table(state, &live));
    }
    body.push_str("</section>\n<section class=\"found\">\n");
    let title = if f.q.is_empty() {
        "Recorded sessions".to_string()
    } else {
        format!("Sessions where “{}” was typed or moved", f.q)
    };
    let _ = write!(
        body,
        "<h2>{}</h2>\n<p class=\"muted\">{} found{}.</p>\n",
        escape(&title),
        found.len(),
        if found.len() >= LIST_LIMIT {
            " (the newest shown)"
        } else {
            ""
        }
    );
    if !found.is_empty() {
        body.push_str(&table(state, &found));
    }
    body.push_str("</section>\n");
    page(StatusCode::OK, "Sessions", &body)
}

fn filter_form(f: &Filters) -> String {
    let field = |name: &str, label: &str, value: &str, hint: &str| {
        format!(
            "<label>{label}<input type=\"text\" name=\"{name}\" value=\"{}\" placeholder=\"{hint}\"></label>\n",
            escape(value)
        )
    };
    let mut s = format!(
        "<form class=\"filters\" method=\"get\" action=\"{REVIEW_PATH}\" role=\"search\">\n\
         <label class=\"wide\">Typed command or file name<input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"e.g. rm -rf, payroll.csv\"></label>\n",
        escape(&f.q)
    );
    s.push_str(&field("user", "User", &f.user, "alice"));
    s.push_str(&field("target", "SSH target", &f.target, "db-prod-1"));
    s.push_str(&field("app", "Web app", &f.app, "wiki"));
    s.push_str(&field("since", "Since", &f.since, "24h or 2026-03-01"));
    s.push_str(&field("until", "Until", &f.until, "2026-03-02T12:00:00Z"));
    s.push_str("<button type=\"submit\">Search</button>\n</form>\n");
    s
}

/// `2026-03-01 12:00:05 UTC`.
pub(super) fn when(t: SystemTime) -> String {
    let s = format_time(t);
    let date = s.get(..10).unwrap_or_default();
    let time = s.get(11..19).unwrap_or_default();
    format!("{date} {time} UTC")
}

pub(super) fn place(m: &RecordingMeta) -> String {
    match m.kind {
        RecordingKind::Ssh => format!(
            "{}@{}",
            m.login.as_deref().unwrap_or("?"),
            m.target.as_deref().unwrap_or("?")
        ),
        RecordingKind::Web if m.apps.is_empty() => m.app.clone().unwrap_or_default(),
        RecordingKind::Web => m.apps.join(", "),
    }
}

pub(super) fn what(m: &RecordingMeta) -> String {
    match (&m.request, &m.command) {
        (Some(r), Some(c)) => format!("{r}: {c}"),
        (Some(r), None) => r.clone(),
        _ => String::new(),
    }
}

/// `1h 02m`, `3m 04s`, `12s`.
pub(super) fn length(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn table(state: &State, rows: &[RecordingMeta]) -> String {
    let mut s = String::from(
        "<table class=\"sessions\">\n<thead><tr><th>Started</th><th>Kind</th><th>User</th>\
         <th>Where</th><th>What</th><th>Length</th><th></th></tr></thead>\n<tbody>\n",
    );
    for m in rows {
        let live = m.ended_at.is_none();
        let len = m
            .ended_at
            .unwrap_or_else(SystemTime::now)
            .duration_since(m.started_at)
            .map_or(0, |d| d.as_secs());
        let watch = live
            && m.kind == RecordingKind::Ssh
            && state.services.recordings.live().feed(&m.id).is_some();
        let _ = writeln!(
            s,
            "<tr class=\"{kind}\"><td>{}</td><td><span class=\"kind {kind}\">{kind}</span></td><td>{}</td><td>{}</td>\
             <td class=\"what\">{}</td><td>{}</td><td><a class=\"open\" href=\"{REVIEW_PATH}/s/{id}\">{}</a></td></tr>",
            when(m.started_at),
            escape(&m.user),
            escape(&place(m)),
            escape(&what(m)),
            if live {
                format!("<span class=\"badge\">live</span> {}", length(len))
            } else {
                length(len)
            },
            if watch { "Watch" } else { "Open" },
            kind = m.kind.as_str(),
            id = m.id,
        );
    }
    s.push_str("</tbody>\n</table>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_read_bounded_and_described() {
        let f = Filters::parse("q=rm+-rf&user=alice&since=24h&junk=1");
        assert_eq!((f.q.as_str(), f.user.as_str()), ("rm -rf", "alice"));
        assert_eq!(f.describe(), "q=\"rm -rf\" user=\"alice\" since=\"24h\"");
        let q = f.query(SystemTime::now()).unwrap();
        assert_eq!(q.user.as_deref(), Some("alice"));
        assert!(q.since.is_some() && q.command.is_none());
        assert!(
            Filters::parse("since=yesterday")
                .query(SystemTime::now())
                .is_err()
        );
        let long = format!("q={}", "x".repeat(5000));
        assert_eq!(Filters::parse(&long).q.len(), 200);
    }

    #[test]
    fn lengths() {
        assert_eq!(length(12), "12s");
        assert_eq!(length(184), "3m 04s");
        assert_eq!(length(3720), "1h 02m");
    }
}
