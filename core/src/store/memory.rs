//! The in-process store (`memory://`): one instance only. A std `Mutex` guards plain maps and
//! is never held across an `.await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use super::grants::MemoryGrants;
use super::throttle::{self, AttemptKey, Counter, Gate, Schedules, Scope, Settle};
use super::{
    Grant, Handoff, MAX_ONCE_BYTES, OnceKind, RevocationEvent, Session, SessionData, SessionKey,
    SessionToken, Store, dur_ms, now_ms, session_id_hash,
};
use crate::error::StoreError;

#[derive(Default)]
struct State {
    /// id hash -> session
    sessions: HashMap<String, Session>,
    /// throttling counter name -> (counter, expiry ms)
    counters: HashMap<String, (Counter, u64)>,
    /// (user, step) -> expiry ms
    totp_used: HashMap<(String, u64), u64>,
    /// ticket hash -> (handoff, expiry ms)
    handoffs: HashMap<String, (Handoff, u64)>,
    /// (kind, key) -> (one-time value, expiry ms)
    once: HashMap<(OnceKind, String), (Vec<u8>, u64)>,
}

/// In-process store.
pub struct MemoryStore {
    /// Tells this store's sessions apart in the per-thread copies.
    id: u64,
    state: Mutex<State>,
    events: broadcast::Sender<RevocationEvent>,
    /// Bumped whenever sessions are ended early (logout, revocation): per-thread copies
    /// taken before are not used.
    ended: AtomicU64,
    grants: MemoryGrants,
}

/// A session a thread resumed recently, as it was at that full touch (`at`).
struct Seen {
    store: u64,
    ended: u64,
    key: SessionKey,
    at: u64,
    session: Session,
}

/// Sessions a thread keeps copies of.
const SEEN_PER_THREAD: usize = 16;
/// How long a thread resumes a session from its copy before touching the shared map again
/// (at most a tenth of the idle timeout). The idle clock moves at this granularity: a busy
/// session can idle out that much early, never late.
const TOUCH_GRANULARITY_MS: u64 = 1000;

