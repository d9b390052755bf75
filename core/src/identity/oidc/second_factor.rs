//! After the provider: admitting the SSO user (name rules, lock) and Gatehouse's own second
//! factor, which an SSO login passes like a local one.
//!
//! Threat: SSO as a way around TOTP (a provider that checks one factor), a proof of the
//! first factor replayed after the user was locked or renamed, two enrolments racing.
//! Mitigation: the TOTP step is skipped only when the provider has `trust_mfa = true` and
//! the ID token's `amr` proves two factors ([`proves_mfa`]), and the audit record says so;
//! otherwise [`SsoTotpPending`] / [`SsoEnrolmentPending`] (private fields, minted only
//! here after every check) must be redeemed with a valid code, checked against the SSO
//! user's own secret (encrypted at rest like a local user's, enrolled at the first SSO
//! login), its step burnt, lockouts counted; the registry is read again at that point (a
//! lock or a new owner of the name refuses), and only then is the [`VerifiedIdentity`]
//! minted by the [`Authenticator`].

use std::net::IpAddr;
use std::time::SystemTime;

use super::claims::{Extracted, proves_mfa};
use super::provider::Provider;
use super::registry::{self, NameOwner, Recorded, Seen, SsoUsers};
use super::{Failed, Refusal, Sso, SsoLogoutHint, SsoStep};
use crate::audit::{AuditEvent, Outcome};
use crate::error::{AuthError, IdentityError, SsoCheck, SsoError};
use crate::identity::authenticator::unix_secs;
use crate::identity::{AuthMethod, Enrolment, PendingTotp, Users, VerifiedIdentity, totp};

/// Who passed the provider's checks, waiting for the second factor.
#[derive(Debug, Clone)]
struct Pending {
    user: String,
    groups: Vec<String>,
    provider: String,
    issuer: String,
    subject: String,
    client: Option<IpAddr>,
    /// Carried into the identity, and from it into the session, for logout.
    logout: SsoLogoutHint,
}

/// Proof that an SSO login passed every check and the user has a TOTP secret: redeem it
/// with [`Sso::verify_totp`]. Only [`Sso::finish_login`] makes one.
#[derive(Debug, Clone)]
pub struct SsoTotpPending(Pending);

/// Proof that an SSO login passed every check and the user has no TOTP secret yet: enrol
/// with [`Sso::start_enrolment`] and [`Sso::complete_enrolment`]. Only
/// [`Sso::finish_login`] makes one.
#[derive(Debug, Clone)]
pub struct SsoEnrolmentPending(Pending);

impl SsoTotpPending {
    pub fn user(&self) -> &str {
        &self.0.user
    }
    pub fn provider(&self) -> &str {
        &self.0.provider
    }
}

impl SsoEnrolmentPending {
    pub fn user(&self) -> &str {
        &self.0.user
    }
    pub fn provider(&self) -> &str {
        &self.0.provider
    }
}

fn hard_auth(e: AuthError) -> SsoError {
    match e {
        AuthError::Store(s) => SsoError::Store(s),
        AuthError::Audit(a) => SsoError::Audit(a),
        AuthError::Identity(i) => SsoError::Registry(i),
        _ => SsoError::Registry(IdentityError::Totp),
    }
}

impl Sso {
    /// Records the login in the registry (refusing a taken name or a locked user), audits
    /// the first factor, and decides the second.
    pub(super) async fn admit(
        &self,
        p: &Provider,
        subject: &str,
        found: Extracted,
        logout: SsoLogoutHint,
        client: Option<IpAddr>,
    ) -> Result<SsoStep, Failed> {
        let refuse = |check, reason: String| {
            Failed::Refused(Refusal {
                provider: Some(p.cfg.name.clone()),
                user: Some(found.name.clone()),
                check,
                reason,
            })
        };
        if subject.is_empty() {
            return Err(refuse(SsoCheck::Malformed, "empty sub claim".into()));
        }
        let auth = self.inner.auth.clone();
        let registry = self.inner.registry.clone();
        let (name, groups) = (found.name.clone(), found.groups.clone());
        let (provider, issuer, sub) = (
            p.cfg.name.clone(),
            p.cfg.issuer.clone(),
            subject.to_string(),
        );
        let recorded = tokio::task::spawn_blocking(move || {
            let seen = Seen {
                name: &name,
                provider: &provider,
                issuer: &issuer,
                subject: &sub,
                groups: &groups,
                now: unix_secs(SystemTime::now()),
            };
            registry::record_login(&auth.inner.users_file, &registry, &seen, &auth.inner.cipher)
        })
        .await
        .map_err(|_| SsoError::Registry(IdentityError::Hash))?
        .map_err(SsoError::Registry)?;
        let (record, renamed_from) = match recorded {
            Recorded::Taken(NameOwner::LocalUser) => {
                return Err(refuse(
                    SsoCheck::NameTaken,
                    "the name is a local user's".into(),
                ));
            }
            Recorded::Taken(NameOwner::SsoUser { provider }) => {
                return Err(refuse(
                    SsoCheck::NameTaken,
                    format!("the name belongs to another subject (of provider `{provider}`)"),
                ));
            }
            Recorded::Locked => {
                return Err(refuse(
                    SsoCheck::Locked,
                    "locked by an administrator".into(),
                ));
            }
            Recorded::Ok {
                record,
                renamed_from,
            } => (record, renamed_from),
        };
        let mfa = p.cfg.trust_mfa && proves_mfa(&found.amr);
        let second_factor = if mfa {
            "skipped: the provider's amr proves a second factor and trust_mfa is set".to_string()
        } else if record.totp_secret.is_empty() {
            "totp-enrolment".to_string()
        } else {
            "totp".to_string()
        };
        if let Some(old) = renamed_from {
            self.audit(AuditEvent::AdminAction {
                actor: format!("sso:{}", p.cfg.name),
                action: "sso rename".into(),
                subject: format!("{old} -> {}", record.name),
                outcome: Outcome::Success,
            })
            .await?;
        }
        self.audit(AuditEvent::SsoAuthenticated {
            provider: p.cfg.name.clone(),
            issuer: p.cfg.issuer.clone(),
            subject: subject.to_string(),
            user: found.name.clone(),
            groups: found.groups.clone(),
            amr: found.amr.clone(),
            second_factor,
            client_addr: client,
        })
        .await?;
        let pending = Pending {
            user: found.name,
            groups: found.groups,
            provider: p.cfg.name.clone(),
            issuer: p.cfg.issuer.clone(),
            subject: subject.to_string(),
            client,
            logout,
        };
        if mfa {
            let id = self
                .inner
                .auth
                .succeed(&pending.user, pending.groups, AuthMethod::OidcMfa, client)
                .await
                .map_err(hard_auth)?;
            return Ok(SsoStep::Verified(id.with_sso_logout(pending.logout)));
        }
        Ok(if record.totp_secret.is_empty() {
            SsoStep::Enrol(SsoEnrolmentPending(pending))
        } else {
            SsoStep::Totp(SsoTotpPending(pending))
        })
    }

