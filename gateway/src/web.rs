//! Building blocks of the web login flow under the reserved path `/.gatehouse/`: return-URL
//! validation, session and login-transaction cookies, CSRF tokens, form parsing and the
//! signed identity assertion sent to upstreams (the pages are `crate::pages`).
//!
//! Threat: every byte here comes from a browser that may be driven by an attacker (forged
//! cookies, cross-site form posts, open redirects, markup injection, oversized bodies) or
//! goes to an upstream that must be able to trust who is calling.
//! Mitigation: each module parses strictly and fails closed (refuse, or fall back to the
//! portal), compares secrets in constant time, escapes all output and never logs secrets.
//! These modules open no sockets and hold no sessions; the login handlers assemble them.

pub mod assertion;
pub mod cookie;
pub mod csrf;
pub mod form;
pub mod redirect;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The reserved prefix: `/.gatehouse` and everything under `/.gatehouse/` is answered by
/// Gatehouse itself on every host, never proxied (see [`is_reserved`]).
pub const RESERVED_PREFIX: &str = "/.gatehouse";
/// The user's portal of reachable apps; also where refused return URLs lead.
pub const PORTAL_PATH: &str = "/.gatehouse/";
/// Login step 1 (user + password): GET shows the form, POST submits it.
pub const LOGIN_PATH: &str = "/.gatehouse/login";
/// Login step 2 (TOTP code).
pub const TOTP_PATH: &str = "/.gatehouse/login/totp";
/// TOTP enrolment (QR code, then a first code to confirm).
pub const ENROL_PATH: &str = "/.gatehouse/enrol";
/// Where a browser lands after signing out at an SSO provider too (the provider's
/// `post_logout_redirect_uri`, on the public host): a notice, it ends nothing itself.
pub const SIGNED_OUT_PATH: &str = "/.gatehouse/signed-out";
/// Starts an SSO login at a provider (`?provider=NAME&next=URL`), on the public host.
pub const OIDC_START_PATH: &str = "/.gatehouse/oidc/start";
/// The one SSO callback of every provider, on the public host.
pub const OIDC_CALLBACK_PATH: &str = gatehouse_core::identity::oidc::CALLBACK_PATH;
/// Logout: POST only (a GET must never end a session: it could be triggered cross-site).
pub const LOGOUT_PATH: &str = "/.gatehouse/logout";
/// The one stylesheet (pages carry no inline style, see
/// [`crate::pages::CONTENT_SECURITY_POLICY`]).
pub const STYLE_PATH: &str = "/.gatehouse/static/style.css";
/// Browser SSO across hosts: the public host mints a one-time ticket (GET), an app host
/// redeems it (POST).
pub const HANDOFF_PATH: &str = "/.gatehouse/handoff";
/// The script that auto-submits the handoff form (no inline script anywhere).
pub const HANDOFF_JS_PATH: &str = "/.gatehouse/static/handoff.js";
/// The JWKS upstreams use to verify identity assertions.
pub const JWKS_PATH: &str = "/.gatehouse/jwks.json";

/// True when the normalised `path` is Gatehouse's own: [`RESERVED_PREFIX`] itself or below
/// it (`/.gatehousex` is an app's path).
pub fn is_reserved(path: &str) -> bool {
    path.strip_prefix(RESERVED_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The operating system's random generator failed; whatever needed it is refused.
#[derive(Debug, thiserror::Error)]
#[error("system random generator failed")]
pub struct RandomError;

/// `N` bytes from the system CSPRNG (aws-lc-rs).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| RandomError)?;
    Ok(buf)
}

/// base64url without padding (RFC 4648 §5), the only encoding used for tokens here.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url-without-padding decoding; `None` on any other character or padding.
pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// True when every byte is in the base64url alphabet (`A-Z a-z 0-9 - _`).
pub(crate) fn is_b64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 of `data`, base64url.
pub(crate) fn sha256_b64url(data: &[u8]) -> String {
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_paths() {
        for (path, reserved) in [
            ("/.gatehouse", true),
            ("/.gatehouse/", true),
            ("/.gatehouse/login", true),
            (PORTAL_PATH, true),
            (LOGIN_PATH, true),
            (JWKS_PATH, true),
            ("/.gatehousex", false),
            ("/.gatehouse.css", false),
            ("/", false),
            ("/app/.gatehouse/", false),
        ] {
            assert_eq!(is_reserved(path), reserved, "{path}");
        }
    }
}
