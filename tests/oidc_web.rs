//! SSO through the real binary against a real OpenID Connect provider nobody here wrote
//! (panva's oidc-provider, started on loopback by the harness): the login page's provider
//! buttons, the provider's own pages, the callback, Gatehouse's TOTP or first-login
//! enrolment, the handoff to an app host and the identity the upstream receives; groups
//! deciding allow and deny; `trust_mfa`; two providers and names that cannot be taken over;
//! a provider down at start; logout at the provider; and hostile callbacks (login CSRF,
//! replay, tampered state, replayed code, declined consent), none of which yields a session.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod flows;
mod hostile;
pub mod kit;
