//! Just-in-time grants: a user gets a group or an object pattern for a bounded time, with a
//! written reason (`gatehouse grant add USER OBJECT [--action A] --for 4h --reason TEXT`).
//!
//! Threats: a standing privilege disguised as a temporary one; a grant nobody can account
//! for; a grant outliving its need on some instance; a grant that overrides a deny line.
//! Mitigations: every grant has an expiry bounded by `[grants] max_duration` (a longer
//! request is refused, never shortened silently) and a non-empty reason; its creation is
//! audited (synced) *before* it is stored, its revocation and expiry are audited, and every
//! access it allows carries its id and reason; grants live in the shared store and every
//! instance keeps its copy in step ([`follow`]); decisions use the same code as the policy
//! file, where a deny line always wins (see `policy::grants`).

mod follow;

use std::time::Duration;

pub use follow::{GrantSync, POLL_INTERVAL, STALE_AFTER};

use crate::audit::{AuditEvent, AuditLog, Outcome, timestamp_of};
use crate::error::GrantError;
use crate::identity::{GROUP_PREFIX, validate_group_name};
use crate::policy::Actions;
use crate::store::{Grant, Store};

/// Longest reason accepted.
pub const MAX_REASON: usize = 1000;
/// Longest object pattern accepted (as in the policy file).
const MAX_OBJECT: usize = 1024;

/// A grant asked for (by the CLI, directly or through the control socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    pub user: String,
    /// `group:NAME` or an object pattern.
    pub object: String,
    /// `None`: `*` (every action on the object; for a group, what its lines allow).
    pub action: Option<String>,
    pub duration: Duration,
    pub reason: String,
    /// Who asks (`cli:USER`).
    pub granted_by: String,
}

/// A user name as policies name users: a local name or an SSO name (a-z 0-9 . _ - + @).
fn check_user(user: &str) -> Result<(), GrantError> {
    let ok = (1..=128).contains(&user.len())
        && user.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@')
        });
    if ok {
        Ok(())
    } else {
        Err(GrantError::InvalidUser(user.to_string()))
    }
}

/// An object pattern a grant may name: `app:NAME/...`, `ssh:TARGET/...` or
/// `gatehouse:...`, printable ASCII, `*` only as the last character and never in the app or
/// target name (a grant reaches one app or target, never a whole door).
pub fn check_object(object: &str) -> Result<(), GrantError> {
    let bad = |problem| GrantError::InvalidObject {
        object: object.to_string(),
        problem,
    };
    let body = object.strip_suffix('*').unwrap_or(object);
    if object.is_empty() || object.len() > MAX_OBJECT {
        return Err(bad("empty or longer than 1024 characters"));
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'*' && b != b',')
    {
        return Err(bad(
            "printable ASCII without quotes or commas, `*` only as the last character",
        ));
    }
    let named = |rest: &str| {
        rest.split_once('/')
            .is_some_and(|(name, _)| !name.is_empty())
    };
    match object.split_once(':') {
        Some(("app" | "ssh", rest)) if named(rest) => Ok(()),
        Some(("app" | "ssh", _)) => Err(bad(
            "name one app or target and a path or login: `app:wiki/*`, `ssh:db-prod-1/deploy`",
        )),
        Some(("gatehouse", rest)) if !rest.is_empty() && !rest.starts_with('*') => Ok(()),
        _ => Err(bad(
            "use `group:NAME`, `app:NAME/PATH`, `ssh:TARGET/LOGIN` or `gatehouse:review`",
        )),
    }
}

/// An action pattern: `*` or alternatives separated by `|`.
pub fn parse_action(action: &str) -> Result<Actions, GrantError> {
    if action == "*" {
        return Ok(Actions::Any);
    }
    let list: Vec<String> = action.split('|').map(str::to_string).collect();
    let valid = |a: &String| {
        !a.is_empty()
            && a.len() <= 32
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if list.iter().all(valid) {
        Ok(Actions::OneOf(list))
    } else {
        Err(GrantError::InvalidAction(action.to_string()))
    }
}

fn check_reason(reason: &str) -> Result<String, GrantError> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(GrantError::EmptyReason);
    }
    let len = r.chars().count();
    if len > MAX_REASON {
        return Err(GrantError::ReasonTooLong {
            len,
            max: MAX_REASON,
        });
    }
    // It is shown in terminals and written to logs: no escape sequences, no fake lines.
    if r.chars().any(char::is_control) {
        return Err(GrantError::ReasonControl);
    }
    Ok(r.to_string())
}

