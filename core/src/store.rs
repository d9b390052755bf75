//! Shared state of all instances: sessions, lockout counters, the TOTP replay cache,
//! just-in-time grants ([`grants`]) and the revocation channel. `memory://` serves one instance; `redis://` shares it between many.
//!
//! Threats: a leaked store dump replaying session cookies; brute force spread over instances;
//! a TOTP code replayed on another instance; a revoked user keeping a live connection; a hung
//! store stalling logins. Mitigations: session ids are 256-bit random values returned to the
//! caller once and stored only as SHA-256(id); throttling counters ([`throttle`]) and the
//! replay cache are shared and atomic (one script, `SET NX`); revocations are published to every instance; every Redis call
//! runs under a deadline and its failure is a [`StoreError`], on which callers fail closed;
//! session and handoff records in Redis carry a MAC keyed from the secret key, so writing
//! to Redis is not enough to mint or alter a session ([`RecordKey`]).

pub mod grants;
pub mod memory;
pub mod redis;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::identity::AuthMethod;
use crate::identity::oidc::SsoLogoutHint;
use crate::secret::SecretKey;

pub use grants::Grant;
pub use memory::MemoryStore;
pub use redis::{INVALIDATION_BOUND, RecordKey, RedisStore};
pub use throttle::{AttemptKey, Counts, Gate, Schedule, Schedules, Scope, Settle};

/// Capacity of a revocation subscription; a receiver that lags behind gets
/// `RecvError::Lagged` and must then re-check every live session (fail closed).
pub const REVOCATION_CHANNEL_CAPACITY: usize = 1024;

/// Who a session belongs to; stored as JSON under the session id's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    pub user: String,
    /// Plain group names.
    pub groups: Vec<String>,
    pub method: AuthMethod,
    /// When the user authenticated, unix seconds.
    pub auth_time: u64,
    pub client_addr: Option<IpAddr>,
    /// The sign-in this session comes from: the session started at login and every session
    /// handed off from it (app hosts) share it, so logout ends them together
    /// ([`Store::end_login`]). `None` in records written before it existed (logout then
    /// ends that one session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_id: Option<String>,
    /// What ending the SSO session at the provider needs (its ID token, for
    /// `id_token_hint`); `None` for other logins. Server-side only, never in a cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso_logout: Option<SsoLogoutHint>,
}

/// A live session as stored (times in unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Hex SHA-256 of the session id: safe to show and log, useless as a cookie.
    pub id_hash: String,
    pub data: SessionData,
    /// The one host (lowercase, no port) a web session was issued to (login or handoff); it
    /// is refused on any other. `None` for sessions that are not web sessions (SSH), which
    /// are refused on every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub created_ms: u64,
    pub last_seen_ms: u64,
    /// Absolute end (`created + ttl`), whatever the activity.
    pub expires_ms: u64,
    /// Idle timeout in milliseconds.
    pub idle_ms: u64,
}

impl Session {
    /// True while neither the absolute TTL nor the idle timeout has passed at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms && now_ms < self.last_seen_ms.saturating_add(self.idle_ms)
    }
}

/// The raw session id: given to the client once (cookie); the store keeps only its hash.
/// `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

impl SessionToken {
    /// A fresh 256-bit random id, hex encoded.
    pub(crate) fn generate() -> Result<SessionToken, StoreError> {
        let mut raw = [0u8; 32];
        crate::secret::random_bytes(&mut raw).map_err(|_| StoreError::Random)?;
        Ok(SessionToken(crate::secret::hex_lower(raw)))
    }

    /// The value for the cookie. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// SHA-256 of a raw session id, hex; the store's key for it. A malformed id (not 64 hex
/// characters) yields `None`: no lookup happens for it.
pub fn session_id_hash(raw: &str) -> Option<String> {
    let well_formed = raw.len() == 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !well_formed {
        return None;
    }
    Some(crate::secret::hex_lower(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        raw.as_bytes(),
    )))
}

/// True for text shaped like a session id hash (64 lowercase hex digits).
pub fn is_session_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A session's store key: the hex SHA-256 of a well-formed raw session id. Made only by
/// hashing ([`SessionKey::of`]), so a key always names what a cookie could name; callers
/// that see the same raw id again (a keep-alive connection) keep the key instead of
/// hashing on every request.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey(String);

impl SessionKey {
    /// The key of raw session id `raw`; `None` when it is malformed (no lookup happens).
    pub fn of(raw: &str) -> Option<SessionKey> {
        session_id_hash(raw).map(SessionKey)
    }

    /// The hex hash (safe to show and log).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SessionKey").field(&self.0).finish()
    }
}

/// Constant-time string equality (for ids and codes).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A one-time handoff ticket's payload: who, and the one host that may redeem it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub data: SessionData,
    /// The lowercase host (no port) the ticket is for.
    pub audience: String,
}

/// How long a handoff ticket lives (it is redeemed by an automatic form post).
pub const HANDOFF_TTL: Duration = Duration::from_secs(30);

/// What a one-time value ([`Store::put_once`]) is for; each kind has its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnceKind {
    /// An SSO login transaction (state, nonce, PKCE verifier), keyed by the hash of `state`.
    OidcLogin,
}

impl OnceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OnceKind::OidcLogin => "oidc-login",
        }
    }
}

/// Longest one-time value accepted by [`Store::put_once`].
pub const MAX_ONCE_BYTES: usize = 8 * 1024;

/// Published when sessions end early, so every instance closes matching live connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RevocationEvent {
    /// All sessions of this user were revoked.
    User { user: String },
    /// One session ended (logout); the hash of its id.
    Session { id_hash: String },
    /// Events may have been missed (the store's link to the other instances was lost and
    /// is back): re-check every live session. Made by the store itself, never published.
    Resync,
    /// The grants changed (one added or revoked): every instance refreshes its copy, and
    /// drops `revoked` from it at once.
    Grants {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revoked: Option<String>,
    },
}

