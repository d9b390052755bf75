//! The request path: guard -> route -> authenticate -> authorize -> forward.
//!
//! Threat: any request reaching an upstream without passing every check, or a check reading
//! another path or host than the upstream will; a store or audit outage read as a pass.
//! Mitigation: the steps run in this one order on the normalised path; `forward` takes the
//! [`crate::authz::Permit`] only `authorize` makes (from the session's verified identity and
//! an audited casbin decision); no session is a redirect to the login on the same host (or
//! 401 for APIs), a deny a 403 page with the incident id, a store or audit failure a 503
//! page; anything unexpected becomes a Gatehouse page (400/404/5xx), never a guess.
//! Per-request logging is at debug with structured fields only (no header maps).

mod check;

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use gatehouse_core::error_chain;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::body::{Done, ResBody};
use crate::conn::ConnShared;
use crate::proxy::ClientSide;
use crate::request_id::RequestId;
use crate::respond;
use crate::state::{ConnState, State};
use crate::web;
use crate::{guard, login, path};

/// Serves one request; never fails (every failure is a page).
pub async fn handle(
    cs: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let (state, conn) = (&*cs.state, &cs.conn);
    let start = Instant::now();
    let in_flight = conn.begin();
    let id = state.ids.next();
    let method = req.method().clone();
    let (resp, app) = serve(state, conn, req, id, start).await;
    let status = resp.status();
    let app = app.unwrap_or(&state.no_app);
    state.metrics.request(app, status.as_u16(), start.elapsed());
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
    Refused::log(status, id, conn, why, close).page(id)
}

/// A request refused before routing (already logged): its status, and whether its HTTP/1
/// connection must close.
struct Refused {
    status: StatusCode,
    close: bool,
}

impl Refused {
    fn log(
        status: StatusCode,
        id: RequestId,
        conn: &ConnShared,
        why: &dyn fmt::Display,
        close: bool,
    ) -> Refused {
        tracing::debug!(client.addr = %conn.peer, request_id = %id, status = status.as_u16(), reason = %why, "request refused");
        Refused { status, close }
    }

    fn page(self, id: RequestId) -> Response<ResBody> {
        respond::error(self.status, id, self.close)
    }
}

/// What the guard admitted: the host (lowercase, no port), the authority as sent, and the
/// normalised path.
struct Admitted<'r> {
    host: Cow<'r, str>,
    authority: &'r str,
    normal: Cow<'r, str>,
}

/// The checks before routing: framing (a hostile HTTP/1 message also closes its
/// connection), no CONNECT, one valid host, a path that normalises unambiguously.
fn admit<'r>(
    conn: &ConnShared,
    req: &'r Request<Incoming>,
    id: RequestId,
) -> Result<Admitted<'r>, Refused> {
    let h1 = req.version() <= Version::HTTP_11;
    let framing = if h1 {
        conn.verdicts.next_request()
    } else {
        Ok(())
    }
    .and_then(|()| guard::check_framing(req.version(), req.headers()));
    if let Err(e) = framing {
        return Err(Refused::log(e.status(), id, conn, &e, h1));
    }
    if req.method() == Method::CONNECT {
        let status = StatusCode::METHOD_NOT_ALLOWED;
        return Err(Refused::log(status, id, conn, &"connect method", h1));
    }
    let host = guard::host(req.uri(), req.headers())
        .map_err(|e| Refused::log(e.status(), id, conn, &e, h1))?;
    let normal = path::normalize(req.uri().path())
        .map_err(|e| Refused::log(StatusCode::BAD_REQUEST, id, conn, &e, false))?;
    Ok(Admitted {
        host: host.name,
        authority: host.authority,
        normal,
    })
}

async fn serve<'s>(
    state: &'s State,
    conn: &Arc<ConnShared>,
    req: Request<Incoming>,
    id: RequestId,
    start: Instant,
) -> (Response<ResBody>, Option<&'s Arc<str>>) {
    let admitted = match admit(conn, &req, id) {
        Ok(a) => a,
        Err(refused) => return (refused.page(id), None),
    };
    if web::is_reserved(&admitted.normal) {
        let (host, normal) = (admitted.host.into_owned(), admitted.normal.into_owned());
        // Boxed: the login pages' future is several KiB, and inline it would make every
        // proxied request's future (moved on each await) that much larger.
        return (
            Box::pin(login::serve(state, conn, req, &host, &normal, id)).await,
            None,
        );
    }
    let Some(app) = state.routes.route(&admitted.host, &admitted.normal) else {
        let status = StatusCode::NOT_FOUND;
        return (refuse(status, id, conn, &"no app for host", false), None);
    };
    let authority = admitted.authority.to_owned();
    let Some(target) = target(&req, admitted.normal) else {
        let status = StatusCode::BAD_REQUEST;
        return (refuse(status, id, conn, &"bad request target", false), None);
    };
    let asked = check::Asked {
        app,
        target,
        authority: &authority,
        host: &admitted.host,
    };
    let permit = match check::check(state, conn, &req, asked, id).await {
        Ok(p) => p,
        Err(resp) => return (resp, Some(&app.name)),
    };
    let side = ClientSide {
        authority: &authority,
        conn,
        signer: &state.services.signer,
        tunnels: &state.tunnels,
        policy: &state.services.policy,
        request_id: id,
    };
    let forwarded = state.proxy.forward(req, &permit, side).await;
    // The answer's status, bytes and duration go to its connection, which writes them in
    // `requests_completed` records.
    let done =
        |status: StatusCode| Done::new(conn, permit.into_session(), id, status.as_u16(), start);
    match forwarded {
        Ok(resp) => {
            let done = done(resp.status());
            (
                resp.map(|b| ResBody::streamed(b).with_done(done)),
                Some(&app.name),
            )
        }
        Err(e) => {
            state.metrics.upstream_error(&app.name, e.kind());
            let error = error_chain(&e);
            if e.is_internal() {
                tracing::error!(client.addr = %conn.peer, request_id = %id, app = %app.name, error = %error, "proxy failed");
            } else {
                tracing::warn!(client.addr = %conn.peer, request_id = %id, app = %app.name, error = %error, "upstream failed");
            }
            let resp = respond::error(e.status(), id, false);
            let done = done(resp.status());
            (resp.map(|b| b.with_done(done)), Some(&app.name))
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
