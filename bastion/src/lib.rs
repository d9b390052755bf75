//! gatehouse-bastion: the SSH bastion. Staff connect with a plain OpenSSH client as
//! `USER:LOGIN@TARGET`, authenticate with their registered key and a TOTP code, and every
//! session is authorized by policy, relayed to the target over the bastion's own pinned
//! connection, recorded as asciicast v2 and audited.
//!
//! Threat: the bastion is the one door to production; a flaw lets someone reach a target
//! unauthenticated, unauthorized, unrecorded, or through a man in the middle. Mitigation:
//! fail closed everywhere — key signature and TOTP bound to one user name, a policy
//! [`Permit`] required to open anything on a target, pinned target host keys, a recording
//! that must be writable before a session starts, audit failures refusing the action, strict
//! algorithm lists, deadlines and caps on unauthenticated connections.
//!
//! It must not depend on the gateway crate, and takes identity/policy/audit only through the
//! [`Backend`] trait.
#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod error;
mod forward;
mod handler;
pub mod recording;
pub mod registry;
mod relay;
pub mod scp;
pub mod server;
mod session;
pub mod sftp;
pub mod target;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Config;
use gatehouse_core::config::TargetConfig;
pub(crate) use gatehouse_core::error_chain;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use backend::core::CoreBackend;
pub use backend::{Backend, BastionEvent, Permit, SshAction};
pub use error::BastionError;
pub use registry::{Registry, SessionInfo};

use crate::server::Configs;
use crate::target::TargetSpec;

/// How long shutdown waits for sessions to close and recordings to flush.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Session time limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A session channel with no data in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// A connection is closed this long after authentication, whatever it does.
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

/// What every connection shares.
pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    pub targets: HashMap<String, Arc<TargetSpec>>,
    pub target_configs: Vec<TargetConfig>,
    pub configs: Configs,
    pub recording_dir: PathBuf,
    pub limits: Limits,
    pub registry: Registry,
    pub unauthenticated: Arc<Semaphore>,
    pub connections: Arc<Semaphore>,
}

/// Checks what [`Bastion::bind`] would load, binding and writing nothing: the host key when
/// it exists (a missing one is generated at start), and every target's pinned host key and
/// credential file.
pub fn check(config: &Config) -> Result<(), BastionError> {
    let host_key = &config.bastion.host_key;
    if host_key.exists() {
        russh::keys::load_secret_key(host_key, None).map_err(|source| {
            BastionError::HostKeyLoad {
                path: host_key.clone(),
                source,
            }
        })?;
    }
    for t in &config.targets {
        TargetSpec::prepare(t).map_err(|source| BastionError::Target {
            target: t.name.clone(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// The bastion listener, bound and ready to run.
pub struct Bastion {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Bastion {
    /// Loads (or generates) the host key, prepares targets and binds the listener.
    pub async fn bind(
        config: Arc<Config>,
        backend: Arc<dyn Backend>,
    ) -> Result<Bastion, BastionError> {
        let limits = Limits::from_config(&config);
        Self::bind_with_limits(config, backend, limits).await
    }

    /// [`Bastion::bind`] with explicit session limits.
    pub async fn bind_with_limits(
        config: Arc<Config>,
        backend: Arc<dyn Backend>,
        limits: Limits,
    ) -> Result<Bastion, BastionError> {
        let host_key = server::load_or_generate_host_key(&config.bastion.host_key)?;
        let mut targets = HashMap::new();
        for t in &config.targets {
            let spec = TargetSpec::prepare(t).map_err(|source| BastionError::Target {
                target: t.name.clone(),
                source: Box::new(source),
            })?;
            targets.insert(t.name.clone(), Arc::new(spec));
        }
        let recording_dir = config.recording.dir.clone();
        if let Err(source) = std::fs::create_dir_all(&recording_dir) {
            return Err(BastionError::RecordingDir {
                path: recording_dir,
                source,
            });
        }
        let addr = config.bastion.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BastionError::Bind { addr, source })?;
        let configs = Configs {
            server: Arc::new(server::server_config(host_key)),
            client: Arc::new(server::client_config()),
        };
        let shared = Arc::new(Shared {
            backend,
            targets,
            target_configs: config.targets.clone(),
            configs,
            recording_dir,
            limits,
            registry: Registry::default(),
            unauthenticated: Arc::new(Semaphore::new(server::MAX_UNAUTHENTICATED)),
            connections: Arc::new(Semaphore::new(server::MAX_CONNECTIONS)),
        });
        Ok(Bastion { listener, shared })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, BastionError> {
        self.listener.local_addr().map_err(BastionError::LocalAddr)
    }

    /// Live connections (for `gatehouse session list` / `session revoke`).
    pub fn registry(&self) -> Registry {
        self.shared.registry.clone()
    }

    /// Accepts connections until `shutdown` is cancelled, then closes every session, waits
    /// (up to [`SHUTDOWN_GRACE`]) for recordings to flush and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BastionError> {
        let tracker = TaskTracker::new();
        let shared = self.shared;
        tracker.spawn(revocation_listener(
            shared.clone(),
            shared.backend.revocations(),
            shutdown.clone(),
        ));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "bastion accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(unauth) = shared.unauthenticated.clone().try_acquire_owned() else {
                tracing::warn!(client.addr = %peer, "too many unauthenticated ssh connections; closing");
                continue;
            };
            let span = tracing::info_span!("ssh", client.addr = %peer);
            tracker.spawn(
                session::serve(shared.clone(), socket, peer, unauth, shutdown.child_token())
                    .instrument(span),
            );
        }
        drop(self.listener);
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("bastion drain did not finish within the grace period");
        } else {
            tracing::info!("bastion drained");
        }
        Ok(())
    }
}

async fn revocation_listener(
    shared: Arc<Shared>,
    mut rx: broadcast::Receiver<String>,
    shutdown: CancellationToken,
) {
    loop {
        let user = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.recv() => r,
        };
        match user {
            Ok(user) => {
                let n = shared.registry.revoke(&user);
                tracing::info!(user = %user, sessions = n, "revocation ended ssh sessions");
                if let Err(e) = shared
                    .backend
                    .audit(BastionEvent::Revoked { user, sessions: n })
                    .await
                {
                    tracing::error!(error = %e, "cannot audit a revocation");
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Missed revocations: fail closed and end every session.
                tracing::error!(
                    missed = n,
                    "revocation feed lagged; ending all ssh sessions"
                );
                for s in shared.registry.list() {
                    shared.registry.revoke(&s.user);
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                shutdown.cancelled().await;
                return;
            }
        }
    }
}
