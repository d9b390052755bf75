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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::cookie::SessionHash;
use super::{RandomError, b64url, random_bytes};

/// The request header carrying the assertion to upstreams.
pub const ASSERTION_HEADER: &str = "x-gatehouse-assertion";
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

struct Cached {
    token: Arc<str>,
    exp: u64,
    user: String,
    groups: Vec<String>,
}

type CacheKey = (SessionHash, String);

/// Signs and caches assertions; publishes the JWKS. Cheap to share behind an `Arc`.
pub struct AssertionSigner {
    key: EncodingKey,
    kid: String,
    jwks: String,
    issuer: String,
    cache: Mutex<HashMap<CacheKey, Cached>>,
    cap: usize,
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
        Ok(AssertionSigner {
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            kid,
            jwks,
            issuer: public_url.as_str().trim_end_matches('/').to_string(),
            cache: Mutex::new(HashMap::new()),
            cap: CACHE_CAP,
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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AssertionError::Clock)?
            .as_secs();
        self.assertion_at(req, now)
    }

    fn assertion_at(
        &self,
        req: &AssertionRequest<'_>,
        now: u64,
    ) -> Result<Arc<str>, AssertionError> {
        let fresh_until = now.saturating_add(REUSE_MARGIN.as_secs());
        let key: CacheKey = (req.session.clone(), req.app.to_string());
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cache.get(&key)
                && c.exp > fresh_until
                && c.user == req.user
                && c.groups == req.groups
            {
                return Ok(Arc::clone(&c.token));
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
        let token: Arc<str> = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(AssertionError::Sign)?
            .into();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= self.cap && !cache.contains_key(&key) {
            cache.retain(|_, c| c.exp > fresh_until);
            while cache.len() >= self.cap {
                let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, c)| c.exp)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                cache.remove(&oldest);
            }
        }
        cache.insert(
            key,
            Cached {
                token: Arc::clone(&token),
                exp: claims.exp,
                user: claims.sub,
                groups: claims.groups,
            },
        );
        Ok(token)
    }

    /// Drops every cached assertion of a session (logout, revocation): the next request of a
    /// new session gets a new token. Already issued tokens still expire on their own.
    pub fn forget_session(&self, session: &SessionHash) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(s, _), _| s != session);
    }

    /// Number of cached assertions (for metrics).
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests;
