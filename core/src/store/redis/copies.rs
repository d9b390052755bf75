//! This instance's copies of records read from Redis, each kept only while Redis tracks it
//! for this instance (RESP3 client-side caching, see [`super::link`]).
//!
//! Threat: a copy outliving the record it copies — a logout, revocation or lock on another
//! instance, or a record altered in Redis, while this instance keeps answering from the old
//! copy. Mitigations: a copy is filed only from a read made on the tracking connection, so
//! Redis will tell this instance when the key changes; an invalidation that arrives while
//! the read is in flight (the answer and the push travel separately through the client)
//! makes the filing fail, by a per-shard epoch taken before the read ([`Ticket`]); a link
//! change (lost connection, reconnect) empties every map and makes every ticket taken
//! before it stale; copies are served only while the link's lease holds ([`LinkState`]).
//!
//! Grants: the policy keeps its own copy of every grant (`crate::grant::follow`), refreshed
//! when the grants' generation changes; here the generation is a tracked copy too, and any
//! invalidation of a grant record bumps [`Copies::grant_changes`], which the generation
//! answered includes, so a grant record changed behind gatehouse's back (or expired) still
//! makes every instance refresh.
//!
//! Adding a kind of copy: give [`Copies`] a [`Tracked`] map, route its key prefix in
//! [`Copies::invalidate`], clear it in [`Copies::clear`], and fill it like
//! `RedisStore::grants_generation` does (ticket, read on the link, file).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use super::{GRANT_PREFIX, GRANTS_GENERATION, SESSION_PREFIX};
use crate::store::Session;

/// Shards of each map: an invalidation of one key refuses the fills in flight of its shard
/// only, and the request path of different sessions takes different locks.
const SHARDS: usize = 32;
/// Most session copies kept (all shards): beyond, a shard forgets one copy (it is read from
/// Redis again when used; forgetting is always safe).
pub(super) const MAX_SESSION_COPIES: usize = 64 * 1024;

/// Milliseconds on a monotonic clock (leases must not move with the wall clock).
pub(super) fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The tracking connection's state, read on every request.
#[derive(Debug, Default)]
pub(super) struct LinkState {
    /// Bumped at every connection and every loss: tickets of another generation are stale.
    generation: AtomicU64,
    up: AtomicBool,
    /// Copies may be served until this instant ([`mono_ms`]): the sending time of the last
    /// answered heartbeat plus the bound. Every invalidation Redis sent before answering
    /// that heartbeat was applied before its answer was seen (one connection, in order).
    lease_until: AtomicU64,
}

impl LinkState {
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// True while copies may be answered from (up, and the lease holds at `now`).
    pub(super) fn serving(&self, now: u64) -> bool {
        self.is_up() && now < self.lease_until.load(Ordering::Acquire)
    }

    /// A heartbeat sent at `sent` was answered on generation `generation`.
    pub(super) fn renew(&self, generation: u64, sent: u64, bound: u64) {
        if self.generation() == generation {
            self.lease_until
                .fetch_max(sent.saturating_add(bound), Ordering::AcqRel);
        }
    }

    /// A new connection is tracking; returns its generation.
    pub(super) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(super) fn set_up(&self, generation: u64, sent: u64, bound: u64) -> bool {
        if self.generation() != generation {
            return false;
        }
        self.lease_until
            .store(sent.saturating_add(bound), Ordering::Release);
        self.up.store(true, Ordering::Release);
        true
    }

    /// The connection of `generation` is lost: down, and every ticket before is stale.
    /// False when that connection was already replaced (nothing to do).
    pub(super) fn set_down(&self, generation: u64) -> bool {
        let moved = self
            .generation
            .compare_exchange(
                generation,
                generation + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if moved {
            self.up.store(false, Ordering::Release);
            self.lease_until.store(0, Ordering::Release);
        }
        moved
    }
}

/// Taken before a read on the tracking connection; the answer is filed only if neither the
/// link nor the key's shard saw a change since.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    generation: u64,
    shard: usize,
    epoch: u64,
}

struct Shard<V> {
    /// Bumped by every invalidation of a key of this shard.
    epoch: u64,
    map: HashMap<String, V>,
}

/// Copies of one kind of record, keyed by the rest of their Redis key after the kind's prefix.
pub(super) struct Tracked<V> {
    shards: [Mutex<Shard<V>>; SHARDS],
    /// Each shard's epoch, readable without its lock: a per-thread copy taken at one epoch
    /// is stale once its shard's epoch moved (see [`Tracked::stamp`]).
    stamps: [AtomicU64; SHARDS],
    per_shard: usize,
}

/// FNV-1a: the shard of a key (keys are hashes or names, not attacker-chosen to collide
/// usefully: a collision only shares a lock).
fn shard_of(key: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % SHARDS as u64).unwrap_or(0)
}

