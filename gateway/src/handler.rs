//! The request path: guard -> route -> authenticate -> authorize -> forward.
//!
//! Threat: any request reaching an upstream without passing every check, or a check reading
//! another path or host than the upstream will. Mitigation: the steps run in this one order
//! on the normalised path; `forward` takes the [`crate::authz::Permit`] only `authorize`
//! makes; anything unexpected becomes a Gatehouse page (400/404/5xx), never a guess.
//! Per-request logging is at debug with structured fields only (no header maps).

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::metrics::Metrics;
use crate::proxy::{ClientSide, Proxy};
use crate::routes::Routes;
use crate::{authn, authz, guard, pages, path};

/// Reserved on every host, answered by Gatehouse, never proxied.
pub const RESERVED_PREFIX: &str = "/.gatehouse";

/// Request ids: a per-process random-ish prefix and a counter (unique, not secret).
#[derive(Debug)]
pub struct RequestIds {
    boot: u32,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        RequestIds {
            boot: nanos ^ std::process::id().rotate_left(16),
            next: AtomicU64::new(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RequestId(u32, u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:x}", self.0, self.1)
    }
}

impl RequestIds {
    fn next(&self) -> RequestId {
        RequestId(self.boot, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Everything the handler reads; built once at bind.
#[derive(Debug)]
pub struct State {
    pub routes: Routes,
    pub proxy: Proxy,
    pub metrics: Arc<Metrics>,
    pub ids: RequestIds,
    /// Metrics label for requests that matched no app.
    pub no_app: Arc<str>,
}

/// Serves one request; never fails (every failure is a page).
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnShared>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let start = Instant::now();
    let in_flight = conn.begin();
    let id = state.ids.next();
    let method = req.method().clone();
    let (resp, app) = respond(&state, &conn, req, id).await;
    let status = resp.status();
    let app = app.unwrap_or_else(|| state.no_app.clone());
    state
        .metrics
        .request(&app, status.as_u16(), start.elapsed());
    tracing::debug!(
        client.addr = %conn.peer,
        request_id = %id,
        app = %app,
        method = %method,
        status = status.as_u16(),
        "request"
    );
    Ok(resp.map(|b| b.with_guard(in_flight)))
}

fn refuse(
    status: StatusCode,
    id: RequestId,
    conn: &ConnShared,
    why: &dyn fmt::Display,
    close: bool,
) -> Response<ResBody> {
    tracing::debug!(client.addr = %conn.peer, request_id = %id, status = status.as_u16(), reason = %why, "request refused");
    pages::error(status, &id.to_string(), close)
}

async fn respond(
    state: &State,
    conn: &Arc<ConnShared>,
    req: Request<Incoming>,
    id: RequestId,
) -> (Response<ResBody>, Option<Arc<str>>) {
    let h1 = req.version() <= Version::HTTP_11;
    // Framing: a hostile message is refused and its connection closed (HTTP/1).
    let framing = if h1 {
        conn.verdicts.next_request()
    } else {
        Ok(())
    }
    .and_then(|()| guard::check_framing(req.version(), req.headers()));
    if let Err(e) = framing {
        return (refuse(e.status(), id, conn, &e, h1), None);
    }
    if req.method() == Method::CONNECT {
        return (
            refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                id,
                conn,
                &"connect method",
                h1,
            ),
            None,
        );
    }
    let host = match guard::host(req.uri(), req.headers()) {
        Ok(h) => h,
        Err(e) => return (refuse(e.status(), id, conn, &e, h1), None),
    };
    let normal = match path::normalize(req.uri().path()) {
        Ok(p) => p,
        Err(e) => return (refuse(StatusCode::BAD_REQUEST, id, conn, &e, false), None),
    };
    if normal
        .strip_prefix(RESERVED_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        return (
            refuse(StatusCode::NOT_FOUND, id, conn, &"reserved path", false),
            None,
        );
    }
    let Some(app) = state.routes.route(&host.name, &normal) else {
        return (
            refuse(StatusCode::NOT_FOUND, id, conn, &"no app for host", false),
            None,
        );
    };
    let target = match target(&req, normal) {
        Some(t) => t,
        None => {
            return (
                refuse(
                    StatusCode::BAD_REQUEST,
                    id,
                    conn,
                    &"bad request target",
                    false,
                ),
                None,
            );
        }
    };
    let authority = host.authority.to_owned();
    let (parts, body) = req.into_parts();
    let who = match authn::authenticate(&parts) {
        Ok(w) => w,
        Err(e) => match e {},
    };
    let permit = match authz::authorize(&who, app, target, &parts.method) {
        Ok(p) => p,
        Err(e) => match e {},
    };
    let req = Request::from_parts(parts, body);
    let side = ClientSide {
        ip: conn.peer.ip(),
        authority: &authority,
        conn,
    };
    match state.proxy.forward(req, &permit, side).await {
        Ok(resp) => (resp.map(ResBody::streamed), Some(app.name.clone())),
        Err(e) => {
            state.metrics.upstream_error(&app.name, e.kind());
            let cause = crate::tls::source_chain(&e);
            if e.is_internal() {
                tracing::error!(client.addr = %conn.peer, request_id = %id, app = %app.name, error = %e, cause = %cause, "proxy failed");
            } else {
                tracing::warn!(client.addr = %conn.peer, request_id = %id, app = %app.name, error = %e, cause = %cause, "upstream failed");
            }
            (
                pages::error(e.status(), &id.to_string(), false),
                Some(app.name.clone()),
            )
        }
    }
}

/// The upstream target: the normalised path with the query as the client sent it.
fn target(req: &Request<Incoming>, normal: Cow<'_, str>) -> Option<PathAndQuery> {
    match normal {
        Cow::Borrowed(_) => req.uri().path_and_query().cloned(),
        Cow::Owned(p) => {
            let s = match req.uri().query() {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            PathAndQuery::from_maybe_shared(bytes::Bytes::from(s)).ok()
        }
    }
}
