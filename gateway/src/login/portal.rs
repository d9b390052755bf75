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

/// POST `/.gatehouse/logout`: deletes the session (audited; live tunnels close), clears
/// the cookie.
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
        Ok(_) => {
            state.services.signer.forget_session(&hash);
            with_cookie(html(pages::logged_out()), cookie::clear_session())
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
