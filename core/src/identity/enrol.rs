//! Web login with enrolment: a user whose TOTP was reset (empty secret) proves the password,
//! then must scan a new secret and prove it with a first valid code before any session exists.
//!
//! Threat: the password alone opening a session (a second factor skipped by "enrolling"), an
//! attacker with a stolen password binding their own authenticator after a reset, two racing
//! enrolments overwriting each other, a code replayed. Mitigation: [`EnrolmentPending`] is a
//! proof of the password only, minted here and accepted only by
//! [`Authenticator::complete_enrolment`], which requires a valid code for the new secret,
//! burns its step, stores the secret only if the user still has none, audits, and only then
//! mints the [`VerifiedIdentity`]. The login throttle counts failed enrolment codes like
//! login codes.
//! (Residual risk: whoever holds the password of a reset account can enrol; resets are
//! administrative actions and audited.)

use std::net::IpAddr;

use zeroize::Zeroizing;

use super::authenticator::{Authenticator, PasswordCheck};
use super::{AuthMethod, Enrolment, Users, VerifiedIdentity, totp};
use crate::audit::{AuditEvent, Outcome};
use crate::error::{AuthError, IdentityError};
use crate::store::Settle;

/// Proof that a user without a TOTP secret gave the right password. Private fields; only
/// [`Authenticator::login_web`] makes one.
#[derive(Debug, Clone)]
pub struct EnrolmentPending {
    user: String,
    groups: Vec<String>,
    client: Option<IpAddr>,
}

impl EnrolmentPending {
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// A new TOTP secret shown to the user and not yet confirmed. `Debug` hides it.
#[derive(Clone)]
pub struct PendingTotp {
    pub(super) secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PendingTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingTotp(..)")
    }
}

/// The outcome of a web login form (password + code).
#[derive(Debug)]
pub enum LoginOutcome {
    /// Both factors verified.
    Verified(VerifiedIdentity),
    /// Right password, but the user has no TOTP yet: enrol before any session.
    EnrolmentRequired(EnrolmentPending),
}

impl Authenticator {
    /// The web login: lockouts, password, then the TOTP code, all audited; a user without a
    /// TOTP secret gets [`LoginOutcome::EnrolmentRequired`] after a correct password.
    pub async fn login_web(
        &self,
        user: &str,
        password: &str,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<LoginOutcome, AuthError> {
        let valid = super::validate_user_name(user).is_ok();
        self.refresh_users().await;
        if valid {
            let enrolling = self.inner.users.with_user(user, |r| {
                r.is_some_and(|r| r.totp_secret.is_empty() && !r.locked)
            });
            if enrolling {
                return self.password_for_enrolment(user, password, client).await;
            }
        }
        self.verify_password_and_totp(user, password, code, client)
            .await
            .map(LoginOutcome::Verified)
    }

    async fn password_for_enrolment(
        &self,
        user: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<LoginOutcome, AuthError> {
        let method = AuthMethod::PasswordTotp;
        let attempt = self.admit(user, client, method).await?;
        match self.check_password(user, password).await? {
            PasswordCheck::Ok {
                groups,
                totp_secret,
                locked: false,
            } if totp_secret.is_empty() => {
                // The right password is no failed guess; the code comes with the enrolment.
                self.settle(&attempt, Settle::Success).await?;
                Ok(LoginOutcome::EnrolmentRequired(EnrolmentPending {
                    user: user.to_string(),
                    groups,
                    client,
                }))
            }
            PasswordCheck::Ok { .. } => {
                // Changed between the two reads (enrolled or locked meanwhile): refuse.
                self.fail_login(
                    &attempt,
                    user,
                    method,
                    "enrolment state changed",
                    client,
                    AuthError::InvalidCredentials,
                )
                .await
                .map(LoginOutcome::Verified)
            }
            PasswordCheck::Bad => self
                .fail_login(
                    &attempt,
                    user,
                    method,
                    "bad user or password",
                    client,
                    AuthError::InvalidCredentials,
                )
                .await
                .map(LoginOutcome::Verified),
        }
    }

    /// A fresh secret for `pending` and what to show the user (QR code, URI, key).
    pub fn start_enrolment(
        &self,
        pending: &EnrolmentPending,
    ) -> Result<(Enrolment, PendingTotp), AuthError> {
        let secret = totp::new_secret().map_err(AuthError::Identity)?;
        let enrolment = totp::enrolment(&pending.user, &secret).map_err(AuthError::Identity)?;
        Ok((enrolment, PendingTotp { secret }))
    }

    /// Confirms an enrolment with a first code: stores the secret (only if the user still
    /// has none), burns the code's step, audits, and returns the verified identity.
    pub async fn complete_enrolment(
        &self,
        pending: &EnrolmentPending,
        secret: &PendingTotp,
        code: &str,
    ) -> Result<VerifiedIdentity, AuthError> {
        let method = AuthMethod::PasswordTotp;
        let (user, client) = (pending.user.as_str(), pending.client);
        let attempt = self.admit(user, client, method).await?;
        self.burn_code(
            &attempt,
            user,
            &secret.secret,
            code,
            client,
            "invalid enrolment code",
        )
        .await?;
        let sealed = self
            .inner
            .cipher
            .encrypt(user, &secret.secret)
            .map_err(AuthError::Identity)?;
        let path = self.inner.users_file.clone();
        let name = user.to_string();
        let stored = tokio::task::spawn_blocking(move || {
            let _lock = Users::lock_for_update(&path)?;
            let mut users = Users::load(&path)?;
            users.set_totp_if_empty(&name, sealed)
        })
        .await
        .map_err(|_| AuthError::Identity(IdentityError::Hash))?
        .map_err(AuthError::Identity)?;
        if let Err(e) = self.inner.users.reload(true).await {
            tracing::error!(error = %crate::error_chain(&e), "users file does not load after an enrolment");
        }
        let outcome = if stored {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.audit(AuditEvent::AdminAction {
            actor: user.to_string(),
            action: "totp enrol".into(),
            subject: user.to_string(),
            outcome,
        })
        .await?;
        if !stored {
            return Err(AuthError::InvalidCredentials);
        }
        self.succeed(user, pending.groups.clone(), method, client, Some(&attempt))
            .await
    }
}

#[cfg(test)]
mod tests;
