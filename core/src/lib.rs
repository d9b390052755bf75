//! gatehouse-core: what both doors (the HTTPS gateway and the SSH bastion) share.
//!
//! It owns the configuration contract (parsing and validation) and is the home of the
//! identity, store, policy, audit and recording code. It opens no sockets: listeners live in
//! the gateway and bastion crates, which depend on this one and never on each other. (The
//! Redis store is a client connection, not a listener.)
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod error;
pub mod identity;
pub mod path;
pub mod policy;
pub mod secret;
pub mod store;

pub use config::Config;
pub use error::{
    AuditError, AuthError, ConfigError, IdentityError, KeyError, PolicyError, StoreError,
};

#[cfg(test)]
mod testutil;
