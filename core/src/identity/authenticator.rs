//! `Authenticator`: the only code that mints [`VerifiedIdentity`]. Each guess is admitted by
//! the login throttle (`throttle`: the user at this address, the address, the user), verified,
//! settled (a failure stays counted), recorded in the audit log (an audit failure fails the
//! login), and replays no TOTP step.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::throttle::{Attempt, LockoutPolicy};
use super::{AuthMethod, TotpCipher, UsersCache, VerifiedIdentity, password, totp};
use crate::audit::{AuditEvent, AuditLog};
use crate::config::Config;
use crate::error::{AuthError, IdentityError};
use crate::secret::SecretKey;
use crate::store::{Schedules, Settle, Store};

/// Authenticates users against `users.toml`, the store (lockouts, TOTP replay, sessions)
/// and the audit log.
#[derive(Debug, Clone)]
pub struct Authenticator {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) users_file: PathBuf,
    /// `users_file` as last read (reloaded when it changes: [`Authenticator::watch_users`]).
    pub(super) users: Arc<UsersCache>,
    pub(super) cipher: TotpCipher,
    pub(super) store: Arc<dyn Store>,
    pub(super) audit: AuditLog,
    pub(super) session_ttl: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) lockout: LockoutPolicy,
    /// `lockout`'s delays, as the store applies them.
    pub(super) schedules: Schedules,
}

/// Stands for any syntactically invalid user name in lockout keys and audit records, so an
/// attacker cannot bloat the store or the audit log with huge or hostile names.
const INVALID_NAME: &str = "<invalid-name>";

pub(super) fn safe_name(user: &str) -> &str {
    if super::validate_user_name(user).is_ok() {
        user
    } else {
        INVALID_NAME
    }
}

pub(super) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) enum PasswordCheck {
    Ok {
        groups: Vec<String>,
        totp_secret: String,
        locked: bool,
    },
    Bad,
}

impl Authenticator {
    pub fn new(
        users_file: PathBuf,
        cipher: TotpCipher,
        store: Arc<dyn Store>,
        audit: AuditLog,
        session_ttl: Duration,
        idle_timeout: Duration,
        lockout: LockoutPolicy,
    ) -> Authenticator {
        Authenticator {
            inner: Arc::new(Inner {
                users: Arc::new(UsersCache::load_or_empty(&users_file)),
                users_file,
                cipher,
                store,
                audit,
                session_ttl,
                idle_timeout,
                schedules: lockout.schedules(),
                lockout,
            }),
        }
    }

