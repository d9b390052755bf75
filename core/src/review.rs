//! The access review (`gatehouse access-review`): for every user, what they can reach — by
//! policy line, through a group, by grant — and whether and when each was last used, from
//! the audit log's `access_allowed` records; the grants of the window, used or never used;
//! access unused in the window (candidates for removal); local users who never signed in and
//! the SSO users seen; policy lines that reach nobody.
//!
//! What it relies on: every allowed access is recorded with the exact text of its deciding
//! line (`rule`) and, when a grant decided, the grant's id (`grant_id`); so a line's use is
//! found by its text and a grant's by its id. A line edited since is a new line (its old
//! uses belong to the old text). Reading is streamed through the audit search (one pass per
//! event kind); only the latest use per (user, line) and per grant is kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::Path;

use serde::Serialize;

use crate::audit::search::{Query, search};
use crate::audit::{Record, parse_timestamp, timestamp_of};
use crate::error::AuditError;
use crate::identity::GROUP_PREFIX;
use crate::policy::{Actions, Effect, PolicyIndex, Rule};
use crate::store::Grant;

/// A user the review covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    /// Plain group names (users file, or the SSO groups of the last sign-in).
    pub groups: Vec<String>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Local,
    /// An SSO user seen at sign-in: its provider and last sign-in (unix ms).
    Sso {
        provider: String,
        last_login_ms: u64,
    },
}

/// What the review reads.
#[derive(Debug)]
pub struct Input<'a> {
    pub index: &'a PolicyIndex,
    /// How lines are named (`policy.csv`).
    pub policy_name: &'a str,
    pub people: Vec<Person>,
    /// The live grants (from the store).
    pub live_grants: Vec<Grant>,
    pub audit_dir: &'a Path,
    /// The window's start (unix ms): what was not used since is "unused".
    pub since_ms: u64,
}

/// What a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A user and how they sign in (`via`: `local` or `sso:PROVIDER`); `last_used` is the
    /// last sign-in.
    User,
    /// An allow line reaching the user, directly (`via`: `policy.csv:LINE`) or through a
    /// group (`via`: `group:NAME`).
    Policy,
    /// A just-in-time grant (`via`: its id).
    Grant,
    /// A policy line no known user reaches (`user` is null).
    Unmatched,
}

/// One row: the JSON line of `access-review --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub user: Option<String>,
    pub object: Option<String>,
    pub action: Option<String>,
    /// The policy line, group or grant id that gives it (see [`Kind`]).
    pub via: String,
    /// RFC 3339; null when never.
    pub last_used: Option<String>,
    pub kind: Kind,
    /// Not used since the window's start (never used included).
    pub unused_in_window: bool,
    /// The line's text and number (policy and unmatched rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// A grant's reason, expiry and state (`live`, `expired`, `revoked`, `gone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl Row {
    fn new(kind: Kind, user: Option<&str>, via: String, last: Option<u64>, since: u64) -> Row {
        Row {
            user: user.map(str::to_string),
            object: None,
            action: None,
            via,
            last_used: last.map(timestamp_of),
            kind,
            unused_in_window: last.is_none_or(|t| t < since),
            rule: None,
            line: None,
            reason: None,
            expires_at: None,
            status: None,
        }
    }
}

/// The latest uses found in the log.
#[derive(Debug, Default)]
struct Uses {
    /// (user, line text) of accesses the policy alone allowed.
    by_line: HashMap<(String, String), u64>,
    /// Line text, whoever used it.
    by_text: HashMap<String, u64>,
    by_grant: HashMap<String, u64>,
    sign_in: HashMap<String, u64>,
    /// Grants created in the window (as recorded), and the ids revoked.
    created: Vec<Grant>,
    revoked: HashSet<String>,
}

fn str_of<'a>(r: &'a Record, field: &str) -> Option<&'a str> {
    r.event.get(field).and_then(serde_json::Value::as_str)
}

fn keep_latest<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, t: u64) {
    let slot = map.entry(key).or_insert(t);
    if *slot < t {
        *slot = t;
    }
}

