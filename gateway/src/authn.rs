//! Authentication of proxied requests: the session cookie, resumed in the store.
//!
//! Threat: a request reaching authorization or an upstream without a verified person behind
//! it; forged, stale, revoked or idle sessions; a cookie carried from one app host to
//! another; a store outage read as "no check needed".
//! Mitigation: [`Authenticated`] has private fields and is made only here, from the core's
//! [`VerifiedIdentity`] (which only the core's `Authenticator` mints, here by resuming the
//! server-side session: idle and absolute TTL enforced by the store on every touch, and the
//! host it was issued to compared with the request's). No or unknown cookie is
//! [`AuthnError::NoSession`], a session of another host [`AuthnError::WrongHost`] (answered
//! the same way, and audited); a store error is [`AuthnError::Unavailable`] (503), never a
//! pass.

use std::sync::{Mutex, PoisonError};

use gatehouse_core::audit::{AccessContext, AuditEvent, AuditLog};
use gatehouse_core::identity::{Authenticator, VerifiedIdentity};
use gatehouse_core::store::{SessionKey, ct_eq};
use gatehouse_core::{AuditError, AuthError};
use http::HeaderMap;

use crate::web::cookie::{self, CookieValue, SessionHash};

/// Proof that a request carries a live session of a verified user.
#[derive(Debug)]
pub struct Authenticated {
    identity: VerifiedIdentity,
    session: SessionHash,
    token: CookieValue,
}

impl Authenticated {
    pub fn identity(&self) -> &VerifiedIdentity {
        &self.identity
    }

    /// The session id's hash (store key, assertion `sid`, CSRF binding).
    pub fn session(&self) -> &SessionHash {
        &self.session
    }

    /// The session id's hash, taking it (the request is done with the proof).
    pub fn into_session(self) -> SessionHash {
        self.session
    }

    /// The raw session id (to re-check a live tunnel later). Never log it.
    pub(crate) fn token(&self) -> &CookieValue {
        &self.token
    }
}

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// No session cookie, or its session is unknown, expired, idle or revoked.
    #[error("no live session")]
    NoSession { had_cookie: bool },
    /// A live session issued to another host: answer as for no session, after
    /// [`record_wrong_host`].
    #[error("session issued to another host")]
    WrongHost(WrongHost),
    /// The store could not be asked: refuse (503).
    #[error("session store unavailable")]
    Unavailable(#[source] AuthError),
}

/// A session presented on another host than it was issued to.
#[derive(Debug)]
pub struct WrongHost {
    pub user: String,
    /// The session id's hash.
    pub session: String,
    pub issued_for: Option<String>,
}

/// Audits a [`WrongHost`] refusal on `host`; the caller then answers as for no session (a
/// failed audit is a 503, like every unaudited decision).
pub async fn record_wrong_host(
    audit: &AuditLog,
    refused: WrongHost,
    host: &str,
    mut context: AccessContext,
) -> Result<(), AuditError> {
    tracing::warn!(user = %refused.user, host = %host, issued_for = ?refused.issued_for, request_id = ?context.request_id, "session presented on a host it was not issued to; refused");
    context.session = Some(refused.session);
    audit
        .record(AuditEvent::SessionHostMismatch {
            user: refused.user,
            host: host.to_string(),
            issued_for: refused.issued_for,
            context,
        })
        .await
        .map(drop)
}

/// The last session cookie seen on a connection and its store key. A keep-alive connection
/// sends the same cookie on every request, and hashing it was the costliest step of resuming
/// a session. Only the hash is remembered: the session itself is looked up (and its idle,
/// expiry and revocation checked) in the store on every request.
#[derive(Debug, Default)]
pub struct SessionKeys(Mutex<Option<(CookieValue, SessionKey)>>);

impl SessionKeys {
    /// The store key of `token`; `None` when it cannot name a session.
    fn key(&self, token: &CookieValue) -> Option<SessionKey> {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, key)) = last.as_ref()
            && ct_eq(seen.expose(), token.expose())
        {
            return Some(key.clone());
        }
        let key = SessionKey::of(token.expose())?;
        *last = Some((token.clone(), key.clone()));
        Some(key)
    }
}

/// Resumes the request's session on `host` (lowercase, no port; one store round trip, which
/// also refreshes its idle timer). `keys` is the connection's memory of its last cookie (a
/// fresh one where there is none).
pub async fn authenticate(
    headers: &HeaderMap,
    auth: &Authenticator,
    keys: &SessionKeys,
    host: &str,
) -> Result<Authenticated, AuthnError> {
    let token = cookie::session(headers).ok_or(AuthnError::NoSession { had_cookie: false })?;
    let key = keys
        .key(&token)
        .ok_or(AuthnError::NoSession { had_cookie: true })?;
    match auth.resume_session_key(&key, host).await {
        Ok((identity, id_hash)) => Ok(Authenticated {
            identity,
            session: SessionHash::from_store(id_hash),
            token,
        }),
        Err(AuthError::NoSession) => Err(AuthnError::NoSession { had_cookie: true }),
        Err(AuthError::WrongHost {
            user,
            session,
            issued_for,
        }) => Err(AuthnError::WrongHost(WrongHost {
            user,
            session,
            issued_for,
        })),
        Err(e) => Err(AuthnError::Unavailable(e)),
    }
}
