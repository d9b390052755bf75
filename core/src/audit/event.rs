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

/// Where an access came from, beside what it was: the client's address, the session and the
/// gateway's request id, where known. On the web the session is the id hash (as in `logout`);
/// on the SSH bastion it is the connection's session id, the same in every record of that
/// connection (authentication steps, decisions, sessions, transfers, forwards). Absent fields
/// are left out of the record.
/// What the answer to one allowed web request came to: its status, the body bytes sent, and
/// milliseconds from the request's head to the end of the body (or the client going away).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub request_id: String,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One step of an SSH login, as `ssh_auth` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SshAuthStep {
    /// A registered key signed the login.
    KeyAccepted,
    /// The key offered is not one of the user's registered keys (or the user is unknown).
    KeyRefused,
    /// The second factor verified.
    TotpOk,
    /// A well-formed code that did not verify.
    TotpFailed,
    /// A response that is not a code at all (empty, too long, not digits).
    TotpMalformed,
    /// A code already used (on either door): refused, not counted as a guess.
    TotpReplayed,
    /// Refused while a throttling delay runs (`detail` says which counter and how long).
    Throttled,
    /// Refused: the user at this address, or the address, is locked out (an alert; `detail`
    /// says which and for how long).
    LockedOut,
    /// Refused: the account is locked by an administrator.
    AccountLocked,
}

/// What a session channel asked the target for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SshRequest {
    Shell,
    Exec,
    /// Legacy SCP: an exec of `scp -t` / `scp -f`.
    Scp,
    Subsystem,
}

/// How a file moved through the bastion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileProtocol {
    Scp,
    Sftp,
}

/// Which way a file moved, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferDirection {
    Upload,
    Download,
}