impl NewGrant {
    /// The grant this asks for, starting at `now_ms`, or why it is refused.
    pub fn validate(&self, max: Duration, now_ms: u64) -> Result<Grant, GrantError> {
        check_user(&self.user)?;
        let action = match self.object.strip_prefix(GROUP_PREFIX) {
            Some(group) => {
                validate_group_name(group).map_err(|_| GrantError::InvalidObject {
                    object: self.object.clone(),
                    problem: "a group name is 1-64 of a-z 0-9 . _ -",
                })?;
                if self.action.as_deref().is_some_and(|a| a != "*") {
                    return Err(GrantError::ActionOnGroup);
                }
                "*".to_string()
            }
            None => {
                check_object(&self.object)?;
                let action = self.action.clone().unwrap_or_else(|| "*".to_string());
                parse_action(&action)?;
                action
            }
        };
        let reason = check_reason(&self.reason)?;
        if self.duration.is_zero() {
            return Err(GrantError::ZeroDuration);
        }
        if self.duration > max {
            return Err(GrantError::TooLong {
                asked: humantime::format_duration(self.duration).to_string(),
                max: humantime::format_duration(max).to_string(),
            });
        }
        let ms = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX);
        Ok(Grant {
            id: Grant::new_id().map_err(GrantError::Store)?,
            user: self.user.clone(),
            object: self.object.clone(),
            action,
            reason,
            granted_by: self.granted_by.clone(),
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ms),
        })
    }
}

/// Makes a grant: validated, audited (on disk) and then stored, which publishes it to every
/// instance. Nothing is granted when the record cannot be written.
pub async fn add(
    store: &dyn Store,
    audit: &AuditLog,
    max: Duration,
    asked: &NewGrant,
) -> Result<Grant, GrantError> {
    let grant = asked.validate(max, crate::store::now_ms())?;
    audit
        .record(AuditEvent::GrantCreated {
            grant_id: grant.id.clone(),
            user: grant.user.clone(),
            object: grant.object.clone(),
            action: grant.action.clone(),
            reason: grant.reason.clone(),
            expires_at: timestamp_of(grant.expires_ms),
            by: grant.granted_by.clone(),
        })
        .await
        .map_err(GrantError::Audit)?;
    if let Err(e) = store.put_grant(&grant).await {
        // The creation is on record: so is its failure.
        let failed = AuditEvent::AdminAction {
            actor: grant.granted_by.clone(),
            action: "grant add".into(),
            subject: grant.id.clone(),
            outcome: Outcome::Failure,
        };
        if let Err(ae) = audit.record(failed).await {
            tracing::error!(error = %crate::error_chain(&ae), "cannot record a failed grant");
        }
        return Err(GrantError::Store(e));
    }
    Ok(grant)
}

/// Revokes a live grant everywhere, then records it. The grant's sessions end on every
/// instance as their copies drop it.
pub async fn revoke(
    store: &dyn Store,
    audit: &AuditLog,
    id: &str,
    by: &str,
) -> Result<Grant, GrantError> {
    let grant = store
        .revoke_grant(id)
        .await
        .map_err(GrantError::Store)?
        .ok_or_else(|| GrantError::NotFound(id.to_string()))?;
    audit
        .record(AuditEvent::GrantRevoked {
            grant_id: grant.id.clone(),
            user: grant.user.clone(),
            object: grant.object.clone(),
            by: by.to_string(),
        })
        .await
        .map_err(GrantError::Audit)?;
    Ok(grant)
}

#[cfg(test)]
mod tests;
