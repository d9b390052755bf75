//! The tamper-evident audit log: JSON lines in daily segments `audit-YYYYMMDD.jsonl`.
//!
//! Threats: an intruder or insider editing, deleting or reordering records to hide access
//! (at the tail too); records lost in a crash; actions that happen while the log cannot be
//! written; an auditor who cannot check the log without the secret that wrote it.
//! Mitigations: every record carries `seq`, `prev` (SHA-256 of the previous line) and `mac`
//! (HMAC-SHA256 with a key derived from the master secret, which is not stored with the
//! log), so [`verify`] finds any change, removal or reorder; signed checkpoints of the chain
//! head ([`checkpoint`], Ed25519, public key published) let anyone verify an export
//! ([`export`]) without the secret and fix the log's length, and a signed head kept apart
//! from the log ([`head`]) makes a server refuse a log whose tail was cut;
//! [`AuditLog::record`] returns only after the record is written (session-level records:
//! on disk), and returns an error otherwise, on which the caller refuses the action (fail
//! closed). Records are also shipped off the host as they are written ([`ship`]).

mod chain;
pub mod checkpoint;
mod event;
pub mod export;
mod head;
mod json;
mod record;
pub mod retention;
pub mod search;
mod segment;
pub mod ship;
mod signing;
pub mod testkit;
mod verify;
mod writer;

pub use chain::AuditKey;
pub(crate) use chain::timestamp;
pub use event::{
    AbuseKind, AccessContext, Answer, AuditEvent, Durability, FileProtocol, Outcome, SshAuthStep,
    SshRefusal, SshRequest, TransferDirection, new_incident_id,
};
pub use record::{Decision, Record};
pub use signing::{AuditPublicKey, AuditSigner, public_key_path};
pub use verify::{TornTail, VerifyOptions, VerifyReport, verify, verify_export, verify_log};
pub use writer::{AuditLog, AuditOptions, CHECKPOINT_INTERVAL, Receipt, SYNC_INTERVAL};

/// RFC 3339 UTC timestamp with milliseconds of unix milliseconds `ms` (the records' format).
pub fn timestamp_of(ms: u64) -> String {
    chain::timestamp(ms).0
}

/// Unix milliseconds of a record timestamp (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
pub fn parse_timestamp(ts: &str) -> Option<u64> {
    chain::parse_timestamp(ts)
}

#[cfg(test)]
pub(crate) mod tests;
