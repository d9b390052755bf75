//! The gateway library's tests over real sockets, built as one test binary (one link instead
//! of one per file). Every file of `tests/` is a module here (`autotests = false` in
//! Cargo.toml): a new test file must be listed below or it is not compiled.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/harness.rs"]
mod support;

mod lifecycle;
#[path = "../../tests/listed.rs"]
mod listed;
mod login;
mod proxy;
mod review;
mod store_outage;
