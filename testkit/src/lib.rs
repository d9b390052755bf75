//! gatehouse-testkit: the one test kit of every test tree (the binary's end-to-end tests in
//! `tests/`, `gateway/tests/`, `bastion/tests/`, and core's unit tests). A dev-dependency
//! only; never a dependency of a production crate.
//!
//! What it owns: starting each real component on a free loopback port in a temp dir,
//! waiting on a readiness probe with a deadline (never a fixed sleep), printing the
//! component's output when the test fails, and killing it on drop. A missing component is a
//! test failure, never a silent skip.
//!
//! - [`net`]: free ports, closed ports; [`tempdir::TestDir`]: a unique temp dir removed on drop.
//! - [`process`]: child processes with deadlines (output captured, ready line awaited).
//! - [`redis::Redis`]: a real redis-server (stop/restart on the same port for outage tests).
//! - [`ssh`]: ed25519 keys by `ssh-keygen`, a real OpenSSH `sshd` target, the real `ssh`/`scp`
//!   client answering TOTP through `SSH_ASKPASS`.
//! - [`pki::Pki`]: a test CA and the gateway's certificate (re-issuable for reload tests).
//! - [`upstream`]: HTTP upstreams (echo, slow, download, upload, WebSocket-style upgrade) that
//!   count or report what reaches them.
//! - [`client`]: TLS, HTTP/1.1, HTTP/2 and raw-bytes clients.
//! - [`gatehouse::Gatehouse`]: the `gatehouse` binary with a generated config; the binary's
//!   path is passed in by the binary package's tests (`env!("CARGO_BIN_EXE_gatehouse")`).
//! - [`oidc_provider`]: a real OpenID provider (panva's oidc-provider under node);
//!   [`oidc_browser`] completes its pages without a browser; [`oidc_double`] is a hostile
//!   provider serving the ID tokens a test crafts.
//! - [`webhook::Webhook`]: an alert webhook receiver that can be stopped and resumed.
//! - [`audit`]: the audit log read back as JSON.
//!
//! What it must not do: depend on a gatehouse crate (core's unit tests use it, and core
//! cannot dev-depend on a crate built on core), or mock a component the tests can run for
//! real. Each tree's `support` module re-exports it and adds only what that tree alone needs.
#![forbid(unsafe_code)]
// A test kit fails the test loudly: unwrap, expect and panic are its way to report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod audit;
pub mod client;
pub mod gatehouse;
pub mod net;
pub mod oidc_browser;
pub mod oidc_double;
pub mod oidc_provider;
pub mod pki;
pub mod process;
pub mod redis;
pub mod ssh;
pub mod tempdir;
pub mod upstream;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use client::Resp;
pub use gatehouse::{AppSpec, GatehouseSpec, TEST_GROUP, TEST_USER};
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

/// The repository's root (the workspace), for `policies/`, `tests/oidc/` and the like.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