impl Uses {
    fn read(dir: &Path, since_ms: u64) -> Result<Uses, AuditError> {
        let mut u = Uses::default();
        let all = |event: &str| Query {
            event: Some(event.to_string()),
            ..Query::default()
        };
        search(dir, &all("access_allowed"), |r| {
            let (Some(user), Some(t)) = (str_of(&r, "user"), parse_timestamp(&r.ts)) else {
                return ControlFlow::Continue(());
            };
            match str_of(&r, "grant_id") {
                Some(g) => keep_latest(&mut u.by_grant, g.to_string(), t),
                None => {
                    if let Some(rule) = str_of(&r, "rule") {
                        keep_latest(&mut u.by_text, rule.to_string(), t);
                        keep_latest(&mut u.by_line, (user.to_string(), rule.to_string()), t);
                    }
                }
            }
            ControlFlow::Continue(())
        })?;
        search(dir, &all("login_success"), |r| {
            if let (Some(user), Some(t)) = (str_of(&r, "user"), parse_timestamp(&r.ts)) {
                keep_latest(&mut u.sign_in, user.to_string(), t);
            }
            ControlFlow::Continue(())
        })?;
        search(dir, &all("grant_revoked"), |r| {
            if let Some(id) = str_of(&r, "grant_id") {
                u.revoked.insert(id.to_string());
            }
            ControlFlow::Continue(())
        })?;
        let window = Query {
            since_ms: Some(since_ms),
            ..all("grant_created")
        };
        search(dir, &window, |r| {
            if let Some(g) = created_grant(&r) {
                u.created.push(g);
            }
            ControlFlow::Continue(())
        })?;
        Ok(u)
    }
}

/// A grant as its `grant_created` record tells it.
fn created_grant(r: &Record) -> Option<Grant> {
    let s = |f| str_of(r, f).map(str::to_string);
    Some(Grant {
        id: s("grant_id")?,
        user: s("user")?,
        object: s("object")?,
        action: s("action")?,
        reason: s("reason")?,
        granted_by: s("by")?,
        created_ms: parse_timestamp(&r.ts)?,
        expires_ms: parse_timestamp(str_of(r, "expires_at")?)?,
    })
}

fn pattern(rule: &Rule) -> (String, String) {
    let object = if rule.wildcard {
        format!("{}*", rule.object)
    } else {
        rule.object.clone()
    };
    let action = match &rule.actions {
        Actions::Any => "*".to_string(),
        Actions::OneOf(list) => list.join("|"),
    };
    (object, action)
}

