//! Identities authenticated earlier, held against `users.toml` as it is now: a web session
//! on each request, an SSH connection on each new channel and whenever the user's record
//! narrows.
//!
//! Threat: a user removed from a group, whose SSH key was removed, or who was locked or
//! removed in `users.toml`, keeping what a live session or connection gave them (a
//! ControlMaster opening new sessions with a removed key). Mitigation: [`Authenticator::recheck`]
//! answers from the shared copy of `users.toml` (reloaded within `USERS_POLL_INTERVAL`)
//! with a fresh identity carrying the current groups, or why it is no longer active; the
//! watcher ([`Authenticator::watch_users`]) revokes every session of a user locked or removed
//! (through the store, which ends live connections on every instance, as `session revoke`
//! does) and publishes the users whose access narrowed so the doors re-check their live
//! connections at once. SSO identities keep the groups their provider gave at login.

use tokio_util::sync::CancellationToken;

use super::directory::NarrowedUsers;
use super::{Authenticator, VerifiedIdentity, sshkey};
use crate::audit::AuditEvent;
use crate::error::IdentityError;

/// Where an identity authenticated earlier stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Still active: the identity with its current groups.
    Active(VerifiedIdentity),
    /// The account is locked.
    Locked,
    /// The user is no longer in `users.toml`.
    Removed,
    /// The SSH key it logged in with is no longer registered.
    KeyRemoved,
}

impl Standing {
    /// Why an identity is no longer active (for logs, refusals and close reasons).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Standing::Active(_) => None,
            Standing::Locked => Some("account locked"),
            Standing::Removed => Some("user removed"),
            Standing::KeyRemoved => Some("ssh key removed"),
        }
    }
}

/// Why an identity is no longer active, as [`Authenticator::recheck_in_place`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gone {
    Removed,
    Locked,
    KeyRemoved,
}

impl From<Gone> for Standing {
    fn from(g: Gone) -> Standing {
        match g {
            Gone::Removed => Standing::Removed,
            Gone::Locked => Standing::Locked,
            Gone::KeyRemoved => Standing::KeyRemoved,
        }
    }
}

impl Authenticator {
    /// Where `id` stands in `users.toml` as last read (no file access).
    pub fn recheck(&self, id: &VerifiedIdentity) -> Standing {
        let mut fresh = id.clone();
        match self.recheck_in_place(&mut fresh) {
            Ok(()) => Standing::Active(fresh),
            Err(gone) => gone.into(),
        }
    }

    /// [`Authenticator::recheck`] of an identity the caller owns: its groups become those of
    /// now, and nothing is copied when they are unchanged (the web request path).
    pub(super) fn recheck_in_place(&self, id: &mut VerifiedIdentity) -> Result<(), Gone> {
        if !id.method.is_local() {
            return Ok(());
        }
        let groups = self.inner.users.with_user(&id.user, |rec| {
            let Some(rec) = rec else {
                return Err(Gone::Removed);
            };
            if rec.locked {
                return Err(Gone::Locked);
            }
            if let Some(used) = &id.ssh_key {
                let registered = rec
                    .ssh_keys
                    .iter()
                    .filter_map(|k| sshkey::parse_ssh_public_key(k).ok())
                    .any(|k| k.blob == *used);
                if !registered {
                    return Err(Gone::KeyRemoved);
                }
            }
            Ok((rec.groups != id.groups).then(|| rec.groups.clone()))
        })?;
        if let Some(groups) = groups {
            id.groups = groups;
        }
        Ok(())
    }

    /// Reads `users.toml` again now (also unchanged) and acts on what narrowed, as the
    /// watcher does; `SIGHUP` and tests use it.
    pub async fn reload_users(&self) -> Result<NarrowedUsers, IdentityError> {
        let narrowed = self
            .inner
            .users
            .reload(true)
            .await?
            .unwrap_or_else(|| Vec::new().into());
        self.withdraw(&narrowed).await;
        Ok(narrowed)
    }

    /// Follows `users.toml` until `stop`: reloads it when it changes (every
    /// `USERS_POLL_INTERVAL`) and revokes the sessions of users locked or removed. A file
    /// that does not load is logged; the running copy stays.
    pub async fn watch_users(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(super::directory::USERS_POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.refresh_users().await;
        }
    }

    /// Reads `users.toml` again if it changed since the last look (a `stat` on a blocking
    /// thread otherwise) and acts on what narrowed. Every login starts with it, so a user just
    /// added (or changed) is known at once; requests and channels use the copy as it is.
    pub(super) async fn refresh_users(&self) {
        match self.inner.users.reload(false).await {
            Ok(Some(narrowed)) => {
                tracing::info!(path = %self.inner.users.path().display(), narrowed = narrowed.len(), "users file reloaded");
                self.withdraw(&narrowed).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "users file changed but does not load; the running copy stays until it is fixed");
            }
        }
    }

    /// Revokes every session of the users in `narrowed` who are now locked or removed (the
    /// store ends their live connections on every instance), audited as `session_revoked`.
    /// A failure is logged: requests and new channels are refused by [`recheck`] anyway.
    ///
    /// [`recheck`]: Authenticator::recheck
    async fn withdraw(&self, narrowed: &[String]) {
        for user in narrowed {
            let why = self.inner.users.with_user(user, |r| match r {
                None => Some("user removed from users.toml"),
                Some(r) if r.locked => Some("account locked in users.toml"),
                Some(_) => None,
            });
            let Some(why) = why else { continue };
            match self.inner.store.revoke_user(user).await {
                Ok(count) => {
                    tracing::info!(user = %user, count, reason = why, "sessions revoked after a users.toml change");
                    let event = AuditEvent::SessionRevoked {
                        user: user.clone(),
                        count,
                        by: why.to_string(),
                    };
                    if let Err(e) = self.inner.audit.record(event).await {
                        tracing::error!(error = %crate::error_chain(&e), "cannot audit a revocation after a users.toml change");
                    }
                }
                Err(e) => {
                    tracing::error!(user = %user, error = %crate::error_chain(&e), "cannot revoke the sessions of a user locked or removed in users.toml");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
