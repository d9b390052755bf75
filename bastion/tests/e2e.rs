//! The bastion's tests against a real sshd and the real OpenSSH client, built as one test
//! binary (one link instead of one per file). Every file of `tests/` is a module here
//! (`autotests = false` in Cargo.toml): a new test file must be listed below or it is not
//! compiled.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/harness.rs"]
mod harness;

mod access;
#[path = "../../tests/listed.rs"]
mod listed;
mod protocol;
mod sessions;
