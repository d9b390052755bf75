//! `Authenticator`: the only code that mints [`VerifiedIdentity`]. Each attempt checks the
//! lockouts (user and client address), verifies, counts failures, records the outcome in the
//! audit log (an audit failure fails the login) and replays no TOTP step.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{AuthMethod, TotpCipher, Users, VerifiedIdentity, password, totp};
use crate::audit::{AuditEvent, AuditLog, new_incident_id};
use crate::config::Config;
use crate::error::{AuthError, IdentityError};
use crate::secret::SecretKey;
use crate::store::{LockoutKey, Store};

pub use crate::store::LockoutPolicy;

/// Authenticates users against `users.toml`, the store (lockouts, TOTP replay, sessions)
/// and the audit log.
#[derive(Debug, Clone)]
pub struct Authenticator {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) users_file: PathBuf,
    pub(super) cipher: TotpCipher,
    pub(super) store: Arc<dyn Store>,
    pub(super) audit: AuditLog,
    pub(super) session_ttl: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) lockout: LockoutPolicy,
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
                users_file,
                cipher,
                store,
                audit,
                session_ttl,
                idle_timeout,
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

    pub(super) async fn audit(&self, ev: AuditEvent) -> Result<(), AuthError> {
        self.inner
            .audit
            .record(ev)
            .await
            .map(|_| ())
            .map_err(AuthError::Audit)
    }

    /// Refuses when the user or the address is locked out.
    pub(super) async fn check_lockout(
        &self,
        user: &str,
        client: Option<IpAddr>,
        method: AuthMethod,
    ) -> Result<(), AuthError> {
        let s = &self.inner.store;
        let mut remaining = s
            .lockout_remaining(&LockoutKey::User(user.to_string()))
            .await
            .map_err(AuthError::Store)?;
        if let Some(a) = client {
            let r = s
                .lockout_remaining(&LockoutKey::Addr(a))
                .await
                .map_err(AuthError::Store)?;
            remaining = remaining.max(r);
        }
        if let Some(r) = remaining {
            self.audit(AuditEvent::LoginFailure {
                user: user.to_string(),
                method: method.as_str().into(),
                reason: "locked out".into(),
                client_addr: client,
            })
            .await?;
            return Err(AuthError::LockedOut {
                remaining_secs: r.as_secs().max(1),
            });
        }
        Ok(())
    }

    /// Counts a failure for the user and the address; audits new lockouts (alerts).
    pub(super) async fn count_failure(
        &self,
        user: &str,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let mut keys = vec![LockoutKey::User(user.to_string())];
        keys.extend(client.map(LockoutKey::Addr));
        for k in keys {
            let st = self
                .inner
                .store
                .record_failure(&k, &self.inner.lockout)
                .await
                .map_err(AuthError::Store)?;
            if st.newly_locked {
                self.audit(AuditEvent::Lockout {
                    key: k.as_key(),
                    failures: st.failures,
                    locked_secs: st.locked_for.map_or(0, |d| d.as_secs()),
                    incident_id: new_incident_id(),
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The record of `user` for a login step by `method`, refused while the user or the
    /// client is locked out, and (counted and audited) when the user is unknown — `unknown`
    /// is the audit reason — or its account is locked.
    pub(super) async fn usable_user(
        &self,
        user: &str,
        method: AuthMethod,
        client: Option<IpAddr>,
        unknown: &str,
    ) -> Result<super::users::UserRecord, AuthError> {
        self.check_lockout(user, client, method).await?;
        let users = Users::load(&self.inner.users_file).map_err(AuthError::Identity)?;
        let (reason, err) = match users.get(user) {
            Some(rec) if !rec.locked => return Ok(rec.clone()),
            Some(_) => ("account locked", AuthError::AccountLocked),
            None => (unknown, AuthError::InvalidCredentials),
        };
        match self.fail_login(user, method, reason, client, err).await {
            Err(e) => Err(e),
            Ok(_) => Err(AuthError::InvalidCredentials),
        }
    }

    pub(super) async fn fail_login(
        &self,
        user: &str,
        method: AuthMethod,
        reason: &str,
        client: Option<IpAddr>,
        err: AuthError,
    ) -> Result<VerifiedIdentity, AuthError> {
        self.count_failure(user, client).await?;
        self.audit(AuditEvent::LoginFailure {
            user: user.to_string(),
            method: method.as_str().into(),
            reason: reason.into(),
            client_addr: client,
        })
        .await?;
        Err(err)
    }

    /// Loads users and checks the password on a blocking thread; argon2 runs for unknown
    /// users too (against a dummy hash) so timing does not reveal who exists.
    pub(super) async fn check_password(
        &self,
        user: &str,
        password: &str,
    ) -> Result<PasswordCheck, AuthError> {
        let path = self.inner.users_file.clone();
        let user = user.to_string();
        let password = zeroize::Zeroizing::new(password.to_string());
        tokio::task::spawn_blocking(move || {
            let users = Users::load(&path)?;
            let rec = users
                .get(&user)
                .filter(|_| super::validate_user_name(&user).is_ok());
            let hash = rec.map_or(password::dummy_hash(), |r| r.password_hash.as_str());
            let ok = password::verify_password(&password, hash);
            Ok(match rec {
                Some(r) if ok => PasswordCheck::Ok {
                    groups: r.groups.clone(),
                    totp_secret: r.totp_secret.clone(),
                    locked: r.locked,
                },
                _ => PasswordCheck::Bad,
            })
        })
        .await
        .map_err(|_| AuthError::Identity(IdentityError::Hash))?
        .map_err(AuthError::Identity)
    }

    /// Verifies a TOTP code against the stored secret and burns its step.
    pub(super) async fn check_totp(
        &self,
        user: &str,
        totp_secret: &str,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        if totp_secret.is_empty() {
            self.count_failure(user, client).await?;
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
        self.burn_code(user, &secret, code, client, "invalid code")
            .await
    }

    /// Checks `code` against the plain TOTP `secret` and burns its time step, so the code is
    /// accepted once per user. A wrong or replayed code is counted towards lockout and audited
    /// (`invalid` is the audit reason for a wrong one).
    pub(super) async fn burn_code(
        &self,
        user: &str,
        secret: &[u8],
        code: &str,
        client: Option<IpAddr>,
        invalid: &str,
    ) -> Result<(), AuthError> {
        let now = unix_secs(SystemTime::now());
        let step = totp::check_code(user, secret, code, now).map_err(AuthError::Identity)?;
        let (reason, err) = match step {
            None => (invalid, AuthError::InvalidTotp),
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
                ("code replayed", AuthError::TotpReplayed)
            }
        };
        self.count_failure(user, client).await?;
        self.audit(AuditEvent::TotpFailure {
            user: user.into(),
            reason: reason.into(),
            client_addr: client,
        })
        .await?;
        Err(err)
    }

    pub(super) async fn succeed(
        &self,
        user: &str,
        groups: Vec<String>,
        method: AuthMethod,
        client: Option<IpAddr>,
    ) -> Result<VerifiedIdentity, AuthError> {
        self.inner
            .store
            .clear_failures(&LockoutKey::User(user.to_string()))
            .await
            .map_err(AuthError::Store)?;
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
        self.check_lockout(user, client, method).await?;
        let (groups, totp_secret) = match self.check_password(user, password).await? {
            PasswordCheck::Bad => {
                return self
                    .fail_login(
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
                    user,
                    method,
                    "no totp enrolment",
                    client,
                    AuthError::InvalidCredentials,
                )
                .await;
        }
        self.check_totp(user, &totp_secret, code, client).await?;
        self.succeed(user, groups, method, client).await
    }
}
