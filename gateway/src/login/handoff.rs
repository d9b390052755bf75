//! Browser SSO across app hosts (`/.gatehouse/handoff`). Session cookies are host-only, so
//! an app host's login page links to the public host, which — if the user is signed in
//! there — mints a one-time ticket and posts it (form + `handoff.js`, no secret in any URL)
//! to the app host, which redeems it into its own fresh session.
//!
//! Threat: a ticket replayed or redeemed on another host (core: one-time, 30 s, audience
//! bound); login CSRF (an attacker making a victim's browser redeem the attacker's ticket);
//! an open redirect through `next`. Mitigation: the redeeming POST must carry `Origin` equal
//! to the public host's origin (browsers set it; other sites cannot); `next` is checked by
//! the redirect policy on both ends; only app hosts receive tickets.

use std::sync::Arc;

use http::header::ORIGIN;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::finish::{STORE_DOWN, finish_login};
use crate::authn::{self, AuthnError};
use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::pages;
use crate::request_id::RequestId;
use crate::respond::{self, html, see_other, unavailable};
use crate::state::State;

fn refuse(status: StatusCode, id: RequestId, why: &str) -> Response<ResBody> {
    tracing::info!(request_id = %id, status = status.as_u16(), reason = why, "handoff refused");
    respond::error(status, id, false)
}

/// The link an app host's login page offers (`None` on the public host).
pub fn sso_url(state: &State, host: &str, next: Option<&str>) -> Option<String> {
    let l = &state.login;
    if host == l.public_host {
        return None;
    }
    let back = format!("https://{host}{}{}", l.port, next.unwrap_or("/"));
    Some(format!(
        "{}{}?next={}",
        l.public_origin,
        crate::web::HANDOFF_PATH,
        respond::encode(&back)
    ))
}

/// The login page's URL that comes back to this handoff for `next` afterwards.
fn login_then(next: &str) -> String {
    let here = format!(
        "{}?next={}",
        crate::web::HANDOFF_PATH,
        respond::encode(next)
    );
    format!("{}?next={}", crate::web::LOGIN_PATH, respond::encode(&here))
}

/// GET on the public host: mint a ticket for the app host in `next` and post it there.
pub async fn issue(
    state: &State,
    conn: &Arc<ConnShared>,
    req: &Request<Incoming>,
    host: &str,
    id: RequestId,
) -> Response<ResBody> {
    let l = &state.login;
    if host != l.public_host {
        return refuse(
            StatusCode::NOT_FOUND,
            id,
            "handoff is minted on the public host",
        );
    }
    let Some(next) = respond::query_next(req.uri().query()) else {
        return refuse(StatusCode::BAD_REQUEST, id, "no next");
    };
    let target = l
        .redirect
        .check(&next)
        .ok()
        .and_then(|n| url::Url::parse(n).ok())
        .filter(|u| u.scheme() == "https");
    let Some(target) = target else {
        return refuse(StatusCode::BAD_REQUEST, id, "next is not a gateway url");
    };
    let Some(audience) = target
        .host_str()
        .map(str::to_ascii_lowercase)
        .filter(|h| *h != l.public_host && l.hosts.contains(h))
    else {
        return refuse(StatusCode::BAD_REQUEST, id, "next is not an app host");
    };
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "handoff refused: store down");
        return unavailable(STORE_DOWN, id);
    }
    let who = match authn::authenticate(
        req.headers(),
        &state.services.authenticator,
        &authn::SessionKeys::default(),
        host,
    )
    .await
    {
        Ok(w) => w,
        Err(AuthnError::WrongHost(w)) => {
            let ctx = super::context(conn, id);
            if let Err(e) = authn::record_wrong_host(&state.services.audit, w, host, ctx).await {
                tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "handoff: audit log unavailable");
                return unavailable(super::finish::AUDIT_DOWN, id);
            }
            return see_other(&login_then(&next));
        }
        Err(AuthnError::NoSession { .. }) => {
            return see_other(&login_then(&next));
        }
        Err(AuthnError::Unavailable(e)) => {
            tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "handoff: store unavailable");
            return unavailable(STORE_DOWN, id);
        }
    };
    let ticket = match state
        .services
        .authenticator
        .issue_handoff(who.identity(), &audience, Some(conn.peer.ip()))
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "handoff: cannot mint a ticket");
            return unavailable(STORE_DOWN, id);
        }
    };
    let origin = format!("https://{audience}{}", l.port);
    let path = match target.query() {
        Some(q) => format!("{}?{q}", target.path()),
        None => target.path().to_string(),
    };
    let action = format!("{origin}{}", crate::web::HANDOFF_PATH);
    let mut resp = html(pages::handoff(&action, ticket.expose(), &path));
    for (name, value) in pages::cross_origin_form_headers(&origin)
        .into_iter()
        .flatten()
    {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// POST on an app host: redeem the ticket into a fresh session here.
pub async fn redeem(
    state: &State,
    conn: &Arc<ConnShared>,
    req: Request<Incoming>,
    host: &str,
    id: RequestId,
) -> Response<ResBody> {
    let l = &state.login;
    if host == l.public_host {
        return refuse(
            StatusCode::NOT_FOUND,
            id,
            "tickets are redeemed on app hosts",
        );
    }
    let (parts, body) = req.into_parts();
    let from_public = {
        let mut all = parts.headers.get_all(ORIGIN).iter();
        matches!((all.next(), all.next()), (Some(o), None) if o.as_bytes() == l.public_origin.as_bytes())
    };
    if !from_public {
        return refuse(StatusCode::FORBIDDEN, id, "origin is not the public host");
    }
    let form = match respond::read_form(&parts.headers, body).await {
        Ok(f) => f,
        Err(e) => return refuse(e.status(), id, "unreadable form"),
    };
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "handoff refused: store down");
        return unavailable(STORE_DOWN, id);
    }
    let next = form
        .get("next")
        .filter(|n| n.starts_with('/'))
        .and_then(|n| l.redirect.check(n).ok());
    let client = Some(conn.peer.ip());
    let ticket = form.get("ticket").unwrap_or_default();
    match state
        .services
        .authenticator
        .redeem_handoff(ticket, host, client)
        .await
    {
        Ok(identity) => {
            finish_login(state, &parts.headers, &identity, client, next, host, id).await
        }
        Err(gatehouse_core::AuthError::NoSession) => {
            let login = format!(
                "{}?next={}",
                crate::web::LOGIN_PATH,
                respond::encode(next.unwrap_or("/"))
            );
            see_other(&login)
        }
        Err(e) => {
            tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "handoff: cannot redeem");
            unavailable(STORE_DOWN, id)
        }
    }
}
