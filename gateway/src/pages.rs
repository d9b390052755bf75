//! Every page Gatehouse renders itself: the forms and notices under `/.gatehouse/`
//! ([`login`], and the SSO ones in [`sso`]), and the error pages of refused or failed requests ([`error`]), with the one
//! HTML escaper, the one Content-Security-Policy and the one set of security headers they
//! are all served with. Pure rendering: text and header values, no response or body type
//! (those are `crate::respond`'s).
//!
//! Threat: markup injection (XSS) through anything we echo — user and group names from an
//! SSO provider, app names, the requested path, error texts, request ids — which could steal
//! the login form's credentials or act as the user; clickjacking; loading third-party
//! resources. Mitigation: every dynamic value goes through [`escape`]; pages have no inline
//! script or style and no external resource, and are served with [`CONTENT_SECURITY_POLICY`]
//! (no script can run even if escaping were missed), `frame-ancestors 'none'`, `nosniff`
//! and `no-store` ([`security_headers`]). Every form posts to our own paths and carries a
//! hidden `csrf` field.

mod error;
mod login;
mod sso;

use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};
use qrcode::QrCode;
use qrcode::render::svg;

use crate::headers::HSTS;
use crate::web::STYLE_PATH;

pub use error::{error, raw_error};
pub use login::*;
pub use sso::*;

/// The policy every page is served with: nothing but our stylesheet, `data:` images and
/// same-origin form posts; never framed. (The handoff page alone widens `form-action` and
/// `script-src`: [`handoff_csp`].)
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The handoff page's policy: [`CONTENT_SECURITY_POLICY`] plus our own script (the
/// auto-submit) and a form post to `origin` (the app host redeeming the ticket).
pub fn handoff_csp(origin: &str) -> String {
    format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; form-action {origin}; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// The stylesheet served at [`STYLE_PATH`].
pub const STYLE_CSS: &str = include_str!("pages/style.css");

/// The handoff auto-submit script, served at [`crate::web::HANDOFF_JS_PATH`].
pub const HANDOFF_JS: &str =
    "\"use strict\";\nvar f = document.getElementById(\"handoff\");\nif (f) { f.submit(); }\n";

/// A rendered page and the status it is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: StatusCode,
    pub html: String,
}

/// The content type of every page.
pub const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

/// The security headers of every response Gatehouse writes itself (pages, redirects,
/// refusals): HSTS, the page CSP, no framing, no sniffing, no cross-site referrer, no
/// caching. Add the content type and any `Set-Cookie`/`Retry-After` beside them.
pub fn security_headers() -> [(HeaderName, HeaderValue); 6] {
    [
        (
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static(REFERRER_POLICY),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// Headers of a static asset of content type `content_type` (stylesheet, script): HSTS,
/// `nosniff`, cacheable for an hour.
pub fn asset_headers(content_type: &'static str) -> [(HeaderName, HeaderValue); 4] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        ),
        (
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ),
    ]
}

/// HTML-escapes text for element content and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no business in a page; show them as U+FFFD.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Renders `data` (an `otpauth://` URI) as an SVG element for inline use (no XML prolog).
pub fn qr_svg(data: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::new(data.as_bytes())?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    // The renderer emits an XML prolog, which is not allowed inside HTML.
    Ok(match image.find("<svg") {
        Some(i) => image.get(i..).unwrap_or_default().to_string(),
        None => image,
    })
}

/// The referrer policy of every page but the ones below.
pub const REFERRER_POLICY: &str = "same-origin";

/// The referrer policy of a page whose form posts to another origin (the handoff page to
/// an app host, the logout page to an SSO provider). Under `same-origin` a browser sends
/// such a POST with `Origin: null`, which the app host's handoff check must refuse;
/// `strict-origin` sends the origin alone (never a path), and nothing over plain http.
pub const CROSS_ORIGIN_FORM_REFERRER: &str = "strict-origin";

/// The page skeleton: `title` is escaped here, `body` must already be markup.
fn layout(title: &str, body: &str, referrer: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"{referrer}\">\n\
         <title>{title} · Gatehouse</title>\n<link rel=\"stylesheet\" href=\"{STYLE_PATH}\">\n</head>\n\
         <body>\n<main class=\"card\">\n<h1>{title}</h1>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title),
    )
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">\n",
        escape(csrf)
    )
}

fn error_box(error: Option<&str>) -> String {
    error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e))
    })
}

fn page(status: StatusCode, title: &str, body: &str) -> Page {
    Page {
        status,
        html: layout(title, body, REFERRER_POLICY),
    }
}

/// [`page`] for a page whose form posts to another origin ([`CROSS_ORIGIN_FORM_REFERRER`]);
/// serve it with that `Referrer-Policy` too ([`cross_origin_form_headers`]).
fn cross_origin_form_page(title: &str, body: &str) -> Page {
    Page {
        status: StatusCode::OK,
        html: layout(title, body, CROSS_ORIGIN_FORM_REFERRER),
    }
}

/// The headers that differ for a page posting a form to `origin`: its CSP (our script, a
/// form post to `origin`) and [`CROSS_ORIGIN_FORM_REFERRER`].
pub fn cross_origin_form_headers(origin: &str) -> Option<[(HeaderName, HeaderValue); 2]> {
    Some([
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&handoff_csp(origin)).ok()?,
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static(CROSS_ORIGIN_FORM_REFERRER),
        ),
    ])
}

#[cfg(test)]
mod tests;
