//! Login (one form, both factors) and TOTP enrolment (of local users, and of SSO users at
//! their first login).

use std::sync::Arc;

use gatehouse_core::identity::LoginOutcome;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::finish::{INTERNAL, STORE_DOWN, auth_failure, finish_login};
use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::pages;
use crate::request_id::RequestId;
use crate::respond::{self, html, see_other, unavailable, with_cookie};
use crate::state::{EnrolProof, PendingEnrolment, State};
use crate::web::cookie::{self, CookieValue};
use crate::web::csrf::{check_origin, purpose};
use crate::web::form::Form;

/// The one message for every failed login (never says which factor was wrong).
pub const LOGIN_FAILED: &str = "Wrong user name, password or code.";
const ENROL_FAILED: &str =
    "That code is not valid for the new key. Check the time on your device and try the next code.";

fn refuse(status: StatusCode, id: RequestId, why: &dyn std::fmt::Display) -> Response<ResBody> {
    tracing::info!(request_id = %id, status = status.as_u16(), reason = %why, "login request refused");
    respond::error(status, id, false)
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
    let local_next = next.filter(|n| n.starts_with('/'));
    let handoff = super::handoff::sso_url(state, host, local_next);
    let providers = super::sso::buttons(state, host, local_next);
    with_cookie(
        html(pages::sign_in(
            &csrf,
            None,
            "",
            next,
            handoff.as_deref(),
            &providers,
        )),
        cookie::set_login(&tx),
    )
}

/// The checks every login-transaction form shares: origin, transaction cookie, body, CSRF.
pub(super) async fn transaction_form(
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

/// POST `/.gatehouse/login`: user, password and code together.
pub async fn login_submit(
    state: &State,
    conn: &Arc<ConnShared>,
    req: Request<Incoming>,
    host: &str,
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
            finish_login(state, &headers, &identity, client, next, host, id).await
        }
        Ok(LoginOutcome::EnrolmentRequired(proof)) => {
            let (enrolment, secret) = match state.services.authenticator.start_enrolment(&proof) {
                Ok(x) => x,
                Err(e) => return auth_failure(&e, id, || pages::login("", None, "", None)),
            };
            tracing::info!(request_id = %id, user = proof.user(), "password accepted; totp enrolment required");
            state.login.pending.insert(
                tx.hash().as_str(),
                PendingEnrolment {
                    proof: EnrolProof::Local(proof),
                    secret,
                    otpauth_uri: enrolment.otpauth_uri,
                    secret_base32: enrolment.secret_base32,
                    next: next.map(str::to_string),
                },
            );
            see_other(crate::web::ENROL_PATH)
        }
        Err(e) => {
            let csrf = state
                .services
                .csrf
                .token(purpose::LOGIN, tx.hash().as_str());
            let local_next = next.filter(|n| n.starts_with('/'));
            let handoff = super::handoff::sso_url(state, host, local_next);
            let providers = super::sso::buttons(state, host, local_next);
            auth_failure(&e, id, || {
                pages::sign_in(
                    &csrf,
                    Some(LOGIN_FAILED),
                    user,
                    next,
                    handoff.as_deref(),
                    &providers,
                )
            })
        }
    }
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
    host: &str,
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
    let result = match &p.proof {
        EnrolProof::Local(proof) => {
            state
                .services
                .authenticator
                .complete_enrolment(proof, &p.secret, code)
                .await
        }
        EnrolProof::Sso(proof) => {
            state
                .services
                .sso
                .complete_enrolment(proof, &p.secret, code)
                .await
        }
    };
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
                host,
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