/// The shared store. Every method may fail with [`StoreError`]; callers fail closed.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates a session bound to no web host (an SSH session); the raw id is returned once
    /// and stored only as its hash.
    async fn create_session(
        &self,
        data: SessionData,
        ttl: Duration,
        idle: Duration,
    ) -> Result<SessionToken, StoreError> {
        self.create_bound_session(data, None, ttl, idle).await
    }
    /// Creates a session valid on `host` only (a web session; see [`Session::host`]).
    async fn create_bound_session(
        &self,
        data: SessionData,
        host: Option<&str>,
        ttl: Duration,
        idle: Duration,
    ) -> Result<SessionToken, StoreError>;
    /// Looks a session up by raw id and marks it used; `None` when unknown, expired, idle
    /// or malformed.
    async fn touch_session(&self, raw_id: &str) -> Result<Option<Session>, StoreError> {
        match SessionKey::of(raw_id) {
            Some(key) => self.touch_session_key(&key).await,
            None => Ok(None),
        }
    }
    /// [`Store::touch_session`] for an id already hashed.
    async fn touch_session_key(&self, key: &SessionKey) -> Result<Option<Session>, StoreError>;
    /// Deletes a session (logout) and publishes its revocation; true when it existed.
    async fn delete_session(&self, raw_id: &str) -> Result<bool, StoreError>;
    /// Ends the session whose id hashes to `id_hash` (the reviewer console's terminate,
    /// which knows sessions only by hash) and publishes its revocation; the session when it
    /// existed. A malformed hash (not 64 lowercase hex digits) ends nothing.
    async fn end_session_hash(&self, id_hash: &str) -> Result<Option<Session>, StoreError>;
    /// Ends every session of `user` that comes from sign-in `login_id`
    /// ([`SessionData::login_id`]: the login's own session and those handed off from it),
    /// publishing a revocation for each; returns their hashes.
    async fn end_login(&self, user: &str, login_id: &str) -> Result<Vec<String>, StoreError>;
    /// Live sessions of every user.
    async fn list_sessions(&self) -> Result<Vec<Session>, StoreError>;
    /// Deletes every session of `user`, publishes a revocation event, returns the count.
    async fn revoke_user(&self, user: &str) -> Result<u64, StoreError>;
    /// Whether a login attempt under `key` may run now ([`throttle::decide`] over its three
    /// counters, at `now_ms`). With `reserve`, an admitted attempt is counted as a failure of
    /// every counter in the same atomic step (settle it with [`Store::settle_attempt`] when it
    /// was none); without, nothing changes.
    async fn attempt_gate(
        &self,
        key: &AttemptKey,
        schedules: &Schedules,
        now_ms: u64,
        reserve: bool,
    ) -> Result<Gate, StoreError>;
    /// Takes back an admitted attempt that was no failure (see [`Settle`]).
    async fn settle_attempt(&self, key: &AttemptKey, how: Settle) -> Result<(), StoreError>;
    /// Marks TOTP step `step` of `user` used: true only the first time, also under races.
    async fn mark_totp_used(&self, user: &str, step: u64) -> Result<bool, StoreError>;
    /// Stores a one-time handoff ticket under the hash of its raw value, for `ttl`.
    async fn put_handoff(
        &self,
        ticket_hash: &str,
        handoff: &Handoff,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Takes a handoff ticket: its payload the first time (atomically, also under races),
    /// `None` when unknown, expired or already taken.
    async fn take_handoff(&self, ticket_hash: &str) -> Result<Option<Handoff>, StoreError>;
    /// Stores a one-time value of `kind` under `key` (a hash, never a raw secret) for `ttl`,
    /// replacing any value there. Values longer than [`MAX_ONCE_BYTES`] are refused.
    async fn put_once(
        &self,
        kind: OnceKind,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Takes a one-time value: its bytes the first time (atomically, also under races and
    /// across instances), `None` when unknown, expired or already taken.
    async fn take_once(&self, kind: OnceKind, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a just-in-time grant, bumps the grants generation and publishes
    /// [`RevocationEvent::Grants`]. Validation is the caller's (`crate::grant`).
    async fn put_grant(&self, grant: &Grant) -> Result<(), StoreError>;
    /// The live grants (expired ones are never returned), oldest first.
    async fn list_grants(&self) -> Result<Vec<Grant>, StoreError>;
    /// Removes a grant, bumps the generation and publishes its revocation; the grant when
    /// it was live, `None` when unknown or expired.
    async fn revoke_grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;
    /// A number that changes whenever the grants do (an instance polls it to catch a missed
    /// event); cheap.
    async fn grants_generation(&self) -> Result<u64, StoreError>;
    /// A receiver of revocation events from every instance (this one included).
    async fn subscribe_revocations(
        &self,
    ) -> Result<tokio::sync::broadcast::Receiver<RevocationEvent>, StoreError>;
    /// Health probe.
    async fn ping(&self) -> Result<(), StoreError>;
    /// True for the in-process store (sessions exist only inside the running process).
    fn is_in_process(&self) -> bool;
}

/// Opens the configured store: `memory://` or Redis (connect under a deadline), whose
/// records are authenticated with a key derived from `key`.
pub async fn open(config: &StoreConfig, key: &SecretKey) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        StoreConfig::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreConfig::Redis(url) => Ok(Arc::new(
            RedisStore::connect(url, RecordKey::new(key)).await?,
        )),
    }
}

/// How long a used TOTP step is remembered: the skew window (3 steps) plus margin.
pub const TOTP_REPLAY_TTL: Duration = Duration::from_secs(150);

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn dur_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod conformance;
