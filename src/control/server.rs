//! The server side of the control socket (see the parent module).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use gatehouse_core::audit::{AuditEvent, Outcome};
use gatehouse_core::control::{
    Control, DEADLINE, MAX_CLIENTS, MAX_REQUEST, Request, Response, socket_path,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A bound control socket.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// The server's own uid (the socket's owner): the only peer served.
    uid: u32,
}

impl ControlServer {
    /// Binds `<data_dir>/control/gatehouse.sock` (0600, in a 0700 directory). A socket left
    /// by a server that is gone is replaced; one that answers belongs to a running server on
    /// the same data directory: an error.
    pub fn bind(data_dir: &Path) -> anyhow::Result<ControlServer> {
        let (dir, dir_owner) = super::private_dir(data_dir)?;
        let path = socket_path(data_dir);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket; remove it and start again",
                    path.display()
                );
            }
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                bail!(
                    "another gatehouse serve is running with the data directory {} (its control socket {} answers)",
                    data_dir.display(),
                    path.display()
                );
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the stale control socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} owner-only", path.display()))?;
        let uid = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .uid();
        if uid != dir_owner {
            let _ = std::fs::remove_file(&path);
            bail!(
                "{} belongs to uid {dir_owner}, not to this server's uid {uid}; remove it or run as its owner",
                dir.display()
            );
        }
        Ok(ControlServer {
            listener,
            path,
            uid,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown`, then removes the socket.
    pub async fn run(self, control: Control, shutdown: CancellationToken) {
        let control = Arc::new(control);
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!("control socket busy; connection refused");
                continue;
            };
            let (control, uid) = (control.clone(), self.uid);
            tokio::spawn(async move {
                if tokio::time::timeout(DEADLINE, serve(stream, &control, uid))
                    .await
                    .is_err()
                {
                    tracing::warn!("control socket client too slow; closed");
                }
                drop(slot);
            });
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One connection: the peer checked, one request answered.
async fn serve(mut stream: UnixStream, control: &Control, uid: u32) {
    let peer = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "control socket: cannot read the peer's credentials; refused");
            return;
        }
    };
    if peer.uid() != uid {
        tracing::warn!(peer.uid = peer.uid(), peer.pid = ?peer.pid(), "control socket: refused a peer of another uid");
        let event = AuditEvent::AdminAction {
            actor: format!("uid:{}", peer.uid()),
            action: "control socket".into(),
            subject: "connect".into(),
            outcome: Outcome::Failure,
        };
        if let Err(e) = control.audit.record(event).await {
            tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot record a refused control connection");
        }
        let refused = Response::Error {
            message: format!(
                "refused: the control socket serves only uid {uid} (the server's user)"
            ),
        };
        let _ = answer(&mut stream, &refused).await;
        return;
    }
    let response = match read_request(&mut stream).await {
        Ok(req) => control.handle(req, peer.uid()).await,
        Err(message) => Response::Error { message },
    };
    if let Err(e) = answer(&mut stream, &response).await {
        tracing::debug!(error = %e, "control socket client left before the answer");
    }
}

/// One request line of at most [`MAX_REQUEST`] bytes.
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX) + 1;
    BufReader::new(stream.take(limit))
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes; refused"));
    }
    if line.last() != Some(&b'\n') {
        return Err("incomplete request (one JSON line ending in a newline)".into());
    }
    serde_json::from_slice(&line).map_err(|e| format!("malformed request: {e}"))
}

async fn answer(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.shutdown().await
}
