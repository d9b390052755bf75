//! Authentication and authorization of a routed request: the session (on this host), the
//! WebSocket origin, the policy. What comes out is a [`Permit`] or the answer to send.
//!
//! Threat: cross-site WebSocket hijacking — a page on another site opening a WebSocket to an
//! app with the user's cookie (`SameSite=Lax` does not cover WebSocket handshakes made from
//! a same-site subdomain, and some browsers send the cookie anyway), which the app then
//! serves as the user; a session cookie carried to another host. Mitigation: an upgrade whose
//! `Origin` is not the app's own origin (the authority asked for) nor one of its configured
//! `allowed_origins` is refused with 403 and audited (no `Origin` at all is a non-browser
//! client, which no page can drive); sessions are checked against the host (core).

use gatehouse_core::audit::{AccessContext, AuditEvent};
use gatehouse_core::error_chain;
use http::header::{ACCEPT, HeaderMap, HeaderValue, ORIGIN, WWW_AUTHENTICATE};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::authn::{self, AuthnError};
use crate::authz::{self, Denied, Permit};
use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::headers;
use crate::pages;
use crate::request_id::RequestId;
use crate::respond::{self, unavailable};
use crate::routes::App;
use crate::state::State;
use crate::web::cookie;

const STORE_DOWN: &str = "Access is unavailable: the session store cannot be reached.";
const AUDIT_DOWN: &str = "Access is unavailable: the audit log cannot be written.";

/// What a routed request asks for.
pub(super) struct Asked<'s, 'r> {
    pub app: &'s App,
    /// The normalised path and the query.
    pub target: PathAndQuery,
    /// The Host / `:authority` as sent.
    pub authority: &'r str,
    /// The host, lowercase and without port.
    pub host: &'r str,
}

/// Authenticates and authorizes a request: a [`Permit`], or the answer.
pub(super) async fn check<'s>(
    state: &'s State,
    conn: &ConnShared,
    req: &Request<Incoming>,
    asked: Asked<'s, '_>,
    id: RequestId,
) -> Result<Permit<'s>, Response<ResBody>> {
    let app = asked.app;
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, app = %app.name, reason = %why, "request refused: store down");
        return Err(unavailable(STORE_DOWN, id));
    }
    let s = &state.services;
    let ctx = AccessContext {
        client_addr: Some(conn.peer.ip()),
        session: None,
        request_id: Some(id.text()),
    };
    let who = match authn::authenticate(
        req.headers(),
        &s.authenticator,
        &conn.session_keys,
        asked.host,
    )
    .await
    {
        Ok(w) => w,
        Err(e) => return Err(not_authenticated(state, req, &asked, e, ctx, id).await),
    };
    if req.version() == Version::HTTP_11
        && headers::wants_websocket(req.headers())
        && let Some(origin) = foreign_origin(req.headers(), asked.authority, app)
    {
        tracing::warn!(request_id = %id, user = %who.identity().user(), app = %app.name, origin = %origin, "websocket refused: foreign origin");
        let mut ctx = ctx;
        ctx.session = Some(who.session().as_str().to_string());
        let record = AuditEvent::WebsocketOriginRefused {
            user: who.identity().user().to_string(),
            app: app.name.to_string(),
            origin,
            context: ctx,
        };
        return Err(match s.audit.record(record).await {
            Ok(_) => respond::error(StatusCode::FORBIDDEN, id, false),
            Err(e) => {
                tracing::error!(request_id = %id, error = %error_chain(&e), "request refused: audit log unavailable");
                unavailable(AUDIT_DOWN, id)
            }
        });
    }
    let Asked {
        target, authority, ..
    } = asked;
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
            Err(respond::html(pages::denied(&incident_id, &requested)))
        }
        Err(Denied::Audit { user, source: e }) => {
            tracing::error!(request_id = %id, user = %user, app = %app.name, error = %error_chain(&e), "request refused: audit log unavailable");
            Err(unavailable(AUDIT_DOWN, id))
        }
    }
}

