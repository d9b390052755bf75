//! Typed errors of gatehouse-core, one enum per failure domain.

use std::path::PathBuf;

/// A configuration file that cannot be used. Every variant names the file; validation errors
/// also name the key path, the offending value (never a secret) and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {problem}; fix: {fix}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
        fix: String,
    },
}

/// The secret key material (TOTP encryption, audit MAC) cannot be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("GATEHOUSE_SECRET_KEY is not base64 of exactly 32 bytes")]
    BadEnv,
    #[error("{path}: cannot read or create the secret key file")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: secret key file is readable by group or others; run `chmod 600` on it")]
    Permissions { path: PathBuf },
    #[error("{path}: secret key file does not hold exactly 32 bytes")]
    BadFile { path: PathBuf },
    #[error("the system random number generator failed")]
    Random,
}

/// Local user administration failed (users file, validation, enrolment).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: cannot read users file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid users file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: cannot write users file")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid user name `{0}`: use 1-32 of a-z, 0-9, `.`, `_`, `-`, starting with a letter")]
    InvalidUserName(String),
    #[error(
        "invalid group name `{0}`: use 1-64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
    )]
    InvalidGroup(String),
    #[error("user `{0}` already exists")]
    UserExists(String),
    #[error("no such user `{0}`")]
    NoSuchUser(String),
    #[error("password refused: {0}")]
    WeakPassword(String),
    #[error("invalid ssh public key: {0}")]
    InvalidSshKey(String),
    #[error("cannot hash password")]
    Hash,
    #[error("cannot encrypt or decrypt the totp secret of `{0}` (wrong secret key?)")]
    TotpCrypto(String),
    #[error("cannot build totp enrolment")]
    Totp,
    #[error("cannot render qr code")]
    Qr,
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why an authentication attempt failed. Callers show users only a generic message; the
/// variant goes to the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid totp code")]
    InvalidTotp,
    #[error("totp code already used")]
    TotpReplayed,
    #[error("account is locked by an administrator")]
    AccountLocked,
    #[error("too many failures: locked out for {remaining_secs} s")]
    LockedOut { remaining_secs: u64 },
    #[error("session unknown, expired or idle")]
    NoSession,
    #[error("identity backend unavailable")]
    Identity(#[source] IdentityError),
    #[error("session store unavailable")]
    Store(#[source] StoreError),
    #[error("audit log unavailable")]
    Audit(#[source] AuditError),
}

/// A store operation failed or timed out; callers fail closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store operation `{op}` timed out")]
    Timeout { op: &'static str },
    #[error("store operation `{op}` failed")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot connect to the store")]
    Connect(#[source] redis::RedisError),
    #[error("corrupt record in the store at `{key}`")]
    Corrupt { key: String },
    #[error("the system random number generator failed")]
    Random,
}

/// A policy or model file that cannot be used; the running policy stays.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read policy file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("{path}: casbin refused the model or policy")]
    Casbin {
        path: PathBuf,
        #[source]
        source: casbin::Error,
    },
    #[error(
        "{path}: the casbin model does not decide like gatehouse's index ({probe}); use the shipped policies/model.conf"
    )]
    ModelMismatch { path: PathBuf, probe: String },
}

/// A session recording cannot be written or read. Writing errors end (or refuse) the session
/// being recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: cannot create recording")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write recording")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode a recording event")]
    Encode(#[source] serde_json::Error),
    #[error("the recording writer stopped")]
    Closed,
    #[error("invalid recording id: expected 32 lowercase hex digits")]
    InvalidId,
    #[error("the system random number generator failed")]
    Random,
    #[error("{path}: cannot open recording")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read recording")]
    ReadCast(#[source] std::io::Error),
    #[error("recording line {line}: {problem}")]
    Malformed { line: usize, problem: String },
    #[error("no recording with id {0}")]
    NotFound(String),
    #[error("recording {0} is encrypted and no secret key was given")]
    NoKey(String),
    #[error("{path}: cannot read recording metadata")]
    Sidecar {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot create the recordings directory")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("recordings index: {what}")]
    Index {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("recordings index: {0}")]
    IndexState(String),
}

/// The audit log cannot be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: cannot write audit log")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit writer is stopped")]
    Closed,
    #[error("audit writer did not confirm the record in time")]
    Busy,
    #[error("cannot encode audit record")]
    Encode(#[source] serde_json::Error),
    #[error("{path}:{line}: {problem}")]
    Tampered {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}
