//! Logins waiting for their second factor, kept in this process under the hash of the
//! login-transaction cookie until a valid code: a TOTP enrolment (after a correct password,
//! or at a first SSO login) whose new secret is shown as a QR code, and an SSO login waiting
//! for the user's TOTP code. Bounded and expiring: a flood of half-done logins drops the
//! oldest, never grows without end.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_core::identity::oidc::{SsoEnrolmentPending, SsoTotpPending};
use gatehouse_core::identity::{EnrolmentPending, PendingTotp};

/// Most entries of one kind at once; beyond it the oldest is dropped.
pub const MAX_PENDING: usize = 1024;

/// Whose enrolment it is: a local user's (after the password) or an SSO user's (after the
/// provider). Each is redeemed by its own core call.
#[derive(Debug, Clone)]
pub enum EnrolProof {
    Local(EnrolmentPending),
    Sso(SsoEnrolmentPending),
}

/// One enrolment in progress.
#[derive(Debug, Clone)]
pub struct PendingEnrolment {
    pub proof: EnrolProof,
    pub secret: PendingTotp,
    pub otpauth_uri: String,
    pub secret_base32: String,
    pub next: Option<String>,
}

/// An SSO login that passed the provider and waits for the user's TOTP code.
#[derive(Debug, Clone)]
pub struct PendingSsoTotp {
    pub proof: SsoTotpPending,
    pub next: Option<String>,
}

/// Entries by login-transaction hash, each for `ttl`.
#[derive(Debug)]
pub struct Pending<T> {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T: Clone> Pending<T> {
    pub fn new(ttl: Duration) -> Pending<T> {
        Pending {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps `value` under `key` (replacing what was there).
    pub fn insert(&self, key: &str, value: T) {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, (created, _)| now.duration_since(*created) < self.ttl);
        if map.len() >= MAX_PENDING
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (created, _))| *created)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(key.to_string(), (now, value));
    }

    /// The live entry for `key`.
    pub fn get(&self, key: &str) -> Option<T> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key)
            .filter(|(created, _)| created.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn remove(&self, key: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_oldest_gives_way() {
        let p: Pending<u32> = Pending::new(Duration::from_secs(60));
        p.insert("a", 1);
        assert_eq!(p.get("a"), Some(1));
        p.insert("a", 2);
        assert_eq!(p.get("a"), Some(2));
        p.remove("a");
        assert_eq!(p.get("a"), None);
        for i in 0..MAX_PENDING as u32 + 5 {
            p.insert(&format!("k{i}"), i);
        }
        assert_eq!(p.get("k0"), None, "the oldest was dropped");
        assert_eq!(
            p.get(&format!("k{}", MAX_PENDING + 4)),
            Some(MAX_PENDING as u32 + 4)
        );
        let gone: Pending<u32> = Pending::new(Duration::ZERO);
        gone.insert("x", 1);
        assert_eq!(gone.get("x"), None, "expired");
    }
}
