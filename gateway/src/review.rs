//! The reviewer console at `/.gatehouse/review` on the public host: recorded sessions (SSH
//! and web) listed and searched, a session's audit records, file transfers and request
//! timeline, SSH sessions replayed in the browser and live ones watched and ended.
//!
//! Threat: a console endpoint that forgets the authorization check (Warpgate's
//! CVE-2026-63330: a live-recording websocket without the admin check let any user watch
//! others' terminals); reads nobody can account for; a cross-site form ending sessions;
//! markup injection from what users typed; a 100 MB recording loaded whole.
//! Mitigation: [`serve`] is the console's only entry and runs [`gate`] before it even looks
//! at the path: the session (on the public host), then the policy (`gatehouse:review`, the
//! request's method as action) through core's audited decision, as for every proxied
//! request; non-holders get 403 with an incident id on every path under the prefix, known
//! or not. Every handler takes the [`Reviewer`] proof only [`gate`] mints (private fields),
//! so none can be reached without it; ending a session takes a [`Terminator`], minted from
//! a `Reviewer` by a second audited decision on `gatehouse:terminate`. Every read is a
//! `recording_access` record written before anything is shown (replays once per reviewer
//! session and recording per window), every termination a `session_terminated` record
//! with its reason before the session ends; an audit failure is a 503. POSTs carry a CSRF
//! token bound to the reviewer's session and a same-origin `Origin`. Pages escape every
//! value and run only our own script (`script-src 'self'`). The player fetches screens by
//! time range, rendered on the server by core's virtual terminal from a streamed read.

mod data;
mod live;
mod pages;
mod session;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use gatehouse_core::audit::{AccessContext, AuditEvent, Outcome};
use gatehouse_core::error_chain;
use gatehouse_core::policy::Refusal;
use gatehouse_core::recording::RecordingId;

use crate::authn::{self, Authenticated, AuthnError};
use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::pages::escape;
use crate::request_id::RequestId;
use crate::respond::{self, unavailable};
use crate::state::State;
use crate::web::cookie;

/// The console's prefix; everything under it passes [`gate`].
pub const REVIEW_PATH: &str = "/.gatehouse/review";
/// The policy object of the console.
pub const REVIEW_OBJECT: &str = "gatehouse:review";
/// The policy object of ending a live session.
pub const TERMINATE_OBJECT: &str = "gatehouse:terminate";

const STORE_DOWN: &str =
    "The reviewer console is unavailable: the session store cannot be reached.";
const AUDIT_DOWN: &str = "The reviewer console is unavailable: the audit log cannot be written.";

/// The console pages' policy: our stylesheet and script, fetches and live streams to
/// ourselves, forms to ourselves; nothing inline, never framed.
pub const CONSOLE_CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// True when the normalised `path` is the console's.
pub fn is_review(path: &str) -> bool {
    path.strip_prefix(REVIEW_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Proof that a request comes from a live session on the public host whose user the policy
/// allows `gatehouse:review` (decision audited). Made only by [`gate`].
pub(crate) struct Reviewer {
    who: Authenticated,
    ctx: AccessContext,
}

impl Reviewer {
    pub fn user(&self) -> &str {
        self.who.identity().user()
    }

    /// `review:USER`, the actor of the reviewer's audit records.
    pub fn actor(&self) -> String {
        format!("review:{}", self.user())
    }

    /// The reviewer's web session (id hash): CSRF binding, replay audit memory.
    pub fn session(&self) -> &str {
        self.who.session().as_str()
    }

    pub fn context(&self) -> AccessContext {
        self.ctx.clone()
    }
}

/// Proof that the reviewer may also end live sessions (`gatehouse:terminate`, audited).
/// Made only by [`may_terminate`].
pub(crate) struct Terminator<'r> {
    reviewer: &'r Reviewer,
}

impl Terminator<'_> {
    pub fn reviewer(&self) -> &Reviewer {
        self.reviewer
    }
}

