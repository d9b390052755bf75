//! The signed identity assertion sent to upstream apps, and the JWKS to verify it.
//!
//! Threat: an upstream trusting plain identity headers can be fooled by anyone who reaches
//! it directly or smuggles a header; a token replayed at another app or after logout; a
//! session id leaking through a token; signing cost per request as a denial of service; a
//! world-readable signing key.
//! Mitigation: an ES256 JWT with `iss` (gateway), `aud` (one app), `sub`, `groups`, `sid`
//! (the session HASH, a [`SessionHash`], never the raw id), a 5-minute `exp` and a `jti`; the
//! `kid` is the RFC 7638 thumbprint of the public key published in [`AssertionSigner::jwks`].
//! A token is signed once per (session, app) and reused until it has under a minute left; the
//! cache is bounded. The key lives in a PEM file created `0600` and refused if group/other
//! can read it, so restarts and several instances share it.

mod key;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::cookie::SessionHash;
use super::{RandomError, b64url, random_bytes};

/// The request header carrying the assertion to upstreams.
pub const ASSERTION_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-gatehouse-assertion");
/// The signing key's file name under the data directory.
pub const KEY_FILE: &str = "gateway-assertion-es256.pem";
/// Lifetime of an assertion.
pub const ASSERTION_TTL: Duration = Duration::from_secs(300);
/// A cached assertion with less than this left is replaced (an upstream must never receive
/// a token that expires while it handles the request).
pub const REUSE_MARGIN: Duration = Duration::from_secs(60);
/// Most cached assertions; beyond it, expired then soonest-expiring entries are evicted.
pub const CACHE_CAP: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("cannot create data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read assertion key {path}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write assertion key {path}")]
    WriteKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "assertion key {path} is readable by group or others (mode {mode:o}); run `chmod 600` on it"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("assertion key {path} is not a PEM PKCS#8 key")]
    ParseKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("assertion key is not an ECDSA P-256 key")]
    WrongKeyType,
    #[error("cannot generate assertion key")]
    Generate(#[source] rcgen::Error),
    #[error("cannot sign assertion")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("system clock before 1970")]
    Clock,
    #[error("user or group name cannot be sent in a header")]
    IdentityHeader,
    #[error("cannot make assertion id")]
    Random(#[from] RandomError),
}

/// The claims of an assertion, as upstreams decode them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub groups: Vec<String>,
    pub sid: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// Who is calling which app.
#[derive(Debug, Clone, Copy)]
pub struct AssertionRequest<'a> {
    pub session: &'a SessionHash,
    pub app: &'a str,
    pub user: &'a str,
    pub groups: &'a [String],
}

/// The identity headers for one session and app, ready to insert: clones are reference
/// counts, so a cache hit copies and re-validates nothing.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user: http::HeaderValue,
    /// The groups, comma-separated.
    pub groups: http::HeaderValue,
    pub assertion: http::HeaderValue,
}

#[derive(Debug, Clone)]
struct Issued {
    token: Arc<str>,
    headers: IdentityHeaders,
}

struct Cached {
    issued: Issued,
    exp: u64,
    user: String,
    groups: Vec<String>,
}

/// Cached assertions by session, then by app: a lookup borrows the request's keys (no
/// allocation), and forgetting a session is one removal.
#[derive(Default)]
struct Cache {
    by_session: HashMap<SessionHash, HashMap<String, Cached>>,
    len: usize,
}

impl Cache {
    fn get(&self, session: &SessionHash, app: &str) -> Option<&Cached> {
        self.by_session.get(session)?.get(app)
    }

    fn insert(&mut self, session: &SessionHash, app: &str, c: Cached) {
        let apps = self.by_session.entry(session.clone()).or_default();
        if apps.insert(app.to_string(), c).is_none() {
            self.len += 1;
        }
    }

    /// Drops entries that expire by `fresh_until`, then the oldest until below `cap`.
    fn make_room(&mut self, cap: usize, fresh_until: u64) {
        self.by_session.retain(|_, apps| {
            apps.retain(|_, c| c.exp > fresh_until);
            !apps.is_empty()
        });
        self.len = self.by_session.values().map(HashMap::len).sum();
        while self.len >= cap {
            let oldest = self
                .by_session
                .iter()
                .flat_map(|(s, apps)| apps.iter().map(move |(a, c)| (c.exp, s, a)))
                .min_by_key(|(exp, _, _)| *exp)
                .map(|(_, s, a)| (s.clone(), a.clone()));
            let Some((s, a)) = oldest else { break };
            self.remove(&s, &a);
        }
    }

