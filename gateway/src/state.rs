//! What the request path reads, built once at bind: the gateway-wide [`State`] and what one
//! connection's requests share ([`ConnState`]). Its own module so the handler and the
//! `/.gatehouse/` endpoints both depend on it rather than on each other.

mod login;
mod pending;
mod review;
mod throttle;

use std::sync::Arc;

use crate::abuse::AbuseTrace;
use crate::conn::ConnShared;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::request_id::RequestIds;
use crate::revoke::Tunnels;
use crate::routes::Routes;
use crate::services::{Services, StoreHealth};
use crate::web_sessions::WebSessions;

pub use login::LoginCtx;
pub use pending::{EnrolProof, PendingEnrolment, PendingSsoTotp};
pub use review::{CHECKPOINT_EVERY, ReviewCtx};

/// Everything the handler reads; built once at bind.
#[derive(Debug)]
pub struct State {
    pub routes: Routes,
    pub proxy: Proxy,
    pub metrics: Arc<Metrics>,
    pub ids: RequestIds,
    /// Metrics label for requests that matched no app.
    pub no_app: Arc<str>,
    pub services: Services,
    pub health: Arc<StoreHealth>,
    pub tunnels: Arc<Tunnels>,
    pub login: LoginCtx,
    /// What the reviewer console needs besides the services.
    pub review: ReviewCtx,
    /// The rate limiter of the HTTP/2 abuse audit trace.
    pub abuse: AbuseTrace,
    /// Web sessions registered as recordings.
    pub web_sessions: Arc<WebSessions>,
}

/// What a connection's requests share: the gateway's state and the connection's, behind one
/// reference counted only by this connection's thread (the gateway-wide `Arc<State>`'s count
/// would otherwise move between worker threads twice per request).
#[derive(Debug)]
pub struct ConnState {
    pub state: Arc<State>,
    pub conn: Arc<ConnShared>,
}
