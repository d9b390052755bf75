//! The bastion's authentication steps over the same counters as the web login.
//!
//! Threat: an attacker spreading guesses between the web login and the bastion, or replaying
//! a TOTP code on the other door. Mitigation: these functions use the same lockout counters
//! (user and client address), TOTP replay cache and audit records as
//! [`Authenticator::verify_password_and_totp`]; the bastion verifies the key signature itself
//! (russh, against the keys of `users.toml`) and then calls these for the rest.

use std::net::IpAddr;

use super::{AuthMethod, Authenticator, Users, VerifiedIdentity};
use crate::audit::AuditEvent;
use crate::error::AuthError;
use crate::store::LockoutKey;

/// Stands for a syntactically invalid user name in counters and records (as the web login).
const INVALID_NAME: &str = "<invalid-name>";

fn safe_name(user: &str) -> &str {
    if super::validate_user_name(user).is_ok() {
        user
    } else {
        INVALID_NAME
    }
}

impl Authenticator {
    /// Whether `user` or `client` is locked out now. Writes no audit record: the caller
    /// records its own refusal.
    pub async fn is_locked_out(
        &self,
        user: &str,
        client: Option<IpAddr>,
    ) -> Result<bool, AuthError> {
        let store = &self.inner.store;
        let mut keys = vec![LockoutKey::User(safe_name(user).to_string())];
        keys.extend(client.map(LockoutKey::Addr));
        for k in &keys {
            if store
                .lockout_remaining(k)
                .await
                .map_err(AuthError::Store)?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A TOTP code for `user`, whose registered SSH key the caller has verified. Lockouts,
    /// failure counting, the replay cache and the audit records are those of
    /// [`Authenticator::verify_totp_after_key`].
    pub async fn verify_totp_for_user(
        &self,
        user: &str,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<VerifiedIdentity, AuthError> {
        let method = AuthMethod::SshKeyTotp;
        let user = safe_name(user);
        self.check_lockout(user, client, method).await?;
        let users = Users::load(&self.inner.users_file).map_err(AuthError::Identity)?;
        let Some(rec) = users.get(user) else {
            return self
                .fail_login(
                    user,
                    method,
                    "unknown user",
                    client,
                    AuthError::InvalidCredentials,
                )
                .await;
        };
        if rec.locked {
            return self
                .fail_login(
                    user,
                    method,
                    "account locked",
                    client,
                    AuthError::AccountLocked,
                )
                .await;
        }
        self.check_totp(user, &rec.totp_secret, code, method, client)
            .await?;
        self.succeed(user, rec.groups.clone(), method, client).await
    }

    /// Key-only login (targets with `require_totp = false`) for `user`, whose registered SSH
    /// key the caller has verified: refused when locked out, unknown or locked; audited.
    pub async fn accept_verified_key(
        &self,
        user: &str,
        client: Option<IpAddr>,
    ) -> Result<VerifiedIdentity, AuthError> {
        let method = AuthMethod::SshKey;
        let user = safe_name(user);
        self.check_lockout(user, client, method).await?;
        let users = Users::load(&self.inner.users_file).map_err(AuthError::Identity)?;
        let Some(rec) = users.get(user) else {
            return self
                .fail_login(
                    user,
                    method,
                    "unknown user",
                    client,
                    AuthError::InvalidCredentials,
                )
                .await;
        };
        if rec.locked {
            return self
                .fail_login(
                    user,
                    method,
                    "account locked",
                    client,
                    AuthError::AccountLocked,
                )
                .await;
        }
        self.succeed(user, rec.groups.clone(), method, client).await
    }

    /// Counts a second-factor failure the authenticator did not check itself (a malformed
    /// code) towards the lockouts, and audits it.
    pub async fn note_totp_failure(
        &self,
        user: &str,
        reason: &str,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let user = safe_name(user);
        self.count_failure(user, client).await?;
        self.audit(AuditEvent::TotpFailure {
            user: user.to_string(),
            reason: reason.to_string(),
            client_addr: client,
        })
        .await
    }
}
