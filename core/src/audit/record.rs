//! A record as stored, read generically: its chain fields and its event as JSON, and the
//! fields search, alerts and the reviewer console look at — who, what kind, which object,
//! target or app, the decision, the incident id and the client — whatever the event's
//! variant (kinds added later are read the same way: a top-level field, or one in an object
//! one level down such as a bastion record's own fields).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::alert::Alert;

/// An access decision, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "allow" | "allowed" => Ok(Decision::Allow),
            "deny" | "denied" => Ok(Decision::Deny),
            other => Err(format!("`{other}` is not `allow` or `deny`")),
        }
    }
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub ts: String,
    pub event: Map<String, Value>,
    /// The line as stored (without newline): what `--json` prints.
    pub line: String,
}

#[derive(Deserialize)]
struct Line {
    seq: u64,
    ts: String,
    event: Map<String, Value>,
}

/// A string field of the event: top level first, else in an object one level down.
fn field<'a>(ev: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    if let Some(v) = ev.get(name) {
        return v.as_str();
    }
    ev.values()
        .filter_map(Value::as_object)
        .find_map(|o| o.get(name).and_then(Value::as_str))
}

fn user_of(ev: &Map<String, Value>) -> Option<&str> {
    field(ev, "user")
        .or_else(|| field(ev, "actor"))
        .or_else(|| field(ev, "key").and_then(|k| k.strip_prefix("user:")))
}

fn client_of(ev: &Map<String, Value>) -> Option<String> {
    if let Some(c) = field(ev, "client_addr").or_else(|| field(ev, "client")) {
        // A socket address (`IP:PORT`, `[v6]:PORT`) is reported as its address.
        return Some(match c.parse::<std::net::SocketAddr>() {
            Ok(sa) => sa.ip().to_string(),
            Err(_) => c.to_string(),
        });
    }
    field(ev, "key")
        .and_then(|k| k.strip_prefix("addr:"))
        .map(str::to_string)
}

fn kind_of(ev: &Map<String, Value>) -> &str {
    ev.get("event").and_then(Value::as_str).unwrap_or("")
}

impl Record {
    /// Parses a stored line; `None` when it is not a record.
    pub fn parse(line: &str) -> Option<Record> {
        let l: Line = serde_json::from_str(line).ok()?;
        Some(Record {
            seq: l.seq,
            ts: l.ts,
            event: l.event,
            line: line.to_string(),
        })
    }

    /// The event kind (`access_denied`, `login_success`, ...).
    pub fn kind(&self) -> &str {
        kind_of(&self.event)
    }

    /// Who: `user`, else `actor` (administrative actions), else a lockout's `user:` key.
    pub fn user(&self) -> Option<&str> {
        user_of(&self.event)
    }

    /// The client's address, when recorded.
    pub fn client(&self) -> Option<String> {
        client_of(&self.event)
    }

    pub fn incident_id(&self) -> Option<&str> {
        field(&self.event, "incident_id")
    }

    /// `allow`/`deny` for access decisions (`access_allowed`/`access_denied`, or a
    /// `decision` or boolean `allowed` field).
    pub fn decision(&self) -> Option<Decision> {
        match self.kind() {
            "access_allowed" => return Some(Decision::Allow),
            "access_denied" => return Some(Decision::Deny),
            _ => {}
        }
        if let Some(d) = field(&self.event, "decision") {
            return d.parse().ok();
        }
        let allowed = self
            .event
            .get("allowed")
            .and_then(Value::as_bool)
            .or_else(|| {
                self.event
                    .values()
                    .filter_map(Value::as_object)
                    .find_map(|o| o.get("allowed").and_then(Value::as_bool))
            })?;
        Some(if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        })
    }

    /// The policy object (`app:NAME/PATH`, `ssh:TARGET/LOGIN`), when recorded.
    pub fn object(&self) -> Option<&str> {
        field(&self.event, "object")
    }

    /// Whether the record concerns SSH target `name`: a `target` field, or an
    /// `ssh:NAME/...` object.
    pub fn is_target(&self, name: &str) -> bool {
        field(&self.event, "target") == Some(name) || object_names(self.object(), "ssh:", name)
    }

    /// Whether the record concerns web app `name`: an `app` field, or an `app:NAME/...`
    /// object.
    pub fn is_app(&self, name: &str) -> bool {
        field(&self.event, "app") == Some(name) || object_names(self.object(), "app:", name)
    }

    /// What the record is about, for a one-line listing: the object, else the target or
    /// app, else the subject.
    pub fn about(&self) -> Option<&str> {
        self.object()
            .or_else(|| field(&self.event, "target"))
            .or_else(|| field(&self.event, "app"))
            .or_else(|| field(&self.event, "subject"))
    }
}

