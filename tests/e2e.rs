//! The end-to-end suite of the `gatehouse` binary, built as one test binary: one link of the
//! whole tree instead of one per file keeps the build small and quick on CI. Every file of
//! `tests/` is a module here (`autotests = false` in Cargo.toml): a new test file must be
//! listed below or it is not compiled.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod listed;
mod support;

mod access_review;
mod audit;
mod audit_ops;
mod audit_ship;
mod bastion;
mod bastion_live;
mod bastion_preauth;
mod bastion_throttle;
mod browser;
mod check_config;
mod cli;
mod gateway;
mod gateway_attacks;
mod gateway_certs;
mod gateway_h2_abuse;
mod gateway_hardening;
mod gateway_hygiene;
mod gateway_lifecycle;
mod gateway_limits;
mod gateway_store_forgery;
mod gateway_streaming;
mod gateway_tls;
mod grants;
mod grants_ssh;
mod harness;
mod identity;
mod identity_live;
mod identity_policy;
mod identity_redis;
mod identity_sessions;
mod identity_throttle;
mod oidc_callbacks;
mod oidc_hostile;
mod oidc_provider;
mod oidc_users;
mod oidc_web;
mod policy_lint;
mod policy_scale;
mod quickstart;
mod recordings;
mod review;
mod review_browser;
mod store_copies;
mod web_recordings;
