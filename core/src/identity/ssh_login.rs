//! The bastion's login: a registered key, then a TOTP code (or the key alone for targets with
//! `require_totp = false`), over the same counters as the web login.
//!
//! Threat: an attacker spreading guesses between the web login and the bastion, replaying a
//! TOTP code on the other door, or a second factor checked for a user whose key was never
//! verified. Mitigation: [`Authenticator::check_ssh_key`] is the only way to a
//! [`KeyAccepted`] (private fields) and the second step takes one, so no code path verifies a
//! code for a bare user name; the login throttle's counters (the user at this address, the
//! address, the user), the TOTP replay cache and the audit records are those of
//! [`Authenticator::login_web`]. The bastion verifies the key's signature itself (russh)
//! before it asks for a [`KeyAccepted`].

use std::net::IpAddr;

use super::authenticator::safe_name;
use super::{AuthMethod, Authenticator, VerifiedIdentity, sshkey};
use crate::audit::AuditEvent;
use crate::error::AuthError;

/// Proof that a user's registered SSH key was presented (the bastion's first factor). Only
/// [`Authenticator::check_ssh_key`] makes one; the second step takes it.
#[derive(Debug)]
pub struct KeyAccepted {
    user: String,
    groups: Vec<String>,
    client: Option<IpAddr>,
    /// The key's blob (the identity carries it: removing the key ends what it opened).
    key: Vec<u8>,
}

