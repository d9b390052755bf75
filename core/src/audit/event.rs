//! What the audit log records.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Success or failure of an administrative action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

/// What an access decision's record says about the request besides the decision: the
/// client's address, the session (the id hash, as in `logout`) and the gateway's request id,
/// where known. Absent fields are left out of the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One audit event. Serialized with an `event` tag, e.g. `{"event":"login_success",...}`.
/// Never put a password, code, cookie or token in a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    LoginSuccess {
        user: String,
        method: String,
        client_addr: Option<IpAddr>,
    },
    /// `reason` is internal (unknown user, bad password, account locked, ...), never shown.
    LoginFailure {
        user: String,
        method: String,
        reason: String,
        client_addr: Option<IpAddr>,
    },
    TotpFailure {
        user: String,
        reason: String,
        client_addr: Option<IpAddr>,
    },
    /// A user or address reached the failure limit (an alert).
    Lockout {
        key: String,
        failures: u64,
        locked_secs: u64,
        incident_id: String,
    },
    Logout {
        user: String,
        session: String,
    },
    SessionRevoked {
        user: String,
        count: u64,
        by: String,
    },
    AccessAllowed {
        user: String,
        object: String,
        action: String,
        rule: String,
        /// Where the request came from, when the deciding component knows it.
        #[serde(flatten)]
        context: AccessContext,
    },
    /// A denied access (an alert); `rule` is the deciding deny line, if any.
    AccessDenied {
        user: String,
        object: String,
        action: String,
        rule: Option<String>,
        incident_id: String,
        /// Where the request came from, when the deciding component knows it.
        #[serde(flatten)]
        context: AccessContext,
    },
    PolicyReload {
        ok: bool,
        rules: usize,
        error: Option<String>,
    },
    SshSessionStart {
        user: String,
        target: String,
        login: String,
        recording_id: String,
        client_addr: Option<IpAddr>,
    },
    SshSessionEnd {
        user: String,
        target: String,
        login: String,
        recording_id: String,
        exit_status: Option<u32>,
    },
    PortForward {
        user: String,
        target: String,
        destination: String,
        allowed: bool,
    },
    AdminAction {
        actor: String,
        action: String,
        subject: String,
        outcome: Outcome,
    },
    /// Connections refused before authentication because a pre-authentication limit was full
    /// (`reason`: `per_source` or `total`), summed per source over `window_secs`: one record
    /// per source and window, never one per refusal (a flood must not flood the log).
    /// `client_addr` is `None` for the sum over sources beyond the window's list (`sources`
    /// says how many, counted up to 4,096). `door` is `https` (or `ssh`).
    PreauthRefused {
        door: String,
        client_addr: Option<IpAddr>,
        reason: String,
        refused: u64,
        sources: u64,
        window_secs: u64,
    },
    /// An SSH bastion event with no dedicated variant: `ssh` is the bastion's own record
    /// (JSON with its own `event` tag). Alerting ones (lockouts, host-key mismatches) carry
    /// an incident id.
    Ssh {
        user: String,
        ssh: serde_json::Value,
        incident_id: Option<String>,
    },
}

impl AuditEvent {
    /// The incident id of an alerting event (denies, lockouts).
    pub fn incident_id(&self) -> Option<&str> {
        match self {
            AuditEvent::AccessDenied { incident_id, .. }
            | AuditEvent::Lockout { incident_id, .. } => Some(incident_id),
            AuditEvent::Ssh {
                incident_id: Some(id),
                ..
            } => Some(id),
            _ => None,
        }
    }

    /// The `event` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::LoginSuccess { .. } => "login_success",
            AuditEvent::LoginFailure { .. } => "login_failure",
            AuditEvent::TotpFailure { .. } => "totp_failure",
            AuditEvent::Lockout { .. } => "lockout",
            AuditEvent::Logout { .. } => "logout",
            AuditEvent::SessionRevoked { .. } => "session_revoked",
            AuditEvent::AccessAllowed { .. } => "access_allowed",
            AuditEvent::AccessDenied { .. } => "access_denied",
            AuditEvent::PolicyReload { .. } => "policy_reload",
            AuditEvent::SshSessionStart { .. } => "ssh_session_start",
            AuditEvent::SshSessionEnd { .. } => "ssh_session_end",
            AuditEvent::PortForward { .. } => "port_forward",
            AuditEvent::AdminAction { .. } => "admin_action",
            AuditEvent::PreauthRefused { .. } => "preauth_refused",
            AuditEvent::Ssh { .. } => "ssh",
        }
    }
}

/// A fresh unique incident id: 16 random bytes, hex (`inc-` prefix).
pub fn new_incident_id() -> String {
    let mut r = [0u8; 16];
    if crate::secret::random_bytes(&mut r).is_err() {
        // The RNG failing is not a reason to drop an alert: fall back to time + counter,
        // still unique within this process.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return format!("inc-{:x}-{n:x}", crate::store::now_ms());
    }
    format!("inc-{}", crate::secret::hex_lower(r))
}