thread_local! {
    /// Per thread, copies of the sessions it resumed last. Resuming a session on every
    /// request otherwise takes the store's one lock and writes the session's entry: both
    /// cache lines then move between cores on each request. Ended sessions are never
    /// resumed from a copy (`ended`), nor expired or idle ones (checked on the copy).
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        let (events, _) = broadcast::channel(super::REVOCATION_CHANNEL_CAPACITY);
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        MemoryStore {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(State::default()),
            events,
            ended: AtomicU64::new(0),
            grants: MemoryGrants::default(),
        }
    }

    /// A poisoned lock only means another thread panicked mid-update of plain maps; the
    /// maps stay structurally valid, so keep serving.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, ev: RevocationEvent) {
        // No receiver is not an error: nothing live to close.
        let _ = self.events.send(ev);
    }

    /// Drops expired entries (called on writes, so memory stays bounded by live state).
    fn sweep(state: &mut State, now: u64) {
        state.sessions.retain(|_, s| s.is_live(now));
        state.counters.retain(|_, (_, end)| *end > now);
        state.totp_used.retain(|_, end| *end > now);
        state.handoffs.retain(|_, (_, end)| *end > now);
        state.once.retain(|_, (_, end)| *end > now);
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn create_bound_session(
        &self,
        data: SessionData,
        host: Option<&str>,
        ttl: Duration,
        idle: Duration,
    ) -> Result<SessionToken, StoreError> {
        let token = SessionToken::generate()?;
        let id_hash = session_id_hash(token.expose()).ok_or(StoreError::Random)?;
        let now = now_ms();
        let session = Session {
            id_hash: id_hash.clone(),
            data,
            host: host.map(str::to_ascii_lowercase),
            created_ms: now,
            last_seen_ms: now,
            expires_ms: now.saturating_add(dur_ms(ttl)),
            idle_ms: dur_ms(idle),
        };
        let mut st = self.lock();
        Self::sweep(&mut st, now);
        st.sessions.insert(id_hash, session);
        Ok(token)
    }

    async fn touch_session_key(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        let now = now_ms();
        // Read before the map: a session ended after this cannot be filed as current.
        let ended = self.ended.load(Ordering::Acquire);
        let copy = SEEN.with_borrow(|seen| {
            seen.iter()
                .find(|e| e.store == self.id && e.ended == ended && e.key == *key)
                .filter(|e| {
                    let granularity = TOUCH_GRANULARITY_MS.min(e.session.idle_ms / 10);
                    now.saturating_sub(e.at) < granularity && e.session.is_live(now)
                })
                .map(|e| e.session.clone())
        });
        if copy.is_some() {
            return Ok(copy);
        }
        let h = key.as_str();
        let found = {
            let mut st = self.lock();
            match st.sessions.get_mut(h) {
                Some(s) if s.is_live(now) => {
                    s.last_seen_ms = now;
                    Some(s.clone())
                }
                Some(_) => {
                    st.sessions.remove(h);
                    None
                }
                None => None,
            }
        };
        SEEN.with_borrow_mut(|seen| {
            seen.retain(|e| !(e.store == self.id && e.key == *key));
            if let Some(s) = &found {
                if seen.len() >= SEEN_PER_THREAD {
                    seen.remove(0);
                }
                seen.push(Seen {
                    store: self.id,
                    ended,
                    key: key.clone(),
                    at: now,
                    session: s.clone(),
                });
            }
        });
        Ok(found)
    }

    async fn delete_session(&self, raw_id: &str) -> Result<bool, StoreError> {
        let Some(h) = session_id_hash(raw_id) else {
            return Ok(false);
        };
        let existed = self.lock().sessions.remove(&h).is_some();
        // After the removal: a copy taken before it is then never used again.
        self.ended.fetch_add(1, Ordering::AcqRel);
        if existed {
            self.publish(RevocationEvent::Session { id_hash: h });
        }
        Ok(existed)
    }

    async fn end_session_hash(&self, id_hash: &str) -> Result<Option<Session>, StoreError> {
        if !super::is_session_hash(id_hash) {
            return Ok(None);
        }
        let removed = self.lock().sessions.remove(id_hash);
        // After the removal: a copy taken before it is then never used again.
        self.ended.fetch_add(1, Ordering::AcqRel);
        if removed.is_some() {
            self.publish(RevocationEvent::Session {
                id_hash: id_hash.to_string(),
            });
        }
        Ok(removed)
    }

    async fn end_login(&self, user: &str, login_id: &str) -> Result<Vec<String>, StoreError> {
        let ended: Vec<String> = {
            let mut st = self.lock();
            let hashes: Vec<String> = st
                .sessions
                .values()
                .filter(|s| s.data.user == user && s.data.login_id.as_deref() == Some(login_id))
                .map(|s| s.id_hash.clone())
                .collect();
            for h in &hashes {
                st.sessions.remove(h);
            }
            hashes
        };
        // After the removal: a copy taken before it is then never used again.
        self.ended.fetch_add(1, Ordering::AcqRel);
        for h in &ended {
            self.publish(RevocationEvent::Session { id_hash: h.clone() });
        }
        Ok(ended)
    }

    async fn list_sessions(&self) -> Result<Vec<Session>, StoreError> {
        let now = now_ms();
        let mut list: Vec<Session> = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.is_live(now))
            .cloned()
            .collect();
        list.sort_by(|a, b| {
            a.data
                .user
                .cmp(&b.data.user)
                .then(a.created_ms.cmp(&b.created_ms))
        });
        Ok(list)
    }

    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        let now = now_ms();
        let count = {
            let mut st = self.lock();
            let before = st.sessions.len();
            st.sessions.retain(|_, s| s.data.user != user);
            let removed = before - st.sessions.len();
            Self::sweep(&mut st, now);
            removed as u64
        };
        // After the removal: a copy taken before it is then never used again.
        self.ended.fetch_add(1, Ordering::AcqRel);
        self.publish(RevocationEvent::User {
            user: user.to_string(),
        });
        Ok(count)
    }

    async fn attempt_gate(
        &self,
        key: &AttemptKey,
        schedules: &Schedules,
        now_ms: u64,
        reserve: bool,
    ) -> Result<Gate, StoreError> {
        let names = key.names();
        let mut st = self.lock();
        Self::sweep(&mut st, now_ms);
        let counters = names
            .clone()
            .map(|n| st.counters.get(&n).map(|(c, _)| *c).unwrap_or_default());
        let gate = throttle::decide(counters, schedules, now_ms);
        let Gate::Open(mut counts) = gate else {
            return Ok(gate);
        };
        if !reserve {
            return Ok(gate);
        }
        let window = schedules.window_ms();
        for (name, scope) in names.into_iter().zip(Scope::ALL) {
            let (c, end) = st
                .counters
                .entry(name)
                .or_insert((Counter::default(), now_ms.saturating_add(window)));
            c.failures = c.failures.saturating_add(1);
            c.last_ms = now_ms;
            let cover = throttle::cover_ms(schedules.of(scope), c.failures);
            *end = (*end).max(now_ms.saturating_add(cover));
            match scope {
                Scope::UserAtAddress => counts.user_at_address = c.failures,
                Scope::Address => counts.address = c.failures,
                Scope::User => counts.user = c.failures,
            }
        }
        Ok(Gate::Open(counts))
    }

    async fn settle_attempt(&self, key: &AttemptKey, how: Settle) -> Result<(), StoreError> {
        let mut st = self.lock();
        for (name, scope) in key.names().into_iter().zip(Scope::ALL) {
            if how == Settle::Success && scope == Scope::UserAtAddress {
                st.counters.remove(&name);
            } else if let Some((c, _)) = st.counters.get_mut(&name) {
                c.failures = c.failures.saturating_sub(1);
            }
        }
        Ok(())
    }

    async fn mark_totp_used(&self, user: &str, step: u64) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut st = self.lock();
        let k = (user.to_string(), step);
        if st.totp_used.get(&k).is_some_and(|end| *end > now) {
            return Ok(false);
        }
        st.totp_used
            .insert(k, now.saturating_add(dur_ms(super::TOTP_REPLAY_TTL)));
        Ok(true)
    }

    async fn put_handoff(
        &self,
        ticket_hash: &str,
        handoff: &Handoff,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut st = self.lock();
        Self::sweep(&mut st, now);
        st.handoffs.insert(
            ticket_hash.to_string(),
            (handoff.clone(), now.saturating_add(dur_ms(ttl))),
        );
        Ok(())
    }

    async fn take_handoff(&self, ticket_hash: &str) -> Result<Option<Handoff>, StoreError> {
        let now = now_ms();
        let taken = self.lock().handoffs.remove(ticket_hash);
        Ok(taken.filter(|(_, end)| *end > now).map(|(h, _)| h))
    }

    async fn put_once(
        &self,
        kind: OnceKind,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if value.len() > MAX_ONCE_BYTES {
            return Err(StoreError::TooLarge { op: "put_once" });
        }
        let now = now_ms();
        let mut st = self.lock();
        Self::sweep(&mut st, now);
        st.once.insert(
            (kind, key.to_string()),
            (value.to_vec(), now.saturating_add(dur_ms(ttl))),
        );
        Ok(())
    }

    async fn take_once(&self, kind: OnceKind, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = now_ms();
        let taken = self.lock().once.remove(&(kind, key.to_string()));
        Ok(taken.filter(|(_, end)| *end > now).map(|(v, _)| v))
    }

    async fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.grants.put(grant, now_ms());
        self.publish(RevocationEvent::Grants { revoked: None });
        Ok(())
    }

    async fn list_grants(&self) -> Result<Vec<Grant>, StoreError> {
        Ok(self.grants.list(now_ms()))
    }

    async fn revoke_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        let removed = self.grants.revoke(id, now_ms());
        if removed.is_some() {
            self.publish(RevocationEvent::Grants {
                revoked: Some(id.to_string()),
            });
        }
        Ok(removed)
    }

    async fn grants_generation(&self) -> Result<u64, StoreError> {
        Ok(self.grants.generation())
    }

    async fn subscribe_revocations(
        &self,
    ) -> Result<broadcast::Receiver<RevocationEvent>, StoreError> {
        Ok(self.events.subscribe())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_in_process(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::store::conformance::{IDLE, TTL, data};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn live(s: &MemoryStore, tok: &SessionToken) -> bool {
        rt().block_on(s.touch_session(tok.expose()))
            .unwrap()
            .is_some()
    }

    #[test]
    fn an_ended_session_is_never_resumed_from_a_thread_copy() {
        let s = MemoryStore::new();
        let rt = rt();
        let a = rt
            .block_on(s.create_session(data("alice"), TTL, IDLE))
            .unwrap();
        let b = rt
            .block_on(s.create_session(data("alice"), TTL, IDLE))
            .unwrap();
        let c = rt
            .block_on(s.create_session(data("bob"), TTL, IDLE))
            .unwrap();
        let all = [&a, &b, &c];
        std::thread::scope(|sc| {
            // Another thread that keeps copies of all three, and answers which are live.
            let (ask, asked) = mpsc::channel::<()>();
            let (answer, answers) = mpsc::channel::<[bool; 3]>();
            let (s, all) = (&s, &all);
            sc.spawn(move || {
                for () in asked {
                    answer.send(all.map(|t| live(s, t))).unwrap();
                }
            });
            let other = || {
                ask.send(()).unwrap();
                answers.recv().unwrap()
            };
            assert_eq!(all.map(|t| live(s, t)), [true; 3]);
            assert_eq!(other(), [true; 3]);
            // Logout: refused at once on both threads, though both hold a copy.
            assert!(rt.block_on(s.delete_session(a.expose())).unwrap());
            assert_eq!(all.map(|t| live(s, t)), [false, true, true]);
            assert_eq!(other(), [false, true, true]);
            // Revoking alice ends her other session too, and only hers.
            assert_eq!(rt.block_on(s.revoke_user("alice")).unwrap(), 1);
            assert_eq!(all.map(|t| live(s, t)), [false, false, true]);
            assert_eq!(other(), [false, false, true]);
            drop(ask);
        });
    }

    #[test]
    fn a_session_resumed_from_copies_still_idles_out() {
        let s = MemoryStore::new();
        let idle = Duration::from_millis(300);
        let rt = rt();
        let t = rt
            .block_on(s.create_session(data("alice"), TTL, idle))
            .unwrap();
        // Busy: resumed many times within the copy's granularity, stays live.
        let until = std::time::Instant::now() + idle;
        while std::time::Instant::now() < until {
            assert!(live(&s, &t));
        }
        // Then unused for longer than the idle timeout: gone, copy or not.
        std::thread::sleep(idle + Duration::from_millis(50));
        assert!(!live(&s, &t));
    }
}
