//! The end-to-end suite's support: the shared test kit (`gatehouse-testkit`, one launcher per
//! component for every test tree) re-exported under the paths the tests use, plus what only
//! this tree needs: the `gatehouse` binary of this package bound into the kit's launcher
//! ([`gatehouse`]), and flows over the real binary ([`identity`], [`handoff`], [`scenario`])
//! and below it ([`sso`]).
//!
//! Threat covered by the tests that use it: a gateway that looks right in unit tests but lets
//! hostile traffic through once it runs as a process (smuggling, spoofed identity, slow clients,
//! weak TLS). Mitigation: every test drives the real `gatehouse` binary over real TLS sockets
//! against a real HTTP upstream that counts what reaches it.
//!
//! - From the kit: [`TestDir`], [`Pki`], [`Upstream`], [`Redis`], [`Webhook`], [`client`],
//!   [`sshd`] (target sshd, keys, OpenSSH client), [`oidc_provider`], [`oidc_browser`],
//!   [`oidc_double`], [`net`], [`process`], [`audit`].
//! - [`Gatehouse`]: the binary with a generated config; waits for the `gatehouse ready:` line,
//!   prints its output when the test fails and kills it on drop.
//!   [`Gatehouse::start_signed_in`] also creates the default user and logs in, so h1/h2
//!   connections carry a session cookie.
//! - [`identity`]: users via `gatehouse user add`, TOTP codes, the real login flow, the audit
//!   log as JSON, assertion (JWT) verification against the JWKS.
//! - [`handoff`]: sessions on several hosts through the real handoff (a session is valid
//!   only on the host it was issued to).
//! - [`sso`]: the core's SSO service over a temp dir for tests below the gateway.
#![allow(dead_code, unused_imports)]

pub mod gatehouse;
pub mod handoff;
pub mod identity;
pub mod pair;
pub mod scenario;
pub mod sshd;
pub mod sso;

pub use gatehouse_testkit::{
    Pki, QUICK, Redis, Resp, TestDir, Upstream, Webhook, host, repo_root, within,
};
pub use gatehouse_testkit::{
    audit, client, net, oidc_browser, oidc_double, oidc_provider, pki, process, redis, tempdir,
    upstream, webhook,
};

pub use gatehouse::{AppSpec, Gatehouse, GatehouseSpec, TEST_GROUP, TEST_USER};
pub use identity::TestUser;
