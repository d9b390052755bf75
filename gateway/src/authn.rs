//! Authentication of proxied requests: the session cookie, resumed in the store.
//!
//! Threat: a request reaching authorization or an upstream without a verified person behind
//! it; forged, stale, revoked or idle sessions; a store outage read as "no check needed".
//! Mitigation: [`Authenticated`] has private fields and is made only here, from the core's
//! [`VerifiedIdentity`] (which only the core's `Authenticator` mints, here by resuming the
//! server-side session: idle and absolute TTL enforced by the store on every touch). No or
//! unknown cookie is [`AuthnError::NoSession`]; a store error is
//! [`AuthnError::Unavailable`] (503), never a pass.

use gatehouse_core::AuthError;
use gatehouse_core::identity::{Authenticator, VerifiedIdentity};
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
    /// The store could not be asked: refuse (503).
    #[error("session store unavailable")]
    Unavailable(#[source] AuthError),
}

/// Resumes the request's session (one store round trip, which also refreshes its idle timer).
pub async fn authenticate(
    headers: &HeaderMap,
    auth: &Authenticator,
) -> Result<Authenticated, AuthnError> {
    let token = cookie::session(headers).ok_or(AuthnError::NoSession { had_cookie: false })?;
    match auth.resume_session(token.expose()).await {
        Ok((identity, id_hash)) => Ok(Authenticated {
            identity,
            session: SessionHash::from_store(id_hash),
            token,
        }),
        Err(AuthError::NoSession) => Err(AuthnError::NoSession { had_cookie: true }),
        Err(e) => Err(AuthnError::Unavailable(e)),
    }
}
