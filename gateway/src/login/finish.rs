//! The end of every sign-in (password + TOTP, enrolment, handoff): a fresh session, and the
//! one mapping of authentication errors to answers.

use gatehouse_core::AuthError;
use gatehouse_core::audit::AuditEvent;
use gatehouse_core::identity::VerifiedIdentity;
use gatehouse_core::store::SessionToken;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};

use crate::body::ResBody;
use crate::pages;
use crate::request_id::RequestId;
use crate::respond::{html, see_other, unavailable, with_cookie};
use crate::state::State;
use crate::web::cookie::{self, CookieValue};

pub(super) const STORE_DOWN: &str = "Sign-in is unavailable: the session store cannot be reached.";
pub(super) const AUDIT_DOWN: &str = "Sign-in is unavailable: the audit log cannot be written.";
pub(super) const INTERNAL: &str = "Sign-in is unavailable because of an internal error.";
/// What the form says after a replayed code: it is no guess (not counted), and the user only
/// needs the next code (a second `ssh`, or a second tab, within one 30 s step).
pub const CODE_USED: &str = "Code already used, wait for the next one.";

/// The message of a form re-shown after `e`: a replayed code is named; every other failure
/// gets `generic` (which never says which factor was wrong).
pub(super) fn form_message(e: &AuthError, generic: &'static str) -> &'static str {
    match e {
        AuthError::TotpReplayed => CODE_USED,
        _ => generic,
    }
}
pub(super) const RECORDING_DOWN: &str = "Sign-in is unavailable: the session cannot be recorded (the recordings directory cannot be written).";

/// Maps an authentication error to its answer; `again` re-renders the form with a message.
pub(super) fn auth_failure(
    e: &AuthError,
    id: RequestId,
    again: impl FnOnce() -> pages::Page,
) -> Response<ResBody> {
    match e {
        AuthError::InvalidCredentials
        | AuthError::InvalidTotp
        | AuthError::TotpReplayed
        | AuthError::AccountLocked
        | AuthError::NoSession
        | AuthError::WrongHost { .. } => {
            let mut page = again();
            page.status = StatusCode::UNAUTHORIZED;
            html(page)
        }
        AuthError::LockedOut {
            remaining_secs,
            locked,
            ..
        } => {
            let mut resp = html(pages::locked_out(*remaining_secs, *locked));
            if let Ok(v) = HeaderValue::from_str(&remaining_secs.to_string()) {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
            resp
        }
        AuthError::Store(err) => {
            tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(err), "login failed: store unavailable");
            unavailable(STORE_DOWN, id)
        }
        AuthError::Audit(err) => {
            tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(err), "login refused: audit log unavailable");
            unavailable(AUDIT_DOWN, id)
        }
        AuthError::Identity(err) => {
            tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(err), "login failed: identity backend");
            unavailable(INTERNAL, id)
        }
    }
}

/// A verified identity gets a fresh session on `host` (the previous one, if any, is deleted:
/// no fixation) and is sent to `next` or the portal.
pub(super) async fn finish_login(
    state: &State,
    headers: &HeaderMap,
    identity: &VerifiedIdentity,
    client: Option<std::net::IpAddr>,
    next: Option<&str>,
    host: &str,
    id: RequestId,
) -> Response<ResBody> {
    if let Some(old) = cookie::session(headers) {
        state.services.signer.forget_session(&old.hash());
        if let Err(e) = state.services.store.delete_session(old.expose()).await {
            tracing::warn!(request_id = %id, error = %gatehouse_core::error_chain(&e), "could not delete the previous session at login");
        }
    }
    let token = match state
        .services
        .authenticator
        .start_session(identity, client, host)
        .await
    {
        Ok(t) => t,
        Err(e) => return auth_failure(&e, id, || pages::login("", None, "", None)),
    };
    let Some(value) = CookieValue::parse(token.expose()) else {
        return unavailable(INTERNAL, id);
    };
    if let Err(resp) = record_session(state, identity, client, &token, &value, id).await {
        return resp;
    }
    tracing::info!(request_id = %id, user = identity.user(), "login succeeded; new session");
    let target = state.login.redirect.target_or_portal(next);
    let resp = with_cookie(
        see_other(target),
        cookie::set_session(&value, state.login.session_ttl),
    );
    with_cookie(resp, cookie::clear_login())
}

/// Registers the new session's recording; when that fails the session is deleted again, the
/// refusal is audited (`login_failure`, reason `recording unavailable`) and the answer is a
/// 503: no session runs unrecorded.
async fn record_session(
    state: &State,
    identity: &VerifiedIdentity,
    client: Option<std::net::IpAddr>,
    token: &SessionToken,
    value: &CookieValue,
    id: RequestId,
) -> Result<(), Response<ResBody>> {
    let hash = value.hash();
    let Err(e) = state
        .web_sessions
        .started(identity.user(), hash.as_str())
        .await
    else {
        return Ok(());
    };
    tracing::error!(request_id = %id, user = identity.user(), error = %gatehouse_core::error_chain(&e), "login refused: the web session cannot be recorded");
    if let Err(e) = state.services.store.delete_session(token.expose()).await {
        tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "could not delete the unrecorded session");
    }
    let record = AuditEvent::LoginFailure {
        user: identity.user().to_string(),
        method: identity.method().as_str().into(),
        reason: "recording unavailable".into(),
        client_addr: client,
    };
    if let Err(e) = state.services.audit.record(record).await {
        tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&e), "login refused: audit log unavailable");
        return Err(unavailable(AUDIT_DOWN, id));
    }
    Err(unavailable(RECORDING_DOWN, id))
}