/// Why the bastion refused something regardless of policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SshRefusal {
    AgentForwarding,
    X11Forwarding,
    RemoteForwarding,
    StreamLocalForwarding,
    /// A forward request that is not a host and port.
    MalformedForward,
    /// The session recording cannot be written: the session is refused (fail closed).
    RecordingUnavailable,
    /// The target could not be reached or refused the bastion's credential.
    TargetUnreachable,
    /// The account was locked after the login: no new session on the live connection.
    AccountLocked,
    /// The user was removed from `users.toml` after the login.
    UserRemoved,
    /// The SSH key the connection logged in with was removed from `users.toml`.
    SshKeyRemoved,
    /// Every authenticated-connection slot is taken.
    NoConnectionSlot,
    /// The shared session store refused to register the connection.
    SessionStoreUnavailable,
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
    /// A throttling counter reached its lock (an alert): `key` is `user:NAME@ADDRESS` (the
    /// user at one address) or `addr:ADDRESS` (every user at one address).
    Lockout {
        key: String,
        failures: u64,
        locked_secs: u64,
        incident_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_addr: Option<IpAddr>,
    },
    /// Failures of one user from several addresses reached the alert threshold (an alert):
    /// each address that failed for the user now waits up to `max_delay_secs` between
    /// guesses. Not a lockout: addresses that have not failed are not slowed.
    UserThrottled {
        user: String,
        failures: u64,
        max_delay_secs: u64,
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
        /// The just-in-time grant without which it would not be allowed, and its reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant_reason: Option<String>,
        /// Where the request came from, when the deciding component knows it.
        #[serde(flatten)]
        context: AccessContext,
    },
    /// What the answer to an allowed web request came to, one record per request (written
    /// by earlier versions; read, no longer written: see `RequestsCompleted`). Joined to its
    /// `access_allowed` record by `request_id` within the web `session` (the id's hash).
    RequestCompleted {
        session: String,
        request_id: String,
        status: u16,
        bytes: u64,
        duration_ms: u64,
    },
    /// What the answers to allowed web requests of web `session` came to, several at once:
    /// a connection gathers its answers and writes them every 64, after a second while it
    /// serves, when it goes quiet and when it closes (one record for a page's requests, not
    /// one per request). Each answer joins its `access_allowed` record by `request_id`.
    RequestsCompleted {
        session: String,
        answers: Vec<Answer>,
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
    /// Retention removed whole segments older than `retention_days`; a signed checkpoint of
    /// the last removed record (`through_seq`) keeps the rest verifiable.
    AuditRetention {
        removed: Vec<String>,
        through_seq: u64,
        retention_days: u32,
    },
    /// The audit machinery itself raised an alert: a log that fails verification at
    /// start-up, a retention or shipping failure.
    AuditAlert {
        alert: String,
        detail: String,
        incident_id: String,
    },
    /// An SSH authentication step (key, second factor, lockout). A refusal at a lockout is an
    /// alert and carries an incident id. The outcome of the login as a whole is the
    /// authenticator's `login_success` / `login_failure`.
    SshAuth {
        user: String,
        /// The target named in the SSH user name.
        target: String,
        step: SshAuthStep,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incident_id: Option<String>,
        /// What the step found, where it says more than `step` (a lockout: which counter,
        /// how many failures, how long).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// An authenticated SSH connection begins (one per connection, however many sessions it
    /// multiplexes).
    SshConnectionOpen {
        user: String,
        target: String,
        login: String,
        /// How the user authenticated (`ssh-key+totp`, `ssh-key`).
        method: String,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// An authenticated SSH connection ended, and why (client, revoked, time limit, shutdown).
    SshConnectionClose {
        user: String,
        target: String,
        reason: String,
        #[serde(flatten)]
        context: AccessContext,
    },
    SshSessionStart {
        user: String,
        target: String,
        login: String,
        recording_id: String,
        request: SshRequest,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
        /// The policy action it was allowed as (`ssh`, `sftp`).
        action: String,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// A session channel ended: the target's exit status or signal when it sent one, and why
    /// the bastion saw it end.
    SshSessionEnd {
        user: String,
        target: String,
        login: String,
        recording_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_status: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_signal: Option<String>,
        reason: String,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// A file moved through SCP or SFTP, as far as the bastion could observe it: `bytes` went
    /// in `direction` (seen from the client) for the file `path`.
    SshFileTransfer {
        user: String,
        target: String,
        login: String,
        recording_id: String,
        protocol: FileProtocol,
        path: String,
        direction: TransferDirection,
        bytes: u64,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// A local forward (`ssh -L`) to `destination` (`host:port`, opened from the target):
    /// allowed and opened, or refused.
    PortForward {
        user: String,
        target: String,
        login: String,
        destination: String,
        allowed: bool,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// An opened forward closed, with the bytes it carried each way.
    PortForwardEnd {
        user: String,
        target: String,
        login: String,
        destination: String,
        bytes_up: u64,
        bytes_down: u64,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// Something the bastion refuses whatever the policy says, or could not provide.
    SshRefused {
        user: String,
        target: String,
        reason: SshRefusal,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// A target presented a host key other than its pinned one (an alert: a man in the
    /// middle, or a rebuilt host): `presented` is its type and SHA-256 fingerprint.
    SshHostKeyMismatch {
        user: String,
        target: String,
        presented: String,
        incident_id: String,
        #[serde(flatten)]
        context: AccessContext,
    },
    AdminAction {
        actor: String,
        action: String,
        subject: String,
        outcome: Outcome,
    },
    /// A session without a terminal reached `[recording] stream_cap` in one `direction`
    /// (`output` or `input`): the session goes on, the rest of that direction is counted but
    /// not recorded (an alert).
    RecordingCapped {
        user: String,
        target: String,
        login: String,
        recording_id: String,
        direction: String,
        cap_bytes: u64,
        incident_id: String,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// A reviewer read recordings: `action` is `list` (with the filter in `detail`),
    /// `play`, `export`, `screens`, `watch` or `timeline`; written before anything is shown,
    /// so a read that cannot be audited does not happen.
    /// `actor` is `cli:USER` (the CLI) or `review:USER` (the reviewer console, with the
    /// reviewer's address, web session and request id in `context`; its actions are `list`,
    /// `open`, `replay`, `watch` and `export`).
    RecordingAccess {
        actor: String,
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recording_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        outcome: Outcome,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// A reviewer (holder of `gatehouse:terminate`) ended a live session with `reason`:
    /// an SSH connection closed (`kind` `ssh`, `session` the connection's session id) or a
    /// web session revoked (`kind` `web`, `session` its id hash). Written before the session
    /// is ended: a termination that cannot be audited does not happen.
    SessionTerminated {
        by: String,
        user: String,
        kind: String,
        recording_id: String,
        session: String,
        reason: String,
        #[serde(flatten)]
        context: AccessContext,
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
    /// An SSO provider vouched for a user: the first factor of a web login. The login itself
    /// is the `login_success` that follows the second factor; `second_factor` says which one
    /// it will be (`totp`, `totp-enrolment`) or why it is skipped (`skipped: ...`, when
    /// `trust_mfa` is set and the ID token's `amr` proves a second factor).
    SsoAuthenticated {
        provider: String,
        issuer: String,
        subject: String,
        user: String,
        groups: Vec<String>,
        amr: Vec<String>,
        second_factor: String,
        client_addr: Option<IpAddr>,
    },
    /// A refused SSO login. `check` names what failed (`state`, `binding`, `iss`, `aud`,
    /// `azp`, `exp`, `iat`, `nonce`, `alg`, `signature`, `kid`, `email_verified`, `name_taken`,
    /// ...; see `SsoCheck`), `reason` says more. Neither is shown to the user.
    SsoFailure {
        provider: Option<String>,
        user: Option<String>,
        check: String,
        reason: String,
        client_addr: Option<IpAddr>,
    },
    /// A live web session presented on another host than the one it was issued to (a cookie
    /// carried to another app host); refused like no session. `session` is the id's hash.
    SessionHostMismatch {
        user: String,
        /// Where it was presented (lowercase, no port).
        host: String,
        /// Where it was issued (`None`: not a web session).
        issued_for: Option<String>,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// A WebSocket upgrade refused because its `Origin` is not the app's own nor one of its
    /// `allowed_origins` (cross-site WebSocket hijacking); answered 403.
    WebsocketOriginRefused {
        user: String,
        app: String,
        /// The `Origin` sent (or `multiple` when several were).
        origin: String,
        #[serde(flatten)]
        context: AccessContext,
    },
    /// An HTTP/2 client broke the protocol the way resource-exhaustion attacks do; its
    /// connection was closed. Rate-limited: `suppressed` counts the records of this kind
    /// left out since the last one written.
    ProtocolAbuse {
        kind: AbuseKind,
        client_addr: Option<IpAddr>,
        suppressed: u64,
    },
    /// A just-in-time grant was made: `user` may use `object` (`group:NAME` or a pattern) for
    /// `action` until `expires_at` (RFC 3339), because `reason`; `by` made it.
    GrantCreated {
        grant_id: String,
        user: String,
        object: String,
        action: String,
        reason: String,
        expires_at: String,
        by: String,
    },
    /// A grant was revoked before its expiry.
    GrantRevoked {
        grant_id: String,
        user: String,
        object: String,
        by: String,
    },
    /// A grant reached its expiry (recorded by each running instance as it drops it).
    GrantExpired {
        grant_id: String,
        user: String,
        object: String,
    },
    /// A live session that only a grant allowed (an SSH session or forward, a WebSocket)
    /// was ended because the grant `ended` (`expired`, `revoked`, `overridden by a deny
    /// rule`).
    GrantSessionEnded {
        grant_id: String,
        user: String,
        object: String,
        action: String,
        ended: String,
        #[serde(flatten)]
        context: AccessContext,
    },
}

/// The kind of a [`AuditEvent::ProtocolAbuse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbuseKind {
    /// Streams opened and reset at once, faster than they can be served (CVE-2023-44487).
    Http2RapidReset,
    /// A header block split into endless CONTINUATION frames (CVE-2024-27316 and kin).
    Http2ContinuationFlood,
    /// More streams than allowed at once, again and again (the refusals piled up).
    Http2StreamFlood,
    /// Endless tiny DATA frames.
    Http2DataFlood,
    /// Another limit of the HTTP/2 server (PING or SETTINGS floods, an HPACK bomb).
    Http2Flood,
    /// Any other protocol violation that made the server close the connection.
    Http2ProtocolError,
}

impl AbuseKind {
    /// The snake_case name (as in the record).
    pub fn as_str(self) -> &'static str {
        match self {
            AbuseKind::Http2RapidReset => "http2_rapid_reset",
            AbuseKind::Http2ContinuationFlood => "http2_continuation_flood",
            AbuseKind::Http2StreamFlood => "http2_stream_flood",
            AbuseKind::Http2DataFlood => "http2_data_flood",
            AbuseKind::Http2Flood => "http2_flood",
            AbuseKind::Http2ProtocolError => "http2_protocol_error",
        }
    }
}

impl AuditEvent {
    /// The incident id of an alerting event (denies, lockouts, host-key mismatches).
    pub fn incident_id(&self) -> Option<&str> {
        match self {
            AuditEvent::AccessDenied { incident_id, .. }
            | AuditEvent::Lockout { incident_id, .. }
            | AuditEvent::UserThrottled { incident_id, .. }
            | AuditEvent::AuditAlert { incident_id, .. } => Some(incident_id),
            AuditEvent::SshAuth {
                incident_id: Some(id),
                ..
            }
            | AuditEvent::SshHostKeyMismatch {
                incident_id: id, ..
            }
            | AuditEvent::RecordingCapped {
                incident_id: id, ..
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
            AuditEvent::UserThrottled { .. } => "user_throttled",
            AuditEvent::Logout { .. } => "logout",
            AuditEvent::SessionRevoked { .. } => "session_revoked",
            AuditEvent::AccessAllowed { .. } => "access_allowed",
            AuditEvent::RequestCompleted { .. } => "request_completed",
            AuditEvent::RequestsCompleted { .. } => "requests_completed",
            AuditEvent::AccessDenied { .. } => "access_denied",
            AuditEvent::PolicyReload { .. } => "policy_reload",
            AuditEvent::AuditRetention { .. } => "audit_retention",
            AuditEvent::AuditAlert { .. } => "audit_alert",
            AuditEvent::SshAuth { .. } => "ssh_auth",
            AuditEvent::SshConnectionOpen { .. } => "ssh_connection_open",
            AuditEvent::SshConnectionClose { .. } => "ssh_connection_close",
            AuditEvent::SshSessionStart { .. } => "ssh_session_start",
            AuditEvent::SshSessionEnd { .. } => "ssh_session_end",
            AuditEvent::SshFileTransfer { .. } => "ssh_file_transfer",
            AuditEvent::PortForward { .. } => "port_forward",
            AuditEvent::PortForwardEnd { .. } => "port_forward_end",
            AuditEvent::SshRefused { .. } => "ssh_refused",
            AuditEvent::SshHostKeyMismatch { .. } => "ssh_host_key_mismatch",
            AuditEvent::AdminAction { .. } => "admin_action",
            AuditEvent::RecordingCapped { .. } => "recording_capped",
            AuditEvent::RecordingAccess { .. } => "recording_access",
            AuditEvent::SessionTerminated { .. } => "session_terminated",
            AuditEvent::PreauthRefused { .. } => "preauth_refused",
            AuditEvent::SsoAuthenticated { .. } => "sso_authenticated",
            AuditEvent::SsoFailure { .. } => "sso_failure",
            AuditEvent::SessionHostMismatch { .. } => "session_host_mismatch",
            AuditEvent::WebsocketOriginRefused { .. } => "websocket_origin_refused",
            AuditEvent::ProtocolAbuse { .. } => "protocol_abuse",
            AuditEvent::GrantCreated { .. } => "grant_created",
            AuditEvent::GrantRevoked { .. } => "grant_revoked",
            AuditEvent::GrantExpired { .. } => "grant_expired",
            AuditEvent::GrantSessionEnded { .. } => "grant_session_ended",
        }
    }
}

/// When a record must be on disk relative to the action it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Confirmed once the kernel holds it (a crash of the process loses nothing); forced to
    /// disk within [`SYNC_INTERVAL`](super::SYNC_INTERVAL) with the records around it. Per-
    /// request records: an fsync per proxied request would put a disk flush on its path.
    GroupCommit,
    /// On disk (fdatasync) before the action proceeds: session-level records (logins,
    /// logouts, session start and end, grants, administrative actions, terminations).
    Synced,
}

impl AuditEvent {
    /// Per-request access decisions are group-committed; everything else (session-level
    /// events, and any event kind added later) is synced before the action proceeds.
    pub fn durability(&self) -> Durability {
        match self {
            AuditEvent::AccessAllowed { .. }
            | AuditEvent::AccessDenied { .. }
            | AuditEvent::RequestCompleted { .. }
            | AuditEvent::RequestsCompleted { .. } => Durability::GroupCommit,
            _ => Durability::Synced,
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod recording_tests;
