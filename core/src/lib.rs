//! gatehouse-core: what both doors (the HTTPS gateway and the SSH bastion) share, so they
//! follow one security model.
//!
//! - [`config`]: the configuration contract (file shapes, validation into [`Config`]).
//! - [`identity`]: users, passwords, TOTP, SSH keys, and the login flows of both doors (web:
//!   password + TOTP; SSH: `check_ssh_key` then `verify_totp_after_key` or `accept_key_only`),
//!   which alone mint the `VerifiedIdentity` proof.
//! - [`store`]: sessions, lockout counters, the TOTP replay cache and revocations, in memory
//!   or in Redis.
//! - [`policy`]: the casbin policy and the `Permit` proof, minted only by its `authorize*`;
//!   it also decides with this instance's copy of the just-in-time grants.
//! - [`grant`]: just-in-time grants: validation, creation and revocation (audited), and
//!   the task that keeps each instance's copy in step with the store.
//! - [`review`]: the access review (who can reach what, and what was used).
//! - [`audit`]: the one event vocabulary of both doors and the hash-chained log.
//! - [`recording`]: session recordings (asciicast writer and reader, recording ids, metadata).
//!
//! It opens no sockets: listeners live in the gateway and bastion crates, which depend on this
//! one and never on each other. (The Redis store is a client connection, not a listener.)
#![forbid(unsafe_code)]

pub mod alert;
pub mod audit;
pub mod config;
pub mod control;
pub mod error;
pub mod grant;
pub mod identity;
pub mod outbound;
pub mod path;
pub mod policy;
pub mod recording;
pub mod recording_retention;
pub mod review;
pub mod secret;
pub mod store;

pub use config::Config;
pub use error::{
    AuditError, AuthError, ConfigError, GrantError, IdentityError, KeyError, PolicyError,
    RecordingError, SsoError, StoreError, error_chain,
};

/// Unit-test helpers: a deterministic PRNG, and the shared test kit's temp dirs and
/// redis-server (`gatehouse-testkit`, a dev-dependency that depends on no gatehouse crate).
#[cfg(test)]
mod testutil;
