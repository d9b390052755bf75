//! The Redis store (`redis://`): state shared by every instance. Keys are prefixed
//! `gatehouse:`; every call runs under [`OP_TIMEOUT`] and becomes a [`StoreError`] when Redis
//! is slow or down, so callers fail closed instead of hanging. Session and handoff records
//! carry a MAC checked on every read ([`record`]); the store's data is bound to one secret
//! key by a key-check record ([`check_key`]).
//!
//! Sessions and lock states are answered from this instance's copies ([`copies`]) while
//! Redis keeps them valid through the tracking link ([`link`]): a live, unchanged session
//! costs no round trip; its idle clock is written back at most once per
//! [`TOUCH_GRANULARITY_MS`] (and a tenth of its idle timeout).

mod copies;
mod grants;
mod link;
mod record;
mod sessions;
mod tombstones;

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, IntoConnectionInfo, ProtocolVersion};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::throttle::{AttemptKey, Counts, Gate, Schedules, Scope, Settle};
use super::{
    Grant, Handoff, MAX_ONCE_BYTES, OnceKind, RevocationEvent, Session, SessionData, SessionKey,
    SessionToken, Store, dur_ms, now_ms,
};
use crate::error::StoreError;
use link::Link;

pub use link::INVALIDATION_BOUND;
pub use record::RecordKey;
pub use tombstones::TOMBSTONE_TTL;

/// Deadline of every Redis call.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// A session's last-seen time is written back at most this often, and at most every tenth
/// of its idle timeout: the idle clock moves at this granularity (a busy session can idle
/// out that much early, never late).
const TOUCH_GRANULARITY_MS: u64 = 1_000;

/// Environment variable holding the Redis password (never in the URL).
pub const PASSWORD_ENV: &str = "GATEHOUSE_REDIS_PASSWORD";
const PREFIX: &str = "gatehouse:";
const SESSION_PREFIX: &str = "gatehouse:session:";
const GRANT_PREFIX: &str = "gatehouse:grant:";
/// Counts grant changes (see [`grants`]).
const GRANTS_GENERATION: &str = "gatehouse:grants-generation";
const CHANNEL: &str = "gatehouse:revocations";
/// The key-check record: the MAC of a fixed label under the record key.
const KEY_CHECK: &str = "gatehouse:key-check";

/// The login throttle's gate (see `throttle.lua`).
const THROTTLE_SCRIPT: &str = include_str!("redis/throttle.lua");
/// Takes an attempt back. KEYS: the three counters (as for the gate); ARGV: `1` to forget
/// the first one (a success). Counts never go below zero.
const SETTLE_SCRIPT: &str = r"
for i = 1, 3 do
  if i == 1 and ARGV[1] == '1' then
    redis.call('DEL', KEYS[1])
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('HINCRBY', KEYS[i], 'n', -1) < 0 then redis.call('HSET', KEYS[i], 'n', 0) end
  end
end
return 1
";

/// Redis-backed store.
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    /// The tracking link, this instance's copies and ended sessions.
    link: std::sync::Arc<Link>,
    /// Stops the link's task when the last clone of the store is dropped.
    _link_task: std::sync::Arc<tokio_util::sync::DropGuard>,
    events: broadcast::Sender<RevocationEvent>,
    throttle_script: std::sync::Arc<redis::Script>,
    settle_script: std::sync::Arc<redis::Script>,
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
    format!("{SESSION_PREFIX}{hash}")
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

/// A message on the revocation channel: the event, and the hashes of the sessions it ended
/// (remembered by every instance, see [`tombstones`]). Instances that predate `ended`
/// read the event alone.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    #[serde(flatten)]
    event: RevocationEvent,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ended: Vec<String>,
}