/// Serves a request under [`REVIEW_PATH`]: the gate, then the route.
pub(crate) async fn serve(
    state: &State,
    conn: &ConnShared,
    req: Request<Incoming>,
    host: &str,
    path: &str,
    id: RequestId,
) -> Response<ResBody> {
    let reviewer = match gate(state, conn, &req, host, path, id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    route(state, &reviewer, req, path, id).await
}

/// Everything under the prefix, after the gate.
async fn route(
    state: &State,
    reviewer: &Reviewer,
    req: Request<Incoming>,
    path: &str,
    id: RequestId,
) -> Response<ResBody> {
    let rest = path.strip_prefix(REVIEW_PATH).unwrap_or_default();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = req.method() == Method::POST;
    let query = req.uri().query().unwrap_or_default().to_string();
    match rest {
        "" | "/" if get => pages::list(state, reviewer, &query, id).await,
        "/static/player.js" if get => private_asset(PLAYER_JS, "text/javascript; charset=utf-8"),
        "/static/review.css" if get => private_asset(REVIEW_CSS, "text/css; charset=utf-8"),
        "" | "/" | "/static/player.js" | "/static/review.css" => {
            respond::error(StatusCode::METHOD_NOT_ALLOWED, id, false)
        }
        _ => {
            let Some((rec, action)) = session_path(rest) else {
                return respond::error(StatusCode::NOT_FOUND, id, false);
            };
            match action {
                "" if get => session::page_of(state, reviewer, &rec, id).await,
                "/frames" if get => data::frames(state, reviewer, &rec, &query, id).await,
                "/export" if get => data::export(state, reviewer, &rec, id).await,
                "/live" if get => live::watch(state, reviewer, &rec, id).await,
                "/terminate" if post => live::terminate(state, reviewer, &rec, req, id).await,
                "" | "/frames" | "/export" | "/live" | "/terminate" => {
                    respond::error(StatusCode::METHOD_NOT_ALLOWED, id, false)
                }
                _ => respond::error(StatusCode::NOT_FOUND, id, false),
            }
        }
    }
}

/// A console asset: served behind the gate, so cached by the browser only (never by a
/// shared cache).
fn private_asset(body: &'static str, content_type: &'static str) -> Response<ResBody> {
    let mut resp = respond::asset(body, content_type);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    resp
}

/// `/s/<id><action>`: a checked recording id and the rest.
fn session_path(rest: &str) -> Option<(RecordingId, &str)> {
    let rest = rest.strip_prefix("/s/")?;
    let (id, action) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, ""),
    };
    Some((RecordingId::parse(id).ok()?, action))
}

/// The check every request under the prefix passes first: the public host, a live session
/// there, and the audited policy decision on [`REVIEW_OBJECT`].
async fn gate(
    state: &State,
    conn: &ConnShared,
    req: &Request<Incoming>,
    host: &str,
    path: &str,
    id: RequestId,
) -> Result<Reviewer, Response<ResBody>> {
    if host != state.login.public_host {
        return Err(respond::error(StatusCode::NOT_FOUND, id, false));
    }
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "review refused: store down");
        return Err(unavailable(STORE_DOWN, id));
    }
    let mut ctx = AccessContext {
        client_addr: Some(conn.peer.ip()),
        session: None,
        request_id: Some(id.to_string()),
    };
    let s = &state.services;
    let who = match authn::authenticate(req.headers(), &s.authenticator, &conn.session_keys, host)
        .await
    {
        Ok(w) => w,
        Err(e) => return Err(not_signed_in(state, req, host, path, e, ctx, id).await),
    };
    ctx.session = Some(who.session().as_str().to_string());
    match s
        .policy
        .authorize_audited(
            who.identity(),
            REVIEW_OBJECT,
            req.method().as_str(),
            ctx.clone(),
            &s.audit,
        )
        .await
    {
        Ok(_) => Ok(Reviewer { who, ctx }),
        Err(refusal) => Err(refused(refusal, who.identity().user(), req, path, id)),
    }
}

/// The answer to a refused decision: 403 with the incident id, or 503 when it could not be
/// audited.
fn refused(
    refusal: Refusal,
    user: &str,
    req: &Request<Incoming>,
    path: &str,
    id: RequestId,
) -> Response<ResBody> {
    match refusal {
        Refusal::Denied { incident_id, .. } => {
            tracing::info!(request_id = %id, user = %user, decision = "deny", incident_id = %incident_id, "reviewer console refused");
            let requested = format!("{} {path}", req.method());
            respond::html(crate::pages::denied(&incident_id, &requested))
        }
        Refusal::Audit(e) => {
            tracing::error!(request_id = %id, user = %user, error = %error_chain(&e), "review refused: audit log unavailable");
            unavailable(AUDIT_DOWN, id)
        }
    }
}

/// No usable session: browsers asking for a page go to the login (and come back), anything
/// else gets 401; a session of another host is audited first.
async fn not_signed_in(
    state: &State,
    req: &Request<Incoming>,
    host: &str,
    path: &str,
    e: AuthnError,
    ctx: AccessContext,
    id: RequestId,
) -> Response<ResBody> {
    let had_cookie = match e {
        AuthnError::NoSession { had_cookie } => had_cookie,
        AuthnError::WrongHost(w) => {
            if let Err(e) = authn::record_wrong_host(&state.services.audit, w, host, ctx).await {
                tracing::error!(request_id = %id, error = %error_chain(&e), "review refused: audit log unavailable");
                return unavailable(AUDIT_DOWN, id);
            }
            true
        }
        AuthnError::Unavailable(e) => {
            tracing::error!(request_id = %id, error = %error_chain(&e), "review refused: session store unavailable");
            return unavailable(STORE_DOWN, id);
        }
    };
    let resp = if req.method() == Method::GET && path == REVIEW_PATH {
        let next = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        respond::see_other(&format!(
            "{}?next={}",
            crate::web::LOGIN_PATH,
            respond::encode(&next)
        ))
    } else {
        respond::error(StatusCode::UNAUTHORIZED, id, false)
    };
    if had_cookie {
        respond::with_cookie(resp, cookie::clear_session())
    } else {
        resp
    }
}

