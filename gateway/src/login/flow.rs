//! Login (one form, both factors) and TOTP enrolment.

use std::sync::Arc;

use gatehouse_core::AuthError;
use gatehouse_core::identity::{LoginOutcome, VerifiedIdentity};
use http::header::{HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::respond::{self, html, see_other, with_cookie};
use super::unavailable;
use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::handler::{RequestId, State};
use crate::web::cookie::{self, CookieValue};
use crate::web::csrf::{check_origin, purpose};
use crate::web::form::Form;
use crate::web::pages;

/// The one message for every failed login (never says which factor was wrong).
pub const LOGIN_FAILED: &str = "Wrong user name, password or code.";
const ENROL_FAILED: &str =
    "That code is not valid for the new key. Check the time on your device and try the next code.";
const STORE_DOWN: &str = "Sign-in is unavailable: the session store cannot be reached.";
const AUDIT_DOWN: &str = "Sign-in is unavailable: the audit log cannot be written.";
const INTERNAL: &str = "Sign-in is unavailable because of an internal error.";

fn refuse(status: StatusCode, id: RequestId, why: &dyn std::fmt::Display) -> Response<ResBody> {
    tracing::info!(request_id = %id, status = status.as_u16(), reason = %why, "login request refused");
    crate::pages::error(status, &id.to_string(), false)
}

/// GET `/.gatehouse/login?next=URL`: a new login transaction (cookie) and the form.
pub fn login_form(
    state: &State,
    host: &str,
    query: Option<&str>,
    id: RequestId,
) -> Response<ResBody> {
    let Ok(tx) = CookieValue::generate() else {
        return unavailable(INTERNAL, id);
    };
    let csrf = state
        .services
        .csrf
        .token(purpose::LOGIN, tx.hash().as_str());
    let next = respond::query_next(query);
    let next = next
        .as_deref()
        .and_then(|n| state.login.redirect.check(n).ok());
    let sso = super::handoff::sso_url(state, host, next.filter(|n| n.starts_with('/')));
    with_cookie(
        html(pages::login_with_sso(&csrf, None, "", next, sso.as_deref())),
        cookie::set_login(&tx),
    )
}

/// The checks every login-transaction form shares: origin, transaction cookie, body, CSRF.
async fn transaction_form(
    state: &State,
    req: Request<Incoming>,
    form_purpose: &str,
    id: RequestId,
) -> Result<(HeaderMap, CookieValue, Form), Response<ResBody>> {
    let (parts, body) = req.into_parts();
    check_origin(&parts.headers, &state.login.origins)
        .map_err(|e| refuse(StatusCode::FORBIDDEN, id, &e))?;
    let tx = cookie::login(&parts.headers).ok_or_else(|| {
        refuse(
            StatusCode::FORBIDDEN,
            id,
            &"no login transaction cookie (csrf)",
        )
    })?;
    let form = respond::read_form(&parts.headers, body)
        .await
        .map_err(|e| refuse(e.status(), id, &e))?;
    state
        .services
        .csrf
        .verify(form_purpose, tx.hash().as_str(), form.get("csrf"))
        .map_err(|e| refuse(StatusCode::FORBIDDEN, id, &e))?;
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "login refused: store down");
        return Err(unavailable(STORE_DOWN, id));
    }
    Ok((parts.headers, tx, form))
}

