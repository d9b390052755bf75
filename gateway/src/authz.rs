//! Authorization seam.
//!
//! Threat: a request forwarded without a decision, or forwarded to another app or path than
//! the one decided on. Mitigation: [`Permit`] has private fields, is made only by
//! [`authorize`] from an [`Authenticated`] proof, and carries the app and the normalised
//! target itself, so `proxy::forward` (which requires a `Permit`) forwards exactly what was
//! decided. (casbin decisions land here next; for now every request is permitted.)

use std::sync::Arc;

use http::Method;
use http::uri::PathAndQuery;

use crate::authn::Authenticated;
use crate::routes::App;

/// Proof that a request for `app` + `target` was allowed.
#[derive(Debug)]
pub struct Permit {
    app: Arc<App>,
    target: PathAndQuery,
}

impl Permit {
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Normalised path and the original query: what the upstream receives.
    pub fn target(&self) -> &PathAndQuery {
        &self.target
    }
}

/// The request was denied.
#[derive(Debug, thiserror::Error)]
pub enum Denied {}

/// Decides whether `who` may `method` the normalised `target` (path + query) of `app`.
pub fn authorize(
    _who: &Authenticated,
    app: &Arc<App>,
    target: PathAndQuery,
    _method: &Method,
) -> Result<Permit, Denied> {
    Ok(Permit {
        app: app.clone(),
        target,
    })
}
