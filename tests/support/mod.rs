//! End-to-end test harness: real components on loopback, readiness by signal, never by sleep.
//!
//! Threat covered by the tests that use it: a gateway that looks right in unit tests but lets
//! hostile traffic through once it runs as a process (smuggling, spoofed identity, slow clients,
//! weak TLS). Mitigation: every test drives the real `gatehouse` binary over real TLS sockets
//! against a real HTTP upstream that counts what reaches it.
//!
//! - [`TestDir`]: a unique temp directory, removed on drop.
//! - [`Pki`]: a test CA and the gateway's certificate (re-issuable for reload tests).
//! - [`Upstream`]: an HTTP/1.1 upstream (echo, slow, download, upload, WebSocket-style upgrade)
//!   that counts every request it receives.
//! - [`Gatehouse`]: the binary with a generated config (store, users file, casbin model and
//!   policy, audit dir, secret key); waits for the `gatehouse ready:` line, prints its stderr
//!   when the test fails and kills it on drop. [`Gatehouse::start_signed_in`] also creates
//!   the default user and logs in, so h1/h2 connections carry a session cookie.
//! - [`identity`]: users via `gatehouse user add`, TOTP codes, the real login flow, the audit
//!   log as JSON, assertion (JWT) verification against the JWKS.
//! - [`handoff`]: sessions on several hosts through the real handoff (a session is valid
//!   only on the host it was issued to).
//! - [`oidc_provider`]: a real OpenID provider (panva's oidc-provider under node) with test
//!   clients and accounts; [`oidc_browser`] completes its login and consent pages without a
//!   browser; [`oidc_double`] is a hostile provider that serves the ID tokens a test crafts;
//!   [`sso`] builds the core's SSO service over a temp dir for tests below the gateway.
//! - [`Redis`]: a real redis-server on a free port (stop/restart for outage tests).
//! - [`client`]: TLS, HTTP/1.1, HTTP/2 and raw-bytes clients.
//! - [`Webhook`]: an alert webhook receiver that can be stopped and resumed on its port.
//!
//! Each top-level file in `tests/` is its own crate and uses a subset of this module.
//! Cargo also builds this file as a (test-less) crate of its own, so submodules are named by
//! `#[path]`, which resolves the same way in both cases.
#![allow(dead_code, unused_imports)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod client;
pub mod gatehouse;
pub mod handoff;
pub mod identity;
pub mod oidc_browser;
pub mod oidc_double;
pub mod oidc_provider;
pub mod pki;
pub mod redis;
pub mod scenario;
pub mod sso;
pub mod tempdir;
pub mod upstream;
pub mod webhook;

use std::time::Duration;

pub use client::Resp;
pub use gatehouse::{AppSpec, Gatehouse, GatehouseSpec, TEST_GROUP, TEST_USER};
pub use identity::TestUser;
pub use pki::Pki;
pub use redis::Redis;
pub use tempdir::TestDir;
pub use upstream::Upstream;
pub use webhook::Webhook;

/// Deadline for anything that should be immediate on loopback (a response, a close).
pub const QUICK: Duration = Duration::from_secs(10);

/// Host names served by the test certificate (`*.gatehouse.localhost`).
pub fn host(name: &str) -> String {
    format!("{name}.gatehouse.localhost")
}

/// Runs `f` with a deadline, failing the test with `what` when it passes.
pub async fn within<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}
