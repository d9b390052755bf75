//! Authorization of proxied requests with the casbin need-to-know policy.
//!
//! Threat: a request forwarded without a decision, or forwarded to another app or path than
//! the one decided on; a decision nobody can later account for. Mitigation: [`Permit`] has
//! private fields, is made only by [`authorize`] from an [`Authenticated`] proof and the
//! core's audited `Permit`, and carries the app, the normalised target and the identity
//! itself, so `proxy::forward` (which requires it) forwards exactly what was decided. The
//! object is `app:<name><normalised path>` (the path the upstream reads), the action the
//! HTTP method; deny wins; the decision is in the audit log before a byte goes upstream, and
//! a decision that cannot be audited is a refusal.

use gatehouse_core::audit::AuditLog;
use gatehouse_core::policy::{self, AccessContext, PolicyHandle, Refusal};
use http::Method;
use http::uri::PathAndQuery;

use crate::authn::Authenticated;
use crate::routes::App;

/// Proof that a request for `app` + `target` by `who` was allowed. It borrows the app from
/// the routes (a reference count shared by every worker thread would otherwise move between
/// them twice per request).
#[derive(Debug)]
pub struct Permit<'a> {
    app: &'a App,
    target: PathAndQuery,
    who: Authenticated,
    decision: policy::Permit,
}

impl Permit<'_> {
    pub fn app(&self) -> &App {
        self.app
    }

    /// Normalised path and the original query: what the upstream receives.
    pub fn target(&self) -> &PathAndQuery {
        &self.target
    }

    /// Who is allowed.
    pub fn who(&self) -> &Authenticated {
        &self.who
    }

    /// The allowing policy line.
    pub fn rule(&self) -> &str {
        self.decision.rule()
    }

    /// The watch on the grant without which this would not be allowed (a long-lived
    /// WebSocket ends with it); `None` when the policy file alone allowed it.
    pub fn grant_watch(&self, policy: &std::sync::Arc<PolicyHandle>) -> Option<policy::GrantWatch> {
        policy.watch_grant(self.who.identity(), &self.decision)
    }
}

/// The request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// The policy denies; the 403 page shows the incident id (the alert is already logged).
    #[error("access denied (incident {incident_id})")]
    Policy { user: String, incident_id: String },
    /// The decision could not be audited: refuse (503).
    #[error("audit log unavailable")]
    Audit {
        user: String,
        #[source]
        source: gatehouse_core::AuditError,
    },
}

/// The policy object of a request: `app:<name><path>`.
pub fn object(app: &str, path: &str) -> String {
    let mut o = String::with_capacity(4 + app.len() + path.len());
    o.push_str("app:");
    o.push_str(app);
    o.push_str(path);
    o
}

/// Decides (and audits) whether `who` may `method` the normalised `target` of `app`. The
/// audit record also carries `ctx` (the client's address and the request id), with the
/// session filled in here from `who`.
pub async fn authorize<'a>(
    who: Authenticated,
    app: &'a App,
    target: PathAndQuery,
    method: &Method,
    mut ctx: AccessContext,
    policy: &PolicyHandle,
    audit: &AuditLog,
) -> Result<Permit<'a>, Denied> {
    let obj = object(&app.name, target.path());
    ctx.session = Some(who.session().as_str().to_string());
    match policy
        .authorize_audited(who.identity(), &obj, method.as_str(), ctx, audit)
        .await
    {
        Ok(decision) => Ok(Permit {
            app,
            target,
            who,
            decision,
        }),
        Err(Refusal::Denied {
            denied,
            incident_id,
        }) => Err(Denied::Policy {
            user: denied.subject,
            incident_id,
        }),
        Err(Refusal::Audit(source)) => Err(Denied::Audit {
            user: who.identity().user().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_app_and_normalised_path() {
        assert_eq!(object("wiki", "/a/b"), "app:wiki/a/b");
        assert_eq!(object("demo", "/"), "app:demo/");
    }
}