    /// The SSO user's record, if `pending` still names it (same subject, not locked).
    fn current(&self, pending: &Pending) -> Result<Option<registry::SsoUserRecord>, AuthError> {
        let reg = SsoUsers::load(&self.inner.registry).map_err(AuthError::Identity)?;
        Ok(reg
            .get(&pending.user)
            .filter(|r| r.issuer == pending.issuer && r.subject == pending.subject && !r.locked)
            .cloned())
    }

    /// The second step of an SSO login: the user's Gatehouse TOTP code.
    pub async fn verify_totp(
        &self,
        pending: &SsoTotpPending,
        code: &str,
    ) -> Result<VerifiedIdentity, AuthError> {
        let (p, auth, method) = (&pending.0, &self.inner.auth, AuthMethod::OidcTotp);
        auth.check_lockout(&p.user, p.client, method).await?;
        let Some(rec) = self.current(p)? else {
            return auth
                .fail_login(
                    &p.user,
                    method,
                    "sso user locked or name reassigned",
                    p.client,
                    AuthError::AccountLocked,
                )
                .await;
        };
        auth.check_totp(&p.user, &rec.totp_secret, code, p.client)
            .await?;
        let id = auth
            .succeed(&p.user, p.groups.clone(), method, p.client)
            .await?;
        Ok(id.with_sso_logout(p.logout.clone()))
    }

    /// A fresh TOTP secret for a first SSO login and what to show (QR code, URI, key).
    pub fn start_enrolment(
        &self,
        pending: &SsoEnrolmentPending,
    ) -> Result<(Enrolment, PendingTotp), AuthError> {
        let secret = totp::new_secret().map_err(AuthError::Identity)?;
        let enrolment = totp::enrolment(&pending.0.user, &secret).map_err(AuthError::Identity)?;
        Ok((enrolment, PendingTotp { secret }))
    }

    /// Confirms a first SSO login's enrolment with a valid code: burns the code's step,
    /// stores the secret (only while the user still has none and the name is still this
    /// subject's), audits, and returns the verified identity.
    pub async fn complete_enrolment(
        &self,
        pending: &SsoEnrolmentPending,
        secret: &PendingTotp,
        code: &str,
    ) -> Result<VerifiedIdentity, AuthError> {
        let (p, auth, method) = (&pending.0, &self.inner.auth, AuthMethod::OidcTotp);
        auth.check_lockout(&p.user, p.client, method).await?;
        auth.burn_code(
            &p.user,
            &secret.secret,
            code,
            p.client,
            "invalid enrolment code",
        )
        .await?;
        let sealed = auth
            .inner
            .cipher
            .encrypt(&p.user, &secret.secret)
            .map_err(AuthError::Identity)?;
        let path = self.inner.registry.clone();
        let who = p.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let _lock = Users::lock_for_update(&path)?;
            let mut reg = SsoUsers::load(&path)?;
            reg.set_totp_if_empty(&who.user, &who.issuer, &who.subject, sealed)
        })
        .await
        .map_err(|_| AuthError::Identity(IdentityError::Hash))?
        .map_err(AuthError::Identity)?;
        auth.audit(AuditEvent::AdminAction {
            actor: p.user.clone(),
            action: "sso totp enrol".into(),
            subject: p.user.clone(),
            outcome: if stored {
                Outcome::Success
            } else {
                Outcome::Failure
            },
        })
        .await?;
        if !stored {
            return Err(AuthError::InvalidCredentials);
        }
        let id = auth
            .succeed(&p.user, p.groups.clone(), method, p.client)
            .await?;
        Ok(id.with_sso_logout(p.logout.clone()))
    }
}
