//! The control socket (`<data_dir>/control/gatehouse.sock`): how the CLI reaches a running
//! `serve` whose store is in-process (`memory://`). The messages and what the server does
//! with them are `gatehouse_core::control`'s; this is the socket.
//!
//! Threat: another local user connecting to drive the server. Mitigation: the directory is
//! the server's user's alone (0700; created so, or fixed to it when ours, refused when
//! another user's or a symlink), the socket 0600, and each peer's uid (SO_PEERCRED) must be
//! the server's: anyone else gets a refusal, which is audited. One JSON line each way, both
//! bounded, under a deadline; at most `MAX_CLIENTS` at once. The client, in turn, talks only
//! to a server running as the owner of that directory.

pub mod client;
pub mod server;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The socket's directory under `data_dir`, made private (0700), and the uid owning it.
fn private_dir(data_dir: &Path) -> anyhow::Result<(PathBuf, u32)> {
    let dir = data_dir.join(gatehouse_core::control::SOCKET_DIR);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.file_type().is_dir() {
        bail!(
            "{} is not a directory (a symlink or a file); remove it and start again",
            dir.display()
        );
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "{} is open to other users and cannot be made private (chmod 700 it)",
                    dir.display()
                )
            },
        )?;
    }
    Ok((dir, meta.uid()))
}
