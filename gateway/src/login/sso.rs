//! SSO on the public host: the start of a login at a provider
//! (`/.gatehouse/oidc/start?provider=NAME&next=URL`), the one callback of every provider
//! (`/.gatehouse/oidc/callback`), Gatehouse's TOTP step after it; the login page's provider
//! buttons; and the background refresh of the providers' discovery documents.
//!
//! Threat: login CSRF (an attacker's callback delivered to a victim's browser), a callback
//! replayed in another browser, an open redirect through `next`, a half-open session after a
//! failure, a provider outage stalling start-up or local logins.
//! Mitigation: the start sets a fresh login-transaction cookie (`__Host-`, HttpOnly, Secure,
//! SameSite=Lax so that the provider's top-level redirect back carries it, 10 minutes) whose
//! hash binds the core's transaction; the callback presents it again (the core compares in
//! constant time and takes the transaction once); `next` passes the redirect policy before
//! the login and again after it; every refusal is audited (by the core, or here for a
//! provider unreachable at the start) and ends on a fixed page with the request id, the
//! login cookie cleared and no session; the TOTP step redeems a core proof kept under the
//! same cookie; an address gets a bounded number of starts and callbacks per minute
//! (`SsoThrottle` in `state`: no store or audit flood); the providers are refreshed in the
//! background (never awaited before serving), and a provider that is down only disables
//! its button.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::SsoError;
use gatehouse_core::audit::AuditEvent;
use gatehouse_core::error::SsoCheck;
use gatehouse_core::identity::oidc::{ProviderStatus, Sso, SsoCallback, SsoStep};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use super::finish::{AUDIT_DOWN, INTERNAL, STORE_DOWN, auth_failure, finish_login};
use super::flow::transaction_form;
use crate::body::ResBody;
use crate::conn::ConnShared;
use crate::pages::{self, ProviderButton};
use crate::request_id::RequestId;
use crate::respond::{self, html, see_other, unavailable, with_cookie};
use crate::state::{EnrolProof, PendingEnrolment, PendingSsoTotp, State};
use crate::web::cookie::{self, CookieValue};
use crate::web::csrf::purpose;
use crate::web::form::Form;

/// How often the providers' discovery documents are refreshed in the background (a fresh
/// one is not fetched again; a failed provider is retried on its own back-off).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// The one message for a wrong code at the TOTP step.
const TOTP_FAILED: &str =
    "That code is not valid. Check the time on your device and try the next code.";

/// Refreshes the providers now and every [`REFRESH_INTERVAL`] until `stop`.
pub(crate) async fn refresh_providers(sso: Sso, stop: CancellationToken) {
    if sso.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = sso.refresh() => {}
        }
    }
}

/// The login page's provider buttons on `host`, each starting a login on the public host
/// that comes back to `next` (on an app host: through the handoff to that host).
pub fn buttons(state: &State, host: &str, next: Option<&str>) -> Vec<ProviderButton> {
    let providers = state.services.sso.providers();
    if providers.is_empty() {
        return Vec::new();
    }
    let l = &state.login;
    let back = if host == l.public_host {
        next.map(str::to_string)
    } else {
        let app_url = format!("https://{host}{}{}", l.port, next.unwrap_or("/"));
        Some(format!(
            "{}?next={}",
            crate::web::HANDOFF_PATH,
            respond::encode(&app_url)
        ))
    };
    let base = if host == l.public_host {
        String::new()
    } else {
        l.public_origin.clone()
    };
    providers
        .into_iter()
        .map(|p| {
            let href = (p.status != ProviderStatus::Unavailable).then(|| {
                let mut href = format!(
                    "{base}{}?provider={}",
                    crate::web::OIDC_START_PATH,
                    respond::encode(&p.name)
                );
                if let Some(b) = &back {
                    href.push_str("&next=");
                    href.push_str(&respond::encode(b));
                }
                href
            });
            ProviderButton { name: p.name, href }
        })
        .collect()
}