    /// Builds one from the validated config, the master key, the store and the audit log.
    pub fn from_config(
        config: &Config,
        key: &SecretKey,
        store: Arc<dyn Store>,
        audit: AuditLog,
    ) -> Result<Authenticator, IdentityError> {
        Ok(Self::new(
            config.identity.users_file.clone(),
            TotpCipher::new(key)?,
            store,
            audit,
            config.identity.session_ttl,
            config.identity.idle_timeout,
            LockoutPolicy::default(),
        ))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The local users as this process knows them.
    pub fn users(&self) -> &Arc<UsersCache> {
        &self.inner.users
    }

    pub(super) async fn audit(&self, ev: AuditEvent) -> Result<(), AuthError> {
        self.inner
            .audit
            .record(ev)
            .await
            .map(|_| ())
            .map_err(AuthError::Audit)
    }

    /// The record of `user` for a login step by `method` whose guess `attempt` was admitted;
    /// refused (counted and audited) when the user is unknown — `unknown` is the audit
    /// reason — or its account is locked.
    pub(super) async fn usable_user(
        &self,
        attempt: &Attempt,
        user: &str,
        method: AuthMethod,
        client: Option<IpAddr>,
        unknown: &str,
    ) -> Result<super::users::UserRecord, AuthError> {
        let (reason, err) = match self.inner.users.with_user(user, |r| r.cloned()) {
            Some(rec) if !rec.locked => return Ok(rec),
            Some(_) => ("account locked", AuthError::AccountLocked),
            None => (unknown, AuthError::InvalidCredentials),
        };
        match self
            .fail_login(attempt, user, method, reason, client, err)
            .await
        {
            Err(e) => Err(e),
            Ok(_) => Err(AuthError::InvalidCredentials),
        }
    }

    /// A failed guess: it stays counted (alerts at a lock) and is audited.
    pub(super) async fn fail_login(
        &self,
        attempt: &Attempt,
        user: &str,
        method: AuthMethod,
        reason: &str,
        client: Option<IpAddr>,
        err: AuthError,
    ) -> Result<VerifiedIdentity, AuthError> {
        self.failed(attempt).await?;
        self.audit(AuditEvent::LoginFailure {
            user: user.to_string(),
            method: method.as_str().into(),
            reason: reason.into(),
            client_addr: client,
        })
        .await?;
        Err(err)
    }

    /// Checks the password on a blocking thread; argon2 runs for unknown users too (against
    /// a dummy hash) so timing does not reveal who exists.
    pub(super) async fn check_password(
        &self,
        user: &str,
        password: &str,
    ) -> Result<PasswordCheck, AuthError> {
        let rec = self
            .inner
            .users
            .with_user(user, |r| r.cloned())
            .filter(|_| super::validate_user_name(user).is_ok());
        let password = zeroize::Zeroizing::new(password.to_string());
        tokio::task::spawn_blocking(move || {
            let hash = rec
                .as_ref()
                .map_or(password::dummy_hash(), |r| r.password_hash.as_str());
            let ok = password::verify_password(&password, hash);
            match rec {
                Some(r) if ok => PasswordCheck::Ok {
                    groups: r.groups,
                    totp_secret: r.totp_secret,
                    locked: r.locked,
                },
                _ => PasswordCheck::Bad,
            }
        })
        .await
        .map_err(|_| AuthError::Identity(IdentityError::Hash))
    }

    /// Verifies a TOTP code against the stored secret and burns its step.
    pub(super) async fn check_totp(
        &self,
        attempt: &Attempt,
        user: &str,
        totp_secret: &str,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        if totp_secret.is_empty() {
            self.failed(attempt).await?;
            self.audit(AuditEvent::TotpFailure {
                user: user.into(),
                reason: "no totp enrolment".into(),
                client_addr: client,
            })
            .await?;
            return Err(AuthError::InvalidTotp);
        }
        let secret = self
            .inner
            .cipher
            .decrypt(user, totp_secret)
            .map_err(AuthError::Identity)?;
        self.burn_code(attempt, user, &secret, code, client, "invalid code")
            .await
    }

    /// Checks `code` against the plain TOTP `secret` and burns its time step, so the code is
    /// accepted once per user. A wrong code stays counted as a failed guess and is audited
    /// (`invalid` is the audit reason); a replayed one — right, but already used — is
    /// refused and audited too, but taken back: it is no guess.
    pub(super) async fn burn_code(
        &self,
        attempt: &Attempt,
        user: &str,
        secret: &[u8],
        code: &str,
        client: Option<IpAddr>,
        invalid: &str,
    ) -> Result<(), AuthError> {
        let now = unix_secs(SystemTime::now());
        let step = totp::check_code(user, secret, code, now).map_err(AuthError::Identity)?;
        let (reason, err) = match step {
            None => {
                self.failed(attempt).await?;
                (invalid, AuthError::InvalidTotp)
            }
            Some(step) => {
                let fresh = self
                    .inner
                    .store
                    .mark_totp_used(user, step)
                    .await
                    .map_err(AuthError::Store)?;
                if fresh {
                    return Ok(());
                }
                self.settle(attempt, Settle::NotAGuess).await?;
                (
                    "code replayed (refused; not counted as a guess)",
                    AuthError::TotpReplayed,
                )
            }
        };
        self.audit(AuditEvent::TotpFailure {
            user: user.into(),
            reason: reason.into(),
            client_addr: client,
        })
        .await?;
        Err(err)
    }

    /// Mints the identity of a login that succeeded, after settling its guess (`attempt`;
    /// none for a key-only login) and auditing.
    pub(super) async fn succeed(
        &self,
        user: &str,
        groups: Vec<String>,
        method: AuthMethod,
        client: Option<IpAddr>,
        attempt: Option<&Attempt>,
    ) -> Result<VerifiedIdentity, AuthError> {
        if let Some(a) = attempt {
            self.settle(a, Settle::Success).await?;
        }
        self.audit(AuditEvent::LoginSuccess {
            user: user.to_string(),
            method: method.as_str().into(),
            client_addr: client,
        })
        .await?;
        Ok(VerifiedIdentity::new(
            user.to_string(),
            groups,
            method,
            SystemTime::now(),
        ))
    }

    /// Web login with a local password and a TOTP code.
    pub async fn verify_password_and_totp(
        &self,
        user: &str,
        password: &str,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<VerifiedIdentity, AuthError> {
        let method = AuthMethod::PasswordTotp;
        let user = safe_name(user);
        let attempt = self.admit(user, client, method).await?;
        self.refresh_users().await;
        let (groups, totp_secret) = match self.check_password(user, password).await? {
            PasswordCheck::Bad => {
                return self
                    .fail_login(
                        &attempt,
                        user,
                        method,
                        "bad user or password",
                        client,
                        AuthError::InvalidCredentials,
                    )
                    .await;
            }
            PasswordCheck::Ok { locked: true, .. } => {
                return self
                    .fail_login(
                        &attempt,
                        user,
                        method,
                        "account locked",
                        client,
                        AuthError::AccountLocked,
                    )
                    .await;
            }
            PasswordCheck::Ok {
                groups,
                totp_secret,
                ..
            } => (groups, totp_secret),
        };
        if totp_secret.is_empty() {
            // Not enrolled: the password alone never logs in (see `login_web`).
            return self
                .fail_login(
                    &attempt,
                    user,
                    method,
                    "no totp enrolment",
                    client,
                    AuthError::InvalidCredentials,
                )
                .await;
        }
        self.check_totp(&attempt, user, &totp_secret, code, client)
            .await?;
        self.succeed(user, groups, method, client, Some(&attempt))
            .await
    }
}