/// Whether `object` is `PREFIX NAME` or `PREFIX NAME/...`.
fn object_names(object: Option<&str>, prefix: &str, name: &str) -> bool {
    object
        .and_then(|o| o.strip_prefix(prefix))
        .and_then(|rest| rest.strip_prefix(name))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The alert of a record whose event (serialized JSON) carries an incident id.
pub(crate) fn alert_of(seq: u64, event_json: &str) -> Option<Alert> {
    let ev: Map<String, Value> = serde_json::from_str(event_json).ok()?;
    let incident_id = field(&ev, "incident_id")?.to_string();
    // The audit machinery's own alerts name what failed.
    let kind = match kind_of(&ev) {
        "audit_alert" => field(&ev, "alert").unwrap_or("audit_alert"),
        k => k,
    };
    Some(Alert {
        incident_id,
        kind: kind.to_string(),
        user: user_of(&ev).map(str::to_string),
        client: client_of(&ev),
        time: crate::alert::now_rfc3339(),
        seq: Some(seq),
        detail: Value::Object(ev),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(event: Value) -> Record {
        let line = serde_json::json!({"seq": 3, "ts": "2026-01-02T03:04:05.006Z", "prev": "00", "event": event, "mac": "00"}).to_string();
        Record::parse(&line).unwrap()
    }

    /// (event, user, client, decision, target, app, incident)
    type Case = (
        Value,
        Option<&'static str>,
        Option<&'static str>,
        Option<Decision>,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    fn generic_fields_of_every_shape() {
        let cases: Vec<Case> = vec![
            (
                serde_json::json!({"event":"access_denied","user":"bob","object":"app:wiki/admin/x","action":"GET","rule":null,"incident_id":"inc-1","client_addr":"192.0.2.1"}),
                Some("bob"),
                Some("192.0.2.1"),
                Some(Decision::Deny),
                None,
                Some("wiki"),
                Some("inc-1"),
            ),
            (
                serde_json::json!({"event":"access_allowed","user":"al","object":"ssh:db-prod-1/deploy","action":"ssh","rule":"r"}),
                Some("al"),
                None,
                Some(Decision::Allow),
                Some("db-prod-1"),
                None,
                None,
            ),
            (
                serde_json::json!({"event":"admin_action","actor":"cli:root","action":"user_add","subject":"x","outcome":"success"}),
                Some("cli:root"),
                None,
                None,
                None,
                None,
                None,
            ),
            (
                serde_json::json!({"event":"lockout","key":"addr:198.51.100.4","failures":5,"locked_secs":60,"incident_id":"inc-2"}),
                None,
                Some("198.51.100.4"),
                None,
                None,
                None,
                Some("inc-2"),
            ),
            (
                serde_json::json!({"event":"ssh","user":"eve","ssh":{"event":"host_key_mismatch","target":"db-prod-1","client":"192.0.2.8:5555"},"incident_id":"inc-3"}),
                Some("eve"),
                Some("192.0.2.8"),
                None,
                Some("db-prod-1"),
                None,
                Some("inc-3"),
            ),
            (
                serde_json::json!({"event":"port_forward","user":"eve","target":"db","destination":"x:1","allowed":false}),
                Some("eve"),
                None,
                Some(Decision::Deny),
                Some("db"),
                None,
                None,
            ),
        ];
        for (ev, user, client, decision, target, app, incident) in cases {
            let r = rec(ev.clone());
            assert_eq!(r.user(), user, "{ev}");
            assert_eq!(r.client().as_deref(), client, "{ev}");
            assert_eq!(r.decision(), decision, "{ev}");
            assert_eq!(r.incident_id(), incident, "{ev}");
            if let Some(t) = target {
                assert!(r.is_target(t), "{ev}");
                assert!(!r.is_target(&format!("{t}x")), "{ev}");
            }
            if let Some(a) = app {
                assert!(r.is_app(a), "{ev}");
                assert!(!r.is_app("wik"), "{ev}");
            }
            assert_eq!(r.seq, 3);
        }
        let alert = alert_of(9, r#"{"event":"access_denied","user":"bob","incident_id":"inc-9","client_addr":"192.0.2.1"}"#).unwrap();
        assert_eq!(
            (alert.incident_id.as_str(), alert.kind.as_str()),
            ("inc-9", "access_denied")
        );
        assert_eq!(alert.user.as_deref(), Some("bob"));
        assert_eq!(alert.client.as_deref(), Some("192.0.2.1"));
        assert_eq!(alert.seq, Some(9));
        assert!(alert_of(1, r#"{"event":"logout","user":"x"}"#).is_none());
    }
}
