//! The SSO pages: a button per provider on the login page, the TOTP step after a provider,
//! the failure page, and the page that takes the browser to a provider's logout.
//!
//! Threat: a provider's names and claims echoed into markup; a failure page telling an
//! attacker which token check failed; an ID token in a URL (logs, history, Referer).
//! Mitigation: everything is escaped; a failure shows one of a few fixed messages
//! ([`SsoPage`]) and the request id, never the check; the ID token goes to the provider's
//! logout in a POST body (the form of [`provider_logout`]).

use gatehouse_core::error::SsoPage;
use http::StatusCode;

use super::{Page, escape, page};
use crate::web::{HANDOFF_JS_PATH, LOGIN_PATH};

/// A provider on the login page: its link (to the start of an SSO login), or `None` while
/// it is unavailable (the button is shown disabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderButton {
    pub name: String,
    /// A path on this host or an `https://` URL of the gateway; anything else is shown
    /// without a link.
    pub href: Option<String>,
}

/// The providers' buttons and the line that leads on to the local form.
pub(super) fn provider_buttons(providers: &[ProviderButton]) -> String {
    let items: String = providers
        .iter()
        .map(|p| {
            let name = escape(&p.name);
            let linkable = p.href.as_deref().filter(|h| {
                h.starts_with("https://") || (h.starts_with('/') && !h.starts_with("//"))
            });
            match linkable {
                Some(href) => format!(
                    "<li><a class=\"button provider\" href=\"{}\">Sign in with {name}</a></li>\n",
                    escape(href)
                ),
                None => format!(
                    "<li><button type=\"button\" class=\"provider\" disabled>Sign in with {name} \
                     <strong class=\"status\">— unavailable</strong></button></li>\n"
                ),
            }
        })
        .collect();
    format!(
        "<ul class=\"providers\" aria-label=\"Single sign-on\">\n{items}</ul>\n\
         <p class=\"divider\">or with a Gatehouse account</p>\n"
    )
}

/// The TOTP step of an SSO login: who the provider said, then Gatehouse's own code.
pub fn sso_totp(csrf: &str, error: Option<&str>, user: &str, provider: &str) -> Page {
    let intro = format!(
        "<p class=\"who\">Signed in with <strong>{provider}</strong> as <strong>{user}</strong>. \
         Gatehouse asks for its own second factor too.</p>\n",
        provider = escape(provider),
        user = escape(user),
    );
    super::login::totp_after(csrf, error, &intro)
}

/// The status, title and sentence of each failure kind.
fn failure(kind: SsoPage) -> (StatusCode, &'static str, &'static str) {
    match kind {
        SsoPage::ProviderUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in provider unavailable",
            "The sign-in provider cannot be reached right now. Try again in a moment, or sign \
             in with a Gatehouse account.",
        ),
        SsoPage::Declined => (
            StatusCode::FORBIDDEN,
            "Sign-in cancelled",
            "The sign-in was cancelled or refused at the provider. You are not signed in.",
        ),
        SsoPage::StartAgain => (
            StatusCode::BAD_REQUEST,
            "Sign-in link expired",
            "This sign-in link has expired, was already used, or was opened in another \
             browser than the one that started it. You are not signed in: start again.",
        ),
        SsoPage::NameTaken => (
            StatusCode::FORBIDDEN,
            "Account conflict",
            "Your user name at the provider already belongs to another Gatehouse account, so \
             this sign-in was refused. An administrator can link the accounts.",
        ),
        SsoPage::Locked => (
            StatusCode::FORBIDDEN,
            "Account locked",
            "Your account is locked by an administrator.",
        ),
        SsoPage::Failed => (
            StatusCode::UNAUTHORIZED,
            "Sign-in failed",
            "The sign-in could not be verified. You are not signed in.",
        ),
        SsoPage::Internal => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "Sign-in is unavailable because of an internal error. You are not signed in.",
        ),
    }
}

/// A refused or failed SSO login: a fixed message for its kind and the request id to
/// quote (the check that failed is in the log and the audit record under that id).
pub fn sso_failure(kind: SsoPage, request_id: &str) -> Page {
    let (status, title, sentence) = failure(kind);
    let body = format!(
        "<p>{sentence}</p>\n<p>If you need help, give the administrators request id \
         <code class=\"request-id\">{rid}</code>.</p>\n\
         <p><a href=\"{LOGIN_PATH}\">Back to sign-in</a></p>\n",
        rid = escape(request_id),
    );
    page(status, title, &body)
}

/// After logout, the browser goes on to the provider's logout (`action`, its
/// `end_session_endpoint`) with `fields` (`id_token_hint`, `client_id`,
/// `post_logout_redirect_uri`) in a POST form submitted by `handoff.js` (a button as
/// fallback). Serve it with [`super::cross_origin_form_headers`] of the endpoint's origin.
pub fn provider_logout(action: &str, fields: &[(String, String)]) -> Page {
    let inputs: String = fields
        .iter()
        .map(|(n, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                escape(n),
                escape(v)
            )
        })
        .collect();
    let body = format!(
        "<p>You are signed out of Gatehouse. Signing you out at your sign-in provider too…</p>\n\
         <form id=\"handoff\" method=\"post\" action=\"{action}\">\n{inputs}\
         <button type=\"submit\">Continue</button>\n</form>\n\
         <script src=\"{HANDOFF_JS_PATH}\"></script>\n",
        action = escape(action),
    );
    super::cross_origin_form_page("Signing out", &body)
}
