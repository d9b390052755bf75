//! Enrolments in progress: after a correct password, a user without TOTP is shown a new
//! secret; it is kept here (in this process, bound to the login-transaction cookie's hash)
//! until a first valid code confirms it. Bounded and expiring.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_core::identity::{EnrolmentPending, PendingTotp};

/// Most enrolments in progress at once; beyond it the oldest is dropped.
pub const MAX_PENDING: usize = 1024;

/// One enrolment in progress.
#[derive(Debug, Clone)]
pub struct PendingEnrolment {
    pub proof: EnrolmentPending,
    pub secret: PendingTotp,
    pub otpauth_uri: String,
    pub secret_base32: String,
    pub next: Option<String>,
    created: Instant,
}

/// Enrolments by login-transaction hash.
#[derive(Debug)]
pub struct Pending {
    ttl: Duration,
    map: Mutex<HashMap<String, PendingEnrolment>>,
}

impl Pending {
    pub fn new(ttl: Duration) -> Pending {
        Pending {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn insert(
        &self,
        key: &str,
        proof: EnrolmentPending,
        secret: PendingTotp,
        otpauth_uri: String,
        secret_base32: String,
        next: Option<String>,
    ) {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, p| now.duration_since(p.created) < self.ttl);
        if map.len() >= MAX_PENDING
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            key.to_string(),
            PendingEnrolment {
                proof,
                secret,
                otpauth_uri,
                secret_base32,
                next,
                created: now,
            },
        );
    }

    /// The live enrolment for `key`.
    pub fn get(&self, key: &str) -> Option<PendingEnrolment> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key)
            .filter(|p| p.created.elapsed() < self.ttl)
            .cloned()
    }

    pub fn remove(&self, key: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}
