//! The endpoints under `/.gatehouse/` on every host: login (password + TOTP in one form, or
//! SSO at a provider then TOTP: [`sso`]), TOTP enrolment, logout, the portal, the JWKS and
//! the stylesheet.
//!
//! Threat: credential guessing, login CSRF and session fixation, open redirects after login,
//! markup injection, a store or audit outage read as success, answers that tell whether the
//! password alone was right. Mitigation: every form carries a CSRF token bound to the login
//! transaction cookie (or the session) and its purpose, and a foreign `Origin` is refused;
//! both factors are checked together by the core `Authenticator` (lockouts per user and
//! address, replay cache, audit) and every failure gets the same 401 page; a fresh session
//! id at every login (the old session is deleted); return URLs go through
//! [`crate::web::redirect::RedirectPolicy`]; pages escape everything; a store or audit error is a 503 page.

mod finish;
mod flow;
mod handoff;
mod portal;
pub(crate) mod sso;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::pages;
use crate::request_id::RequestId;
use crate::respond;
use crate::state::State;
use crate::web;

/// The audit context of a request on `conn`.
fn context(conn: &ConnShared, id: RequestId) -> gatehouse_core::audit::AccessContext {
    gatehouse_core::audit::AccessContext {
        client_addr: Some(conn.peer.ip()),
        session: None,
        request_id: Some(id.to_string()),
    }
}

/// Serves a request for `path` (normalised, under `/.gatehouse`) on `host` (lowercase, no
/// port); hosts that are neither the public host nor an app host get 404.
pub(crate) async fn serve(
    state: &State,
    conn: &Arc<ConnShared>,
    req: Request<Incoming>,
    host: &str,
    path: &str,
    id: RequestId,
) -> Response<ResBody> {
    if !state.login.hosts.contains(host) {
        return respond::error(StatusCode::NOT_FOUND, id, false);
    }
    if crate::review::is_review(path) {
        // The reviewer console: its own gate (session + `gatehouse:review`) before any route.
        return crate::review::serve(state, conn, req, host, path, id).await;
    }
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = req.method() == Method::POST;
    match path {
        web::STYLE_PATH if get => respond::asset(pages::STYLE_CSS, "text/css; charset=utf-8"),
        web::HANDOFF_JS_PATH if get => {
            respond::asset(pages::HANDOFF_JS, "text/javascript; charset=utf-8")
        }
        web::JWKS_PATH if get => respond::json(state.services.signer.jwks()),
        web::LOGIN_PATH if get => flow::login_form(state, host, req.uri().query(), id),
        web::HANDOFF_PATH if get => handoff::issue(state, conn, &req, host, id).await,
        web::HANDOFF_PATH if post => handoff::redeem(state, conn, req, host, id).await,
        web::LOGIN_PATH if post => flow::login_submit(state, conn, req, host, id).await,
        web::ENROL_PATH if get => flow::enrol_form(state, &req),
        web::ENROL_PATH if post => flow::enrol_submit(state, conn, req, host, id).await,
        web::LOGOUT_PATH if post => portal::logout(state, req, id).await,
        web::SIGNED_OUT_PATH if get => respond::html(pages::logged_out()),
        web::OIDC_START_PATH if get => sso::start(state, conn, &req, host, id).await,
        web::OIDC_CALLBACK_PATH if get => sso::callback(state, conn, &req, host, id).await,
        web::TOTP_PATH if get => sso::totp_form(state, &req),
        web::TOTP_PATH if post => sso::totp_submit(state, conn, req, host, id).await,
        web::PORTAL_PATH | web::RESERVED_PREFIX if get => {
            portal::portal(state, conn, &req, host, id).await
        }
        web::STYLE_PATH
        | web::HANDOFF_JS_PATH
        | web::HANDOFF_PATH
        | web::JWKS_PATH
        | web::LOGIN_PATH
        | web::ENROL_PATH
        | web::LOGOUT_PATH
        | web::SIGNED_OUT_PATH
        | web::OIDC_START_PATH
        | web::OIDC_CALLBACK_PATH
        | web::TOTP_PATH
        | web::PORTAL_PATH
        | web::RESERVED_PREFIX => respond::error(StatusCode::METHOD_NOT_ALLOWED, id, false),
        _ => respond::error(StatusCode::NOT_FOUND, id, false),
    }
}
