//! Error types of the bastion, one enum per failure domain. Messages are lowercase and name
//! this layer only; the cause sits in `#[source]`.

use std::path::PathBuf;

/// Failures of the bastion as a whole (start-up, listener).
#[derive(Debug, thiserror::Error)]
pub enum BastionError {
    #[error("cannot bind the bastion listener on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the listener's local address")]
    LocalAddr(#[source] std::io::Error),
    #[error("cannot load the bastion host key {path}")]
    HostKeyLoad {
        path: PathBuf,
        #[source]
        source: russh::keys::Error,
    },
    #[error("cannot generate the bastion host key {path}")]
    HostKeyGenerate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the generated host key")]
    HostKeyEncode(#[source] russh::keys::ssh_key::Error),
    #[error("target `{target}` is misconfigured")]
    Target {
        target: String,
        #[source]
        source: Box<TargetError>,
    },
    #[error("cannot subscribe to the store's revocation feed (no ssh session could be revoked)")]
    Revocations(#[source] gatehouse_core::StoreError),
}

/// Failures while reaching a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("pinned host key is not an OpenSSH public key line")]
    PinnedKey(#[source] russh::keys::ssh_key::Error),
    #[error("cannot load the target credential {path}")]
    Credential {
        path: PathBuf,
        #[source]
        source: russh::keys::Error,
    },
    #[error("the permit is not for this target, login and request")]
    WrongPermit,
    #[error("cannot connect to the target")]
    Connect(#[source] russh::Error),
    #[error("connecting to the target timed out")]
    ConnectTimeout,
    #[error("the target presented host key {presented}, which is not the pinned key")]
    HostKeyMismatch { presented: String },
    #[error("the target refused the bastion's credential")]
    CredentialRefused,
    #[error("the target refused to open a channel")]
    Channel(#[source] russh::Error),
}

/// Errors surfaced inside the russh handler; they end the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("ssh protocol error")]
    Ssh(#[from] russh::Error),
    #[error("the connection task has stopped")]
    TaskGone,
}