/// The second check before ending a session: [`TERMINATE_OBJECT`], audited.
pub(crate) async fn may_terminate<'r>(
    state: &State,
    reviewer: &'r Reviewer,
    req: &http::request::Parts,
    path: &str,
    id: RequestId,
) -> Result<Terminator<'r>, Response<ResBody>> {
    let s = &state.services;
    match s
        .policy
        .authorize_audited(
            reviewer.who.identity(),
            TERMINATE_OBJECT,
            req.method.as_str(),
            reviewer.context(),
            &s.audit,
        )
        .await
    {
        Ok(_) => Ok(Terminator { reviewer }),
        Err(Refusal::Denied { incident_id, .. }) => {
            tracing::info!(request_id = %id, user = %reviewer.user(), decision = "deny", incident_id = %incident_id, "terminate refused");
            let requested = format!("{} {path}", req.method);
            Err(respond::html(crate::pages::denied(
                &incident_id,
                &requested,
            )))
        }
        Err(Refusal::Audit(e)) => {
            tracing::error!(request_id = %id, error = %error_chain(&e), "terminate refused: audit log unavailable");
            Err(unavailable(AUDIT_DOWN, id))
        }
    }
}

/// Writes the reviewer's `recording_access` record; `Err` is the 503 to answer instead (no
/// audit, no read).
pub(crate) async fn audited(
    state: &State,
    reviewer: &Reviewer,
    action: &str,
    recording: Option<&RecordingId>,
    detail: Option<String>,
    id: RequestId,
) -> Result<(), Response<ResBody>> {
    let event = AuditEvent::RecordingAccess {
        actor: reviewer.actor(),
        action: action.to_string(),
        recording_id: recording.map(ToString::to_string),
        detail,
        outcome: Outcome::Success,
        context: reviewer.context(),
    };
    match state.services.audit.record(event).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::error!(request_id = %id, error = %error_chain(&e), "review read refused: audit log unavailable");
            Err(unavailable(AUDIT_DOWN, id))
        }
    }
}

/// A console page: HTML with the security headers and [`CONSOLE_CSP`].
pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response<ResBody> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"same-origin\">\n\
         <title>{title} · Gatehouse review</title>\n\
         <link rel=\"stylesheet\" href=\"{REVIEW_PATH}/static/review.css\">\n</head>\n\
         <body class=\"console\">\n<header class=\"bar\"><a class=\"brand\" href=\"{REVIEW_PATH}\">Gatehouse · Session review</a></header>\n\
         <main>\n<h1>{title}</h1>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title),
    );
    let mut resp = respond::html(crate::pages::Page { status, html });
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    resp
}

/// A JSON answer (never cached).
pub(crate) fn json(value: &impl serde::Serialize, id: RequestId) -> Response<ResBody> {
    let Ok(body) = serde_json::to_vec(value) else {
        return respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false);
    };
    let mut resp = respond::empty(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *resp.body_mut() = ResBody::page(body);
    resp
}

/// The player (our own, no third-party code), served under the prefix (so behind the gate).
pub const PLAYER_JS: &str = include_str!("review/player.js");
/// The console's stylesheet.
pub const REVIEW_CSS: &str = include_str!("review/review.css");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_paths() {
        for (path, review) in [
            ("/.gatehouse/review", true),
            ("/.gatehouse/review/", true),
            ("/.gatehouse/review/s/x/live", true),
            ("/.gatehouse/reviews", false),
            ("/.gatehouse/", false),
        ] {
            assert_eq!(is_review(path), review, "{path}");
        }
        let id = "0123456789abcdef0123456789abcdef";
        let parsed = |p: &str| session_path(p).map(|(i, a)| (i.to_string(), a.to_string()));
        assert_eq!(parsed(&format!("/s/{id}")), Some((id.into(), "".into())));
        assert_eq!(
            parsed(&format!("/s/{id}/live")),
            Some((id.into(), "/live".into()))
        );
        for bad in [
            "/s/../../data/secret.key",
            "/s/0123456789ABCDEF0123456789ABCDEF",
            "/s/",
            "/x/0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_player_is_our_own_and_strict() {
        assert!(PLAYER_JS.starts_with("\"use strict\";"));
        for banned in ["eval(", "innerHTML", "new Function", "http://", "https://"] {
            assert!(!PLAYER_JS.contains(banned), "{banned}");
        }
        assert!(!CONSOLE_CSP.contains("unsafe"));
    }
}