/// The answer to a refused or failed SSO step: its fixed page with the request id, the
/// login cookie cleared (the core has audited a refusal already).
fn failed(e: &SsoError, id: RequestId) -> Response<ResBody> {
    let error = gatehouse_core::error_chain(e);
    match e.check() {
        Some(check) => {
            tracing::info!(request_id = %id, check = check.as_str(), error = %error, "sso login refused");
        }
        None => tracing::warn!(request_id = %id, error = %error, "sso login failed"),
    }
    with_cookie(
        html(pages::sso_failure(e.page(), &id.to_string())),
        cookie::clear_login(),
    )
}

/// 429 for an address past its SSO budget (`SsoThrottle` in `state`); nothing stored
/// or audited.
fn throttled(state: &State, conn: &ConnShared, id: RequestId) -> Option<Response<ResBody>> {
    if state.login.sso_throttle.allow(conn.peer.ip()) {
        return None;
    }
    tracing::info!(request_id = %id, client.addr = %conn.peer.ip(), "sso request refused: too many from this address");
    let mut resp = respond::error(StatusCode::TOO_MANY_REQUESTS, id, false);
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("60"),
    );
    Some(resp)
}

fn not_here(id: RequestId, why: &str) -> Response<ResBody> {
    tracing::info!(request_id = %id, reason = why, "sso request refused");
    respond::error(StatusCode::NOT_FOUND, id, false)
}

/// GET `/.gatehouse/oidc/start?provider=NAME&next=URL` on the public host: a fresh login
/// transaction (cookie) and the redirect to the provider.
pub async fn start(
    state: &State,
    conn: &Arc<ConnShared>,
    req: &Request<Incoming>,
    host: &str,
    id: RequestId,
) -> Response<ResBody> {
    if host != state.login.public_host || state.services.sso.is_empty() {
        return not_here(
            id,
            "sso logins start on the public host, with a provider configured",
        );
    }
    if let Some(resp) = throttled(state, conn, id) {
        return resp;
    }
    let Ok(query) = Form::parse(req.uri().query().unwrap_or_default().as_bytes()) else {
        return respond::error(StatusCode::BAD_REQUEST, id, false);
    };
    let Some(provider) = query
        .get("provider")
        .filter(|p| state.services.sso.providers().iter().any(|i| i.name == *p))
    else {
        return not_here(id, "no such sso provider");
    };
    let next = query
        .get("next")
        .and_then(|n| state.login.redirect.check(n).ok());
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "sso start refused: store down");
        return unavailable(STORE_DOWN, id);
    }
    let Ok(tx) = CookieValue::generate() else {
        return unavailable(INTERNAL, id);
    };
    let binding = tx.hash();
    match state
        .services
        .sso
        .start_login(provider, binding.as_str(), next)
        .await
    {
        Ok(redirect) => {
            tracing::info!(request_id = %id, provider, "sso login: to the provider");
            with_cookie(see_other(&redirect.url), cookie::set_login(&tx))
        }
        Err(e @ SsoError::Unavailable { .. }) => {
            let reason = gatehouse_core::error_chain(&e);
            let audited = state
                .services
                .audit
                .record(AuditEvent::SsoFailure {
                    provider: Some(provider.to_string()),
                    user: None,
                    check: SsoCheck::Unreachable.as_str().into(),
                    reason,
                    client_addr: Some(conn.peer.ip()),
                })
                .await;
            if let Err(a) = audited {
                tracing::error!(request_id = %id, error = %gatehouse_core::error_chain(&a), "sso start: audit log unavailable");
                return unavailable(AUDIT_DOWN, id);
            }
            failed(&e, id)
        }
        Err(e) => failed(&e, id),
    }
}

