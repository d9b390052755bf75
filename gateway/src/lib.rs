//! gatehouse-gateway: the HTTPS entry point and reverse proxy.
//!
//! It owns TLS termination, the listeners, the hostile-request guard, path normalisation,
//! routing and proxying to upstream apps. It must never forward a request that has not passed
//! guard -> route -> authenticate (session) -> authorize (casbin, audited) (the `Permit`
//! proof type enforces the order),
//! never let a client's identity or forwarding headers through, and never guess at an
//! ambiguous request: it refuses it. It depends on gatehouse-core only (never the bastion).
#![forbid(unsafe_code)]

mod abuse;
pub mod authn;
pub mod authz;
mod body;
mod conn;
mod deadline;
pub mod demo;
pub mod devcert;
pub mod error;
pub mod guard;
mod handler;
pub mod headers;
mod login;
mod metrics;
pub mod pages;
pub mod path;
mod proxy;
pub mod reload;
mod request_id;
mod respond;
pub mod review;
pub mod revoke;
pub mod routes;
mod serve;
pub mod services;
mod state;
pub mod tls;
mod upstream;
pub mod web;
pub mod web_sessions;

use gatehouse_core::Config;

pub use error::{DevCertError, GatewayError, ProxyError, TlsError};
pub use proxy::{GROUPS_HEADER, USER_HEADER};
pub use reload::{PolicyReloader, ReloadError};
pub use serve::{Bound, DrainReport, Gateway};
pub use services::{Services, StoreHealth};
pub use tls::Reloader;

/// Validates what a start would load without binding anything: the TLS certificate chain and
/// key exist, parse, belong together and are within their validity period, and every
/// upstream is a valid authority. Returns what to warn about (a certificate expiring soon, or
/// served outside its validity because of `gateway.tls_allow_expired`). Certificates are not
/// checked for the quick-start (`config.source` is `None`): they are generated at start.
pub fn check(config: &Config) -> Result<Vec<String>, GatewayError> {
    routes::Routes::new(&config.apps).map_err(GatewayError::Route)?;
    if config.source.is_none() {
        return Ok(Vec::new());
    }
    let g = &config.gateway;
    let provider = tls::profile_provider(g.tls_profile);
    let loaded = tls::CertFiles::from_config(g).load(&provider, std::time::SystemTime::now())?;
    Ok(loaded.warning.iter().map(ToString::to_string).collect())
}
