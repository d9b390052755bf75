//! Sessions this instance knows were ended early (logout, revocation, lock).
//!
//! Threat: Redis restarted from an older copy of its data (an RDB snapshot, an AOF that lost
//! its last second) brings back session records that were deleted by a revocation, and with
//! them sessions that were revoked. Mitigation: every instance remembers the hashes of the
//! sessions ended by revocation messages it received (and by its own logouts and
//! revocations) for [`TOMBSTONE_TTL`]; a record read again under such a hash is deleted, never
//! served. An instance started after the revocation does not know it: the bound is stated in
//! the README.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long an ended session is remembered: longer than any session lives by default
/// (`session_ttl` 12 h).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most ended sessions remembered (32 bytes each, about 4 MiB in all); the oldest go first.
const MAX_TOMBSTONES: usize = 64 * 1024;

/// A session hash as 32 bytes; `None` unless 64 lowercase hex digits.
fn decode(hash: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let b = hash.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [h, l] => (nibble(*h)?, nibble(*l)?),
            _ => return None,
        };
        *o = hi << 4 | lo;
    }
    Some(out)
}

/// Hashes of ended sessions, each with the wall time (ms) it is forgotten at.
#[derive(Default)]
pub(super) struct Tombstones(Mutex<HashMap<[u8; 32], u64>>);

impl Tombstones {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that the session `hash` ended (at `now`, wall ms).
    pub(super) fn add(&self, hash: &str, now: u64) {
        let Some(k) = decode(hash) else { return };
        let ttl = u64::try_from(TOMBSTONE_TTL.as_millis()).unwrap_or(u64::MAX);
        let mut m = self.lock();
        if m.len() >= MAX_TOMBSTONES {
            m.retain(|_, until| *until > now);
            if m.len() >= MAX_TOMBSTONES {
                // Full of live entries: forget the one closest to its end.
                if let Some(oldest) = m.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                    m.remove(&oldest);
                }
            }
        }
        m.insert(k, now.saturating_add(ttl));
    }

    /// True when the session `hash` is known to have ended (before `now`'s horizon).
    pub(super) fn contains(&self, hash: &str, now: u64) -> bool {
        decode(hash).is_some_and(|k| self.lock().get(&k).is_some_and(|until| *until > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_sessions_are_remembered_for_their_time_and_bounded() {
        let t = Tombstones::default();
        let h = "ab".repeat(32);
        assert!(!t.contains(&h, 0));
        t.add(&h, 1_000);
        assert!(t.contains(&h, 2_000));
        let ttl = u64::try_from(TOMBSTONE_TTL.as_millis()).unwrap();
        assert!(!t.contains(&h, 1_000 + ttl));
        // Malformed hashes are neither stored nor found.
        for bad in ["", "AB".repeat(32).as_str(), "zz".repeat(32).as_str(), "ab"] {
            t.add(bad, 1_000);
            assert!(!t.contains(bad, 2_000));
        }
        for i in 0..(MAX_TOMBSTONES + 10) {
            t.add(&format!("{i:064x}"), 5_000 + i as u64);
        }
        assert!(t.lock().len() <= MAX_TOMBSTONES);
        assert!(t.contains(&format!("{:064x}", MAX_TOMBSTONES + 9), 6_000));
    }
}
