//! Live SSH connections, for `gatehouse session list` and for revocation.
//!
//! Threat: a revoked user keeping a live session. Mitigation: every authenticated connection
//! registers with a cancellation token; revoking a user cancels all of that user's tokens,
//! which closes their channels and connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

/// A snapshot of one live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The connection id (also prefix of its channel recordings' audit events).
    pub id: String,
    pub user: String,
    pub target: String,
    pub login: String,
    pub client: SocketAddr,
    pub started: SystemTime,
}

struct Entry {
    info: SessionInfo,
    cancel: CancellationToken,
}

/// The table of live connections; cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Registry {
    pub(crate) fn insert(&self, info: SessionInfo, cancel: CancellationToken) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(info.id.clone(), Entry { info, cancel });
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(id);
        }
    }

    /// Live connections, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = match self.inner.lock() {
            Ok(m) => m.values().map(|e| e.info.clone()).collect(),
            Err(_) => Vec::new(),
        };
        v.sort_by_key(|s| s.started);
        v
    }

    /// Ends every live connection of `user`; returns how many.
    pub fn revoke(&self, user: &str) -> usize {
        let Ok(m) = self.inner.lock() else { return 0 };
        let mut n = 0;
        for e in m.values().filter(|e| e.info.user == user) {
            e.cancel.cancel();
            n += 1;
        }
        n
    }
}
