//! What the reviewer console needs besides the services, computed once at bind: where the
//! audit log is (session pages show a session's records, web sessions their requests), the
//! app hosts (web timelines), the gateway's stop token (live views end at a drain), and the
//! memory of which replays were already audited.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_core::Config;
use gatehouse_core::recording::RecordingId;
use tokio_util::sync::CancellationToken;

/// A replay is audited once per reviewer session and recording within this window (the
/// player fetches a recording's screens piece by piece; each fetch still passes the policy
/// check and its `access_allowed` record).
pub const REPLAY_AUDIT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Replays remembered at once; past it the oldest are forgotten (and audited again).
const REPLAYS_REMEMBERED: usize = 4096;

#[derive(Debug)]
pub struct ReviewCtx {
    pub audit_dir: PathBuf,
    /// App name to host, for web timelines.
    pub hosts: HashMap<String, String>,
    /// Cancelled when the gateway drains: live views end.
    pub stop: CancellationToken,
    replays: Mutex<HashMap<(String, RecordingId), Instant>>,
}

impl ReviewCtx {
    pub fn new(config: &Config, stop: CancellationToken) -> ReviewCtx {
        ReviewCtx {
            audit_dir: config.audit.dir.clone(),
            hosts: config
                .apps
                .iter()
                .map(|a| (a.name.clone(), a.host.clone()))
                .collect(),
            stop,
            replays: Mutex::new(HashMap::new()),
        }
    }

    /// True when this reviewer session's replay of `id` is to be audited now (first fetch,
    /// or the last audited one is older than [`REPLAY_AUDIT_WINDOW`]).
    pub fn replay_needs_audit(&self, session: &str, id: &RecordingId) -> bool {
        let now = Instant::now();
        let mut seen = self.replays.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (session.to_string(), id.clone());
        if seen
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < REPLAY_AUDIT_WINDOW)
        {
            return false;
        }
        if seen.len() >= REPLAYS_REMEMBERED {
            seen.retain(|_, t| now.duration_since(*t) < REPLAY_AUDIT_WINDOW);
            if seen.len() >= REPLAYS_REMEMBERED {
                seen.clear();
            }
        }
        seen.insert(key, now);
        true
    }

    /// Forgets a replay whose audit record could not be written (the next fetch tries
    /// again).
    pub fn forget_replay(&self, session: &str, id: &RecordingId) {
        self.replays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(session.to_string(), id.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_is_audited_once_per_session_and_recording() {
        let config = gatehouse_core::Config::quickstart().unwrap();
        let ctx = ReviewCtx::new(&config, CancellationToken::new());
        let a = RecordingId::parse(&"a".repeat(32)).unwrap();
        let b = RecordingId::parse(&"b".repeat(32)).unwrap();
        assert!(ctx.replay_needs_audit("s1", &a));
        assert!(!ctx.replay_needs_audit("s1", &a));
        assert!(ctx.replay_needs_audit("s1", &b));
        assert!(ctx.replay_needs_audit("s2", &a));
        ctx.forget_replay("s1", &a);
        assert!(ctx.replay_needs_audit("s1", &a));
    }
}