/// The grants of the review: the live ones, and those of the window that are gone.
fn window_grants(
    uses: &Uses,
    live: &[Grant],
    now_ms: u64,
) -> BTreeMap<String, (Grant, &'static str)> {
    let mut grants: BTreeMap<String, (Grant, &'static str)> = BTreeMap::new();
    for g in &uses.created {
        let status = if uses.revoked.contains(&g.id) {
            "revoked"
        } else if g.is_live(now_ms) {
            // Neither revoked on record nor expired, yet not in the store (a memory://
            // store restarted): gone.
            "gone"
        } else {
            "expired"
        };
        grants.insert(g.id.clone(), (g.clone(), status));
    }
    for g in live {
        grants.insert(g.id.clone(), (g.clone(), "live"));
    }
    grants
}

/// Builds the review's rows: per user (sorted by name) the user row, its policy rows (in
/// file order) and its grant rows (oldest first); then the lines that reach nobody.
pub fn review(input: &Input<'_>, now_ms: u64) -> Result<Vec<Row>, AuditError> {
    let uses = Uses::read(input.audit_dir, input.since_ms)?;
    let since = input.since_ms;
    let names = input.index.subject_names();
    let mut by_subject: HashMap<&str, Vec<&Rule>> = HashMap::new();
    for r in input.index.rules() {
        by_subject.entry(r.subject.as_str()).or_default().push(r);
    }
    let grants = window_grants(&uses, &input.live_grants, now_ms);
    let mut people = input.people.clone();
    people.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    let mut reached: HashSet<&str> = HashSet::new();
    for p in &people {
        let signed_in = match &p.origin {
            Origin::Local => uses.sign_in.get(&p.name).copied(),
            Origin::Sso { last_login_ms, .. } => uses
                .sign_in
                .get(&p.name)
                .copied()
                .max(Some(*last_login_ms).filter(|t| *t > 0)),
        };
        let via = match &p.origin {
            Origin::Local => "local".to_string(),
            Origin::Sso { provider, .. } => format!("sso:{provider}"),
        };
        rows.push(Row::new(Kind::User, Some(&p.name), via, signed_in, since));
        for (subject, rule) in reached_rules(input, &names, &by_subject, p) {
            reached.insert(subject);
            if rule.effect != Effect::Allow {
                continue;
            }
            let last = uses
                .by_line
                .get(&(p.name.clone(), rule.text.clone()))
                .copied();
            let via = if subject == p.name {
                format!("{}:{}", input.policy_name, rule.line)
            } else {
                subject.to_string()
            };
            let (object, action) = pattern(rule);
            let mut row = Row::new(Kind::Policy, Some(&p.name), via, last, since);
            row.object = Some(object);
            row.action = Some(action);
            row.rule = Some(rule.text.clone());
            row.line = Some(rule.line);
            rows.push(row);
        }
        // Sorted by line within the user (a group's lines and the user's own interleave).
        if let Some(start) = rows.iter().rposition(|r| r.kind == Kind::User)
            && let Some(tail) = rows.get_mut(start + 1..)
        {
            tail.sort_by_key(|r| r.line);
        }
        let mut mine: Vec<&(Grant, &str)> =
            grants.values().filter(|(g, _)| g.user == p.name).collect();
        mine.sort_by_key(|(g, _)| (g.created_ms, g.id.clone()));
        for (g, status) in mine {
            if let Some(group) = g.object.strip_prefix(GROUP_PREFIX) {
                for id in input.index.reached_ids("", &[group.to_string()]) {
                    if let Some(subject) = names.get(id as usize) {
                        reached.insert(subject);
                    }
                }
            }
            rows.push(grant_row(g, status, &uses, since));
        }
    }
    // Grants of users the review does not otherwise know (not local, not seen by SSO).
    let known: HashSet<&str> = people.iter().map(|p| p.name.as_str()).collect();
    for (g, status) in grants
        .values()
        .filter(|(g, _)| !known.contains(g.user.as_str()))
    {
        rows.push(grant_row(g, status, &uses, since));
    }
    for rule in input.index.rules() {
        if reached.contains(rule.subject.as_str()) {
            continue;
        }
        let last = uses.by_text.get(&rule.text).copied();
        let (object, action) = pattern(rule);
        let via = format!("{}:{}", input.policy_name, rule.line);
        let mut row = Row::new(Kind::Unmatched, None, via, last, since);
        row.object = Some(object);
        row.action = Some(action);
        row.rule = Some(rule.text.clone());
        row.line = Some(rule.line);
        rows.push(row);
    }
    Ok(rows)
}

/// The rules reaching `p` (every effect), each with the subject it names.
fn reached_rules<'a>(
    input: &Input<'_>,
    names: &[&'a str],
    by_subject: &HashMap<&'a str, Vec<&'a Rule>>,
    p: &Person,
) -> Vec<(&'a str, &'a Rule)> {
    let mut out = Vec::new();
    for id in input.index.reached_ids(&p.name, &p.groups) {
        let Some(subject) = names.get(id as usize).copied() else {
            continue;
        };
        for rule in by_subject.get(subject).into_iter().flatten() {
            out.push((subject, *rule));
        }
    }
    out
}

fn grant_row(g: &Grant, status: &str, uses: &Uses, since: u64) -> Row {
    let last = uses.by_grant.get(&g.id).copied();
    let mut row = Row::new(Kind::Grant, Some(&g.user), g.id.clone(), last, since);
    row.object = Some(g.object.clone());
    row.action = Some(g.action.clone());
    row.reason = Some(g.reason.clone());
    row.expires_at = Some(timestamp_of(g.expires_ms));
    row.status = Some(status.to_string());
    row
}

#[cfg(test)]
mod tests;
