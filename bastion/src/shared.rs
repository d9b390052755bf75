//! What every connection shares: the core services, the prepared targets, the russh
//! configurations, the limits, the live-connection registry and the connection caps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Config;
use gatehouse_core::audit::AuditLog;
use gatehouse_core::config::TargetConfig;
use gatehouse_core::identity::Authenticator;
use gatehouse_core::policy::PolicyHandle;
use gatehouse_core::recording::Recordings;
use gatehouse_core::store::Store;
use tokio::sync::Semaphore;

use crate::registry::Registry;
use crate::server::Configs;
use crate::target::TargetSpec;

/// The core services the bastion runs on — the same ones the gateway uses: the authenticator
/// (users, lockouts, TOTP replay cache, sessions in the shared store), the policy in force,
/// the audit log and the recordings directory (with its index and live feeds).
#[derive(Clone, Debug)]
pub struct Services {
    pub authenticator: Authenticator,
    pub policy: Arc<PolicyHandle>,
    pub audit: AuditLog,
    pub recordings: Recordings,
}

impl Services {
    /// The shared store (the authenticator's).
    pub fn store(&self) -> &Arc<dyn Store> {
        self.authenticator.store()
    }
}

/// Session time limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A session channel with no data in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// A connection is closed this long after it was accepted, whatever it does.
    pub max_session: Duration,
}

impl Limits {
    /// From the identity settings: idle timeout and session lifetime.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            idle_timeout: config.identity.idle_timeout,
            max_session: config.identity.session_ttl,
        }
    }
}

pub(crate) struct Shared {
    pub services: Services,
    pub targets: HashMap<String, Arc<TargetSpec>>,
    pub target_configs: Vec<TargetConfig>,
    pub configs: Configs,
    pub limits: Limits,
    pub registry: Registry,
    pub unauthenticated: Arc<Semaphore>,
    pub connections: Arc<Semaphore>,
}
