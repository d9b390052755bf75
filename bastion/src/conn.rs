//! One SSH connection's state, shared by its connection task and its channel tasks: who
//! authenticated (core's [`VerifiedIdentity`], from authentication to the end), where they
//! asked to go, the connection's session id and client address (the [`AccessContext`] of
//! every audit record it causes), and the one target connection its channels share.
//!
//! Threat: a channel that opens something without a policy decision, a decision or an
//! action missing from the audit log, a user locked after login who keeps opening sessions.
//! Mitigation: [`Conn::authorize`] is the only way to a [`Permit`] here — it goes through
//! core's `PolicyHandle::authorize_audited` (allow and deny both audited with this
//! connection's context) after checking the identity is still active; a target is reached only
//! with a permit; any audit failure is a refusal.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use gatehouse_core::AuditError;
use gatehouse_core::audit::{AccessContext, AuditEvent, SshRefusal, new_incident_id};
use gatehouse_core::identity::VerifiedIdentity;
use gatehouse_core::policy::{GrantWatch, Lapse, Permit, Refusal};
use tokio::sync::{OnceCell, OwnedSemaphorePermit};
use tokio_util::task::TaskTracker;

use crate::auth::{Destination, Selection, SshAction};
use crate::error::TargetError;
use crate::registry::Ending;
use crate::shared::Shared;
use crate::target::TargetConn;

/// An authenticated user and where they asked to go.
pub(crate) struct Authenticated {
    pub identity: VerifiedIdentity,
    pub selection: Selection,
    /// `None` for an unknown target (refused exactly like a policy denial).
    pub dest: Option<Destination>,
    /// A slot of the authenticated-connection cap, held until the connection ends.
    pub _slot: OwnedSemaphorePermit,
}

impl Authenticated {
    pub fn user(&self) -> &str {
        self.identity.user()
    }

    pub fn target(&self) -> &str {
        &self.selection.target
    }

    /// The login asked for (resolved for a one-login target), `""` when none.
    pub fn login(&self) -> &str {
        self.dest
            .as_ref()
            .map(|d| d.login.as_str())
            .or(self.selection.login.as_deref())
            .unwrap_or("")
    }
}

/// Why a channel was not authorized (already audited and logged).
#[derive(Debug)]
pub(crate) struct NotAuthorized;

pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    /// The session id: random, made at accept; the `session` of every audit record.
    pub id: String,
    pub client: SocketAddr,
    pub auth: OnceLock<Authenticated>,
    pub target: OnceCell<Arc<TargetConn>>,
    /// Ends the connection (revocation, shutdown, time limit, failure) with a reason.
    pub ending: Ending,
    pub channels: TaskTracker,
}

impl Conn {
    pub fn new(shared: Arc<Shared>, id: String, client: SocketAddr, ending: Ending) -> Conn {
        Conn {
            shared,
            id,
            client,
            auth: OnceLock::new(),
            target: OnceCell::new(),
            ending,
            channels: TaskTracker::new(),
        }
    }

    /// The client's address and the session id, for audit records.
    pub fn context(&self) -> AccessContext {
        AccessContext {
            client_addr: Some(self.client.ip()),
            session: Some(self.id.clone()),
            request_id: None,
        }
    }

