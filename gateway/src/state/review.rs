//! What the reviewer console needs besides the services, computed once at bind: where the
//! audit log is (session pages show a session's records, web sessions their requests), the
//! app hosts (web timelines), the gateway's stop token (live views end at a drain), and the
//! memory of which replays were already audited.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_core::Config;
use gatehouse_core::recording::{Checkpoint, RecordingId};
use tokio_util::sync::CancellationToken;

/// A replay is audited once per reviewer session and recording within this window (the
/// player fetches a recording's screens piece by piece; each fetch still passes the policy
/// check and its `access_allowed` record).
pub const REPLAY_AUDIT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Replays remembered at once; past it the oldest are forgotten (and audited again).
const REPLAYS_REMEMBERED: usize = 4096;
/// Recordings whose replay checkpoints are kept; past it the least recently used go.
const CHECKPOINTED_RECORDINGS: usize = 16;
/// Checkpoints kept per recording (one every [`CHECKPOINT_EVERY`] seconds of it).
const CHECKPOINTS_PER_RECORDING: usize = 1024;
/// Seconds of recording between two replay checkpoints: a seek draws at most this much
/// before its range (reading, not drawing, is then most of its cost).
pub const CHECKPOINT_EVERY: f64 = 60.0;

#[derive(Debug)]
pub struct ReviewCtx {
    pub audit_dir: PathBuf,
    /// App name to host, for web timelines.
    pub hosts: HashMap<String, String>,
    /// Cancelled when the gateway drains: live views end.
    pub stop: CancellationToken,
    replays: Mutex<HashMap<(String, RecordingId), Instant>>,
    /// Terminal states of recordings being replayed, by time, most recently used last.
    checkpoints: Mutex<Vec<(RecordingId, Vec<Checkpoint>)>>,
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
            checkpoints: Mutex::new(Vec::new()),
        }
    }

    /// The latest checkpoint of `id` before `from` (a recording only grows: a checkpoint
    /// stays true).
    pub fn checkpoint_before(&self, id: &RecordingId, from: f64) -> Option<Checkpoint> {
        let mut all = self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let i = all.iter().position(|(r, _)| r == id)?;
        let entry = all.remove(i);
        let found = entry.1.iter().rev().find(|c| c.time < from).cloned();
        all.push(entry);
        found
    }

    /// Keeps the checkpoints a replay of `id` took.
    pub fn keep_checkpoints(&self, id: &RecordingId, taken: Vec<Checkpoint>) {
        if taken.is_empty() {
            return;
        }
        let mut all = self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut cps = match all.iter().position(|(r, _)| r == id) {
            Some(i) => all.remove(i).1,
            None => Vec::new(),
        };
        cps.extend(taken);
        cps.sort_by(|a, b| a.time.total_cmp(&b.time));
        cps.dedup_by(|a, b| a.time == b.time);
        if cps.len() > CHECKPOINTS_PER_RECORDING {
            // Thin out evenly rather than lose the late ones.
            cps = cps.into_iter().step_by(2).collect();
        }
        if all.len() >= CHECKPOINTED_RECORDINGS {
            all.remove(0);
        }
        all.push((id.clone(), cps));
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

    #[test]
    fn checkpoints_are_found_before_a_time_and_bounded() {
        let config = gatehouse_core::Config::quickstart().unwrap();
        let ctx = ReviewCtx::new(&config, CancellationToken::new());
        let cp = |t: f64| Checkpoint {
            time: t,
            cols: 80,
            rows: 24,
            dump: String::new(),
        };
        let id = |n: usize| RecordingId::parse(&format!("{n:032x}")).unwrap();
        assert!(ctx.checkpoint_before(&id(1), 100.0).is_none());
        ctx.keep_checkpoints(&id(1), vec![cp(60.0), cp(120.0)]);
        ctx.keep_checkpoints(&id(1), vec![cp(180.0), cp(120.0)]);
        let at = |t: f64| ctx.checkpoint_before(&id(1), t).map(|c| c.time);
        assert_eq!(
            (at(60.0), at(61.0), at(500.0)),
            (None, Some(60.0), Some(180.0))
        );
        for n in 2..=CHECKPOINTED_RECORDINGS + 1 {
            ctx.keep_checkpoints(&id(n), vec![cp(60.0)]);
        }
        assert_eq!(at(500.0), None, "the least recently used recording went");
        ctx.keep_checkpoints(&id(1), (1..=2000).map(|i| cp(i as f64)).collect());
        assert!(
            ctx.checkpoints.lock().unwrap().last().unwrap().1.len() <= CHECKPOINTS_PER_RECORDING
        );
    }
}
