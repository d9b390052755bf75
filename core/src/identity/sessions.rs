//! Web sessions of an authenticated identity: start, resume (which mints the
//! `VerifiedIdentity` again from the server-side record), logout.
//!
//! Threat: a session cookie taken from one app host (a compromised or careless app, a log,
//! a proxy) replayed on another app host, where the same user may reach more. Mitigation:
//! a web session records the one host it was issued to (login or handoff) and resuming it
//! on any other host is [`AuthError::WrongHost`], refused like no session.

use super::VerifiedIdentity;
use super::authenticator::{Authenticator, unix_secs};
use super::oidc::SsoLogoutHint;
use crate::audit::AuditEvent;
use crate::error::AuthError;
use crate::store::{SessionData, SessionKey, SessionToken};
use std::net::IpAddr;

impl Authenticator {
    /// Starts a server-side web session for `id`, valid on `host` (lowercase, no port) only;
    /// the returned token goes into the cookie.
    pub async fn start_session(
        &self,
        id: &VerifiedIdentity,
        client: Option<IpAddr>,
        host: &str,
    ) -> Result<SessionToken, AuthError> {
        self.create_session_record(id, client, Some(host)).await
    }

    /// Starts the server-side record of an SSH connection (listed and revocable like a web
    /// session); it is bound to no web host, so its token never resumes a web session.
    pub async fn start_ssh_session(
        &self,
        id: &VerifiedIdentity,
        client: Option<IpAddr>,
    ) -> Result<SessionToken, AuthError> {
        self.create_session_record(id, client, None).await
    }

    async fn create_session_record(
        &self,
        id: &VerifiedIdentity,
        client: Option<IpAddr>,
        host: Option<&str>,
    ) -> Result<SessionToken, AuthError> {
        let login_id = match &id.login_id {
            Some(l) => l.clone(),
            None => new_login_id()?,
        };
        let data = SessionData {
            user: id.user.clone(),
            groups: id.groups.clone(),
            method: id.method,
            auth_time: unix_secs(id.auth_time),
            client_addr: client,
            login_id: Some(login_id),
            sso_logout: id.sso_logout.clone(),
        };
        self.inner
            .store
            .create_bound_session(data, host, self.inner.session_ttl, self.inner.idle_timeout)
            .await
            .map_err(AuthError::Store)
    }

    /// Resumes a session from its raw token (cookie) on `host` (lowercase, no port);
    /// refreshes its idle timer. Unknown, expired or idle sessions are
    /// `AuthError::NoSession`, one issued to another host `AuthError::WrongHost`.
    pub async fn resume_session(
        &self,
        token: &str,
        host: &str,
    ) -> Result<(VerifiedIdentity, String), AuthError> {
        let key = SessionKey::of(token).ok_or(AuthError::NoSession)?;
        self.resume_session_key(&key, host).await
    }

    /// [`Authenticator::resume_session`] for a token already hashed (a caller that saw the
    /// same cookie before keeps its key).
    pub async fn resume_session_key(
        &self,
        key: &SessionKey,
        host: &str,
    ) -> Result<(VerifiedIdentity, String), AuthError> {
        let s = self
            .inner
            .store
            .touch_session_key(key)
            .await
            .map_err(AuthError::Store)?
            .ok_or(AuthError::NoSession)?;
        if s.host.as_deref() != Some(host) {
            return Err(AuthError::WrongHost {
                user: s.data.user,
                session: s.id_hash,
                issued_for: s.host,
            });
        }
        Ok((VerifiedIdentity::from_session(s.data), s.id_hash))
    }

    /// Ends a session (logout) and, with it, every session of the same sign-in (the ones
    /// handed off to app hosts, or the public host's one when logging out on an app host);
    /// records each. Returns what ending the SSO session at its provider needs, when the
    /// sign-in was an SSO one.
    pub async fn logout(&self, token: &str) -> Result<Option<SsoLogoutHint>, AuthError> {
        let Some(s) = self
            .inner
            .store
            .touch_session(token)
            .await
            .map_err(AuthError::Store)?
        else {
            return Ok(None);
        };
        let ended = match &s.data.login_id {
            Some(login) => self
                .inner
                .store
                .end_login(&s.data.user, login)
                .await
                .map_err(AuthError::Store)?,
            None => {
                self.inner
                    .store
                    .delete_session(token)
                    .await
                    .map_err(AuthError::Store)?;
                vec![s.id_hash.clone()]
            }
        };
        for session in ended {
            self.audit(AuditEvent::Logout {
                user: s.data.user.clone(),
                session,
            })
            .await?;
        }
        Ok(s.data.sso_logout)
    }
}

/// A fresh sign-in id: 128 random bits, hex (not a secret: it names a group of sessions).
fn new_login_id() -> Result<String, AuthError> {
    let mut raw = [0u8; 16];
    crate::secret::random_bytes(&mut raw)
        .map_err(|e| AuthError::Identity(crate::error::IdentityError::Key(e)))?;
    Ok(crate::secret::hex_lower(raw))
}
