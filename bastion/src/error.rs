//! Error types of the bastion, one enum per failure domain. Messages are lowercase and name
//! this layer only; the cause sits in `#[source]`.

use std::path::PathBuf;

/// Failures of the bastion as a whole (start-up, listener, shutdown).
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
    #[error("cannot prepare the recording directory {path}")]
    RecordingDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Failures of the backend (identity, lockouts, policy, audit). Every one is a refusal.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend unavailable: {what}")]
    Unavailable { what: String },
    #[error("audit record could not be written")]
    Audit(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("backend failure in {what}")]
    Other {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

/// Failures of the session recorder.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot create recording {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write recording {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode a recording event")]
    Encode(#[source] serde_json::Error),
    #[error("the recording writer stopped")]
    Closed,
}

/// Errors surfaced inside the russh handler; they end the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("ssh protocol error")]
    Ssh(#[from] russh::Error),
    #[error("backend failure")]
    Backend(#[from] BackendError),
}