impl KeyAccepted {
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl Authenticator {
    /// The bastion's first step: is `key` (an OpenSSH public key line) registered for
    /// `user`, who is neither locked nor locked out at `client`? A key that does not match is
    /// not counted as a failure (clients offer several keys in turn) and not audited here; a
    /// lockout and a locked account are audited (`login_failure`).
    pub async fn check_ssh_key(
        &self,
        user: &str,
        key: &str,
        client: Option<IpAddr>,
    ) -> Result<KeyAccepted, AuthError> {
        let offered =
            sshkey::parse_ssh_public_key(key).map_err(|_| AuthError::InvalidCredentials)?;
        let user = safe_name(user);
        self.check_lockout(user, client, AuthMethod::SshKey).await?;
        self.refresh_users().await;
        let rec = self
            .inner
            .users
            .with_user(user, |r| r.cloned())
            .ok_or(AuthError::InvalidCredentials)?;
        let matched = rec
            .ssh_keys
            .iter()
            .filter_map(|k| sshkey::parse_ssh_public_key(k).ok())
            .fold(false, |acc, k| acc | k.same_key(&offered));
        if !matched {
            return Err(AuthError::InvalidCredentials);
        }
        if rec.locked {
            self.audit(AuditEvent::LoginFailure {
                user: user.into(),
                method: AuthMethod::SshKey.as_str().into(),
                reason: "account locked".into(),
                client_addr: client,
            })
            .await?;
            return Err(AuthError::AccountLocked);
        }
        Ok(KeyAccepted {
            user: user.to_string(),
            groups: rec.groups,
            client,
            key: offered.blob,
        })
    }

    /// The bastion's second step: a TOTP code after an accepted key. A wrong code keeps the
    /// key's proof (the client may try another code on the same connection) and counts as a
    /// failed guess; a replayed one is refused but not counted.
    pub async fn verify_totp_after_key(
        &self,
        accepted: &KeyAccepted,
        code: &str,
    ) -> Result<VerifiedIdentity, AuthError> {
        let method = AuthMethod::SshKeyTotp;
        let (user, client) = (accepted.user.as_str(), accepted.client);
        let attempt = self.admit(user, client, method).await?;
        let rec = self
            .usable_user(&attempt, user, method, client, "unknown user")
            .await?;
        self.check_totp(&attempt, user, &rec.totp_secret, code, client)
            .await?;
        let id = self
            .succeed(user, rec.groups, method, client, Some(&attempt))
            .await?;
        Ok(id.with_ssh_key(accepted.key.clone()))
    }

    /// Counts a response to the second-factor prompt that is not a code at all (empty, too
    /// long, not digits) as a failed guess, and audits it (`totp_failure`); refused like a
    /// code while the user is throttled.
    pub async fn refuse_malformed_totp(&self, accepted: &KeyAccepted) -> Result<(), AuthError> {
        let attempt = self
            .admit(&accepted.user, accepted.client, AuthMethod::SshKeyTotp)
            .await?;
        self.failed(&attempt).await?;
        self.audit(AuditEvent::TotpFailure {
            user: accepted.user.clone(),
            reason: "malformed code".into(),
            client_addr: accepted.client,
        })
        .await
    }

    /// Key-only login, for targets configured with `require_totp = false`.
    pub async fn accept_key_only(
        &self,
        accepted: KeyAccepted,
    ) -> Result<VerifiedIdentity, AuthError> {
        let id = self
            .succeed(
                &accepted.user,
                accepted.groups,
                AuthMethod::SshKey,
                accepted.client,
                None,
            )
            .await?;
        Ok(id.with_ssh_key(accepted.key))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Users;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::audit::{AuditKey, AuditLog};
    use crate::identity::Standing;
    use crate::identity::{NewUser, TotpCipher};
    use crate::secret::SecretKey;
    use crate::store::{MemoryStore, Store};
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
        let lockout = crate::identity::throttle::test_policy();
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
        let key = auth
            .check_ssh_key("alice", ED25519, Some(addr))
            .await
            .unwrap();
        let id = auth.verify_totp_after_key(&key, &code).await.unwrap();
        assert_eq!(id.method(), AuthMethod::SshKeyTotp);
        assert_eq!(id.groups(), ["sre".to_string()]);
        // The same code again over SSH, or on the web, is a replay.
        assert!(matches!(
            auth.verify_totp_after_key(&key, &code).await,
            Err(AuthError::TotpReplayed)
        ));
        assert!(matches!(
            auth.verify_password_and_totp("alice", PW, &code, Some(addr))
                .await,
            Err(AuthError::TotpReplayed)
        ));
        // Failures over SSH (a malformed code counts too) lock the web login and the key step.
        let bob = auth.check_ssh_key("bob", ED25519, None).await.unwrap();
        auth.refuse_malformed_totp(&bob).await.unwrap();
        for _ in 0..2 {
            assert!(matches!(
                auth.verify_totp_after_key(&bob, "000000x").await,
                Err(AuthError::InvalidTotp)
            ));
        }
        let code = users.current_totp_code("bob", &cipher).unwrap();
        assert!(matches!(
            auth.verify_totp_after_key(&bob, &code).await,
            Err(AuthError::LockedOut { .. })
        ));
        assert!(matches!(
            auth.verify_password_and_totp("bob", PW, &code, None).await,
            Err(AuthError::LockedOut { .. })
        ));
        assert!(matches!(
            auth.check_ssh_key("bob", ED25519, None).await,
            Err(AuthError::LockedOut { .. })
        ));
        // Unknown and hostile names never get a key accepted.
        for name in ["nobody", "Bad Name!", "alice:root@x", ""] {
            assert!(
                matches!(
                    auth.check_ssh_key(name, ED25519, None).await,
                    Err(AuthError::InvalidCredentials)
                ),
                "{name:?}"
            );
        }
        assert!(matches!(
            auth.check_ssh_key("alice", "not a key", None).await,
            Err(AuthError::InvalidCredentials)
        ));
        let key = auth.check_ssh_key("alice", ED25519, None).await.unwrap();
        let id = auth.accept_key_only(key).await.unwrap();
        assert_eq!(id.method(), AuthMethod::SshKey);
        assert!(matches!(auth.recheck(&id), Standing::Active(_)));
        let log = std::fs::read_dir(dir.path().join("audit"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect::<String>();
        assert!(log.contains("\"reason\":\"malformed code\""), "{log}");
        assert!(log.contains("\"method\":\"ssh-key\""), "{log}");
    }

    #[tokio::test]
    async fn a_locked_account_cannot_use_the_bastion() {
        let dir = TempDir::new("ssh-login-locked");
        let (auth, mut users, cipher) = fixture(&dir);
        let before = auth.check_ssh_key("alice", ED25519, None).await.unwrap();
        let live = auth
            .verify_totp_after_key(&before, &users.current_totp_code("alice", &cipher).unwrap())
            .await
            .unwrap();
        users.set_locked("alice", true).unwrap();
        // What the watcher does when the file changes.
        assert_eq!(&*auth.reload_users().await.unwrap(), ["alice".to_string()]);
        assert!(matches!(
            auth.check_ssh_key("alice", ED25519, None).await,
            Err(AuthError::AccountLocked)
        ));
        // A key accepted before the lock does not carry a second factor past it.
        let code = users.current_totp_code("alice", &cipher).unwrap();
        assert!(matches!(
            auth.verify_totp_after_key(&before, &code).await,
            Err(AuthError::AccountLocked)
        ));
        // A connection authenticated before the lock is no longer active.
        assert_eq!(auth.recheck(&live), Standing::Locked);
    }

    #[tokio::test]
    async fn live_identities_follow_users_toml_groups_and_keys() {
        let dir = TempDir::new("ssh-login-recheck");
        let (auth, mut users, cipher) = fixture(&dir);
        let accepted = auth.check_ssh_key("bob", ED25519, None).await.unwrap();
        let code = users.current_totp_code("bob", &cipher).unwrap();
        let live = auth.verify_totp_after_key(&accepted, &code).await.unwrap();
        // A group taken away: the live identity has the groups of now.
        users
            .edit("bob", |u| u.groups = vec!["staff".into()])
            .unwrap();
        auth.reload_users().await.unwrap();
        let Standing::Active(fresh) = auth.recheck(&live) else {
            panic!("bob is still active")
        };
        assert_eq!(fresh.groups(), ["staff".to_string()]);
        assert_eq!(fresh.user(), "bob");
        // The key it logged in with removed: no longer active.
        users.edit("bob", |u| u.ssh_keys.clear()).unwrap();
        auth.reload_users().await.unwrap();
        assert_eq!(auth.recheck(&live), Standing::KeyRemoved);
        // Removed altogether.
        users.remove_for_test("bob").unwrap();
        auth.reload_users().await.unwrap();
        assert_eq!(auth.recheck(&live), Standing::Removed);
    }
}
