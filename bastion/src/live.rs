//! Keeps the bastion's live connections in step with the shared store and `users.toml`: a
//! revocation published by any instance (`gatehouse session revoke`, `user lock`, a user
//! locked or removed in `users.toml`) ends the user's connections here; a user whose record
//! narrowed (a group or an SSH key taken away) has each live connection re-checked; and
//! every live connection's store session is touched so `session list` shows it as active;
//! one the store no longer has ends.
//!
//! Threat: a revoked or expired session, or a withdrawn key or group, keeping a live SSH
//! connection. Mitigation: both feeds are subscribed before the bastion accepts anything; a
//! lagging or closed revocation feed ends every connection (fail closed), a lagging
//! `users.toml` feed re-checks every connection, and a store session that disappeared ends
//! its connection.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::identity::NarrowedUsers;
use gatehouse_core::store::RevocationEvent;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::shared::Shared;

/// Longest interval between two touches of a live SSH session in the store, so a busy
/// connection never looks idle to `session list` (the bastion closes really idle channels).
const MAX_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Ends connections as the store's revocation feed says.
pub(crate) async fn revocations(
    shared: Arc<Shared>,
    mut feed: broadcast::Receiver<RevocationEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = feed.recv() => ev,
        };
        match ev {
            Ok(RevocationEvent::User { user }) => {
                let n = shared.registry.revoke(&user);
                tracing::info!(user = %user, connections = n, "revocation ended ssh connections");
            }
            // One web session ended (logout); SSH connections end by user or by touch.
            Ok(RevocationEvent::Session { .. }) => {}
            // Revocations may have been missed while the store's link was down.
            Ok(RevocationEvent::Resync) => {
                let n = recheck(&shared).await;
                tracing::warn!(
                    connections = n,
                    "store link was down: re-checked every ssh connection's session"
                );
            }
            // Channels that a grant allowed watch the policy's copy of the grants.
            Ok(RevocationEvent::Grants { .. }) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let n = shared.registry.end_all("revocation feed lagged");
                tracing::error!(
                    missed,
                    connections = n,
                    "store revocation feed lagged; ended every ssh connection"
                );
            }
            Err(broadcast::error::RecvError::Closed) => {
                let n = shared.registry.end_all("revocation feed closed");
                tracing::error!(
                    connections = n,
                    "store revocation feed closed; ended every ssh connection"
                );
                shutdown.cancelled().await;
                return;
            }
        }
    }
}

/// Re-checks the live connections of users whose record in `users.toml` narrowed.
pub(crate) async fn user_changes(
    shared: Arc<Shared>,
    mut feed: broadcast::Receiver<NarrowedUsers>,
    shutdown: CancellationToken,
) {
    loop {
        let changed = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = feed.recv() => ev,
        };
        let conns = match changed {
            Ok(users) => shared.registry.connections_of(Some(&users)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "users.toml changes missed; re-checking every ssh connection"
                );
                shared.registry.connections_of(None)
            }
            // The authenticator (and its copy of users.toml) is gone: shutting down.
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for conn in conns {
            conn.recheck_live().await;
        }
    }
}

/// Touches every live connection's store session at a quarter of the idle timeout.
pub(crate) async fn keep_alive(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = (shared.limits.idle_timeout / 4).clamp(Duration::from_secs(1), MAX_TOUCH_INTERVAL);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let store = shared.services.store();
        for (id, user, token) in shared.registry.store_sessions() {
            match store.touch_session(token.expose()).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(user = %user, "ssh session gone from the store; ending it");
                    shared.registry.end(&id, "session ended in the store");
                }
                Err(e) => {
                    tracing::warn!(user = %user, error = %gatehouse_core::error_chain(&e), "cannot touch an ssh session in the store");
                }
            }
        }
    }
}

/// Ends every connection whose store session is gone or cannot be checked (fail closed);
/// returns how many ended.
async fn recheck(shared: &Shared) -> usize {
    let store = shared.services.store();
    let mut ended = 0;
    for (id, user, token) in shared.registry.store_sessions() {
        match store.touch_session(token.expose()).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(user = %user, "ssh session gone from the store; ending it");
                shared.registry.end(&id, "session ended in the store");
                ended += 1;
            }
            Err(e) => {
                tracing::warn!(user = %user, error = %gatehouse_core::error_chain(&e), "cannot check an ssh session in the store; ending it");
                shared
                    .registry
                    .end(&id, "session cannot be checked in the store");
                ended += 1;
            }
        }
    }
    ended
}