/// The answer to a request without a usable session: the login (or a 401), a 503 when the
/// store or the audit log fails. A session of another host is audited first.
async fn not_authenticated(
    state: &State,
    req: &Request<Incoming>,
    asked: &Asked<'_, '_>,
    e: AuthnError,
    ctx: AccessContext,
    id: RequestId,
) -> Response<ResBody> {
    let had_cookie = match e {
        AuthnError::NoSession { had_cookie } => had_cookie,
        AuthnError::WrongHost(w) => {
            let audit = &state.services.audit;
            if let Err(e) = authn::record_wrong_host(audit, w, asked.host, ctx).await {
                tracing::error!(request_id = %id, error = %error_chain(&e), "request refused: audit log unavailable");
                return unavailable(AUDIT_DOWN, id);
            }
            true
        }
        AuthnError::Unavailable(e) => {
            tracing::error!(request_id = %id, app = %asked.app.name, error = %error_chain(&e), "request refused: session store unavailable");
            return unavailable(STORE_DOWN, id);
        }
    };
    let resp = unauthenticated(req.method(), req.headers(), &asked.target);
    if had_cookie {
        respond::with_cookie(resp, cookie::clear_session())
    } else {
        resp
    }
}

/// The `Origin` of a WebSocket upgrade when it is foreign: neither `https://<authority>`
/// (the app's own origin as the browser saw it) nor one of the app's `allowed_origins`.
/// `None` when it is allowed or absent (a non-browser client: no page can drive it).
fn foreign_origin(headers: &HeaderMap, authority: &str, app: &App) -> Option<String> {
    let mut all = headers.get_all(ORIGIN).iter();
    let origin = match (all.next(), all.next()) {
        (None, _) => return None,
        (Some(o), None) => o,
        (Some(_), Some(_)) => return Some("multiple".to_string()),
    };
    let Ok(text) = origin.to_str() else {
        return Some("(not visible ASCII)".to_string());
    };
    let own = text
        .strip_prefix("https://")
        .is_some_and(|rest| same_authority(rest, authority));
    if own
        || app
            .allowed_origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(text))
    {
        return None;
    }
    // Bounded: the record carries what was sent, not an unbounded header.
    Some(text.chars().take(200).collect())
}

/// Two authorities are the same origin authority: equal ignoring case, with `:443` (the
/// https default, which browsers leave out) the same as no port.
fn same_authority(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.strip_suffix(":443").unwrap_or(s).to_string();
    a.eq_ignore_ascii_case(b) || strip(a).eq_ignore_ascii_case(&strip(b))
}

/// No session: browsers (GET/HEAD accepting HTML) go to the login page on this same host;
/// anything else (APIs, other methods) gets 401 with a `WWW-Authenticate` challenge.
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
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(WWW_AUTHENTICATE, respond::CHALLENGE);
    *resp.body_mut() = ResBody::page("authentication required: sign in at /.gatehouse/login\n");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(allowed: &[&str]) -> App {
        App {
            name: "wiki".into(),
            upstream: "127.0.0.1:9".parse().unwrap(),
            allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn websocket_origins_table() {
        let a = app(&["https://tools.example.com"]);
        let table: &[(&[&str], &str, Option<&str>)] = &[
            // (Origin headers, authority asked, refused origin)
            (&[], "wiki.example:8443", None),
            (&["https://wiki.example:8443"], "wiki.example:8443", None),
            (&["https://WIKI.example:8443"], "wiki.example:8443", None),
            (&["https://wiki.example"], "wiki.example", None),
            (&["https://wiki.example"], "wiki.example:443", None),
            (&["https://wiki.example:443"], "wiki.example", None),
            (&["https://tools.example.com"], "wiki.example:8443", None),
            (&["https://TOOLS.example.com"], "wiki.example:8443", None),
            (
                &["https://evil.example"],
                "wiki.example:8443",
                Some("https://evil.example"),
            ),
            (
                &["http://wiki.example:8443"],
                "wiki.example:8443",
                Some("http://wiki.example:8443"),
            ),
            (
                &["https://wiki.example"],
                "wiki.example:8443",
                Some("https://wiki.example"),
            ),
            (
                &["https://wiki.example:8443.evil.example"],
                "wiki.example:8443",
                Some("https://wiki.example:8443.evil.example"),
            ),
            (&["null"], "wiki.example:8443", Some("null")),
            (
                &["https://wiki.example:8443", "https://evil.example"],
                "wiki.example:8443",
                Some("multiple"),
            ),
        ];
        for (origins, authority, want) in table {
            let mut h = HeaderMap::new();
            for o in *origins {
                h.append(ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            assert_eq!(
                foreign_origin(&h, authority, &a).as_deref(),
                *want,
                "{origins:?} on {authority}"
            );
        }
    }

    #[test]
    fn every_401_carries_a_challenge() {
        let target = PathAndQuery::from_static("/api");
        let r = unauthenticated(&Method::POST, &HeaderMap::new(), &target);
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], respond::CHALLENGE);
    }
}