    fn remove(&mut self, session: &SessionHash, app: &str) {
        if let Some(apps) = self.by_session.get_mut(session) {
            if apps.remove(app).is_some() {
                self.len -= 1;
            }
            if apps.is_empty() {
                self.by_session.remove(session);
            }
        }
    }

    fn forget(&mut self, session: &SessionHash) {
        if let Some(apps) = self.by_session.remove(session) {
            self.len -= apps.len();
        }
    }
}

pub struct AssertionSigner {
    /// Tells this signer's entries apart in the per-thread caches.
    id: u64,
    key: EncodingKey,
    kid: String,
    jwks: String,
    issuer: String,
    cache: Mutex<Cache>,
    cap: usize,
    /// Bumped by [`AssertionSigner::forget_session`]: per-thread entries of an older
    /// generation are not used.
    generation: AtomicU64,
    /// Told when a session reaches an app it has no assertion for yet (its recording notes
    /// the app); set once by the gateway at bind.
    first_use: std::sync::OnceLock<std::sync::Arc<crate::web_sessions::WebSessions>>,
}

/// One thread's copy of the identity headers it used recently.
struct Near {
    signer: u64,
    generation: u64,
    session: SessionHash,
    app: String,
    user: String,
    groups: Vec<String>,
    exp: u64,
    headers: IdentityHeaders,
}

/// Entries a thread keeps.
const NEAR_PER_THREAD: usize = 8;

thread_local! {
    /// Per worker thread, its own copies of recently used identity headers. A hit reads
    /// nothing another thread writes: the shared cache's lock and the reference counts of
    /// its header buffers would otherwise move between cores on every request.
    static NEAR: RefCell<Vec<Near>> = const { RefCell::new(Vec::new()) };
}

