//! The portal (apps the user may reach) and logout.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::authn::{self, AuthnError};
use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::pages::{self, PortalApp};
use crate::request_id::RequestId;
use crate::respond::{self, html, see_other, unavailable, with_cookie};
use crate::state::State;
use crate::web::cookie;
use crate::web::csrf::{check_origin, purpose};

const STORE_DOWN: &str = "The session store cannot be reached.";
const AUDIT_DOWN: &str = "The audit log cannot be written.";

/// GET `/.gatehouse/`: who you are, what you may reach, and a logout button.
pub async fn portal(
    state: &State,
    conn: &ConnShared,
    req: &Request<Incoming>,
    host: &str,
    id: RequestId,
) -> Response<ResBody> {
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "portal refused: store down");
        return unavailable(STORE_DOWN, id);
    }
    match authn::authenticate(
        req.headers(),
        &state.services.authenticator,
        &authn::SessionKeys::default(),
        host,
    )
    .await
    {
        Ok(who) => {
            let identity = who.identity();
            let apps = portal_apps(state, identity.user(), identity.groups());
            let csrf = state
                .services
                .csrf
                .token(purpose::LOGOUT, who.session().as_str());
            html(pages::portal(
                &csrf,
                identity.user(),
                identity.groups(),
                &apps,
            ))
        }
        Err(AuthnError::WrongHost(w)) => {
            let ctx = super::context(conn, id);
            if let Err(e) = authn::record_wrong_host(&state.services.audit, w, host, ctx).await {
                tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "portal: audit log unavailable");
                return unavailable(AUDIT_DOWN, id);
            }
            with_cookie(see_other(crate::web::LOGIN_PATH), cookie::clear_session())
        }
        Err(AuthnError::NoSession { had_cookie }) => {
            let resp = see_other(crate::web::LOGIN_PATH);
            if had_cookie {
                with_cookie(resp, cookie::clear_session())
            } else {
                resp
            }
        }
        Err(AuthnError::Unavailable(e)) => {
            tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "portal: store unavailable");
            unavailable(STORE_DOWN, id)
        }
    }
}

/// The apps `user` may reach: any allow for GET on `app:<name>/`.
fn portal_apps(state: &State, user: &str, groups: &[String]) -> Vec<PortalApp> {
    let policy = state.services.policy.current();
    let subjects: Vec<String> = groups
        .iter()
        .map(|g| gatehouse_core::identity::group_subject(g))
        .collect();
    state
        .login
        .apps
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

/// The page that takes the browser on to the provider's logout (`end_session_url`, its
/// endpoint with `id_token_hint`, `client_id` and `post_logout_redirect_uri`) by a POST
/// form, so the ID token stays out of URLs; `None` for a URL that is not https (or http to
/// loopback, the test provider's).
fn provider_logout(end_session_url: &str) -> Option<Response<ResBody>> {
    let url = url::Url::parse(end_session_url)
        .ok()
        .filter(gatehouse_core::outbound::url_allowed)?;
    let fields: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut action = url.clone();
    action.set_query(None);
    let origin = url.origin().ascii_serialization();
    let mut resp = html(pages::provider_logout(action.as_str(), &fields));
    for (name, value) in pages::cross_origin_form_headers(&origin)? {
        resp.headers_mut().insert(name, value);
    }
    Some(resp)
}

/// POST `/.gatehouse/logout`: ends the session and every session of the same sign-in on
/// other hosts (audited; live tunnels close), clears the cookie, and after an SSO login
/// sends the browser on to the provider's logout when it has one.
pub async fn logout(state: &State, req: Request<Incoming>, id: RequestId) -> Response<ResBody> {
    let (parts, body) = req.into_parts();
    if let Err(e) = check_origin(&parts.headers, &state.login.origins) {
        tracing::info!(request_id = %id, reason = %e, "logout refused");
        return respond::error(StatusCode::FORBIDDEN, id, false);
    }
    let Some(session) = cookie::session(&parts.headers) else {
        return with_cookie(see_other(crate::web::LOGIN_PATH), cookie::clear_session());
    };
    let form = match respond::read_form(&parts.headers, body).await {
        Ok(f) => f,
        Err(e) => return respond::error(e.status(), id, false),
    };
    let hash = session.hash();
    if let Err(e) = state
        .services
        .csrf
        .verify(purpose::LOGOUT, hash.as_str(), form.get("csrf"))
    {
        tracing::info!(request_id = %id, reason = %e, "logout refused");
        return respond::error(StatusCode::FORBIDDEN, id, false);
    }
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "logout refused: store down");
        return unavailable(STORE_DOWN, id);
    }
    match state.services.authenticator.logout(session.expose()).await {
        Ok(hint) => {
            state.services.signer.forget_session(&hash);
            let page = hint
                .and_then(|h| {
                    state
                        .services
                        .sso
                        .end_session_url(&h, &state.login.post_logout_uri)
                })
                .and_then(|url| provider_logout(&url))
                .unwrap_or_else(|| html(pages::logged_out()));
            with_cookie(page, cookie::clear_session())
        }
        Err(gatehouse_core::AuthError::Audit(e)) => {
            tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "logout: audit log unavailable");
            unavailable(AUDIT_DOWN, id)
        }
        Err(e) => {
            tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "logout failed");
            unavailable(STORE_DOWN, id)
        }
    }
}
