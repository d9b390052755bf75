//! Browser SSO across app hosts: a user signed in on the public host gets a one-time ticket
//! for one app host, which that host redeems into its own session.
//!
//! Threat: a ticket stolen or replayed, redeemed on another host, or minted for someone
//! else; a secret in a URL (logs, Referer). Mitigation: 256-bit random tickets, stored only
//! as SHA-256 in the shared store with a 30-s TTL, taken atomically once (`GETDEL`), bound
//! to one audience host; carried only in a POST body, never in a URL. Minting needs a
//! [`VerifiedIdentity`] (a live session); redeeming mints one again from the stored record
//! and is audited.

use std::net::IpAddr;

use super::VerifiedIdentity;
use super::authenticator::{Authenticator, unix_secs};
use crate::audit::AuditEvent;
use crate::error::AuthError;
use crate::store::{HANDOFF_TTL, Handoff, SessionData};

/// A raw handoff ticket (64 hex characters). `Debug` hides it; never log it.
pub struct HandoffTicket(String);

impl std::fmt::Debug for HandoffTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandoffTicket(..)")
    }
}

impl HandoffTicket {
    /// The value for the form field. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn ticket_hash(raw: &str) -> Option<String> {
    crate::store::session_id_hash(raw)
}

impl Authenticator {
    /// Mints a one-time ticket for `id` to redeem on `audience` (a lowercase app host).
    pub async fn issue_handoff(
        &self,
        id: &VerifiedIdentity,
        audience: &str,
        client: Option<IpAddr>,
    ) -> Result<HandoffTicket, AuthError> {
        let mut raw = [0u8; 32];
        crate::secret::random_bytes(&mut raw)
            .map_err(|e| AuthError::Identity(crate::error::IdentityError::Key(e)))?;
        let ticket = crate::secret::hex_lower(raw);
        let hash = ticket_hash(&ticket).ok_or(AuthError::NoSession)?;
        let handoff = Handoff {
            data: SessionData {
                user: id.user.clone(),
                groups: id.groups.clone(),
                method: id.method,
                auth_time: unix_secs(id.auth_time),
                client_addr: client,
                login_id: id.login_id.clone(),
                sso_logout: id.sso_logout.clone(),
            },
            audience: audience.to_string(),
        };
        self.inner
            .store
            .put_handoff(&hash, &handoff, HANDOFF_TTL)
            .await
            .map_err(AuthError::Store)?;
        Ok(HandoffTicket(ticket))
    }

    /// Redeems a ticket on `host`: the identity once, for the ticket's audience only.
    pub async fn redeem_handoff(
        &self,
        ticket: &str,
        host: &str,
        client: Option<IpAddr>,
    ) -> Result<VerifiedIdentity, AuthError> {
        let hash = ticket_hash(ticket).ok_or(AuthError::NoSession)?;
        let h = self
            .inner
            .store
            .take_handoff(&hash)
            .await
            .map_err(AuthError::Store)?
            .ok_or(AuthError::NoSession)?;
        if h.audience != host {
            return Err(AuthError::NoSession);
        }
        self.audit(AuditEvent::LoginSuccess {
            user: h.data.user.clone(),
            method: format!("{} (handoff to {host})", h.data.method.as_str()),
            client_addr: client,
        })
        .await?;
        Ok(VerifiedIdentity::from_session(h.data))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::audit::{AuditKey, AuditLog};
    use crate::identity::{AuthMethod, LockoutPolicy, TotpCipher};
    use crate::secret::SecretKey;
    use crate::store::MemoryStore;
    use crate::testutil::TempDir;

    #[tokio::test]
    async fn tickets_are_one_time_and_bound_to_their_host() {
        let dir = TempDir::new("handoff");
        let key = SecretKey::from_bytes([5; 32]);
        let audit = AuditLog::open(&dir.path().join("audit"), AuditKey::new(&key)).unwrap();
        let auth = Authenticator::new(
            dir.path().join("users.toml"),
            TotpCipher::new(&key).unwrap(),
            Arc::new(MemoryStore::new()),
            audit,
            Duration::from_secs(60),
            Duration::from_secs(60),
            LockoutPolicy::default(),
        );
        let id = VerifiedIdentity::new(
            "alice".into(),
            vec!["staff".into()],
            AuthMethod::PasswordTotp,
            std::time::SystemTime::now(),
        );
        let t = auth.issue_handoff(&id, "wiki.example", None).await.unwrap();
        assert_eq!(format!("{t:?}"), "HandoffTicket(..)");
        let got = auth
            .redeem_handoff(t.expose(), "wiki.example", None)
            .await
            .unwrap();
        assert_eq!(got.user(), "alice");
        assert!(
            auth.redeem_handoff(t.expose(), "wiki.example", None)
                .await
                .is_err()
        );
        let t = auth.issue_handoff(&id, "wiki.example", None).await.unwrap();
        assert!(
            auth.redeem_handoff(t.expose(), "other.example", None)
                .await
                .is_err()
        );
        assert!(
            auth.redeem_handoff(t.expose(), "wiki.example", None)
                .await
                .is_err(),
            "burnt by the wrong host too"
        );
        assert!(
            auth.redeem_handoff("zz", "wiki.example", None)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn logout_ends_every_session_of_the_sign_in_and_no_other() {
        let dir = TempDir::new("handoff-logout");
        let key = SecretKey::from_bytes([6; 32]);
        let audit = AuditLog::open(&dir.path().join("audit"), AuditKey::new(&key)).unwrap();
        let auth = Authenticator::new(
            dir.path().join("users.toml"),
            TotpCipher::new(&key).unwrap(),
            Arc::new(MemoryStore::new()),
            audit,
            Duration::from_secs(60),
            Duration::from_secs(60),
            LockoutPolicy::default(),
        );
        let login = |n: u8| {
            VerifiedIdentity::new(
                "alice".into(),
                vec![format!("g{n}")],
                AuthMethod::OidcTotp,
                std::time::SystemTime::now(),
            )
        };
        // One sign-in on the public host, handed off to an app host.
        let public = auth
            .start_session(&login(1), None, "gh.example")
            .await
            .unwrap();
        let (resumed, _) = auth
            .resume_session(public.expose(), "gh.example")
            .await
            .unwrap();
        assert!(resumed.login_id().is_some());
        assert_eq!(resumed.groups(), ["g1"], "groups kept server-side");
        let t = auth
            .issue_handoff(&resumed, "wiki.example", None)
            .await
            .unwrap();
        let handed = auth
            .redeem_handoff(t.expose(), "wiki.example", None)
            .await
            .unwrap();
        assert_eq!(handed.login_id(), resumed.login_id());
        let app = auth
            .start_session(&handed, None, "wiki.example")
            .await
            .unwrap();
        // Another sign-in of the same user (another browser).
        let other = auth
            .start_session(&login(2), None, "gh.example")
            .await
            .unwrap();
        let (o, _) = auth
            .resume_session(other.expose(), "gh.example")
            .await
            .unwrap();
        assert_ne!(o.login_id(), resumed.login_id());

        // Logging out on the app host ends the public host's session too.
        assert_eq!(auth.logout(app.expose()).await.unwrap(), None);
        for (tok, host) in [(&public, "gh.example"), (&app, "wiki.example")] {
            assert!(matches!(
                auth.resume_session(tok.expose(), host).await,
                Err(AuthError::NoSession)
            ));
        }
        assert!(
            auth.resume_session(other.expose(), "gh.example")
                .await
                .is_ok()
        );
    }
}
