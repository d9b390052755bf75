//! What a live session allowed by a grant waits on: the grant's end.
//!
//! Threat: a long-lived session (an SSH shell, a port forward, a WebSocket) outliving the
//! grant that alone allowed it. Mitigation: whoever holds such a [`Permit`] also holds a
//! [`GrantWatch`]; it wakes at the grant's expiry and at every change of this instance's
//! grants copy (a revocation from any instance reaches the copy through the store's channel)
//! and decides again with the same code as the request path. It resolves when the decision
//! is no longer an allow, and keeps watching when another grant still allows.

use std::sync::Arc;
use std::time::Duration;

use super::{Permit, PolicyHandle};
use crate::identity::VerifiedIdentity;
use crate::store::Grant;

/// Why a grant-dependent session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapseReason {
    Expired,
    Revoked,
    /// The grant is still there but the policy now denies (a deny line added).
    Denied,
}

impl LapseReason {
    /// How the session's end record names it.
    pub fn session_end(self) -> &'static str {
        match self {
            LapseReason::Expired => "access grant expired",
            LapseReason::Revoked => "access grant revoked",
            LapseReason::Denied => "access grant overridden by a deny rule",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LapseReason::Expired => "expired",
            LapseReason::Revoked => "revoked",
            LapseReason::Denied => "overridden by a deny rule",
        }
    }
}

/// The end of the grant a session depended on.
#[derive(Debug, Clone)]
pub struct Lapse {
    pub grant: Arc<Grant>,
    pub reason: LapseReason,
    /// What the ended session was allowed: its object and action.
    pub object: String,
    pub action: String,
}

impl Lapse {
    /// The line shown to the user whose session it ends.
    pub fn notice(&self) -> String {
        format!(
            "gatehouse: access grant {} {}: session closed",
            self.grant.id,
            self.reason.as_str()
        )
    }
}

/// Watches the grant behind one permit (see the module documentation).
#[derive(Debug)]
pub struct GrantWatch {
    policy: Arc<PolicyHandle>,
    identity: VerifiedIdentity,
    object: String,
    action: String,
    grant: Arc<Grant>,
    changes: tokio::sync::watch::Receiver<u64>,
    /// False once the handle's change feed is gone (then only the expiry wakes it).
    feed: bool,
}

impl PolicyHandle {
    /// A watch on the grant behind `permit`; `None` when the policy file alone allowed it
    /// (nothing to watch).
    pub fn watch_grant(
        self: &Arc<Self>,
        identity: &VerifiedIdentity,
        permit: &Permit,
    ) -> Option<GrantWatch> {
        let grant = permit.grant.clone()?;
        let mut changes = self.grant_changes();
        changes.mark_unchanged();
        Some(GrantWatch {
            policy: self.clone(),
            identity: identity.clone(),
            object: permit.object().to_string(),
            action: permit.action().to_string(),
            grant,
            changes,
            feed: true,
        })
    }
}

impl GrantWatch {
    /// The grant watched now (another one may have taken over).
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Resolves when the permit no longer holds: its grant expired or was revoked and
    /// nothing else allows it. Pending forever once the policy file itself allows it.
    pub async fn lapsed(&mut self) -> Lapse {
        loop {
            let left = self.grant.expires_ms.saturating_sub(crate::store::now_ms());
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(left)) => {}
                changed = self.changes.changed(), if self.feed => {
                    if changed.is_err() {
                        self.feed = false;
                    }
                }
            }
            let d = self.policy.check(
                self.identity.user(),
                self.identity.groups(),
                &self.object,
                &self.action,
            );
            match (d.allowed, d.grant) {
                (true, Some(g)) => self.grant = g,
                (true, None) => std::future::pending::<()>().await,
                (false, _) => {
                    let held = self.policy.grants().all().any(|g| g.id == self.grant.id);
                    let reason = if !self.grant.is_live(crate::store::now_ms()) {
                        LapseReason::Expired
                    } else if !held {
                        LapseReason::Revoked
                    } else {
                        LapseReason::Denied
                    };
                    return Lapse {
                        grant: self.grant.clone(),
                        reason,
                        object: self.object.clone(),
                        action: self.action.clone(),
                    };
                }
            }
        }
    }
}

/// [`GrantWatch::lapsed`] of `watch`, or never when there is nothing to watch.
pub async fn lapsed(watch: Option<GrantWatch>) -> Lapse {
    match watch {
        Some(mut w) => w.lapsed().await,
        None => std::future::pending().await,
    }
}
