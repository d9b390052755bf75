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

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gatehouse_core::policy::AccessContext;
use http::header::{ACCEPT, HeaderMap};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::authn::AuthnError;
use crate::authz::Denied;
use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::login::{self, LoginCtx, respond};
use crate::metrics::Metrics;
use crate::proxy::{ClientSide, Proxy};
use crate::revoke::Tunnels;
use crate::routes::{App, Routes};
use crate::services::{Services, StoreHealth};
use crate::web::cookie;
use crate::web::pages as web_pages;
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

impl RequestId {
    /// `{boot:08x}-{n:x}` as ASCII in a stack buffer (every request formats its id for the
    /// audit record; this skips the formatting machinery): the buffer and the used length.
    fn ascii(&self) -> ([u8; 25], usize) {
        let hex = |n: u64| {
            let n = (n & 0xf) as u8;
            if n < 10 { b'0' + n } else { b'a' + n - 10 }
        };
        let mut buf = [0u8; 25];
        for (i, slot) in buf.iter_mut().take(8).enumerate() {
            *slot = hex(u64::from(self.0) >> (28 - 4 * i));
        }
        buf[8] = b'-';
        let digits = (16 - (self.1.leading_zeros() / 4) as usize).max(1);
        for (i, slot) in buf.iter_mut().skip(9).take(digits).enumerate() {
            *slot = hex(self.1 >> (4 * (digits - 1 - i)));
        }
        (buf, 9 + digits)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (buf, len) = self.ascii();
        // Only ASCII hex digits and '-' were written.
        f.write_str(std::str::from_utf8(buf.get(..len).unwrap_or_default()).unwrap_or_default())
    }
}

/// Ids a thread takes from the shared counter at a time: the counter's cache line then moves
/// between worker threads once per block, not on every request.
const ID_BLOCK: u64 = 256;

thread_local! {
    /// This thread's current block: (owner, next id, end); see `RequestIds::next`.
    static ID_BLOCK_CURSOR: std::cell::Cell<(usize, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

impl RequestIds {
    fn next(&self) -> RequestId {
        // The address and the boot value: a later `RequestIds` at the same address (an
        // in-process restart) does not continue a block of the earlier one.
        let owner = (std::ptr::from_ref(self) as usize) ^ (self.boot as usize).rotate_left(32);
        let n = ID_BLOCK_CURSOR.with(|c| {
            let (o, next, end) = c.get();
            if o == owner && next < end {
                c.set((o, next + 1, end));
                next
            } else {
                let start = self.next.fetch_add(ID_BLOCK, Ordering::Relaxed);
                c.set((owner, start + 1, start + ID_BLOCK));
                start
            }
        });
        RequestId(self.boot, n)
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
    pub services: Services,
    pub health: Arc<StoreHealth>,
    pub tunnels: Arc<Tunnels>,
    pub login: LoginCtx,
}

/// What a connection's requests share: the gateway's state and the connection's, behind one
/// reference counted only by this connection's thread (the gateway-wide `Arc<State>`'s count
/// would otherwise move between worker threads twice per request).
#[derive(Debug)]
pub struct ConnState {
    pub state: Arc<State>,
    pub conn: Arc<ConnShared>,
}

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
    let (resp, app) = respond(state, conn, req, id).await;
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
    tracing::debug!(client.addr = %conn.peer, request_id = %id, status = status.as_u16(), reason = %why, "request refused");
    pages::error(status, &id.to_string(), close)
}

async fn respond<'s>(
    state: &'s State,
    conn: &Arc<ConnShared>,
    req: Request<Incoming>,
    id: RequestId,
) -> (Response<ResBody>, Option<&'s Arc<str>>) {
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
        let normal = normal.into_owned();
        let host = host.name.into_owned();
        // Boxed: the login pages' future is several KiB, and inline it would make every
        // proxied request's future (moved on each await) that much larger.
        return (
            Box::pin(login::serve(state, conn, req, &host, &normal, id)).await,
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
    let permit = match check(state, conn, &req, app, target, &authority, id).await {
        Ok(p) => p,
        Err(resp) => return (resp, Some(&app.name)),
    };
    let side = ClientSide {
        authority: &authority,
        conn,
        signer: &state.services.signer,
        tunnels: &state.tunnels,
    };
    match state.proxy.forward(req, &permit, side).await {
        Ok(resp) => (resp.map(ResBody::streamed), Some(&app.name)),
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
                Some(&app.name),
            )
        }
    }
}

const STORE_DOWN: &str = "Access is unavailable: the session store cannot be reached.";
const AUDIT_DOWN: &str = "Access is unavailable: the audit log cannot be written.";