impl<V: Clone> Tracked<V> {
    pub(super) fn new(max: usize) -> Tracked<V> {
        Tracked {
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    epoch: 0,
                    map: HashMap::new(),
                })
            }),
            stamps: std::array::from_fn(|_| AtomicU64::new(0)),
            per_shard: (max / SHARDS).max(1),
        }
    }

    /// The epoch of `key`'s shard, read without its lock. Read before [`Tracked::get`], it
    /// dates what `get` returns: a copy kept elsewhere (per thread) with this stamp is
    /// current while `stamp(key)` still returns it (every invalidation of the shard, and
    /// every clear, moves it).
    pub(super) fn stamp(&self, key: &str) -> u64 {
        // `shard_of` is below SHARDS.
        #[allow(clippy::indexing_slicing)]
        self.stamps[shard_of(key)].load(Ordering::Acquire)
    }

    fn bump(&self, i: usize, s: &mut Shard<V>) {
        s.epoch = s.epoch.wrapping_add(1);
        #[allow(clippy::indexing_slicing)]
        self.stamps[i % SHARDS].store(s.epoch, Ordering::Release);
    }

    /// A poisoned lock means a panic mid-update of a plain map, which stays valid.
    fn shard(&self, i: usize) -> MutexGuard<'_, Shard<V>> {
        // `i % SHARDS` indexes the SHARDS-long array.
        #[allow(clippy::indexing_slicing)]
        let shard = &self.shards[i % SHARDS];
        shard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The copy of `key`, if any (the caller checks the link is serving).
    pub(super) fn get(&self, key: &str) -> Option<V> {
        self.shard(shard_of(key)).map.get(key).cloned()
    }

    pub(super) fn ticket(&self, generation: u64, key: &str) -> Ticket {
        let shard = shard_of(key);
        Ticket {
            generation,
            shard,
            epoch: self.shard(shard).epoch,
        }
    }

    /// Files `value` as the copy of `key` unless the ticket is stale; true when filed.
    pub(super) fn file(&self, t: Ticket, link: &LinkState, key: &str, value: V) -> bool {
        let mut s = self.shard(t.shard);
        // Checked under the shard lock: a loss bumps the generation before it clears the
        // shards, so a copy filed here before the bump is cleared after it.
        if s.epoch != t.epoch || link.generation() != t.generation || !link.is_up() {
            return false;
        }
        if s.map.len() >= self.per_shard
            && !s.map.contains_key(key)
            && let Some(old) = s.map.keys().next().cloned()
        {
            s.map.remove(&old);
        }
        s.map.insert(key.to_string(), value);
        true
    }

    /// Forgets the copy of `key` and refuses fills of its shard in flight.
    pub(super) fn invalidate(&self, key: &str) {
        let i = shard_of(key);
        let mut s = self.shard(i);
        self.bump(i, &mut s);
        s.map.remove(key);
    }

    /// Forgets every copy and refuses every fill in flight.
    pub(super) fn clear(&self) {
        for i in 0..SHARDS {
            let mut s = self.shard(i);
            self.bump(i, &mut s);
            s.map.clear();
        }
    }

    /// Drops the copies `keep` refuses (expired ones), one shard per call.
    pub(super) fn sweep(&self, shard: usize, keep: impl Fn(&V) -> bool) {
        self.shard(shard).map.retain(|_, v| keep(v));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).map.len()).sum()
    }
}

/// A session as last read from Redis.
#[derive(Debug)]
pub(super) struct SessionCopy {
    pub(super) session: Session,
    /// When a touch of this copy was last claimed ([`crate::store::now_ms`]): one request
    /// writes the idle clock back while the others keep answering from the copy.
    touch_claimed: AtomicU64,
}

impl SessionCopy {
    pub(super) fn new(session: Session) -> Arc<SessionCopy> {
        let at = session.last_seen_ms;
        Arc::new(SessionCopy {
            session,
            touch_claimed: AtomicU64::new(at),
        })
    }

