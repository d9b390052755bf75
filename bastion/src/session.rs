//! The per-connection task: runs the russh session, enforces the authentication deadline and
//! the maximum session length, ends the connection on revocation or shutdown, and cleans up
//! (channel tasks, target connection, registry entry).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::{OnceCell, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod killable;

use crate::Shared;
use crate::auth::{Destination, Selection};
use crate::backend::{BastionEvent, Permit};
use crate::error::TargetError;
use crate::handler::ConnHandler;
use crate::registry::SessionInfo;
use crate::server::AUTH_DEADLINE;
use crate::target::TargetConn;

/// How long a closing connection may take to deliver its disconnect message.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);

/// An authenticated user and where they asked to go.
pub(crate) struct Authenticated {
    pub user: String,
    pub selection: Selection,
    /// `None` for an unknown target (refused exactly like a policy denial).
    pub dest: Option<Destination>,
    /// As registered (registry and backend).
    pub info: SessionInfo,
    _slot: OwnedSemaphorePermit,
}

/// State shared by the russh handler and the channel tasks of one connection.
pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    pub id: String,
    pub client: SocketAddr,
    pub auth: OnceLock<Authenticated>,
    pub target: OnceCell<Arc<TargetConn>>,
    /// Cancelled to end the connection (revocation, shutdown, time limit).
    pub cancel: CancellationToken,
    pub channels: TaskTracker,
}

impl Conn {
    /// What the registry and the backend's session list show for this connection.
    pub fn session_info(
        &self,
        user: &str,
        selection: &Selection,
        dest: Option<&Destination>,
    ) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            user: user.to_string(),
            target: selection.target.clone(),
            login: dest
                .map(|d| d.login.clone())
                .or_else(|| selection.login.clone())
                .unwrap_or_default(),
            client: self.client,
            started: SystemTime::now(),
        }
    }

    /// Marks the connection authenticated and registers it. `false` if no slot is free.
    pub fn authenticate(
        &self,
        info: SessionInfo,
        selection: Selection,
        dest: Option<Destination>,
    ) -> bool {
        let Ok(slot) = self.shared.connections.clone().try_acquire_owned() else {
            return false;
        };
        if self
            .auth
            .set(Authenticated {
                user: info.user.clone(),
                selection,
                dest,
                info: info.clone(),
                _slot: slot,
            })
            .is_err()
        {
            return false;
        }
        self.shared.registry.insert(info, self.cancel.clone());
        true
    }

    /// The target connection, opened on first use (several channels share it).
    pub async fn target(&self, permit: &Permit) -> Result<Arc<TargetConn>, TargetError> {
        let spec = self
            .shared
            .targets
            .get(permit.target())
            .ok_or(TargetError::CredentialRefused)?;
        let conn = self
            .target
            .get_or_try_init(|| async {
                TargetConn::connect(permit, spec, self.shared.configs.client.clone())
                    .await
                    .map(Arc::new)
            })
            .await;
        match conn {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                let event = match &e {
                    TargetError::HostKeyMismatch { presented } => {
                        tracing::error!(target = %permit.target(), presented = %presented, "target host key mismatch");
                        BastionEvent::HostKeyMismatch {
                            user: permit.user().into(),
                            target: permit.target().into(),
                            presented: presented.clone(),
                        }
                    }
                    other => {
                        tracing::warn!(target = %permit.target(), error = %crate::error_chain(other), "target unreachable");
                        BastionEvent::TargetUnreachable {
                            user: permit.user().into(),
                            target: permit.target().into(),
                            error: crate::error_chain(other),
                        }
                    }
                };
                if let Err(ae) = self.shared.backend.audit(event).await {
                    tracing::error!(error = %ae, "cannot audit a target failure");
                }
                Err(e)
            }
        }
    }
}

/// Serves one accepted TCP connection until it ends.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    socket: TcpStream,
    client: SocketAddr,
    unauth: OwnedSemaphorePermit,
    cancel: CancellationToken,
) {
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        id: crate::recording::new_id(),
        client,
        auth: OnceLock::new(),
        target: OnceCell::new(),
        cancel,
        channels: TaskTracker::new(),
    });
    let handler = ConnHandler::new(conn.clone(), unauth);
    let config = shared.configs.server.clone();
    let kill = CancellationToken::new();
    let _ = socket.set_nodelay(true);
    let stream = killable::Killable::new(socket, kill.clone());
    let running = match tokio::time::timeout(
        AUTH_DEADLINE,
        russh::server::run_stream(config, stream, handler),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "ssh handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!("ssh identification not received in time; closing");
            return;
        }
    };
    let handle = running.handle();
    let auth_deadline = tokio::time::sleep(AUTH_DEADLINE);
    let max_session = tokio::time::sleep(shared.limits.max_session);
    tokio::pin!(running, auth_deadline, max_session);
    let mut deadline_armed = true;
    let reason: &str = loop {
        tokio::select! {
            r = &mut running => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "ssh connection ended with an error");
                }
                break "";
            }
            _ = &mut auth_deadline, if deadline_armed => {
                deadline_armed = false;
                if conn.auth.get().is_none() {
                    tracing::info!("authentication deadline passed; closing");
                    break "authentication timed out";
                }
            }
            // Counted from the connection's start (authentication takes at most AUTH_DEADLINE).
            _ = &mut max_session => {
                tracing::info!("maximum session length reached; closing");
                break "maximum session length reached";
            }
            _ = conn.cancel.cancelled() => break "session ended by the bastion (revoked or shutting down)",
        }
    };
    conn.cancel.cancel();
    conn.channels.close();
    // Channel tasks end on the cancellation and flush their recordings.
    conn.channels.wait().await;
    if !reason.is_empty() {
        let _ = handle
            .disconnect(
                russh::Disconnect::ByApplication,
                reason.to_string(),
                "en".to_string(),
            )
            .await;
        // A session still in key exchange cannot send the disconnect: give it a moment, then
        // cut the stream so the session task ends in every case.
        let grace = if conn.auth.get().is_some() {
            DISCONNECT_GRACE
        } else {
            Duration::from_millis(200)
        };
        // (A completed `running` must not be polled again.)
        if tokio::time::timeout(grace, &mut running).await.is_err() {
            kill.cancel();
            let _ = tokio::time::timeout(DISCONNECT_GRACE, &mut running).await;
        }
    }
    if let Some(t) = conn.target.get() {
        t.close().await;
    }
    shared.registry.remove(&conn.id);
    if let Some(a) = conn.auth.get() {
        shared.backend.session_closed(&a.info).await;
    }
}