    /// Writes an audit record; an error must refuse (or end) what it records.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.shared.services.audit.record(event).await.map(|_| ())
    }

    /// Audits a refusal; `detail` is free text for the record.
    pub async fn refused(&self, reason: SshRefusal, detail: Option<String>) {
        let (user, target) = match self.auth.get() {
            Some(a) => (a.user().to_string(), a.target().to_string()),
            None => (String::new(), String::new()),
        };
        tracing::info!(user = %user, reason = ?reason, "ssh request refused");
        let event = AuditEvent::SshRefused {
            user,
            target,
            reason,
            detail,
            context: self.context(),
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit a refusal");
        }
    }

    /// Asks the policy for `action` on this connection's destination. Allowed and denied are
    /// both audited (by core) with this connection's context; an unknown target is denied
    /// here (audited alike), as is an identity no longer active (user locked or removed).
    pub async fn authorize(&self, action: SshAction) -> Result<Permit, NotAuthorized> {
        let Some(authn) = self.auth.get() else {
            return Err(NotAuthorized);
        };
        let services = &self.shared.services;
        let Some(dest) = authn.dest.as_ref() else {
            self.deny_unknown(authn, action).await;
            return Err(NotAuthorized);
        };
        match services.authenticator.still_active(&authn.identity) {
            Ok(true) => {}
            Ok(false) => {
                self.refused(SshRefusal::AccountLocked, None).await;
                return Err(NotAuthorized);
            }
            Err(e) => {
                tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot re-check the user; denying");
                return Err(NotAuthorized);
            }
        }
        let object = dest.object();
        let decision = services
            .policy
            .authorize_audited(
                &authn.identity,
                &object,
                action.as_str(),
                self.context(),
                &services.audit,
            )
            .await;
        match decision {
            Ok(permit) => Ok(permit),
            Err(Refusal::Denied { incident_id, .. }) => {
                tracing::info!(user = %authn.user(), object = %object, action = action.as_str(), decision = "deny", incident_id = %incident_id, "ssh access denied");
                Err(NotAuthorized)
            }
            Err(Refusal::Audit(e)) => {
                tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit a decision; denying");
                Err(NotAuthorized)
            }
        }
    }

    /// The watch on the grant behind `permit`, when only a grant allowed it: the channel
    /// using the permit ends when it lapses (see [`Conn::grant_ended`]).
    pub fn watch_grant(&self, permit: &Permit) -> Option<GrantWatch> {
        let authn = self.auth.get()?;
        self.shared
            .services
            .policy
            .watch_grant(&authn.identity, permit)
    }

    /// Records that a grant's end ended a channel of this connection.
    pub async fn grant_ended(&self, lapse: &Lapse) {
        let user = self
            .auth
            .get()
            .map(|a| a.user().to_string())
            .unwrap_or_default();
        tracing::info!(user = %user, grant = %lapse.grant.id, object = %lapse.object, action = %lapse.action, ended = lapse.reason.as_str(), "ssh channel ended with its access grant");
        let event = AuditEvent::GrantSessionEnded {
            grant_id: lapse.grant.id.clone(),
            user,
            object: lapse.object.clone(),
            action: lapse.action.clone(),
            ended: lapse.reason.as_str().to_string(),
            context: self.context(),
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit the end of a grant's session");
        }
    }

    /// An unknown target: recorded as the policy's default deny would be.
    async fn deny_unknown(&self, authn: &Authenticated, action: SshAction) {
        let incident_id = new_incident_id();
        tracing::info!(user = %authn.user(), object = %authn.selection.object(), action = action.as_str(), decision = "deny", incident_id = %incident_id, "ssh access denied (unknown target)");
        let event = AuditEvent::AccessDenied {
            user: authn.user().to_string(),
            object: authn.selection.object(),
            action: action.as_str().to_string(),
            rule: None,
            incident_id,
            context: self.context(),
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit a denial");
        }
    }

    /// The target connection, opened on first use (several channels share it). A host-key
    /// mismatch is audited as an alert, any other failure as a refusal.
    pub async fn target(&self, permit: &Permit) -> Result<Arc<TargetConn>, TargetError> {
        let name = permit.ssh_target().map_or("", |(t, _)| t);
        let spec = self
            .shared
            .targets
            .get(name)
            .ok_or(TargetError::WrongPermit)?;
        let conn = self
            .target
            .get_or_try_init(|| async {
                TargetConn::connect(permit, spec, self.shared.configs.client.clone())
                    .await
                    .map(Arc::new)
            })
            .await;
        match conn {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                self.target_failed(name, &e).await;
                Err(e)
            }
        }
    }

    async fn target_failed(&self, target: &str, e: &TargetError) {
        let user = self
            .auth
            .get()
            .map(|a| a.user().to_string())
            .unwrap_or_default();
        match e {
            TargetError::HostKeyMismatch { presented } => {
                let incident_id = new_incident_id();
                tracing::error!(target = %target, presented = %presented, incident_id = %incident_id, "target host key mismatch");
                let event = AuditEvent::SshHostKeyMismatch {
                    user,
                    target: target.to_string(),
                    presented: presented.clone(),
                    incident_id,
                    context: self.context(),
                };
                if let Err(ae) = self.audit(event).await {
                    tracing::error!(error = %gatehouse_core::error_chain(&ae), "cannot audit a host-key mismatch");
                }
            }
            other => {
                tracing::warn!(target = %target, error = %gatehouse_core::error_chain(other), "target unreachable");
                self.refused(
                    SshRefusal::TargetUnreachable,
                    Some(gatehouse_core::error_chain(other)),
                )
                .await;
            }
        }
    }
}
