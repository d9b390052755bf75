//! gatehouse-bastion: the SSH bastion. Staff connect with a plain OpenSSH client as
//! `USER:LOGIN@TARGET`, authenticate with their registered key and a TOTP code through core's
//! SSH login flow, and every session is authorized by core's policy, relayed to the target
//! over the bastion's own pinned connection, recorded as asciicast v2 through core's recorder
//! and audited in core's vocabulary.
//!
//! The path of a connection mirrors the gateway's request path: core's
//! [`VerifiedIdentity`](gatehouse_core::identity::VerifiedIdentity) from authentication to the
//! end of the connection, core's [`Permit`](gatehouse_core::policy::Permit) from
//! `PolicyHandle::authorize_audited` for every shell, exec, subsystem and forward, taken by
//! every function of [`target`] that opens something, with the audit record written before
//! anything moves.
//!
//! Layout: [`server`] (russh configurations, host key); `handler` (russh callbacks → events);
//! `connection` (the per-connection task: events, deadlines, teardown) with `login`
//! (authentication steps) and `conn` (the connection's state: identity, authorization,
//! target); `channel` (session channels, relay, SCP/SFTP observers, local forwards);
//! [`target`] (the pinned connection to a target); [`registry`] and `live` (live connections,
//! revocation, store keep-alive); [`auth`] (the SSH user name); [`scp`], [`sftp`] (passive
//! protocol observers).
//!
//! Threat: the bastion is the one door to production; a flaw lets someone reach a target
//! unauthenticated, unauthorized, unrecorded, or through a man in the middle. Mitigation:
//! fail closed everywhere — key signature and TOTP bound to one user name, a core permit
//! required to open anything on a target, pinned target host keys, a recording that must be
//! writable before a session starts, audit failures refusing the action, strict algorithm
//! lists, deadlines and caps on unauthenticated connections.
//!
//! It depends on core only, never on the gateway crate, and takes its services (authenticator,
//! store, policy, audit log) as a [`Services`] value.
#![forbid(unsafe_code)]

pub mod auth;
mod channel;
mod conn;
mod connection;
pub mod error;
mod event;
mod handler;
mod live;
mod login;
pub mod registry;
pub mod scp;
pub mod server;
pub mod sftp;
mod shared;
pub mod target;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Config;
use gatehouse_core::store::RevocationEvent;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use auth::SshAction;
pub use error::BastionError;
pub use registry::{Registry, SessionInfo};
pub use shared::{Limits, Services};

use crate::connection::Accepted;
use crate::server::Configs;
use crate::shared::Shared;
use crate::target::TargetSpec;

/// How long shutdown waits for sessions to close and recordings to flush.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    revocations: broadcast::Receiver<RevocationEvent>,
}

impl Bastion {
    /// Loads (or generates) the host key, prepares targets, subscribes to the store's
    /// revocation feed and binds the listener.
    pub async fn bind(config: Arc<Config>, services: Services) -> Result<Bastion, BastionError> {
        let limits = Limits::from_config(&config);
        Self::bind_with_limits(config, services, limits).await
    }

    /// [`Bastion::bind`] with explicit session limits.
    pub async fn bind_with_limits(
        config: Arc<Config>,
        services: Services,
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
        let revocations = services
            .store()
            .subscribe_revocations()
            .await
            .map_err(BastionError::Revocations)?;
        let addr = config.bastion.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BastionError::Bind { addr, source })?;
        let configs = Configs {
            server: Arc::new(server::server_config(host_key)),
            client: Arc::new(server::client_config()),
        };
        let shared = Arc::new(Shared {
            services,
            targets,
            target_configs: config.targets.clone(),
            configs,
            limits,
            registry: Registry::default(),
            unauthenticated: Arc::new(Semaphore::new(server::MAX_UNAUTHENTICATED)),
            connections: Arc::new(Semaphore::new(server::MAX_CONNECTIONS)),
        });
        Ok(Bastion {
            listener,
            shared,
            revocations,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, BastionError> {
        self.listener.local_addr().map_err(BastionError::LocalAddr)
    }

    /// Live connections.
    pub fn registry(&self) -> Registry {
        self.shared.registry.clone()
    }

    /// Accepts connections until `shutdown` is cancelled, then closes every session, waits
    /// (up to [`SHUTDOWN_GRACE`]) for recordings to flush and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BastionError> {
        let tracker = TaskTracker::new();
        let shared = self.shared;
        tracker.spawn(live::revocations(
            shared.clone(),
            self.revocations,
            shutdown.clone(),
        ));
        tracker.spawn(live::keep_alive(shared.clone(), shutdown.clone()));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (socket, client) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "bastion accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(unauth) = shared.unauthenticated.clone().try_acquire_owned() else {
                tracing::warn!(client.addr = %client, "too many unauthenticated ssh connections; closing");
                continue;
            };
            let id = connection::new_session_id();
            let span = tracing::info_span!("ssh", client.addr = %client, session = %id);
            let accepted = Accepted {
                socket,
                client,
                id,
                unauth,
            };
            tracker.spawn(
                connection::serve(shared.clone(), accepted, shutdown.clone()).instrument(span),
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
