//! Revocation of live connections: every open WebSocket tunnel is registered with its user,
//! session hash and session token; a revocation event from the store (any instance) closes
//! the matching tunnels, and so does a change to `users.toml` that narrows the user's access
//! (a group or key taken away; a lock or removal is revoked through the store).
//!
//! Threat: a revoked or logged-out user, or one removed from a group, keeping a live
//! WebSocket (plain requests are re-checked at their next session touch anyway).
//! Mitigation: tunnels watch a per-tunnel cancellation token; the listener task cancels on
//! `User`/`Session` events and on users whose record narrowed (the client reconnects and is
//! authorized again), and when it lagged behind (events lost) it re-checks every tunnel's
//! session in the store and closes those that are gone or cannot be checked (fail closed);
//! lost `users.toml` changes close every tunnel. If the subscription itself breaks, all
//! tunnels are closed and the subscription is retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gatehouse_core::identity::{Authenticator, NarrowedUsers};
use gatehouse_core::store::{RevocationEvent, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::web::cookie::CookieValue;

/// Pause before re-subscribing after the subscription broke.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Entry {
    user: String,
    session_hash: String,
    token: CookieValue,
    /// The host the tunnel's session was resumed on (lowercase, no port).
    host: String,
    cancel: CancellationToken,
}

/// Live tunnels by id.
#[derive(Debug, Default)]
pub struct Tunnels {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
}

/// A registered tunnel: cancelled on revocation; unregisters on drop.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    tunnels: Arc<Tunnels>,
    cancel: CancellationToken,
}

impl Registration {
    /// Completes when the tunnel's session was revoked.
    pub async fn revoked(&self) {
        self.cancel.cancelled().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tunnels.lock().remove(&self.id);
    }
}

impl Tunnels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn register(
        self: &Arc<Self>,
        user: &str,
        session_hash: &str,
        token: CookieValue,
        host: &str,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        self.lock().insert(
            id,
            Entry {
                user: user.to_string(),
                session_hash: session_hash.to_string(),
                token,
                host: host.to_string(),
                cancel: cancel.clone(),
            },
        );
        Registration {
            id,
            tunnels: self.clone(),
            cancel,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancels the tunnels matching `ev`; returns how many.
    pub fn apply(&self, ev: &RevocationEvent) -> usize {
        let live = self.lock();
        let mut n = 0;
        for e in live.values() {
            let hit = match ev {
                RevocationEvent::User { user } => e.user == *user,
                RevocationEvent::Session { id_hash } => e.session_hash == *id_hash,
                // Not a revocation: `listen` re-checks every tunnel.
                RevocationEvent::Resync => false,
                // A tunnel that a grant allowed watches the grant itself (see `proxy`).
                RevocationEvent::Grants { .. } => false,
            };
            if hit {
                e.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Closes the tunnels of users whose record in `users.toml` narrowed (all of them when
    /// changes were lost).
    fn narrowed(&self, users: Result<NarrowedUsers, RecvError>) {
        match users {
            Ok(users) => {
                let mut n = 0;
                for user in users.iter() {
                    n += self.apply(&RevocationEvent::User { user: user.clone() });
                }
                if n > 0 {
                    tracing::info!(
                        closed = n,
                        "users.toml narrowed access: closed live tunnels"
                    );
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "users.toml changes lost; closing every live tunnel");
                self.close_all();
            }
            // The authenticator is gone: shutting down.
            Err(RecvError::Closed) => {}
        }
    }

    fn close_all(&self) {
        for e in self.lock().values() {
            e.cancel.cancel();
        }
    }

    /// After lost events: closes every tunnel whose session is gone or cannot be checked.
    async fn recheck(&self, auth: &Authenticator) {
        let list: Vec<(String, CookieValue, String, CancellationToken)> = self
            .lock()
            .values()
            .map(|e| {
                let (h, t) = (e.session_hash.clone(), e.token.clone());
                (h, t, e.host.clone(), e.cancel.clone())
            })
            .collect();
        for (hash, token, host, cancel) in list {
            match auth.resume_session(token.expose(), &host).await {
                Ok((_, h)) if h == hash => {}
                _ => cancel.cancel(),
            }
        }
    }

    /// Follows the store's revocation events until `stop`.
    pub(crate) async fn listen(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        auth: Authenticator,
        stop: CancellationToken,
    ) {
        let mut narrowed = auth.users().subscribe();
        loop {
            let mut rx = match store.subscribe_revocations().await {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot subscribe to revocations; closing live tunnels and retrying");
                    self.close_all();
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RESUBSCRIBE_BACKOFF) => continue,
                    }
                }
            };
            loop {
                let ev = tokio::select! {
                    () = stop.cancelled() => return,
                    ev = rx.recv() => ev,
                    users = narrowed.recv() => {
                        self.narrowed(users);
                        continue;
                    }
                };
                match ev {
                    Ok(RevocationEvent::Resync) => {
                        tracing::warn!(
                            "revocation events may have been missed while the store link was down; re-checking every live tunnel"
                        );
                        self.recheck(&auth).await;
                    }
                    Ok(ev) => {
                        let n = self.apply(&ev);
                        if n > 0 {
                            tracing::info!(closed = n, "revocation closed live tunnels");
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "revocation events lost; re-checking every live tunnel"
                        );
                        self.recheck(&auth).await;
                    }
                    Err(RecvError::Closed) => {
                        tracing::warn!(
                            "revocation subscription ended; closing live tunnels and re-subscribing"
                        );
                        self.close_all();
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(c: char) -> CookieValue {
        CookieValue::parse(&c.to_string().repeat(43)).unwrap()
    }

    #[tokio::test]
    async fn events_cancel_matching_tunnels_only() {
        let t = Arc::new(Tunnels::default());
        let a = t.register("alice", "h1", v('A'), "app.example");
        let b = t.register("bob", "h2", v('B'), "app.example");
        let a2 = t.register("alice", "h3", v('C'), "app.example");
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.apply(&RevocationEvent::Session {
                id_hash: "h3".into()
            }),
            1
        );
        tokio::time::timeout(Duration::from_secs(1), a2.revoked())
            .await
            .unwrap();
        assert!(!a.cancel.is_cancelled());
        assert_eq!(
            t.apply(&RevocationEvent::User {
                user: "alice".into()
            }),
            2
        );
        assert!(a.cancel.is_cancelled());
        assert!(!b.cancel.is_cancelled());
        drop(a);
        drop(a2);
        assert_eq!(t.len(), 1);
        drop(b);
        assert!(t.is_empty());
    }
}
