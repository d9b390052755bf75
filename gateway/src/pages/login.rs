//! The forms and notices under `/.gatehouse/`: login, TOTP, enrolment, portal, denied,
//! unavailable, logged out, locked out, and the handoff page.

use http::StatusCode;

use super::sso::ProviderButton;
use super::{Page, csrf_field, error_box, escape, page, qr_svg};
use crate::web::{ENROL_PATH, HANDOFF_JS_PATH, LOGIN_PATH, LOGOUT_PATH, PORTAL_PATH, TOTP_PATH};

/// [`login`] plus, on an app host, a link to continue with the session of the public host
/// (`sso_url`, an `https://` URL of the gateway's handoff endpoint).
pub fn login_with_sso(
    csrf: &str,
    error: Option<&str>,
    user: &str,
    next: Option<&str>,
    sso_url: Option<&str>,
) -> Page {
    sign_in(csrf, error, user, next, sso_url, &[])
}

/// The login page: a button per SSO provider (when any is configured) above the local form
/// ([`login`]), and on an app host a link to continue with the public host's session
/// (`handoff_url`, an `https://` URL of the gateway's handoff endpoint).
pub fn sign_in(
    csrf: &str,
    error: Option<&str>,
    user: &str,
    next: Option<&str>,
    handoff_url: Option<&str>,
    providers: &[ProviderButton],
) -> Page {
    let mut p = login(csrf, error, user, next);
    if !providers.is_empty() {
        let buttons = super::sso::provider_buttons(providers);
        // Before the local form (and after the error box, if any).
        p.html = p.html.replacen("<form ", &format!("{buttons}<form "), 1);
    }
    if let Some(url) = handoff_url.filter(|u| u.starts_with("https://")) {
        let link = format!(
            "<p class=\"sso\"><a href=\"{}\">Already signed in to Gatehouse? Continue without signing in again</a></p>\n</main>",
            escape(url)
        );
        p.html = p.html.replacen("</main>", &link, 1);
    }
    p
}

/// The handoff page: a form posting a one-time ticket to an app host, submitted by
/// `handoff.js` (a button as fallback). Serve it with
/// [`super::cross_origin_form_headers`] of that host's origin.
pub fn handoff(action: &str, ticket: &str, next: &str) -> Page {
    let body = format!(
        "<p>Taking you to the application…</p>\n\
         <form id=\"handoff\" method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"ticket\" value=\"{ticket}\">\n\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\n\
         <button type=\"submit\">Continue</button>\n</form>\n\
         <script src=\"{js}\"></script>\n",
        action = escape(action),
        ticket = escape(ticket),
        next = escape(next),
        js = HANDOFF_JS_PATH,
    );
    super::cross_origin_form_page("Signing you in", &body)
}

/// The login form: user name, password and TOTP code in one form (so an answer never tells
/// whether the password alone was right). `next` is the return URL (validated again on
/// submit), `user` pre-fills the name after a failed attempt.
pub fn login(csrf: &str, error: Option<&str>, user: &str, next: Option<&str>) -> Page {
    let next = next.map_or_else(String::new, |n| {
        format!(
            "<input type=\"hidden\" name=\"next\" value=\"{}\">\n",
            escape(n)
        )
    });
    let body = format!(
        "{err}<form method=\"post\" action=\"{LOGIN_PATH}\">\n{csrf}{next}\
         <label for=\"user\">User name</label>\n\
         <input id=\"user\" name=\"user\" type=\"text\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" maxlength=\"128\" required autofocus value=\"{user}\">\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" maxlength=\"1024\" required>\n\
         <label for=\"code\">6-digit code from your authenticator app (leave empty if you have none yet)</label>\n\
         <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" autocomplete=\"one-time-code\">\n\
         <button type=\"submit\">Sign in</button>\n</form>\n",
        err = error_box(error),
        csrf = csrf_field(csrf),
        user = escape(user),
    );
    page(StatusCode::OK, "Sign in", &body)
}

fn code_input() -> &'static str {
    "<label for=\"code\">6-digit code from your authenticator app</label>\n\
     <input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" pattern=\"[0-9]{6}\" minlength=\"6\" maxlength=\"6\" autocomplete=\"one-time-code\" required autofocus>\n"
}

/// Login step 2: the TOTP code.
pub fn totp(csrf: &str, error: Option<&str>) -> Page {
    totp_after(csrf, error, "")
}

/// [`totp`] with `intro` (markup, already escaped) above the form.
pub(super) fn totp_after(csrf: &str, error: Option<&str>, intro: &str) -> Page {
    let body = format!(
        "{err}{intro}<form method=\"post\" action=\"{TOTP_PATH}\">\n{csrf}{code}\
         <button type=\"submit\">Verify</button>\n</form>\n",
        err = error_box(error),
        csrf = csrf_field(csrf),
        code = code_input(),
    );
    page(StatusCode::OK, "Second factor", &body)
}