    /// True for the one caller that should write the idle clock back now.
    pub(super) fn claim_touch(&self, now: u64, granularity: u64) -> bool {
        let last = self.touch_claimed.load(Ordering::Acquire);
        now.saturating_sub(last) >= granularity
            && self
                .touch_claimed
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// The key of the grants' generation in [`Copies::grants_generation`].
pub(super) const GENERATION_COPY: &str = "generation";

/// Every kind of copy this instance keeps.
pub(super) struct Copies {
    pub(super) sessions: Tracked<Arc<SessionCopy>>,
    /// The grants' generation as last read (one key: [`GENERATION_COPY`]).
    pub(super) grants_generation: Tracked<u64>,
    /// Invalidations of grant records seen (added to the generation answered).
    pub(super) grant_changes: AtomicU64,
    /// Which shard the next sweep visits.
    sweep_at: AtomicU64,
}

impl Default for Copies {
    fn default() -> Self {
        Copies {
            sessions: Tracked::new(MAX_SESSION_COPIES),
            grants_generation: Tracked::new(SHARDS),
            grant_changes: AtomicU64::new(0),
            sweep_at: AtomicU64::new(0),
        }
    }
}

impl Copies {
    /// An invalidation from Redis for `redis_key`.
    pub(super) fn invalidate(&self, redis_key: &[u8]) {
        let Ok(k) = std::str::from_utf8(redis_key) else {
            return;
        };
        if let Some(h) = k.strip_prefix(SESSION_PREFIX) {
            self.sessions.invalidate(h);
        } else if k == GRANTS_GENERATION {
            self.grants_generation.invalidate(GENERATION_COPY);
        } else if k.starts_with(GRANT_PREFIX) {
            self.grant_changed();
        }
    }

    /// A grant record changed: the generation answered next differs from the last one.
    pub(super) fn grant_changed(&self) {
        self.grant_changes.fetch_add(1, Ordering::AcqRel);
        self.grants_generation.invalidate(GENERATION_COPY);
    }

    /// Forgets every copy (link lost, or Redis flushed).
    pub(super) fn clear(&self) {
        self.sessions.clear();
        self.grants_generation.clear();
        self.grant_changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops expired copies of one shard of each map (called by the heartbeat).
    pub(super) fn sweep(&self, now: u64) {
        let i = usize::try_from(self.sweep_at.fetch_add(1, Ordering::Relaxed) % SHARDS as u64)
            .unwrap_or(0);
        self.sessions.sweep(i, |c| c.session.is_live(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_link() -> LinkState {
        let l = LinkState::default();
        let g = l.next_generation();
        assert!(l.set_up(g, mono_ms(), 1000));
        l
    }

    #[test]
    fn an_invalidation_during_a_read_refuses_its_filing() {
        let link = up_link();
        let t: Tracked<u32> = Tracked::new(1024);
        let g = link.generation();
        // Read in flight when the key changes: the answer may be the old value.
        let ticket = t.ticket(g, "k");
        t.invalidate("k");
        assert!(!t.file(ticket, &link, "k", 1));
        assert_eq!(t.get("k"), None);
        // A read after the change files.
        let ticket = t.ticket(g, "k");
        assert!(t.file(ticket, &link, "k", 2));
        assert_eq!(t.get("k"), Some(2));
        t.invalidate("k");
        assert_eq!(t.get("k"), None);
    }

    #[test]
    fn a_lost_link_refuses_fills_taken_before_and_serves_nothing() {
        let link = up_link();
        let t: Tracked<u32> = Tracked::new(1024);
        let g = link.generation();
        let ticket = t.ticket(g, "k");
        assert!(link.set_down(g));
        t.clear();
        assert!(!link.serving(mono_ms()));
        assert!(!t.file(ticket, &link, "k", 1));
        // Back on a new connection: the old ticket stays stale.
        let g2 = link.next_generation();
        assert!(link.set_up(g2, mono_ms(), 1000));
        assert!(!t.file(ticket, &link, "k", 1));
        assert!(t.file(t.ticket(g2, "k"), &link, "k", 3));
        // A loss reported by a connection already replaced changes nothing.
        assert!(!link.set_down(g));
        assert!(link.serving(mono_ms()));
    }

    #[test]
    fn the_lease_lapses_without_heartbeats() {
        let link = LinkState::default();
        let g = link.next_generation();
        let now = mono_ms();
        assert!(link.set_up(g, now, 50));
        assert!(link.serving(now));
        assert!(!link.serving(now + 50));
        link.renew(g, now + 40, 50);
        assert!(link.serving(now + 60));
        // A heartbeat answered on an old connection renews nothing.
        link.renew(g + 7, now + 500, 50);
        assert!(!link.serving(now + 100));
    }

    #[test]
    fn maps_stay_bounded_and_route_invalidations_by_prefix() {
        let link = up_link();
        let c = Copies::default();
        let t: Tracked<u32> = Tracked::new(SHARDS * 2);
        for i in 0..1000u32 {
            let k = i.to_string();
            assert!(t.file(t.ticket(link.generation(), &k), &link, &k, i));
        }
        assert!(t.len() <= SHARDS * 2);
        let g = link.generation();
        let gen_ticket = c.grants_generation.ticket(g, GENERATION_COPY);
        assert!(
            c.grants_generation
                .file(gen_ticket, &link, GENERATION_COPY, 7)
        );
        c.invalidate(format!("{SESSION_PREFIX}{GENERATION_COPY}").as_bytes());
        assert_eq!(c.grants_generation.get(GENERATION_COPY), Some(7));
        c.invalidate(GRANTS_GENERATION.as_bytes());
        assert_eq!(c.grants_generation.get(GENERATION_COPY), None);
    }

    #[test]
    fn a_stamp_moves_with_every_invalidation_of_its_shard_and_every_clear() {
        let link = up_link();
        let t: Tracked<u32> = Tracked::new(SHARDS * 4);
        let s0 = t.stamp("a");
        assert!(t.file(t.ticket(link.generation(), "a"), &link, "a", 1));
        assert_eq!(t.stamp("a"), s0, "filing a copy leaves it");
        t.invalidate("a");
        let s1 = t.stamp("a");
        assert_ne!(s1, s0);
        // Another key of another shard leaves it; a clear moves every shard's.
        let other = (0..1000)
            .map(|i| i.to_string())
            .find(|k| shard_of(k) != shard_of("a"))
            .unwrap();
        t.invalidate(&other);
        assert_eq!(t.stamp("a"), s1);
        t.clear();
        assert_ne!(t.stamp("a"), s1);
    }
}
