//! The Redis store (`redis://`): state shared by every instance. Keys are prefixed
//! `gatehouse:`; every call runs under [`OP_TIMEOUT`] and becomes a [`StoreError`] when Redis
//! is slow or down, so callers fail closed instead of hanging. Session and handoff records
//! carry a MAC checked on every read ([`record`]).

mod grants;
mod record;

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, IntoConnectionInfo, ProtocolVersion, PushKind, Value};
use tokio::sync::broadcast;

use super::{
    FailureStatus, Grant, Handoff, LockoutKey, LockoutPolicy, MAX_ONCE_BYTES, OnceKind,
    RevocationEvent, Session, SessionData, SessionKey, SessionToken, Store, dur_ms, now_ms,
    session_id_hash,
};
use crate::error::StoreError;

pub use record::RecordKey;

/// Deadline of every Redis call.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Environment variable holding the Redis password (never in the URL).
/// A session's last-seen time is written back at most this often, and at most every tenth
/// of its idle timeout (see `touch_session`).
const TOUCH_GRANULARITY_MS: u64 = 1_000;

pub const PASSWORD_ENV: &str = "GATEHOUSE_REDIS_PASSWORD";
const PREFIX: &str = "gatehouse:";
const CHANNEL: &str = "gatehouse:revocations";

/// Counts a failure and locks atomically. KEYS: failure counter, lock.
/// ARGV: window ms, max failures, lock ms. Returns {failures, newly_locked, lock pttl}.
const FAILURE_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local newly = 0
if n >= tonumber(ARGV[2]) and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  newly = 1
end
return {n, newly, redis.call('PTTL', KEYS[2])}
";

/// Redis-backed store.
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    /// The subscribed connection: pushes flow while it is alive (as long as the store).
    _subscriber: ConnectionManager,
    events: broadcast::Sender<RevocationEvent>,
    failure_script: std::sync::Arc<redis::Script>,
    records: RecordKey,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

async fn within<T>(
    op: &'static str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(StoreError::Redis { op, source }),
        Err(_) => Err(StoreError::Timeout { op }),
    }
}

fn session_key(hash: &str) -> String {
    format!("{PREFIX}session:{hash}")
}