/// Refuses a store whose data was written under another secret key: writes the key-check
/// record when the store has none, else compares it (in constant time).
async fn check_key(con: &mut impl ConnectionLike, records: &RecordKey) -> Result<(), StoreError> {
    let want = records.key_check(KEY_CHECK);
    // Twice: the record may be deleted between the two commands.
    for _ in 0..2 {
        let set: Option<String> = within(
            "key_check",
            redis::cmd("SET")
                .arg(KEY_CHECK)
                .arg(&want)
                .arg("NX")
                .query_async(con),
        )
        .await?;
        if set.is_some() {
            return Ok(());
        }
        let got: Option<Vec<u8>> = within(
            "key_check",
            redis::cmd("GET").arg(KEY_CHECK).query_async(con),
        )
        .await?;
        match got {
            Some(g) if bool::from(subtle::ConstantTimeEq::ct_eq(g.as_slice(), want.as_slice())) => {
                return Ok(());
            }
            Some(_) => return Err(StoreError::KeyMismatch { key: KEY_CHECK }),
            None => {}
        }
    }
    Err(StoreError::KeyMismatch { key: KEY_CHECK })
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
    /// Connects (under a deadline), checks that the store's data was written with this
    /// secret key, and starts the tracking link (subscribed to revocations). `records`
    /// authenticates session and handoff records (every instance must use the same).
    pub async fn connect(url: &url::Url, records: RecordKey) -> Result<RedisStore, StoreError> {
        let client = client(url)?;
        let (events, _) = broadcast::channel(super::REVOCATION_CHANNEL_CAPACITY);
        let con = within(
            "connect",
            ConnectionManager::new_with_config(client.clone(), manager_config()),
        )
        .await?;
        let (link, guard) = Link::start(client, records.clone(), events.clone()).await?;
        Ok(RedisStore {
            con,
            link,
            _link_task: std::sync::Arc::new(guard),
            events,
            throttle_script: std::sync::Arc::new(redis::Script::new(THROTTLE_SCRIPT)),
            settle_script: std::sync::Arc::new(redis::Script::new(SETTLE_SCRIPT)),
            records,
        })
    }

    async fn publish(&self, ev: RevocationEvent, ended: Vec<String>) -> Result<(), StoreError> {
        let payload =
            serde_json::to_string(&Wire { event: ev, ended }).map_err(|_| StoreError::Corrupt {
                key: CHANNEL.into(),
            })?;
        let mut con = self.con.clone();
        within("publish", con.publish::<_, _, i64>(CHANNEL, payload)).await?;
        Ok(())
    }

    /// The session stored at `key`: `None` when its MAC fails (forged, altered or moved: as
    /// if absent), an error when a record with a valid MAC does not parse or names another id.
    fn decode(&self, key: &str, raw: &[u8]) -> Result<Option<Session>, StoreError> {
        let Some(json) = self.records.open(key, raw) else {
            return Ok(None);
        };
        let s: Session = serde_json::from_slice(json).map_err(|_| StoreError::Corrupt {
            key: key.to_string(),
        })?;
        if key.strip_prefix(SESSION_PREFIX) != Some(s.id_hash.as_str()) {
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
        self.create(data, host, ttl, idle).await
    }

    async fn touch_session_key(&self, id: &SessionKey) -> Result<Option<Session>, StoreError> {
        self.touch(id).await
    }

    async fn delete_session(&self, raw_id: &str) -> Result<bool, StoreError> {
        self.delete(raw_id).await
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
        // The link's invalidation may trail this answer: forget the copy here now.
        self.link.copies.sessions.invalidate(id_hash);
        if n > 0 {
            self.link.tombstones.add(id_hash, now_ms());
            self.publish(
                RevocationEvent::Session {
                    id_hash: id_hash.to_string(),
                },
                Vec::new(),
            )
            .await?;
        }
        Ok(session.filter(|_| n > 0))
    }

    async fn end_login(&self, user: &str, login_id: &str) -> Result<Vec<String>, StoreError> {
        self.end_login_impl(user, login_id).await
    }

    async fn list_sessions(&self) -> Result<Vec<Session>, StoreError> {
        self.list().await
    }

    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError> {
        self.revoke(user).await
    }

    async fn attempt_gate(
        &self,
        key: &AttemptKey,
        schedules: &Schedules,
        now_ms: u64,
        reserve: bool,
    ) -> Result<Gate, StoreError> {
        let mut con = self.con.clone();
        let mut inv = self.throttle_script.prepare_invoke();
        for name in key.names() {
            inv.key(format!("{PREFIX}throttle:{name}"));
        }
        inv.arg(now_ms)
            .arg(schedules.window_ms())
            .arg(u8::from(reserve));
        for scope in Scope::ALL {
            let s = &schedules.of(scope).0;
            inv.arg(s.len());
            for d in s {
                inv.arg(*d);
            }
        }
        let (open, scope, wait, ua, a, u): (u8, u8, u64, u64, u64, u64) =
            within("attempt_gate", inv.invoke_async(&mut con)).await?;
        let counts = Counts {
            user_at_address: ua,
            address: a,
            user: u,
        };
        if open == 1 {
            return Ok(Gate::Open(counts));
        }
        let scope = match scope {
            2 => Scope::Address,
            3 => Scope::User,
            _ => Scope::UserAtAddress,
        };
        Ok(Gate::Closed {
            scope,
            wait: Duration::from_millis(wait),
            counts,
        })
    }

    async fn settle_attempt(&self, key: &AttemptKey, how: Settle) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let mut inv = self.settle_script.prepare_invoke();
        for name in key.names() {
            inv.key(format!("{PREFIX}throttle:{name}"));
        }
        inv.arg(u8::from(how == Settle::Success));
        within("settle_attempt", inv.invoke_async::<i64>(&mut con)).await?;
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
        // Not ready while sessions are refused for want of the tracking link.
        self.link.check_up()?;
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

#[cfg(test)]
mod tests;
