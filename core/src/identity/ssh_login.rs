//! The bastion's authentication steps over the same counters as the web login.
//!
//! Threat: an attacker spreading guesses between the web login and the bastion, or replaying
//! a TOTP code on the other door. Mitigation: these functions use the same lockout counters
//! (user and client address), TOTP replay cache and audit records as
//! [`Authenticator::verify_password_and_totp`]; the bastion verifies the key signature itself
//! (russh, against the keys of `users.toml`) and then calls these for the rest.

use std::net::IpAddr;

use super::{AuthMethod, Authenticator, VerifiedIdentity};
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
        let rec = self
            .usable_user(user, method, client, "unknown user")
            .await?;
        self.check_totp(user, &rec.totp_secret, code, client)
            .await?;
        self.succeed(user, rec.groups, method, client).await
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
        let rec = self
            .usable_user(user, method, client, "unknown user")
            .await?;
        self.succeed(user, rec.groups, method, client).await
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

#[cfg(test)]
mod tests {
    use super::super::Users;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::audit::{AuditKey, AuditLog};
    use crate::identity::{NewUser, TotpCipher};
    use crate::secret::SecretKey;
    use crate::store::{LockoutPolicy, MemoryStore, Store};
    use crate::testutil::TempDir;

    const PW: &str = "correct-Horse-7-battery";
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeYz/7qFp5L7tsziy3gAQT/T5CI3erKWolp9s4IYk+O";

    fn fixture(dir: &TempDir) -> (Authenticator, Users, TotpCipher) {
        let key = SecretKey::from_bytes([7; 32]);
        let cipher = TotpCipher::new(&key).unwrap();
        let path = dir.path().join("users.toml");
        let mut users = Users::load(&path).unwrap();
        for name in ["alice", "bob"] {
            users
                .add(
                    NewUser {
                        name,
                        groups: &["sre".into()],
                        password: PW,
                        ssh_keys: &[ED25519.into()],
                    },
                    &cipher,
                )
                .unwrap();
        }
        let audit = AuditLog::open(&dir.path().join("audit"), AuditKey::new(&key)).unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let lockout = LockoutPolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            lock_for: Duration::from_secs(60),
        };
        let auth = Authenticator::new(
            path,
            TotpCipher::new(&key).unwrap(),
            store,
            audit,
            Duration::from_secs(3600),
            Duration::from_secs(600),
            lockout,
        );
        (auth, users, cipher)
    }

    #[tokio::test]
    async fn ssh_totp_shares_replay_cache_and_lockouts_with_the_web_login() {
        let dir = TempDir::new("ssh-login");
        let (auth, users, cipher) = fixture(&dir);
        let addr: IpAddr = "198.51.100.7".parse().unwrap();
        let code = users.current_totp_code("alice", &cipher).unwrap();
        let id = auth
            .verify_totp_for_user("alice", &code, Some(addr))
            .await
            .unwrap();
        assert_eq!(id.method(), AuthMethod::SshKeyTotp);
        assert_eq!(id.groups(), ["sre".to_string()]);
        // The same code on the web is a replay.
        assert!(matches!(
            auth.verify_password_and_totp("alice", PW, &code, Some(addr))
                .await,
            Err(AuthError::TotpReplayed)
        ));
        // Failures over SSH (a malformed code counts too) lock the web login.
        assert!(!auth.is_locked_out("bob", None).await.unwrap());
        auth.note_totp_failure("bob", "malformed code", None)
            .await
            .unwrap();
        for _ in 0..2 {
            assert!(matches!(
                auth.verify_totp_for_user("bob", "000000x", None).await,
                Err(AuthError::InvalidTotp)
            ));
        }
        assert!(auth.is_locked_out("bob", None).await.unwrap());
        let code = users.current_totp_code("bob", &cipher).unwrap();
        assert!(matches!(
            auth.verify_password_and_totp("bob", PW, &code, None).await,
            Err(AuthError::LockedOut { .. })
        ));
        assert!(matches!(
            auth.accept_verified_key("bob", None).await,
            Err(AuthError::LockedOut { .. })
        ));
        // Unknown and hostile names never authenticate.
        assert!(matches!(
            auth.accept_verified_key("nobody", None).await,
            Err(AuthError::InvalidCredentials)
        ));
        assert!(matches!(
            auth.verify_totp_for_user("Bad Name!", "123456", None).await,
            Err(AuthError::InvalidCredentials)
        ));
        assert_eq!(
            auth.accept_verified_key("alice", None)
                .await
                .unwrap()
                .method(),
            AuthMethod::SshKey
        );
    }

    #[tokio::test]
    async fn a_locked_account_cannot_use_the_bastion() {
        let dir = TempDir::new("ssh-login-locked");
        let (auth, mut users, cipher) = fixture(&dir);
        users.set_locked("alice", true).unwrap();
        let code = users.current_totp_code("alice", &cipher).unwrap();
        assert!(matches!(
            auth.verify_totp_for_user("alice", &code, None).await,
            Err(AuthError::AccountLocked)
        ));
        assert!(matches!(
            auth.accept_verified_key("alice", None).await,
            Err(AuthError::AccountLocked)
        ));
    }
}
