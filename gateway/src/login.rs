//! The endpoints under `/.gatehouse/` on every host: login (password + TOTP in one form),
//! TOTP enrolment, logout, the portal, the JWKS and the stylesheet.
//!
//! Threat: credential guessing, login CSRF and session fixation, open redirects after login,
//! markup injection, a store or audit outage read as success, answers that tell whether the
//! password alone was right. Mitigation: every form carries a CSRF token bound to the login
//! transaction cookie (or the session) and its purpose, and a foreign `Origin` is refused;
//! both factors are checked together by the core `Authenticator` (lockouts per user and
//! address, replay cache, audit) and every failure gets the same 401 page; a fresh session
//! id at every login (the old session is deleted); return URLs go through
//! [`RedirectPolicy`]; pages escape everything; a store or audit error is a 503 page.

mod flow;
mod handoff;
mod pending;
mod portal;
pub(crate) mod respond;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Config;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::handler::{RequestId, State};
use crate::web::pages::{self, PortalApp};
use crate::web::redirect::RedirectPolicy;
use crate::web::{self, cookie};

pub use pending::Pending;

/// What the login endpoints need, computed once at bind.
#[derive(Debug)]
pub struct LoginCtx {
    pub redirect: RedirectPolicy,
    /// The gateway's own browser origins (for the `Origin` check).
    pub origins: Vec<String>,
    /// (app name, portal URL) for every configured app.
    pub apps: Vec<(String, String)>,
    pub session_ttl: Duration,
    pub pending: Pending,
    /// The hosts `/.gatehouse/` is served on: the public host and every app host.
    pub hosts: HashSet<String>,
    /// The public host (lowercase) and its browser origin.
    pub public_host: String,
    pub public_origin: String,
    /// `:PORT` when the gateway's port is not 443, else empty.
    pub port: String,
}

impl LoginCtx {
    pub fn new(config: &Config) -> LoginCtx {
        let redirect = RedirectPolicy::from_config(config);
        let origins = redirect.origins();
        let port = match config.gateway.public_url.port_or_known_default() {
            Some(443) | None => String::new(),
            Some(p) => format!(":{p}"),
        };
        let apps = config
            .apps
            .iter()
            .map(|a| {
                let path = a
                    .path_prefix
                    .as_deref()
                    .map_or_else(|| "/".to_string(), |p| format!("{p}/"));
                (a.name.clone(), format!("https://{}{port}{path}", a.host))
            })
            .collect();
        let hosts = config
            .gateway
            .public_url
            .host_str()
            .map(str::to_ascii_lowercase)
            .into_iter()
            .chain(config.apps.iter().map(|a| a.host.to_ascii_lowercase()))
            .collect();
        let public_host = config
            .gateway
            .public_url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let public_origin = config.gateway.public_url.origin().ascii_serialization();
        LoginCtx {
            public_host,
            public_origin,
            port: port.clone(),
            hosts,
            redirect,
            origins,
            apps,
            session_ttl: config.identity.session_ttl,
            pending: Pending::new(cookie::LOGIN_MAX_AGE),
        }
    }

    /// The apps `user` may reach: any allow for GET on `app:<name>/`.
    pub(crate) fn portal_apps(
        &self,
        state: &State,
        user: &str,
        groups: &[String],
    ) -> Vec<PortalApp> {
        let policy = state.services.policy.current();
        let subjects: Vec<String> = groups
            .iter()
            .map(|g| gatehouse_core::identity::group_subject(g))
            .collect();
        self.apps
            .iter()
            .filter(|(name, _)| {
                let obj = crate::authz::object(name, "/");
                policy
                    .decide(
                        std::iter::once(user).chain(subjects.iter().map(String::as_str)),
                        &obj,
                        "GET",
                    )
                    .allowed
            })
            .map(|(name, url)| PortalApp {
                name: name.clone(),
                url: url.clone(),
            })
            .collect()
    }
}

/// 503 with the reason (store down, audit failing).
pub(crate) fn unavailable(reason: &str, id: RequestId) -> Response<ResBody> {
    respond::html(pages::unavailable(reason, &id.to_string()))
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
        return crate::pages::error(StatusCode::NOT_FOUND, &id.to_string(), false);
    }
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = req.method() == Method::POST;
    match path {
        web::STYLE_PATH if get => {
            respond::asset(web::pages::STYLE_CSS, web::pages::style_headers())
        }
        web::HANDOFF_JS_PATH if get => respond::asset(
            web::pages::HANDOFF_JS,
            [
                (
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/javascript; charset=utf-8"),
                ),
                (
                    http::header::X_CONTENT_TYPE_OPTIONS,
                    http::HeaderValue::from_static("nosniff"),
                ),
                (
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("public, max-age=3600"),
                ),
            ],
        ),
        web::JWKS_PATH if get => respond::json(state.services.signer.jwks()),
        web::LOGIN_PATH if get => flow::login_form(state, host, req.uri().query(), id),
        web::HANDOFF_PATH if get => handoff::issue(state, conn, &req, host, id).await,
        web::HANDOFF_PATH if post => handoff::redeem(state, conn, req, host, id).await,
        web::LOGIN_PATH if post => flow::login_submit(state, conn, req, id).await,
        web::ENROL_PATH if get => flow::enrol_form(state, &req),
        web::ENROL_PATH if post => flow::enrol_submit(state, conn, req, id).await,
        web::LOGOUT_PATH if post => portal::logout(state, req, id).await,
        web::PORTAL_PATH | "/.gatehouse" if get => portal::portal(state, &req, id).await,
        web::STYLE_PATH
        | web::HANDOFF_JS_PATH
        | web::HANDOFF_PATH
        | web::JWKS_PATH
        | web::LOGIN_PATH
        | web::ENROL_PATH
        | web::LOGOUT_PATH
        | web::PORTAL_PATH
        | "/.gatehouse" => {
            crate::pages::error(StatusCode::METHOD_NOT_ALLOWED, &id.to_string(), false)
        }
        _ => crate::pages::error(StatusCode::NOT_FOUND, &id.to_string(), false),
    }
}