/// A header value in a buffer of this thread's own (see [`NEAR`]).
fn own_copy(v: &http::HeaderValue) -> http::HeaderValue {
    let mut copy =
        http::HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(v.as_bytes()))
            .unwrap_or_else(|_| v.clone());
    copy.set_sensitive(v.is_sensitive());
    copy
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// Loads `<data_dir>/gateway-assertion-es256.pem`, creating it (mode 0600, atomically, so
    /// instances starting together agree on one key) when missing. `public_url` is the `iss`.
    pub fn load_or_create(
        data_dir: &Path,
        public_url: &url::Url,
    ) -> Result<AssertionSigner, AssertionError> {
        let pair = key::load_or_create(data_dir)?;
        AssertionSigner::from_key_pair(&pair, public_url)
    }

    /// A signer over an existing P-256 key pair.
    pub fn from_key_pair(
        pair: &rcgen::KeyPair,
        public_url: &url::Url,
    ) -> Result<AssertionSigner, AssertionError> {
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(AssertionError::WrongKeyType);
        }
        let (x, y) = key::public_xy(pair.public_key_raw()).ok_or(AssertionError::WrongKeyType)?;
        let kid = key::thumbprint(&x, &y);
        let jwks = serde_json::json!({
            "keys": [{ "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig" }]
        })
        .to_string();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(AssertionSigner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            kid,
            jwks,
            issuer: public_url.as_str().trim_end_matches('/').to_string(),
            cache: Mutex::new(Cache::default()),
            cap: CACHE_CAP,
            first_use: std::sync::OnceLock::new(),
        })
    }

    /// The JWKS document served at [`JWKS_PATH`](super::JWKS_PATH).
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The key id (RFC 7638 SHA-256 thumbprint, base64url).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The `iss` claim: the public URL without a trailing `/`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The assertion for this session and app: the cached one while it has at least
    /// [`REUSE_MARGIN`] left and names the same user and groups, else a freshly signed one.
    pub fn assertion(&self, req: &AssertionRequest<'_>) -> Result<Arc<str>, AssertionError> {
        Ok(self.issued(req, unix_now()?)?.token)
    }

    /// The user, groups and assertion headers for this session and app (as [`assertion`]).
    ///
    /// [`assertion`]: AssertionSigner::assertion
    pub fn identity_headers(
        &self,
        req: &AssertionRequest<'_>,
    ) -> Result<IdentityHeaders, AssertionError> {
        self.identity_headers_at(req, unix_now()?)
    }

    /// [`identity_headers`](Self::identity_headers) at `now` (unix seconds): from this
    /// thread's copies when it has a fresh one, else from the shared cache (or signed).
    fn identity_headers_at(
        &self,
        req: &AssertionRequest<'_>,
        now: u64,
    ) -> Result<IdentityHeaders, AssertionError> {
        let fresh_until = now.saturating_add(REUSE_MARGIN.as_secs());
        let generation = self.generation.load(Ordering::Acquire);
        let hit = NEAR.with_borrow(|near| {
            near.iter()
                .find(|n| {
                    n.signer == self.id
                        && n.generation == generation
                        && n.exp > fresh_until
                        && n.session == *req.session
                        && n.app == req.app
                        && n.user == req.user
                        && n.groups == req.groups
                })
                .map(|n| n.headers.clone())
        });
        if let Some(headers) = hit {
            return Ok(headers);
        }
        let (issued, exp) = self.issued_exp(req, now)?;
        NEAR.with_borrow_mut(|near| {
            // Drops this signer's entries of an older generation, and the one being replaced.
            near.retain(|n| {
                n.signer != self.id
                    || (n.generation == generation
                        && !(n.session == *req.session && n.app == req.app))
            });
            if near.len() >= NEAR_PER_THREAD {
                near.remove(0);
            }
            near.push(Near {
                signer: self.id,
                generation,
                session: req.session.clone(),
                app: req.app.to_string(),
                user: req.user.to_string(),
                groups: req.groups.to_vec(),
                exp,
                headers: IdentityHeaders {
                    user: own_copy(&issued.headers.user),
                    groups: own_copy(&issued.headers.groups),
                    assertion: own_copy(&issued.headers.assertion),
                },
            });
        });
        Ok(issued.headers)
    }

    #[cfg(test)]
    fn assertion_at(
        &self,
        req: &AssertionRequest<'_>,
        now: u64,
    ) -> Result<Arc<str>, AssertionError> {
        Ok(self.issued(req, now)?.token)
    }

    fn issued(&self, req: &AssertionRequest<'_>, now: u64) -> Result<Issued, AssertionError> {
        Ok(self.issued_exp(req, now)?.0)
    }

    /// The shared cache's (or a newly signed) assertion, and its expiry.
    fn issued_exp(
        &self,
        req: &AssertionRequest<'_>,
        now: u64,
    ) -> Result<(Issued, u64), AssertionError> {
        let fresh_until = now.saturating_add(REUSE_MARGIN.as_secs());
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cache.get(req.session, req.app)
                && c.exp > fresh_until
                && c.user == req.user
                && c.groups == req.groups
            {
                return Ok((c.issued.clone(), c.exp));
            }
        }
        // Sign outside the lock; two racing requests may both sign, which is harmless.
        let claims = AssertionClaims {
            iss: self.issuer.clone(),
            aud: req.app.to_string(),
            sub: req.user.to_string(),
            groups: req.groups.to_vec(),
            sid: req.session.as_str().to_string(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ASSERTION_TTL.as_secs()),
            jti: b64url(&random_bytes::<16>()?),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(AssertionError::Sign)?;
        let value = |s: String| {
            http::HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
                .map_err(|_| AssertionError::IdentityHeader)
        };
        let issued = Issued {
            headers: IdentityHeaders {
                user: value(claims.sub.clone())?,
                groups: value(claims.groups.join(","))?,
                assertion: value(token.clone())?,
            },
            token: token.into(),
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let first = cache.get(req.session, req.app).is_none();
        if cache.len >= self.cap && first {
            cache.make_room(self.cap, fresh_until);
        }
        if first && let Some(ws) = self.first_use.get() {
            ws.app_used(req.session.as_str(), req.app);
        }
        let exp = claims.exp;
        cache.insert(
            req.session,
            req.app,
            Cached {
                issued: issued.clone(),
                exp,
                user: claims.sub,
                groups: claims.groups,
            },
        );
        Ok((issued, exp))
    }

    /// Tells `ws` of every session's first assertion for an app (the first call wins).
    pub fn note_first_uses(&self, ws: std::sync::Arc<crate::web_sessions::WebSessions>) {
        let _ = self.first_use.set(ws);
    }

    /// Drops every cached assertion of a session (logout, revocation): the next request of a
    /// new session gets a new token. Already issued tokens still expire on their own.
    pub fn forget_session(&self, session: &SessionHash) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.forget(session);
        // Every thread's copies go too (rare: logout and revocation).
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Number of cached assertions (for metrics).
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len
    }
}

fn unix_now() -> Result<u64, AssertionError> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| AssertionError::Clock)?
        .as_secs())
}

#[cfg(test)]
mod tests;
