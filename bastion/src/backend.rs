//! The bastion's view of identity, lockouts, policy and audit, as one small trait the binary
//! implements on top of `gatehouse-core`.
//!
//! Threat: a bastion that opens a target without a policy decision, or acts on an access that
//! could not be audited. Mitigation: [`Backend::authorize`] returns a [`Decision`] that the
//! bastion turns into a [`Permit`] (private fields, minted only in this crate when the decision
//! allows); opening a target takes a `&Permit`. [`Backend::audit`] errors refuse the action
//! being recorded. Every backend error is a refusal (fail closed).

pub mod core;
pub mod testing;

use std::net::SocketAddr;

use async_trait::async_trait;
use russh::keys::PublicKey;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::error::BackendError;
use crate::registry::SessionInfo;

/// Result of checking a TOTP code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpOutcome {
    /// The code is valid for the current step and had not been used.
    Valid,
    /// The code is wrong (or the user has no TOTP secret).
    Invalid,
    /// The code was already used (replay).
    Replayed,
    /// Too many failures: the user or client is locked out.
    Locked,
}

/// Why an authentication step failed; the backend decides what counts towards a lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFailure {
    UnknownKey,
    /// A well-formed code that did not verify ([`Backend::check_totp`] said `Invalid`).
    BadTotp,
    /// A response that is not a code at all (empty, too long, not digits); never reached
    /// [`Backend::check_totp`].
    MalformedTotp,
    ReplayedTotp,
    BadUserName,
    Locked,
}

/// What a user wants to do on `ssh:<target>/<login>`; the policy action names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SshAction {
    /// Shell or exec.
    Ssh,
    /// The SFTP subsystem or SCP.
    Sftp,
    /// A direct-tcpip (local, `-L`) forward.
    PortForward,
}

impl SshAction {
    /// The policy's action string.
    pub fn as_str(self) -> &'static str {
        match self {
            SshAction::Ssh => "ssh",
            SshAction::Sftp => "sftp",
            SshAction::PortForward => "port-forward",
        }
    }
}

/// A policy decision as the backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The deciding rule, for the audit record (`None` when no rule matched: default deny).
    pub rule: Option<String>,
}

/// Proof that the policy allowed `action` on `object` for `user`. Made only by this crate,
/// from an allowing [`Decision`]; required to open anything on a target.
#[derive(Debug, Clone)]
pub struct Permit {
    user: String,
    target: String,
    login: String,
    action: SshAction,
}

impl Permit {
    pub(crate) fn new(user: &str, target: &str, login: &str, action: SshAction) -> Self {
        Self {
            user: user.to_string(),
            target: target.to_string(),
            login: login.to_string(),
            action,
        }
    }
    pub fn user(&self) -> &str {
        &self.user
    }
    pub fn target(&self) -> &str {
        &self.target
    }
    pub fn login(&self) -> &str {
        &self.login
    }
    pub fn action(&self) -> SshAction {
        self.action
    }
}

/// What the bastion refuses outright, whatever the policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusedFeature {
    AgentForwarding,
    X11Forwarding,
    RemoteForwarding,
    StreamLocalForwarding,
    Tunnel,
    Password,
}

/// An audit event from the bastion. Events with [`BastionEvent::is_alert`] also raise an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BastionEvent {
    AuthSucceeded {
        user: String,
        client: SocketAddr,
        target: String,
        login: String,
        totp: bool,
    },
    AuthFailed {
        user: String,
        client: SocketAddr,
        reason: AuthFailure,
    },
    AccessDenied {
        user: String,
        client: SocketAddr,
        object: String,
        action: SshAction,
        rule: Option<String>,
    },
    HostKeyMismatch {
        user: String,
        target: String,
        presented: String,
    },
    TargetUnreachable {
        user: String,
        target: String,
        error: String,
    },
    Refused {
        user: String,
        client: SocketAddr,
        target: String,
        feature: RefusedFeature,
    },
    SessionStarted {
        session_id: String,
        recording_id: String,
        user: String,
        client: SocketAddr,
        target: String,
        login: String,
        action: SshAction,
        /// `shell`, `exec: CMD`, `subsystem: sftp`, `scp`.
        kind: String,
    },
    SessionEnded {
        session_id: String,
        recording_id: String,
        user: String,
        target: String,
        reason: String,
    },
    ForwardOpened {
        session_id: String,
        user: String,
        target: String,
        host: String,
        port: u32,
    },
    ForwardClosed {
        session_id: String,
        user: String,
        target: String,
        host: String,
        port: u32,
        bytes_up: u64,
        bytes_down: u64,
    },
    Revoked {
        user: String,
        sessions: usize,
    },
}

impl BastionEvent {
    /// Denied access, lockouts and host-key mismatches raise an alert.
    pub fn is_alert(&self) -> bool {
        matches!(
            self,
            BastionEvent::AccessDenied { .. }
                | BastionEvent::HostKeyMismatch { .. }
                | BastionEvent::AuthFailed {
                    reason: AuthFailure::Locked,
                    ..
                }
        )
    }
}

/// Identity, lockouts, policy and audit as the bastion needs them.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The user's registered SSH public keys; empty for an unknown or disabled user.
    async fn authorized_keys(&self, user: &str) -> Result<Vec<PublicKey>, BackendError>;
    /// Checks a TOTP code (replay protection and rate limiting included). A backend may count
    /// the failures it sees here itself; [`Backend::note_failure`] is called afterwards too.
    async fn check_totp(
        &self,
        user: &str,
        code: &str,
        client: SocketAddr,
    ) -> Result<TotpOutcome, BackendError>;
    /// Whether the user or the client address is locked out.
    async fn is_locked(&self, user: &str, client: SocketAddr) -> Result<bool, BackendError>;
    /// Notes a failed step (counts towards lockouts as the backend sees fit). Called for every
    /// failure, also those [`Backend::check_totp`] already saw: a backend that counts in
    /// `check_totp` must not count `BadTotp`/`ReplayedTotp` again here.
    async fn note_failure(
        &self,
        user: &str,
        client: SocketAddr,
        reason: AuthFailure,
    ) -> Result<(), BackendError>;
    /// Decides `action` on `object` (`ssh:<target>/<login>`) for `user`.
    async fn authorize(
        &self,
        user: &str,
        object: &str,
        action: SshAction,
    ) -> Result<Decision, BackendError>;
    /// Writes an audit event; an error refuses (or ends) what it records.
    async fn audit(&self, event: BastionEvent) -> Result<(), BackendError>;
    /// Users whose sessions must end now (revocation, lock, expired grant).
    fn revocations(&self) -> broadcast::Receiver<String>;
    /// An authenticated connection starts (`totp`: a second factor was checked). Registers it
    /// where `gatehouse session list` sees it; an error refuses the login (fail closed).
    async fn session_opened(&self, session: &SessionInfo, totp: bool) -> Result<(), BackendError> {
        let _ = (session, totp);
        Ok(())
    }
    /// The connection registered by [`Backend::session_opened`] ended.
    async fn session_closed(&self, session: &SessionInfo) {
        let _ = session;
    }
}