fn user_sessions_key(user: &str) -> String {
    format!("{PREFIX}user-sessions:{user}")
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(OP_TIMEOUT))
        .set_response_timeout(Some(OP_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

/// Decodes a pub/sub push into a revocation event; anything else is ignored.
fn decode_push(kind: &PushKind, data: &[Value]) -> Option<RevocationEvent> {
    if *kind != PushKind::Message {
        return None;
    }
    match data.get(1)? {
        Value::BulkString(b) => serde_json::from_slice(b).ok(),
        _ => None,
    }
}

/// A client for `url` (RESP3), with the password from [`PASSWORD_ENV`] when set.
pub(crate) fn client(url: &url::Url) -> Result<redis::Client, StoreError> {
    let mut info = url
        .as_str()
        .into_connection_info()
        .map_err(StoreError::Connect)?;
    let mut settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    if let Ok(pw) = std::env::var(PASSWORD_ENV) {
        settings = settings.set_password(pw);
    }
    info = info.set_redis_settings(settings);
    redis::Client::open(info).map_err(StoreError::Connect)
}

/// Connection settings of every Redis connection: deadlines, a few retries.
pub(crate) fn manager_settings() -> ConnectionManagerConfig {
    manager_config()
}

impl RedisStore {
    /// Connects (under a deadline) and subscribes to the revocation channel. `records`
    /// authenticates session and handoff records (every instance must use the same).
    pub async fn connect(url: &url::Url, records: RecordKey) -> Result<RedisStore, StoreError> {
        let client = client(url)?;
        let (events, _) = broadcast::channel(super::REVOCATION_CHANNEL_CAPACITY);
        let tx = events.clone();
        let sub_config = manager_config()
            .set_automatic_resubscription()
            .set_push_sender(move |p: redis::PushInfo| {
                if let Some(ev) = decode_push(&p.kind, &p.data) {
                    let _ = tx.send(ev);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let con = within(
            "connect",
            ConnectionManager::new_with_config(client.clone(), manager_config()),
        )
        .await?;
        let mut sub = within(
            "connect",
            ConnectionManager::new_with_config(client, sub_config),
        )
        .await?;
        within("subscribe", sub.subscribe(CHANNEL)).await?;
        Ok(RedisStore {
            con,
            _subscriber: sub,
            events,
            failure_script: std::sync::Arc::new(redis::Script::new(FAILURE_SCRIPT)),
            records,
        })
    }

    async fn publish(&self, ev: &RevocationEvent) -> Result<(), StoreError> {
        let payload = serde_json::to_string(ev).map_err(|_| StoreError::Corrupt {
            key: CHANNEL.into(),
        })?;
        let mut con = self.con.clone();
        within("publish", con.publish::<_, _, i64>(CHANNEL, payload)).await?;
        Ok(())
    }

    /// The session stored at `key`: `None` when its MAC fails (forged or altered: as if
    /// absent), an error when a record with a valid MAC does not parse or names another id.
    fn decode(&self, key: &str, raw: &[u8]) -> Result<Option<Session>, StoreError> {
        let Some(json) = self.records.open(key, raw) else {
            return Ok(None);
        };
        let s: Session = serde_json::from_slice(json).map_err(|_| StoreError::Corrupt {
            key: key.to_string(),
        })?;
        let named = key
            .strip_prefix(PREFIX)
            .and_then(|k| k.strip_prefix("session:"));
        if named != Some(s.id_hash.as_str()) {
            return Err(StoreError::Corrupt {
                key: key.to_string(),
            });
        }
        Ok(Some(s))
    }

    /// The sealed JSON of `value` for `key`.
    fn encode(&self, key: &str, value: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
        let json = serde_json::to_vec(value).map_err(|_| StoreError::Corrupt {
            key: key.to_string(),
        })?;
        Ok(self.records.seal(key, &json))
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn create_bound_session(
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

    async fn touch_session_key(&self, id: &SessionKey) -> Result<Option<Session>, StoreError> {
        let key = session_key(id.as_str());
        let mut con = self.con.clone();
        let raw: Option<Vec<u8>> = within("touch_session", con.get(&key)).await?;
        let Some(raw) = raw else { return Ok(None) };
        let Some(mut s) = self.decode(&key, &raw)? else {
            return Ok(None);
        };
        let now = now_ms();
        if !s.is_live(now) {
            within("touch_session", con.del::<_, i64>(&key)).await?;
            return Ok(None);
        }
        if now.saturating_sub(s.last_seen_ms) < TOUCH_GRANULARITY_MS.min(s.idle_ms / 10) {
            // Touched within the last second: the idle clock need not move, which saves a
            // write (and a round trip) on every request of a busy session. The key's TTL
            // can only run out earlier than the idle timeout, never later (fail closed).
            return Ok(Some(s));
        }
        s.last_seen_ms = now;
        let px = s.idle_ms.min(s.expires_ms.saturating_sub(now)).max(1);
        let json = self.encode(&key, &s)?;
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
        Ok(set.map(|_| s))
    }

    async fn delete_session(&self, raw_id: &str) -> Result<bool, StoreError> {
        let Some(hash) = session_id_hash(raw_id) else {
            return Ok(false);
        };
        let mut con = self.con.clone();
        let n: i64 = within("delete_session", con.del(session_key(&hash))).await?;
        if n > 0 {
            self.publish(&RevocationEvent::Session { id_hash: hash })
                .await?;
        }
        Ok(n > 0)
    }

    async fn end_session_hash(&self, id_hash: &str) -> Result<Option<Session>, StoreError> {
        if !super::is_session_hash(id_hash) {
            return Ok(None);
        }
        let key = session_key(id_hash);
        let mut con = self.con.clone();
        let raw: Option<Vec<u8>> = within("end_session_hash", con.get(&key)).await?;
        let Some(raw) = raw else { return Ok(None) };
        let session = self.decode(&key, &raw)?;
        let n: i64 = within("end_session_hash", con.del(&key)).await?;
        if n > 0 {
            self.publish(&RevocationEvent::Session {
                id_hash: id_hash.to_string(),
            })
            .await?;
        }
        Ok(session.filter(|_| n > 0))
    }

    async fn end_login(&self, user: &str, login_id: &str) -> Result<Vec<String>, StoreError> {
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
        if !ended.is_empty() {
            within("end_login", con.srem::<_, _, i64>(&set, &ended)).await?;
        }
        for h in &ended {
            self.publish(&RevocationEvent::Session { id_hash: h.clone() })
                .await?;
        }
        Ok(ended)
    }

    async fn list_sessions(&self) -> Result<Vec<Session>, StoreError> {
        let mut con = self.con.clone();
        let pattern = format!("{PREFIX}session:*");
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

    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        let mut con = self.con.clone();
        let set = user_sessions_key(user);
        let mut hashes: Vec<String> = within("revoke_user", con.smembers(&set)).await?;
        // The per-user set is an index, not authenticated: a hash removed from it by someone
        // who can write to Redis must not keep its session alive past a revocation, so the
        // authenticated records themselves are searched too (an admin action: a scan is fine).
        for s in self.list_sessions().await? {
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
        self.publish(&RevocationEvent::User {
            user: user.to_string(),
        })
        .await?;
        Ok(count)
    }

    async fn record_failure(
        &self,
        key: &LockoutKey,
        policy: &LockoutPolicy,
    ) -> Result<FailureStatus, StoreError> {
        let k = key.as_key();
        let mut con = self.con.clone();
        let mut inv = self.failure_script.prepare_invoke();
        inv.key(format!("{PREFIX}fail:{k}"))
            .key(format!("{PREFIX}lock:{k}"))
            .arg(dur_ms(policy.window).max(1))
            .arg(policy.max_failures)
            .arg(dur_ms(policy.lock_for).max(1));
        let (failures, newly, pttl): (u64, u8, i64) =
            within("record_failure", inv.invoke_async(&mut con)).await?;
        Ok(FailureStatus {
            failures,
            newly_locked: newly == 1,
            locked_for: u64::try_from(pttl).ok().map(Duration::from_millis),
        })
    }

    async fn lockout_remaining(&self, key: &LockoutKey) -> Result<Option<Duration>, StoreError> {
        let mut con = self.con.clone();
        let pttl: i64 = within(
            "lockout_remaining",
            con.pttl(format!("{PREFIX}lock:{}", key.as_key())),
        )
        .await?;
        Ok(u64::try_from(pttl).ok().map(Duration::from_millis))
    }

    async fn clear_failures(&self, key: &LockoutKey) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        within(
            "clear_failures",
            con.del::<_, i64>(format!("{PREFIX}fail:{}", key.as_key())),
        )
        .await?;
        Ok(())
    }

    async fn mark_totp_used(&self, user: &str, step: u64) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let set: Option<String> = within(
            "mark_totp_used",
            redis::cmd("SET")
                .arg(format!("{PREFIX}totp:{user}:{step}"))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(dur_ms(super::TOTP_REPLAY_TTL))
                .query_async(&mut con),
        )
        .await?;
        Ok(set.is_some())
    }

    async fn put_handoff(
        &self,
        ticket_hash: &str,
        handoff: &Handoff,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = format!("{PREFIX}handoff:{ticket_hash}");
        let json = self.encode(&key, handoff)?;
        let mut con = self.con.clone();
        let _: () = within(
            "put_handoff",
            redis::cmd("SET")
                .arg(&key)
                .arg(json)
                .arg("PX")
                .arg(dur_ms(ttl))
                .query_async(&mut con),
        )
        .await?;
        Ok(())
    }

    async fn take_handoff(&self, ticket_hash: &str) -> Result<Option<Handoff>, StoreError> {
        let key = format!("{PREFIX}handoff:{ticket_hash}");
        let mut con = self.con.clone();
        // GETDEL: exactly one caller gets the payload, on any instance.
        let raw: Option<Vec<u8>> = within(
            "take_handoff",
            redis::cmd("GETDEL").arg(&key).query_async(&mut con),
        )
        .await?;
        let Some(raw) = raw else { return Ok(None) };
        let Some(json) = self.records.open(&key, &raw) else {
            return Ok(None);
        };
        serde_json::from_slice(json)
            .map(Some)
            .map_err(|_| StoreError::Corrupt { key })
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
        let k = format!("{PREFIX}once:{}:{key}", kind.as_str());
        let mut con = self.con.clone();
        let _: () = within(
            "put_once",
            redis::cmd("SET")
                .arg(&k)
                .arg(value)
                .arg("PX")
                .arg(dur_ms(ttl).max(1))
                .query_async(&mut con),
        )
        .await?;
        Ok(())
    }

    async fn take_once(&self, kind: OnceKind, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = format!("{PREFIX}once:{}:{key}", kind.as_str());
        let mut con = self.con.clone();
        // GETDEL: exactly one caller gets the value, on any instance.
        within(
            "take_once",
            redis::cmd("GETDEL").arg(&k).query_async(&mut con),
        )
        .await
    }

    async fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.put_grant_impl(grant).await
    }

    async fn list_grants(&self) -> Result<Vec<Grant>, StoreError> {
        self.list_grants_impl().await
    }

    async fn revoke_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        self.revoke_grant_impl(id).await
    }

    async fn grants_generation(&self) -> Result<u64, StoreError> {
        self.grants_generation_impl().await
    }

    async fn subscribe_revocations(
        &self,
    ) -> Result<broadcast::Receiver<RevocationEvent>, StoreError> {
        Ok(self.events.subscribe())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let pong: String = within("ping", redis::cmd("PING").query_async(&mut con)).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Corrupt { key: "PING".into() })
        }
    }

    fn is_in_process(&self) -> bool {
        false
    }
}
