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
