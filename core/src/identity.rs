//! Identity: local users, passwords, TOTP, SSH keys, and the `VerifiedIdentity` proof.
//!
//! Threats: password guessing, credential stuffing, user enumeration by timing, TOTP replay,
//! theft of `users.toml`, forged identities passed between modules. Mitigations: argon2id
//! hashes with a weak-password check; lockout per user and per client address (in the shared
//! store); argon2 always runs, also for unknown users; constant-time code comparison; a used
//! TOTP step is refused (store `SET NX`); TOTP secrets encrypted at rest (AES-256-GCM, user
//! name as associated data); [`VerifiedIdentity`] has private fields and is minted only by
//! [`Authenticator`], so code that needs an authenticated user cannot be handed a made-up one.

mod authenticator;
mod enrol;
mod handoff;
pub mod oidc;
mod password;
mod private_file;
mod sessions;
mod ssh_login;
mod sshkey;
mod totp;
mod users;

use std::time::SystemTime;

pub use authenticator::{Authenticator, LockoutPolicy};
pub use enrol::{EnrolmentPending, LoginOutcome, PendingTotp};
pub use handoff::HandoffTicket;
pub use password::{check_password_strength, generate_password};
pub use ssh_login::KeyAccepted;
pub use sshkey::{SshPublicKey, parse_ssh_public_key};
pub use totp::{Enrolment, TotpCipher};
pub use users::{NewUser, UserRecord, UserSummary, Users, UsersLock};

use crate::error::IdentityError;

/// How a [`VerifiedIdentity`] was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// Local password and a TOTP code (web login).
    PasswordTotp,
    /// OIDC single sign-on and a TOTP code (web login).
    OidcTotp,
    /// OIDC single sign-on whose ID token proves a second factor (`amr`), accepted because
    /// the provider has `trust_mfa = true` (web login).
    OidcMfa,
    /// Registered SSH key and a TOTP code (bastion).
    SshKeyTotp,
    /// Registered SSH key alone (bastion, only for targets with `require_totp = false`).
    SshKey,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::PasswordTotp => "password+totp",
            AuthMethod::OidcTotp => "oidc+totp",
            AuthMethod::OidcMfa => "oidc+idp-mfa",
            AuthMethod::SshKeyTotp => "ssh-key+totp",
            AuthMethod::SshKey => "ssh-key",
        }
    }
}

/// Proof that a user was authenticated. Fields are private and there is no public
/// constructor: only [`Authenticator`] (and session resumption in it) can make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    user: String,
    groups: Vec<String>,
    method: AuthMethod,
    auth_time: SystemTime,
    /// The sign-in this identity comes from (`None` until its first session is started);
    /// sessions handed off from it keep it, so logout can end them all.
    login_id: Option<String>,
    /// How to end the provider's session at logout (SSO logins only).
    sso_logout: Option<oidc::SsoLogoutHint>,
}

impl VerifiedIdentity {
    pub(crate) fn new(
        user: String,
        groups: Vec<String>,
        method: AuthMethod,
        auth_time: SystemTime,
    ) -> Self {
        VerifiedIdentity {
            user,
            groups,
            method,
            auth_time,
            login_id: None,
            sso_logout: None,
        }
    }

    /// The identity of a stored session or handoff: who, and the sign-in it comes from.
    pub(crate) fn from_session(data: crate::store::SessionData) -> Self {
        let auth_time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(data.auth_time);
        VerifiedIdentity {
            login_id: data.login_id,
            sso_logout: data.sso_logout,
            ..VerifiedIdentity::new(data.user, data.groups, data.method, auth_time)
        }
    }

    /// The same identity, ending the provider's session at logout too.
    pub(crate) fn with_sso_logout(mut self, hint: oidc::SsoLogoutHint) -> Self {
        self.sso_logout = Some(hint);
        self
    }

    /// The sign-in this identity comes from, once a session holds it.
    pub fn login_id(&self) -> Option<&str> {
        self.login_id.as_deref()
    }

    /// What ending the session at its SSO provider needs (SSO logins only).
    pub fn sso_logout(&self) -> Option<&oidc::SsoLogoutHint> {
        self.sso_logout.as_ref()
    }

    /// The user name (the policy subject).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Plain group names (`staff`, not `group:staff`).
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Policy subjects: the user name, then `group:NAME` for each group.
    pub fn subjects(&self) -> Vec<String> {
        std::iter::once(self.user.clone())
            .chain(self.groups.iter().map(|g| group_subject(g)))
            .collect()
    }

    pub fn method(&self) -> AuthMethod {
        self.method
    }

    pub fn auth_time(&self) -> SystemTime {
        self.auth_time
    }
}

/// The policy subject for a group: `group:NAME`.
pub fn group_subject(group: &str) -> String {
    format!("{GROUP_PREFIX}{group}")
}

/// The prefix of a group's policy subject.
pub const GROUP_PREFIX: &str = "group:";

/// Validates a user name: `^[a-z][a-z0-9._-]{0,31}$` (no `:` or `@`, which the SSH login
/// scheme `USER:LOGIN@TARGET` uses as separators).
pub fn validate_user_name(name: &str) -> Result<(), IdentityError> {
    let ok = (1..=32).contains(&name.len())
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        });
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidUserName(name.to_string()))
    }
}

/// Validates a group name (as in `--groups staff,sre` or an SSO groups claim).
pub fn validate_group_name(name: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        });
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidGroup(name.to_string()))
    }
}

#[cfg(test)]
mod tests;
