//! The in-process store (`memory://`): one instance only. A std `Mutex` guards plain maps and
//! is never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use super::{
    FailureStatus, Handoff, LockoutKey, LockoutPolicy, RevocationEvent, Session, SessionData,
    SessionKey, SessionToken, Store, dur_ms, now_ms, session_id_hash,
};
use crate::error::StoreError;

#[derive(Default)]
struct State {
    /// id hash -> session
    sessions: HashMap<String, Session>,
    /// key -> (failures, window end ms)
    failures: HashMap<String, (u64, u64)>,
    /// key -> lock end ms
    locks: HashMap<String, u64>,
    /// (user, step) -> expiry ms
    totp_used: HashMap<(String, u64), u64>,
    /// ticket hash -> (handoff, expiry ms)
    handoffs: HashMap<String, (Handoff, u64)>,
}

/// In-process store.
pub struct MemoryStore {
    state: Mutex<State>,
    events: broadcast::Sender<RevocationEvent>,
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
        MemoryStore {
            state: Mutex::new(State::default()),
            events,
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
        state.failures.retain(|_, (_, end)| *end > now);
        state.locks.retain(|_, end| *end > now);
        state.totp_used.retain(|_, end| *end > now);
        state.handoffs.retain(|_, (_, end)| *end > now);
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn create_session(
        &self,
        data: SessionData,
        ttl: Duration,
        idle: Duration,
    ) -> Result<SessionToken, StoreError> {
        let token = SessionToken::generate()?;
        let id_hash = session_id_hash(token.expose()).ok_or(StoreError::Random)?;
        let now = now_ms();
        let session = Session {
            id_hash: id_hash.clone(),
            data,
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
        let h = key.as_str();
        let now = now_ms();
        let mut st = self.lock();
        match st.sessions.get_mut(h) {
            Some(s) if s.is_live(now) => {
                s.last_seen_ms = now;
                Ok(Some(s.clone()))
            }
            Some(_) => {
                st.sessions.remove(h);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn delete_session(&self, raw_id: &str) -> Result<bool, StoreError> {
        let Some(h) = session_id_hash(raw_id) else {
            return Ok(false);
        };
        let existed = self.lock().sessions.remove(&h).is_some();
        if existed {
            self.publish(RevocationEvent::Session { id_hash: h });
        }
        Ok(existed)
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
        self.publish(RevocationEvent::User {
            user: user.to_string(),
        });
        Ok(count)
    }

    async fn record_failure(
        &self,
        key: &LockoutKey,
        policy: &LockoutPolicy,
    ) -> Result<FailureStatus, StoreError> {
        let k = key.as_key();
        let now = now_ms();
        let mut st = self.lock();
        Self::sweep(&mut st, now);
        let entry = st
            .failures
            .entry(k.clone())
            .or_insert((0, now.saturating_add(dur_ms(policy.window))));
        entry.0 = entry.0.saturating_add(1);
        let failures = entry.0;
        let already = st.locks.get(&k).copied();
        let mut newly_locked = false;
        let lock_end = match already {
            Some(end) => Some(end),
            None if failures >= policy.max_failures => {
                let end = now.saturating_add(dur_ms(policy.lock_for));
                st.locks.insert(k.clone(), end);
                st.failures.remove(&k);
                newly_locked = true;
                Some(end)
            }
            None => None,
        };
        Ok(FailureStatus {
            failures,
            newly_locked,
            locked_for: lock_end.map(|end| Duration::from_millis(end.saturating_sub(now))),
        })
    }

    async fn lockout_remaining(&self, key: &LockoutKey) -> Result<Option<Duration>, StoreError> {
        let now = now_ms();
        Ok(self
            .lock()
            .locks
            .get(&key.as_key())
            .filter(|end| **end > now)
            .map(|end| Duration::from_millis(end - now)))
    }

    async fn clear_failures(&self, key: &LockoutKey) -> Result<(), StoreError> {
        self.lock().failures.remove(&key.as_key());
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
