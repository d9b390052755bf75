//! The shared services a gateway serves with: store, authenticator, policy, audit log,
//! assertion signer, CSRF key and SSO — built once by the binary (so the bastion shares the same
//! instances) and handed to [`crate::Gateway::bind`].
//!
//! Threat: a gateway running without one of its checks, or with a dead store and nobody
//! noticing. Mitigation: there is no way to bind without every service (no "auth off"
//! switch); [`StoreHealth`] is probed every second and a failed probe makes `/readyz` and
//! every login or proxied request answer 503 with the reason until the store answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gatehouse_core::audit::AuditLog;
use gatehouse_core::identity::Authenticator;
use gatehouse_core::identity::oidc::Sso;
use gatehouse_core::policy::PolicyHandle;
use gatehouse_core::recording::{EndSsh, Recordings};
use gatehouse_core::store::Store;
use tokio_util::sync::CancellationToken;

use crate::web::assertion::AssertionSigner;
use crate::web::csrf::CsrfKey;

/// How often the store is pinged.
pub const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A ping slower than this counts as a failure (a slow store is a down store).
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything the request path needs besides the config.
#[derive(Debug, Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub authenticator: Authenticator,
    pub policy: Arc<PolicyHandle>,
    pub audit: AuditLog,
    pub signer: Arc<AssertionSigner>,
    pub csrf: CsrfKey,
    /// The SSO providers (none configured: empty; the login page then offers none).
    pub sso: Sso,
    /// The recordings, their index and live feeds (the reviewer console reads them).
    pub recordings: Recordings,
    /// Ends live SSH connections (the bastion's, when it runs in this process): the
    /// reviewer console's terminate.
    pub end_ssh: Option<Arc<dyn EndSsh>>,
}

/// The store's health as the last probe saw it.
#[derive(Debug)]
pub struct StoreHealth {
    up: AtomicBool,
    reason: Mutex<String>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            up: AtomicBool::new(true),
            reason: Mutex::new(String::new()),
        }
    }
}

impl StoreHealth {
    /// `Ok` while the store answers, else why not.
    pub fn check(&self) -> Result<(), String> {
        if self.up.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(self
                .reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone())
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn set(&self, result: Result<(), String>) {
        let was = self.up.load(Ordering::Acquire);
        match result {
            Ok(()) => {
                self.up.store(true, Ordering::Release);
                if !was {
                    tracing::info!("store reachable again; serving logins and requests");
                }
            }
            Err(why) => {
                *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = why.clone();
                self.up.store(false, Ordering::Release);
                if was {
                    tracing::error!(reason = %why, "store unreachable: refusing logins and requests (503) until it answers");
                }
            }
        }
    }

    /// Pings the store every [`STORE_PROBE_INTERVAL`] until `stop`.
    pub(crate) async fn probe(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(STORE_PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let r = match tokio::time::timeout(STORE_PROBE_TIMEOUT, store.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!(
                    "store unreachable: {}",
                    gatehouse_core::error_chain(&e)
                )),
                Err(_) => Err("store unreachable: ping timed out".to_string()),
            };
            self.set(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_flips_and_keeps_the_reason() {
        let h = StoreHealth::default();
        assert!(h.check().is_ok());
        h.set(Err("store unreachable: connection refused".into()));
        assert_eq!(
            h.check().unwrap_err(),
            "store unreachable: connection refused"
        );
        assert!(!h.is_up());
        h.set(Ok(()));
        assert!(h.check().is_ok());
    }
}
