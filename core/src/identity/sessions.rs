//! Web sessions of an authenticated identity: start, resume (which mints the
//! `VerifiedIdentity` again from the server-side record), logout.
//!
//! Threat: a session cookie taken from one app host (a compromised or careless app, a log,
//! a proxy) replayed on another app host, where the same user may reach more. Mitigation:
//! a web session records the one host it was issued to (login or handoff) and resuming it
//! on any other host is [`AuthError::WrongHost`], refused like no session.

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use super::{Standing, VerifiedIdentity};
use super::authenticator::{Authenticator, unix_secs};
use crate::audit::AuditEvent;
use crate::error::AuthError;
use crate::store::{SessionData, SessionKey, SessionToken};

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
        let data = SessionData {
            user: id.user.clone(),
            groups: id.groups.clone(),
            method: id.method,
            auth_time: unix_secs(id.auth_time),
            client_addr: client,
        };
        self.inner
            .store
            .create_bound_session(data, host, self.inner.session_ttl, self.inner.idle_timeout)
            .await
            .map_err(AuthError::Store)
    }

    /// Resumes a session from its raw token (cookie) on `host` (lowercase, no port);
    /// refreshes its idle timer. Unknown, expired or idle sessions, and those of a local user
    /// now locked or removed, are `AuthError::NoSession`; one issued to another host
    /// `AuthError::WrongHost`. A local user's groups are those of `users.toml` now.
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
        let auth_time = UNIX_EPOCH + Duration::from_secs(s.data.auth_time);
        let id = VerifiedIdentity::new(s.data.user, s.data.groups, s.data.method, auth_time);
        // A local user's groups and lock are users.toml's now, not the login's.
        match self.recheck(&id) {
            Standing::Active(fresh) => Ok((fresh, s.id_hash)),
            _ => Err(AuthError::NoSession),
        }
    }

    /// Ends a session (logout) and records it.
    pub async fn logout(&self, token: &str) -> Result<(), AuthError> {
        let Some(s) = self
            .inner
            .store
            .touch_session(token)
            .await
            .map_err(AuthError::Store)?
        else {
            return Ok(());
        };
        self.inner
            .store
            .delete_session(token)
            .await
            .map_err(AuthError::Store)?;
        self.audit(AuditEvent::Logout {
            user: s.data.user,
            session: s.id_hash,
        })
        .await
    }
}