/// Groups `secret` (base32) by 4 characters for reading aloud or typing.
pub fn group_secret(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().filter(|c| !c.is_whitespace()).collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// TOTP enrolment: the QR code, the secret in groups of 4 and the `otpauth://` URI, then a
/// first code to confirm. If the QR cannot be rendered the page still works by hand.
pub fn enrol(csrf: &str, error: Option<&str>, otpauth_uri: &str, secret_base32: &str) -> Page {
    let qr = qr_svg(otpauth_uri).map_or_else(
        |_| {
            "<p class=\"error\">The QR code could not be drawn; enter the key by hand.</p>\n"
                .to_string()
        },
        |svg| {
            format!(
                "<figure class=\"qr\" aria-label=\"QR code of the enrolment URI\">{svg}</figure>\n"
            )
        },
    );
    let body = format!(
        "{err}<p>Scan this code with your authenticator app, or enter the key by hand.</p>\n{qr}\
         <p>Key: <code class=\"secret\">{secret}</code></p>\n\
         <details><summary>Enrolment URI</summary><code class=\"uri\">{uri}</code></details>\n\
         <form method=\"post\" action=\"{ENROL_PATH}\">\n{csrf}{code}\
         <button type=\"submit\">Confirm</button>\n</form>\n",
        err = error_box(error),
        secret = escape(&group_secret(secret_base32)),
        uri = escape(otpauth_uri),
        csrf = csrf_field(csrf),
        code = code_input(),
    );
    page(StatusCode::OK, "Set up your second factor", &body)
}

/// An app on the portal. `url` must be an `https://` URL or a path starting with one `/`;
/// anything else is listed without a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalApp {
    pub name: String,
    pub url: String,
}

/// The user's portal: reachable apps, identity, and a logout button (a POST form).
pub fn portal(csrf: &str, user: &str, groups: &[String], apps: &[PortalApp]) -> Page {
    let list = if apps.is_empty() {
        "<p>No application is open to you yet. Ask the access owner for a grant.</p>\n".to_string()
    } else {
        let items: String = apps
            .iter()
            .map(|a| {
                let linkable = a.url.starts_with("https://")
                    || (a.url.starts_with('/') && !a.url.starts_with("//"));
                if linkable {
                    format!(
                        "<li><a href=\"{}\">{}</a></li>\n",
                        escape(&a.url),
                        escape(&a.name)
                    )
                } else {
                    format!("<li>{}</li>\n", escape(&a.name))
                }
            })
            .collect();
        format!("<ul class=\"apps\">\n{items}</ul>\n")
    };
    let groups = if groups.is_empty() {
        "none".to_string()
    } else {
        groups
            .iter()
            .map(|g| escape(g))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = format!(
        "<p class=\"who\">Signed in as <strong>{user}</strong>; groups: {groups}</p>\n\
         {list}\
         <form method=\"post\" action=\"{LOGOUT_PATH}\">\n{csrf}<button type=\"submit\">Sign out</button>\n</form>\n",
        user = escape(user),
        csrf = csrf_field(csrf),
    );
    page(StatusCode::OK, "Your applications", &body)
}

/// 403: what was requested, the incident id to quote, and who to ask.
pub fn denied(incident_id: &str, requested: &str) -> Page {
    let body = format!(
        "<p>You are signed in, but the access policy does not allow this request:</p>\n\
         <p><code class=\"requested\">{requested}</code></p>\n\
         <p>If you need it for your work, ask your manager or the access owner for a grant, \
         and quote incident <code class=\"incident\">{incident}</code>.</p>\n\
         <p><a href=\"{PORTAL_PATH}\">Back to your applications</a></p>\n",
        requested = escape(requested),
        incident = escape(incident_id),
    );
    page(StatusCode::FORBIDDEN, "Access denied", &body)
}

/// 503: the reason (no internal detail: that goes to the log under the request id).
pub fn unavailable(reason: &str, request_id: &str) -> Page {
    let body = format!(
        "<p>{reason}</p>\n<p>Please try again in a moment. If it persists, give the \
         administrators request id <code class=\"request-id\">{rid}</code>.</p>\n",
        reason = escape(reason),
        rid = escape(request_id),
    );
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        &body,
    )
}

/// After logout.
pub fn logged_out() -> Page {
    let body =
        format!("<p>You are signed out.</p>\n<p><a href=\"{LOGIN_PATH}\">Sign in again</a></p>\n");
    page(StatusCode::OK, "Signed out", &body)
}

/// 429 after too many failed attempts (also send `Retry-After`).
pub fn locked_out(retry_after_minutes: u64) -> Page {
    let minutes = retry_after_minutes.max(1);
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    let body = format!(
        "<p>Too many failed attempts. Sign-in is locked for this account or address.</p>\n\
         <p>Try again in {minutes} {unit}. If you did not make these attempts, tell your \
         security team.</p>\n"
    );
    page(StatusCode::TOO_MANY_REQUESTS, "Temporarily locked", &body)
}
