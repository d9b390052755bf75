//! The control protocol: how the CLI acts on a running `serve` whose store is in-process
//! (`memory://`), so `grant`, `session list|revoke` and `user lock` take effect at once on a
//! single node. The binary carries it over a Unix socket in the data directory; this module
//! holds the messages, their limits and what the server does with each (no sockets here).
//!
//! Threat: another local user driving the server (granting themselves access, revoking
//! sessions). Mitigation (in the binary): the socket sits in a directory only the server's
//! user can enter (0700) and is itself 0600, and each peer's uid (SO_PEERCRED) must be the
//! server's own: anyone else is refused and the refusal audited. Messages are one JSON line
//! each way, at most [`MAX_REQUEST`] / [`MAX_RESPONSE`] bytes, under [`DEADLINE`]; the server
//! serves at most [`MAX_CLIENTS`] at once. Every change is audited by the server as for the
//! Redis path (`grant_created`, `session_revoked`, ...).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditLog};
use crate::error::GrantError;
use crate::grant::{GrantSync, NewGrant};
use crate::policy::PolicyHandle;
use crate::store::{Grant, Session, Store};

/// The directory of the socket under the data directory (0700).
pub const SOCKET_DIR: &str = "control";
/// The socket's file name in it (0600).
pub const SOCKET_NAME: &str = "gatehouse.sock";
/// Longest request line (a grant's reason is at most 1,000 characters).
pub const MAX_REQUEST: usize = 16 * 1024;
/// Longest response line (a session or grant list).
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// A whole exchange (connect, request, answer) must finish within this.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Clients served at once; more are refused.
pub const MAX_CLIENTS: usize = 8;

/// Where the control socket of the server using `data_dir` is.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_DIR).join(SOCKET_NAME)
}

/// What the CLI asks. `by` names who asks (`cli:USER`); the server adds the peer's uid.
/// (`user lock` locks the users file itself, then asks for a `session_revoke`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    GrantAdd {
        user: String,
        object: String,
        #[serde(default)]
        action: Option<String>,
        duration_ms: u64,
        reason: String,
        by: String,
    },
    GrantList {},
    GrantRevoke {
        id: String,
        by: String,
    },
    SessionList {},
    SessionRevoke {
        user: String,
        by: String,
    },
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    Grant { grant: Grant },
    Grants { grants: Vec<Grant> },
    Sessions { sessions: Vec<Session> },
    Revoked { count: u64 },
    Error { message: String },
}

/// What the server acts with.
#[derive(Debug, Clone)]
pub struct Control {
    pub store: Arc<dyn Store>,
    pub policy: Arc<PolicyHandle>,
    pub audit: AuditLog,
    pub sync: GrantSync,
    pub max_grant: Duration,
}

impl Control {
    /// Serves one request from a peer already checked to be the server's own uid.
    pub async fn handle(&self, req: Request, uid: u32) -> Response {
        let actor = |by: &str| format!("{by} (uid {uid})");
        let result = match req {
            Request::GrantAdd {
                user,
                object,
                action,
                duration_ms,
                reason,
                by,
            } => {
                let asked = NewGrant {
                    user,
                    object,
                    action,
                    duration: Duration::from_millis(duration_ms),
                    reason,
                    granted_by: actor(&by),
                };
                self.grant_add(&asked).await
            }
            Request::GrantList {} => self.grants().await,
            Request::GrantRevoke { id, by } => {
                match crate::grant::revoke(self.store.as_ref(), &self.audit, &id, &actor(&by)).await
                {
                    // In force (or rather, out of force) before the answer.
                    Ok(grant) => self
                        .sync
                        .refresh()
                        .await
                        .map(|()| Response::Grant { grant }),
                    Err(e) => Err(e),
                }
            }
            Request::SessionList {} => match self.store.list_sessions().await {
                Ok(sessions) => Ok(Response::Sessions { sessions }),
                Err(e) => Err(GrantError::Store(e)),
            },
            Request::SessionRevoke { user, by } => self.revoke_user(&user, &actor(&by)).await,
        };
        result.unwrap_or_else(|e| Response::Error {
            message: crate::error_chain(&e),
        })
    }

    async fn grant_add(&self, asked: &NewGrant) -> Result<Response, GrantError> {
        let grant =
            crate::grant::add(self.store.as_ref(), &self.audit, self.max_grant, asked).await?;
        // In force on this node before the CLI is told.
        self.sync.refresh().await?;
        Ok(Response::Grant { grant })
    }

    async fn grants(&self) -> Result<Response, GrantError> {
        let grants = self.store.list_grants().await.map_err(GrantError::Store)?;
        Ok(Response::Grants { grants })
    }

    async fn revoke_user(&self, user: &str, by: &str) -> Result<Response, GrantError> {
        let count = self
            .store
            .revoke_user(user)
            .await
            .map_err(GrantError::Store)?;
        self.audit
            .record(AuditEvent::SessionRevoked {
                user: user.to_string(),
                count,
                by: by.to_string(),
            })
            .await
            .map_err(GrantError::Audit)?;
        Ok(Response::Revoked { count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line_and_unknown_fields_are_refused() {
        let r = Request::GrantAdd {
            user: "alice".into(),
            object: "app:wiki/*".into(),
            action: None,
            duration_ms: 3_600_000,
            reason: "line one".into(),
            by: "cli:root".into(),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"grant_list","admin":true}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"shutdown"}"#).is_err());
        let e = Response::Error {
            message: "no".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"status":"error","message":"no"}"#
        );
    }
}
