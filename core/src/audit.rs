//! The tamper-evident audit log: JSON lines in daily segments `audit-YYYYMMDD.jsonl`.
//!
//! Threats: an intruder or insider editing, deleting or reordering records to hide access;
//! records lost in a crash; actions that happen while the log cannot be written. Mitigations:
//! every record carries `seq`, `prev` (SHA-256 of the previous line) and `mac` (HMAC-SHA256
//! with a key derived from the master secret, which is not stored with the log), so
//! [`verify`] finds any change, removal or reorder; [`AuditLog::record`] returns only after
//! the record is written (the kernel holds it; fdatasync follows within 50 ms), and returns
//! an error otherwise, on which the caller refuses the action (fail closed). Known limit: removing the newest records (truncation) is
//! not detectable from the chain alone; ship the log off the host as it is written.

mod chain;
mod event;
mod json;
mod segment;
mod verify;
mod writer;

pub use chain::AuditKey;
pub(crate) use chain::{parse_timestamp, timestamp};
pub use event::{
    AbuseKind, AccessContext, AuditEvent, FileProtocol, Outcome, SshAuthStep, SshRefusal,
    SshRequest, TransferDirection, new_incident_id,
};
pub use verify::{VerifyReport, verify};
pub use writer::{AuditLog, Receipt};

#[cfg(test)]
pub(crate) mod tests;
