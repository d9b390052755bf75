//! Sessions in Redis, answered from this instance's copies while the tracking link keeps
//! them valid (see [`super::copies`] and [`super::link`]).
//!
//! A live, unchanged session costs no round trip: the copy answers. Its idle clock is
//! written back (`SET XX`, so a session deleted meanwhile is never brought back) by one
//! request once per granularity while the others keep answering from the copy; that write
//! invalidates every instance's copy (this one's included), and the next request reads the
//! record again. Logouts and revocations forget the copy here at once, and everywhere else
//! through Redis's invalidation; the hashes they end are remembered ([`super::tombstones`]).

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;

use super::copies::{SessionCopy, mono_ms};
use super::{
    RedisStore, SESSION_PREFIX, TOUCH_GRANULARITY_MS, session_key, user_sessions_key, within,
};
use crate::error::StoreError;
use crate::store::{
    RevocationEvent, Session, SessionData, SessionKey, SessionToken, dur_ms, now_ms,
    session_id_hash,
};

/// A session's copy kept by one thread, current while its shard's stamp has not moved.
struct ThreadCopy {
    store: u64,
    key: SessionKey,
    stamp: u64,
    session: Session,
}

/// Sessions a thread keeps copies of.
const THREAD_COPIES: usize = 16;

thread_local! {
    /// Per thread, copies of the sessions it resumed last from the instance's copies. The
    /// instance's copies sit behind a lock and an `Arc` every worker shares: taking both on
    /// every request moved their cache lines between cores each time. A thread's copy is
    /// used only while the shard's stamp is the one it was taken at (any invalidation of
    /// the shard, a lost link's clear, moves it), the session is live, and its idle clock
    /// needs no write yet: everything else goes the shared way.
    static THREAD: std::cell::RefCell<Vec<ThreadCopy>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn thread_copy(store: u64, key: &SessionKey, stamp: u64, now: u64) -> Option<Session> {
    THREAD.with_borrow(|copies| {
        copies
            .iter()
            .find(|c| c.store == store && c.stamp == stamp && c.key == *key)
            .filter(|c| {
                c.session.is_live(now)
                    && now.saturating_sub(c.session.last_seen_ms) < granularity(c.session.idle_ms)
            })
            .map(|c| c.session.clone())
    })
}

fn keep_thread_copy(store: u64, key: &SessionKey, stamp: u64, session: &Session) {
    THREAD.with_borrow_mut(|copies| {
        copies.retain(|c| !(c.store == store && c.key == *key));
        if copies.len() >= THREAD_COPIES {
            copies.remove(0);
        }
        copies.push(ThreadCopy {
            store,
            key: key.clone(),
            stamp,
            session: session.clone(),
        });
    });
}

/// How long a session's idle clock may go unwritten.
fn granularity(idle_ms: u64) -> u64 {
    TOUCH_GRANULARITY_MS.min(idle_ms / 10)
}

impl RedisStore {
    pub(super) async fn create(
        &self,
        data: SessionData,
        host: Option<&str>,
        ttl: Duration,
        idle: Duration,
    ) -> Result<SessionToken, StoreError> {
        let token = SessionToken::generate()?;
        let hash = session_id_hash(token.expose()).ok_or(StoreError::Random)?;
        let now = now_ms();
        let user = data.user.clone();
        let session = Session {
            id_hash: hash.clone(),
            data,
            host: host.map(str::to_ascii_lowercase),
            created_ms: now,
            last_seen_ms: now,
            expires_ms: now.saturating_add(dur_ms(ttl)),
            idle_ms: dur_ms(idle),
        };
        let json = self.encode(&session_key(&hash), &session)?;
        let px = dur_ms(idle.min(ttl)).max(1);
        let mut con = self.con.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(session_key(&hash))
            .arg(json)
            .arg("PX")
            .arg(px)
            .ignore()
            .cmd("SADD")
            .arg(user_sessions_key(&user))
            .arg(&hash)
            .ignore()
            .cmd("PEXPIRE")
            .arg(user_sessions_key(&user))
            .arg(dur_ms(ttl).max(1))
            .arg("GT")
            .ignore()
            .cmd("PEXPIRE")
            .arg(user_sessions_key(&user))
            .arg(dur_ms(ttl).max(1))
            .arg("NX")
            .ignore();
        within("create_session", pipe.query_async::<()>(&mut con)).await?;
        Ok(token)
    }

    /// [`crate::store::Store::touch_session_key`]: refused ([`StoreError::Unsynced`]) while
    /// the link is down; from the copy while the link serves; else read on the link.
    pub(super) async fn touch(&self, id: &SessionKey) -> Result<Option<Session>, StoreError> {
        self.link.check_up()?;
        let now = now_ms();
        let sessions = &self.link.copies.sessions;
        if self.link.state.serving(mono_ms()) {
            let stamp = sessions.stamp(id.as_str());
            if let Some(s) = thread_copy(self.link.id, id, stamp, now) {
                return Ok(Some(s));
            }
            if let Some(c) = sessions.get(id.as_str()) {
                if c.session.is_live(now) {
                    let g = granularity(c.session.idle_ms);
                    if now.saturating_sub(c.session.last_seen_ms) < g {
                        keep_thread_copy(self.link.id, id, stamp, &c.session);
                        return Ok(Some(c.session.clone()));
                    }
                    if !c.claim_touch(now, g) {
                        return Ok(Some(c.session.clone()));
                    }
                    return self.write_touch(&c, now).await;
                }
                sessions.invalidate(id.as_str());
            }
        }
        self.read(id, now).await
    }

    /// Reads a session on the link (so Redis tracks it for this instance) and files its
    /// copy, or writes its idle clock back when due.
    async fn read(&self, id: &SessionKey, now: u64) -> Result<Option<Session>, StoreError> {
        let (generation, mut c) = self.link.conn()?;
        let sessions = &self.link.copies.sessions;
        let ticket = sessions.ticket(generation, id.as_str());
        let key = session_key(id.as_str());
        let raw: Option<Vec<u8>> = within("touch_session", c.get(&key)).await?;
        let Some(raw) = raw else { return Ok(None) };
        let Some(s) = self.decode(&key, &raw)? else {
            return Ok(None);
        };
        let revoked = self.link.tombstones.contains(&s.id_hash, now);
        if revoked || !s.is_live(now) {
            if revoked {
                tracing::warn!(session = %s.id_hash, user = %s.data.user, "a revoked session is back in the store (restored from an older copy of its data?); deleted, not served");
            }
            let mut con = self.con.clone();
            within("touch_session", con.del::<_, i64>(&key)).await?;
            return Ok(None);
        }
        let copy = SessionCopy::new(s);
        if now.saturating_sub(copy.session.last_seen_ms) >= granularity(copy.session.idle_ms) {
            return self.write_touch(&copy, now).await;
        }
        sessions.file(ticket, &self.link.state, id.as_str(), copy.clone());
        Ok(Some(copy.session.clone()))
    }

    /// Writes the idle clock of `copy` back (only if the record is still there).
    async fn write_touch(
        &self,
        copy: &Arc<SessionCopy>,
        now: u64,
    ) -> Result<Option<Session>, StoreError> {
        let mut s = copy.session.clone();
        s.last_seen_ms = now;
        let key = session_key(&s.id_hash);
        let px = s.idle_ms.min(s.expires_ms.saturating_sub(now)).max(1);
        let json = self.encode(&key, &s)?;
        let mut con = self.con.clone();
        // XX: a session deleted meanwhile (logout, revocation) is not brought back.
        let set: Option<String> = within(
            "touch_session",
            redis::cmd("SET")
                .arg(&key)
                .arg(json)
                .arg("XX")
                .arg("PX")
                .arg(px)
                .query_async(&mut con),
        )
        .await?;
        if set.is_none() {
            self.link.copies.sessions.invalidate(&s.id_hash);
        }
        Ok(set.map(|_| s))
    }

    /// [`crate::store::Store::delete_session`].
    pub(super) async fn delete(&self, raw_id: &str) -> Result<bool, StoreError> {
        let Some(hash) = session_id_hash(raw_id) else {
            return Ok(false);
        };
        let mut con = self.con.clone();
        let n: i64 = within("delete_session", con.del(session_key(&hash))).await?;
        // The link's invalidation may trail this answer: forget the copy here now.
        self.link.copies.sessions.invalidate(&hash);
        if n > 0 {
            self.link.tombstones.add(&hash, now_ms());
            self.publish(RevocationEvent::Session { id_hash: hash }, Vec::new())
                .await?;
        }
        Ok(n > 0)
    }

    /// [`crate::store::Store::end_login`]: the user's sessions of one login (SSO logout).
    pub(super) async fn end_login_impl(
        &self,
        user: &str,
        login_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        // The user's index names the candidates; each record itself (authenticated) decides.
        let mut con = self.con.clone();
        let set = user_sessions_key(user);
        let hashes: Vec<String> = within("end_login", con.smembers(&set)).await?;
        let mut ended = Vec::new();
        for chunk in hashes.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|h| session_key(h)).collect();
            let vals: Vec<Option<Vec<u8>>> = within(
                "end_login",
                redis::cmd("MGET").arg(&keys).query_async(&mut con),
            )
            .await?;
            for ((hash, key), raw) in chunk.iter().zip(&keys).zip(vals) {
                let Some(raw) = raw else { continue };
                let ours = self.decode(key, &raw)?.is_some_and(|s| {
                    s.data.user == user && s.data.login_id.as_deref() == Some(login_id)
                });
                if ours && within("end_login", con.del::<_, i64>(key)).await? > 0 {
                    ended.push(hash.clone());
                }
            }
        }
        if ended.is_empty() {
            return Ok(ended);
        }
        within("end_login", con.srem::<_, _, i64>(&set, &ended)).await?;
        let now = now_ms();
        for h in &ended {
            // The link's invalidation may trail the deletion: forget the copy here now.
            self.link.copies.sessions.invalidate(h);
            self.link.tombstones.add(h, now);
        }
        for h in &ended {
            self.publish(
                RevocationEvent::Session { id_hash: h.clone() },
                vec![h.clone()],
            )
            .await?;
        }
        Ok(ended)
    }

    pub(super) async fn list(&self) -> Result<Vec<Session>, StoreError> {
        let mut con = self.con.clone();
        let pattern = format!("{SESSION_PREFIX}*");
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = within(
                "list_sessions",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut con),
            )
            .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let now = now_ms();
        let mut out = Vec::new();
        for chunk in keys.chunks(500) {
            let vals: Vec<Option<Vec<u8>>> = within(
                "list_sessions",
                redis::cmd("MGET").arg(chunk).query_async(&mut con),
            )
            .await?;
            for (k, v) in chunk.iter().zip(vals) {
                if let Some(s) = v.map(|v| self.decode(k, &v)).transpose()?.flatten()
                    && s.is_live(now)
                {
                    out.push(s);
                }
            }
        }
        out.sort_by(|a, b| {
            a.data
                .user
                .cmp(&b.data.user)
                .then(a.created_ms.cmp(&b.created_ms))
        });
        Ok(out)
    }

    /// [`crate::store::Store::revoke_user`].
    pub(super) async fn revoke(&self, user: &str) -> Result<u64, StoreError> {
        let mut con = self.con.clone();
        let set = user_sessions_key(user);
        let mut hashes: Vec<String> = within("revoke_user", con.smembers(&set)).await?;
        // The per-user set is an index, not authenticated: a hash removed from it by someone
        // who can write to Redis must not keep its session alive past a revocation, so the
        // authenticated records themselves are searched too (an admin action: a scan is fine).
        for s in self.list().await? {
            if s.data.user == user && !hashes.contains(&s.id_hash) {
                hashes.push(s.id_hash);
            }
        }
        let mut count = 0u64;
        for chunk in hashes.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|h| session_key(h)).collect();
            let n: u64 = within("revoke_user", con.del(keys)).await?;
            count += n;
        }
        within("revoke_user", con.del::<_, i64>(&set)).await?;
        let now = now_ms();
        for h in &hashes {
            self.link.copies.sessions.invalidate(h);
            self.link.tombstones.add(h, now);
        }
        self.publish(
            RevocationEvent::User {
                user: user.to_string(),
            },
            hashes,
        )
        .await?;
        Ok(count)
    }
}