/// Authenticates and authorizes a request for `app`: a [`authz::Permit`], or the answer.
async fn check<'s>(
    state: &'s State,
    conn: &ConnShared,
    req: &Request<Incoming>,
    app: &'s App,
    target: PathAndQuery,
    authority: &str,
    id: RequestId,
) -> Result<authz::Permit<'s>, Response<ResBody>> {
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, app = %app.name, reason = %why, "request refused: store down");
        return Err(login::unavailable(STORE_DOWN, id));
    }
    let who = match authn::authenticate(
        req.headers(),
        &state.services.authenticator,
        &conn.session_keys,
    )
    .await
    {
        Ok(w) => w,
        Err(AuthnError::NoSession { had_cookie }) => {
            let resp = unauthenticated(req.method(), req.headers(), &target);
            return Err(if had_cookie {
                respond::with_cookie(resp, cookie::clear_session())
            } else {
                resp
            });
        }
        Err(AuthnError::Unavailable(e)) => {
            tracing::error!(request_id = %id, app = %app.name, error = %crate::services::describe(&e), "request refused: session store unavailable");
            return Err(login::unavailable(STORE_DOWN, id));
        }
    };
    let s = &state.services;
    let ctx = AccessContext {
        client_addr: Some(conn.peer.ip()),
        session: None,
        request_id: Some(id.to_string()),
    };
    match authz::authorize(
        who,
        app,
        target.clone(),
        req.method(),
        ctx,
        &s.policy,
        &s.audit,
    )
    .await
    {
        Ok(p) => {
            tracing::debug!(request_id = %id, user = %p.who().identity().user(), app = %app.name, rule = p.rule(), decision = "allow", "access allowed");
            Ok(p)
        }
        Err(Denied::Policy { user, incident_id }) => {
            tracing::info!(request_id = %id, user = %user, app = %app.name, decision = "deny", incident_id = %incident_id, "access denied");
            let requested = format!("{} {}{}", req.method(), authority, target.path());
            Err(respond::html(web_pages::denied(&incident_id, &requested)))
        }
        Err(Denied::Audit { user, source: e }) => {
            tracing::error!(request_id = %id, user = %user, app = %app.name, error = %crate::services::describe(&e), "request refused: audit log unavailable");
            Err(login::unavailable(AUDIT_DOWN, id))
        }
    }
}

/// No session: browsers (GET/HEAD accepting HTML) go to the login page on this same host;
/// anything else (APIs, other methods) gets 401.
fn unauthenticated(
    method: &Method,
    headers: &HeaderMap,
    target: &PathAndQuery,
) -> Response<ResBody> {
    let browser = matches!(*method, Method::GET | Method::HEAD)
        && headers.get_all(ACCEPT).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("text/html"))
        });
    if browser {
        let location = format!(
            "{}?next={}",
            crate::web::LOGIN_PATH,
            respond::encode(target.as_str())
        );
        return respond::see_other(&location);
    }
    let mut resp = respond::empty(StatusCode::UNAUTHORIZED);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    *resp.body_mut() = ResBody::page("authentication required: sign in at /.gatehouse/login\n");
    resp
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn request_id_text_is_boot_then_counter_in_hex() {
        for (boot, n) in [
            (0u32, 0u64),
            (1, 1),
            (0xdead_beef, 0xff),
            (u32::MAX, u64::MAX),
            (0x0a0b_0c0d, 0x1_0000_0000),
        ] {
            assert_eq!(
                RequestId(boot, n).to_string(),
                format!("{boot:08x}-{n:x}"),
                "boot {boot:#x} n {n:#x}"
            );
        }
    }

    #[test]
    fn request_ids_are_unique_across_threads_and_instances() {
        let mut seen = HashSet::new();
        for _ in 0..2 {
            // A new instance (possibly at the same address) starts its own blocks.
            let ids = Arc::new(RequestIds::default());
            let all: Vec<Vec<String>> = (0..4)
                .map(|_| {
                    let ids = ids.clone();
                    std::thread::spawn(move || {
                        (0..1000)
                            .map(|_| ids.next().to_string())
                            .collect::<Vec<_>>()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap_or_default())
                .collect();
            let main: Vec<String> = (0..600).map(|_| ids.next().to_string()).collect();
            for id in all.into_iter().flatten().chain(main) {
                assert!(seen.insert(id.clone()), "duplicate request id {id}");
            }
        }
        assert_eq!(seen.len(), 2 * (4 * 1000 + 600));
    }
}
