//! gatehouse-gateway: the HTTPS entry point and reverse proxy.
//!
//! It owns TLS termination, the listeners, the hostile-request guard, path normalisation,
//! routing and proxying to upstream apps. It must never forward a request that has not passed
//! guard -> route -> authenticate (session) -> authorize (casbin, audited) (the `Permit`
//! proof type enforces the order),
//! never let a client's identity or forwarding headers through, and never guess at an
//! ambiguous request: it refuses it. It depends on gatehouse-core only (never the bastion).
#![forbid(unsafe_code)]

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
mod preauth;
mod proxy;
pub mod reload;
pub mod revoke;
pub mod routes;
mod serve;
pub mod services;
pub mod tls;
mod upstream;
pub mod web;

use gatehouse_core::Config;

pub use error::{DevCertError, GatewayError, ProxyError, TlsError};
pub use proxy::{GROUPS_HEADER, USER_HEADER};
pub use reload::{PolicyReloader, ReloadError};
pub use serve::{Bound, DrainReport, Gateway};
pub use services::{Services, StoreHealth};
pub use tls::Reloader;

/// Validates what a start would load without binding anything: the TLS certificate chain and
/// key parse and belong together, and every upstream is a valid authority. Skipped for the
/// quick-start (`config.source` is `None`), whose certificates are generated at start.
pub fn check(config: &Config) -> Result<(), GatewayError> {
    routes::Routes::new(&config.apps).map_err(GatewayError::Route)?;
    if config.source.is_none() {
        return Ok(());
    }
    let g = &config.gateway;
    let provider = tls::profile_provider(g.tls_profile);
    tls::load_certified_key(&g.tls_cert, &g.tls_key, &provider)?;
    Ok(())
}
