//! Live SSH connections, for `gatehouse session list`-style listings, revocation and the
//! store keep-alive.
//!
//! Threat: a revoked user keeping a live session. Mitigation: every authenticated connection
//! registers here with its `Ending`; revoking a user ends all of that user's connections
//! (their channels close, the reason goes into their `ssh_connection_close` record), and a
//! connection whose store session is gone is ended the same way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::SystemTime;

use gatehouse_core::store::SessionToken;
use tokio_util::sync::CancellationToken;

use crate::conn::Conn;

/// A snapshot of one live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The connection's session id (the `session` of its audit records).
    pub id: String,
    pub user: String,
    pub target: String,
    pub login: String,
    pub client: SocketAddr,
    pub started: SystemTime,
}

/// How a connection is ended from outside, and why: the first reason given wins.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    token: CancellationToken,
    reason: Arc<OnceLock<&'static str>>,
}

impl Ending {
    /// Ends with the bastion's `shutdown` too (then without a reason of its own).
    pub fn under(shutdown: &CancellationToken) -> Ending {
        Ending {
            token: shutdown.child_token(),
            reason: Arc::new(OnceLock::new()),
        }
    }

    pub fn end(&self, reason: &'static str) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<&'static str> {
        self.reason.get().copied()
    }

    pub fn is_ended(&self) -> bool {
        self.token.is_cancelled()
    }

    pub async fn ended(&self) {
        self.token.cancelled().await;
    }
}

struct Entry {
    info: SessionInfo,
    ending: Ending,
    /// The connection's session in the shared store (listed, touched, deleted at the end).
    token: SessionToken,
    /// The connection itself, to re-check when its user's record narrows.
    conn: Weak<Conn>,
}

/// The table of live connections; cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The reason in the `ssh_connection_close` record of a connection a reviewer ended (the
/// reviewer's own reason is in the `session_terminated` record before it).
pub const ENDED_BY_REVIEWER: &str = "ended by a reviewer";

impl gatehouse_core::recording::EndSsh for Registry {
    fn end_ssh(&self, session: &str) -> bool {
        match self.table().get(session) {
            Some(e) => {
                e.ending.end(ENDED_BY_REVIEWER);
                true
            }
            None => false,
        }
    }
}

impl Registry {
    /// The table, also after a panic elsewhere poisoned it: revocation must still reach
    /// every connection.
    fn table(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, info: SessionInfo, conn: &Arc<Conn>, token: SessionToken) {
        self.table().insert(
            info.id.clone(),
            Entry {
                info,
                ending: conn.ending.clone(),
                token,
                conn: Arc::downgrade(conn),
            },
        );
    }

    /// The live connections of the users in `users` (of every user with `None`).
    pub(crate) fn connections_of(&self, users: Option<&[String]>) -> Vec<Arc<Conn>> {
        self.table()
            .values()
            .filter(|e| users.is_none_or(|u| u.contains(&e.info.user)))
            .filter_map(|e| e.conn.upgrade())
            .collect()
    }

    /// Removes a connection; its store session token, to delete.
    pub(crate) fn remove(&self, id: &str) -> Option<SessionToken> {
        self.table().remove(id).map(|e| e.token)
    }

    /// Live connections, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.table().values().map(|e| e.info.clone()).collect();
        v.sort_by_key(|s| s.started);
        v
    }

    /// Ends every live connection of `user`; returns how many.
    pub fn revoke(&self, user: &str) -> usize {
        let table = self.table();
        let mut n = 0;
        for e in table.values().filter(|e| e.info.user == user) {
            e.ending.end("revoked");
            n += 1;
        }
        n
    }

    /// Ends one connection.
    pub(crate) fn end(&self, id: &str, reason: &'static str) {
        if let Some(e) = self.table().get(id) {
            e.ending.end(reason);
        }
    }

    /// Ends every live connection (a missed revocation must not leave one open).
    pub(crate) fn end_all(&self, reason: &'static str) -> usize {
        let table = self.table();
        for e in table.values() {
            e.ending.end(reason);
        }
        table.len()
    }

    /// (connection id, user, store token) of every live connection.
    pub(crate) fn store_sessions(&self) -> Vec<(String, String, SessionToken)> {
        self.table()
            .values()
            .map(|e| (e.info.id.clone(), e.info.user.clone(), e.token.clone()))
            .collect()
    }
}
