//! Typed errors of the gateway, one enum per failure domain, and the one mapping of proxy
//! failures to a status code and log level.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::StatusCode;

/// Starting or running the gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The certificate or key (the message names the file).
    #[error(transparent)]
    Tls(TlsError),
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the connection worker threads")]
    Workers(#[source] std::io::Error),
    #[error("cannot generate development certificates")]
    DevCert(#[source] DevCertError),
    /// An app's route (the message names the app and value).
    #[error(transparent)]
    Route(crate::routes::RouteError),
    #[error("cannot start the demo app")]
    Demo(#[source] std::io::Error),
}

impl From<TlsError> for GatewayError {
    fn from(e: TlsError) -> Self {
        GatewayError::Tls(e)
    }
}

impl From<DevCertError> for GatewayError {
    fn from(e: DevCertError) -> Self {
        GatewayError::DevCert(e)
    }
}

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "`{key}`: {path} does not exist; fix: put the PEM file there or point `{key}` at it (`gatehouse serve` without a config generates development certificates)"
    )]
    Missing { key: &'static str, path: PathBuf },
    #[error(
        "{path}: the certificate expired at {not_after}; fix: install a renewed certificate (or, to serve it anyway, set gateway.tls_allow_expired = true)"
    )]
    Expired { path: PathBuf, not_after: String },
    #[error(
        "{path}: the certificate is not valid before {not_before}; fix: check the clock or the certificate (or, to serve it anyway, set gateway.tls_allow_expired = true)"
    )]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("{path}: cannot read the certificate's validity period")]
    NoValidity { path: PathBuf },
    #[error("{path}: cannot read the PEM certificate chain")]
    ReadCert {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: cannot read a PEM private key")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: unsupported private key")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{key} does not match the certificate in {cert}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("invalid tls configuration")]
    Config(#[source] rustls::Error),
}

/// Generating the development CA or server certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("{path}: cannot write")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed")]
    Generate(#[source] rcgen::Error),
}

/// Who failed while proxying a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream connection failed")]
    UpstreamConnect(#[source] std::io::Error),
    #[error("client connection closed")]
    UpstreamClosed,
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("upstream request failed")]
    Upstream(#[source] hyper::Error),
    #[error("upstream switched protocols without being asked")]
    UpstreamProtocol,
    #[error("cannot build the upstream request")]
    Internal(#[source] http::Error),
    #[error("cannot sign the identity assertion")]
    Assertion(#[source] crate::web::assertion::AssertionError),
    #[error("identity does not fit in a header")]
    IdentityHeader,
}

impl ProxyError {
    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamClosed
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) | ProxyError::Assertion(_) | ProxyError::IdentityHeader => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::UpstreamConnect(_) | ProxyError::UpstreamClosed => "connect",
            ProxyError::UpstreamTimeout => "timeout",
            ProxyError::Upstream(_) | ProxyError::UpstreamProtocol => "protocol",
            ProxyError::Internal(_) | ProxyError::Assertion(_) | ProxyError::IdentityHeader => {
                "internal"
            }
        }
    }

    /// Upstream trouble is a warning (operators act on it); internal errors are errors.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            ProxyError::Internal(_) | ProxyError::Assertion(_) | ProxyError::IdentityHeader
        )
    }
}
