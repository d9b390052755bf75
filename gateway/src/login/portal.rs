//! The portal (apps the user may reach) and logout.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::respond::{self, html, see_other, with_cookie};
use super::unavailable;
use crate::authn::{self, AuthnError};
use crate::body::ResBody;
use crate::handler::{RequestId, State};
use crate::web::cookie;
use crate::web::csrf::{check_origin, purpose};
use crate::web::pages;

const STORE_DOWN: &str = "The session store cannot be reached.";
const AUDIT_DOWN: &str = "The audit log cannot be written.";

/// GET `/.gatehouse/`: who you are, what you may reach, and a logout button.
pub async fn portal(state: &State, req: &Request<Incoming>, id: RequestId) -> Response<ResBody> {
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "portal refused: store down");
        return unavailable(STORE_DOWN, id);
    }
    match authn::authenticate(
        req.headers(),
        &state.services.authenticator,
        &authn::SessionKeys::default(),
    )
    .await
    {
        Ok(who) => {
            let identity = who.identity();
            let apps = state
                .login
                .portal_apps(state, identity.user(), identity.groups());
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
        Err(AuthnError::NoSession { had_cookie }) => {
            let resp = see_other(crate::web::LOGIN_PATH);
            if had_cookie {
                with_cookie(resp, cookie::clear_session())
            } else {
                resp
            }
        }
        Err(AuthnError::Unavailable(e)) => {
            tracing::error!(request_id = %id, error = %crate::services::describe(&e), "portal: store unavailable");
            unavailable(STORE_DOWN, id)
        }
    }
}

/// POST `/.gatehouse/logout`: deletes the session (audited; live tunnels close), clears
/// the cookie.
pub async fn logout(state: &State, req: Request<Incoming>, id: RequestId) -> Response<ResBody> {
    let (parts, body) = req.into_parts();
    if let Err(e) = check_origin(&parts.headers, &state.login.origins) {
        tracing::info!(request_id = %id, reason = %e, "logout refused");
        return crate::pages::error(StatusCode::FORBIDDEN, &id.to_string(), false);
    }
    let Some(session) = cookie::session(&parts.headers) else {
        return with_cookie(see_other(crate::web::LOGIN_PATH), cookie::clear_session());
    };
    let form = match respond::read_form(&parts.headers, body).await {
        Ok(f) => f,
        Err(e) => return crate::pages::error(e.status(), &id.to_string(), false),
    };
    let hash = session.hash();
    if let Err(e) = state
        .services
        .csrf
        .verify(purpose::LOGOUT, hash.as_str(), form.get("csrf"))
    {
        tracing::info!(request_id = %id, reason = %e, "logout refused");
        return crate::pages::error(StatusCode::FORBIDDEN, &id.to_string(), false);
    }
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "logout refused: store down");
        return unavailable(STORE_DOWN, id);
    }
    match state.services.authenticator.logout(session.expose()).await {
        Ok(()) => {
            state.services.signer.forget_session(&hash);
            with_cookie(html(pages::logged_out()), cookie::clear_session())
        }
        Err(gatehouse_core::AuthError::Audit(e)) => {
            tracing::error!(request_id = %id, error = %crate::services::describe(&e), "logout: audit log unavailable");
            unavailable(AUDIT_DOWN, id)
        }
        Err(e) => {
            tracing::error!(request_id = %id, error = %crate::services::describe(&e), "logout failed");
            unavailable(STORE_DOWN, id)
        }
    }
}