/// GET `/.gatehouse/oidc/callback` on the public host: the provider's answer, checked by
/// the core against the login transaction this browser holds; then a session, the TOTP step
/// or the first-login enrolment.
pub async fn callback(
    state: &State,
    conn: &Arc<ConnShared>,
    req: &Request<Incoming>,
    host: &str,
    id: RequestId,
) -> Response<ResBody> {
    if host != state.login.public_host || state.services.sso.is_empty() {
        return not_here(
            id,
            "the sso callback is on the public host, with a provider configured",
        );
    }
    if let Some(resp) = throttled(state, conn, id) {
        return resp;
    }
    if let Err(why) = state.health.check() {
        tracing::warn!(request_id = %id, reason = %why, "sso callback refused: store down");
        return unavailable(STORE_DOWN, id);
    }
    let tx = cookie::login(req.headers());
    let binding = tx.as_ref().map(CookieValue::hash);
    let cb = SsoCallback::from_query(req.uri().query().unwrap_or_default());
    let client = Some(conn.peer.ip());
    let sso = &state.services.sso;
    let login = match sso
        .finish_login(&cb, binding.as_ref().map(|b| b.as_str()), client)
        .await
    {
        Ok(l) => l,
        Err(e) => return failed(&e, id),
    };
    // The core checked the binding: the cookie is there.
    let Some(key) = binding else {
        return unavailable(INTERNAL, id);
    };
    let next = login
        .return_to
        .as_deref()
        .and_then(|n| state.login.redirect.check(n).ok())
        .map(str::to_string);
    match login.step {
        SsoStep::Verified(identity) => {
            tracing::info!(request_id = %id, user = identity.user(), provider = %login.logout.provider, "sso login: second factor proven by the provider");
            finish_login(
                state,
                req.headers(),
                &identity,
                client,
                next.as_deref(),
                host,
                id,
            )
            .await
        }
        SsoStep::Totp(proof) => {
            tracing::info!(request_id = %id, user = proof.user(), provider = proof.provider(), "sso login: totp next");
            state
                .login
                .sso_totp
                .insert(key.as_str(), PendingSsoTotp { proof, next });
            see_other(crate::web::TOTP_PATH)
        }
        SsoStep::Enrol(proof) => {
            let (enrolment, secret) = match sso.start_enrolment(&proof) {
                Ok(x) => x,
                Err(e) => return auth_failure(&e, id, || pages::login("", None, "", None)),
            };
            tracing::info!(request_id = %id, user = proof.user(), provider = proof.provider(), "sso login: first login, totp enrolment");
            state.login.pending.insert(
                key.as_str(),
                PendingEnrolment {
                    proof: EnrolProof::Sso(proof),
                    secret,
                    otpauth_uri: enrolment.otpauth_uri,
                    secret_base32: enrolment.secret_base32,
                    next,
                },
            );
            see_other(crate::web::ENROL_PATH)
        }
    }
}

/// GET `/.gatehouse/login/totp`: the code form of an SSO login waiting for it.
pub fn totp_form(state: &State, req: &Request<Incoming>) -> Response<ResBody> {
    let Some(tx) = cookie::login(req.headers()) else {
        return see_other(crate::web::LOGIN_PATH);
    };
    let key = tx.hash();
    let Some(p) = state.login.sso_totp.get(key.as_str()) else {
        return see_other(crate::web::LOGIN_PATH);
    };
    let csrf = state.services.csrf.token(purpose::TOTP, key.as_str());
    html(pages::sso_totp(
        &csrf,
        None,
        p.proof.user(),
        p.proof.provider(),
    ))
}

/// POST `/.gatehouse/login/totp`: the user's code; a session when it is right.
pub async fn totp_submit(
    state: &State,
    conn: &Arc<ConnShared>,
    req: Request<Incoming>,
    host: &str,
    id: RequestId,
) -> Response<ResBody> {
    let (headers, tx, form) = match transaction_form(state, req, purpose::TOTP, id).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let key = tx.hash();
    let Some(p) = state.login.sso_totp.get(key.as_str()) else {
        return see_other(crate::web::LOGIN_PATH);
    };
    let code = form.get("code").unwrap_or_default();
    match state.services.sso.verify_totp(&p.proof, code).await {
        Ok(identity) => {
            state.login.sso_totp.remove(key.as_str());
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
            let csrf = state.services.csrf.token(purpose::TOTP, key.as_str());
            auth_failure(&e, id, || {
                pages::sso_totp(&csrf, Some(TOTP_FAILED), p.proof.user(), p.proof.provider())
            })
        }
    }
}