/// Maps an authentication error to its answer; `again` re-renders the form with a message.
fn auth_failure(
    e: &AuthError,
    id: RequestId,
    again: impl FnOnce() -> pages::Page,
) -> Response<ResBody> {
    match e {
        AuthError::InvalidCredentials
        | AuthError::InvalidTotp
        | AuthError::TotpReplayed
        | AuthError::AccountLocked
        | AuthError::NoSession => {
            let mut page = again();
            page.status = StatusCode::UNAUTHORIZED;
            html(page)
        }
        AuthError::LockedOut { remaining_secs } => {
            let mut resp = html(pages::locked_out(remaining_secs.div_ceil(60)));
            if let Ok(v) = HeaderValue::from_str(&remaining_secs.to_string()) {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
            resp
        }
        AuthError::Store(err) => {
            tracing::error!(request_id = %id, error = %crate::services::describe(err), "login failed: store unavailable");
            unavailable(STORE_DOWN, id)
        }
        AuthError::Audit(err) => {
            tracing::error!(request_id = %id, error = %crate::services::describe(err), "login refused: audit log unavailable");
            unavailable(AUDIT_DOWN, id)
        }
        AuthError::Identity(err) => {
            tracing::error!(request_id = %id, error = %crate::services::describe(err), "login failed: identity backend");
            unavailable(INTERNAL, id)
        }
    }
}

/// POST `/.gatehouse/login`: user, password and code together.
pub async fn login_submit(
    state: &State,
    conn: &Arc<ConnShared>,
    req: Request<Incoming>,
    id: RequestId,
) -> Response<ResBody> {
    let (headers, tx, form) = match transaction_form(state, req, purpose::LOGIN, id).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let user = form.get("user").unwrap_or_default().trim();
    let password = form.get("password").unwrap_or_default();
    let code = form.get("code").unwrap_or_default();
    let next = form
        .get("next")
        .and_then(|n| state.login.redirect.check(n).ok());
    let client = Some(conn.peer.ip());
    let outcome = state
        .services
        .authenticator
        .login_web(user, password, code, client)
        .await;
    match outcome {
        Ok(LoginOutcome::Verified(identity)) => {
            finish_login(state, &headers, &identity, client, next, id).await
        }
        Ok(LoginOutcome::EnrolmentRequired(proof)) => {
            let (enrolment, secret) = match state.services.authenticator.start_enrolment(&proof) {
                Ok(x) => x,
                Err(e) => return auth_failure(&e, id, || pages::login("", None, "", None)),
            };
            tracing::info!(request_id = %id, user = proof.user(), "password accepted; totp enrolment required");
            state.login.pending.insert(
                tx.hash().as_str(),
                proof,
                secret,
                enrolment.otpauth_uri.clone(),
                enrolment.secret_base32.clone(),
                next.map(str::to_string),
            );
            see_other(crate::web::ENROL_PATH)
        }
        Err(e) => {
            let csrf = state
                .services
                .csrf
                .token(purpose::LOGIN, tx.hash().as_str());
            auth_failure(&e, id, || {
                pages::login(&csrf, Some(LOGIN_FAILED), user, next)
            })
        }
    }
}

/// A verified identity gets a fresh session (the previous one, if any, is deleted: no
/// fixation) and is sent to `next` or the portal.
pub(super) async fn finish_login(
    state: &State,
    headers: &HeaderMap,
    identity: &VerifiedIdentity,
    client: Option<std::net::IpAddr>,
    next: Option<&str>,
    id: RequestId,
) -> Response<ResBody> {
    if let Some(old) = cookie::session(headers) {
        state.services.signer.forget_session(&old.hash());
        if let Err(e) = state.services.store.delete_session(old.expose()).await {
            tracing::warn!(request_id = %id, error = %crate::services::describe(&e), "could not delete the previous session at login");
        }
    }
    let token = match state
        .services
        .authenticator
        .start_session(identity, client)
        .await
    {
        Ok(t) => t,
        Err(e) => return auth_failure(&e, id, || pages::login("", None, "", None)),
    };
    let Some(value) = CookieValue::parse(token.expose()) else {
        return unavailable(INTERNAL, id);
    };
    tracing::info!(request_id = %id, user = identity.user(), "login succeeded; new session");
    let target = state.login.redirect.target_or_portal(next);
    let resp = with_cookie(
        see_other(target),
        cookie::set_session(&value, state.login.session_ttl),
    );
    with_cookie(resp, cookie::clear_login())
}

/// GET `/.gatehouse/enrol`: the QR code of the new secret.
pub fn enrol_form(state: &State, req: &Request<Incoming>) -> Response<ResBody> {
    let Some(tx) = cookie::login(req.headers()) else {
        return see_other(crate::web::LOGIN_PATH);
    };
    let key = tx.hash();
    let Some(p) = state.login.pending.get(key.as_str()) else {
        return see_other(crate::web::LOGIN_PATH);
    };
    let csrf = state.services.csrf.token(purpose::ENROL, key.as_str());
    html(pages::enrol(&csrf, None, &p.otpauth_uri, &p.secret_base32))
}

/// POST `/.gatehouse/enrol`: the first code for the new secret.
pub async fn enrol_submit(
    state: &State,
    conn: &Arc<ConnShared>,
    req: Request<Incoming>,
    id: RequestId,
) -> Response<ResBody> {
    let (headers, tx, form) = match transaction_form(state, req, purpose::ENROL, id).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let key = tx.hash();
    let Some(p) = state.login.pending.get(key.as_str()) else {
        return see_other(crate::web::LOGIN_PATH);
    };
    let code = form.get("code").unwrap_or_default();
    let result = state
        .services
        .authenticator
        .complete_enrolment(&p.proof, &p.secret, code)
        .await;
    match result {
        Ok(identity) => {
            state.login.pending.remove(key.as_str());
            tracing::info!(request_id = %id, user = identity.user(), "totp enrolled");
            finish_login(
                state,
                &headers,
                &identity,
                Some(conn.peer.ip()),
                p.next.as_deref(),
                id,
            )
            .await
        }
        Err(e) => {
            let csrf = state.services.csrf.token(purpose::ENROL, key.as_str());
            auth_failure(&e, id, || {
                pages::enrol(&csrf, Some(ENROL_FAILED), &p.otpauth_uri, &p.secret_base32)
            })
        }
    }
}
