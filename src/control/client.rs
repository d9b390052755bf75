//! The CLI side of the control socket (see the parent module).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, bail};
use gatehouse_core::control::{DEADLINE, MAX_RESPONSE, Request, Response, SOCKET_DIR, socket_path};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// What `memory://` commands say when no server runs.
pub const NO_SERVER: &str = "no `gatehouse serve` is running with this data directory (no control socket): with the memory:// store, sessions and grants live only inside the running server";

/// Sends `req` to the server using `data_dir`; `None` when no server is running there.
pub async fn call(data_dir: &Path, req: &Request) -> anyhow::Result<Option<Response>> {
    let path = socket_path(data_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!(
                "permission denied on the control socket {}: it belongs to the user running `gatehouse serve`; run this command as that user",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    tokio::time::timeout(DEADLINE, exchange(stream, data_dir, req))
        .await
        .with_context(|| format!("the server did not answer within {DEADLINE:?}"))?
        .map(Some)
}

async fn exchange(
    mut stream: UnixStream,
    data_dir: &Path,
    req: &Request,
) -> anyhow::Result<Response> {
    // Talk only to a server running as the owner of the socket's private directory.
    let owner = std::fs::metadata(data_dir.join(SOCKET_DIR))
        .context("reading the control socket's directory")?
        .uid();
    let server = stream
        .peer_cred()
        .context("reading the server's credentials")?;
    if server.uid() != owner {
        bail!(
            "the process on the control socket runs as uid {}, not as the directory's owner {owner}; refusing to talk to it",
            server.uid()
        );
    }
    let mut line = serde_json::to_vec(req).context("encoding the request")?;
    line.push(b'\n');
    // A server that refuses this peer answers and closes before reading the request; its
    // answer is still there to read after the write fails, and it says why.
    let sent = stream.write_all(&line).await;
    let mut answer = Vec::new();
    let limit = u64::try_from(MAX_RESPONSE).unwrap_or(u64::MAX) + 1;
    let read = BufReader::new(stream.take(limit))
        .read_until(b'\n', &mut answer)
        .await;
    match (sent, read) {
        (Err(e), _) if answer.is_empty() => return Err(e).context("sending the request"),
        (_, Err(e)) if answer.is_empty() => return Err(e).context("reading the answer"),
        _ => {}
    }
    if answer.len() > MAX_RESPONSE {
        bail!("the server's answer is longer than {MAX_RESPONSE} bytes");
    }
    serde_json::from_slice(&answer).context("the server's answer is not a control response")
}

/// The answer, or the server's error as an error.
pub fn ok(resp: Response) -> anyhow::Result<Response> {
    match resp {
        Response::Error { message } => bail!("{message}"),
        other => Ok(other),
    }
}
