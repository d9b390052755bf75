//! The session cookie `__Host-gatehouse` and the login-transaction cookie
//! `__Host-gatehouse-login`.
//!
//! Threat: session theft or fixation through cookies: a sibling subdomain or a plain-HTTP
//! network attacker planting ("tossing") a cookie, script reading it, cross-site requests
//! carrying it, ambiguous `Cookie` headers read differently by us and by an upstream, and
//! upstream apps receiving the gateway's session id.
//! Mitigation: the `__Host-` prefix (browser enforces `Secure`, `Path=/`, no `Domain`), plus
//! `HttpOnly` and `SameSite=Lax`; values are 256-bit random, base64url, length-bounded; the
//! parser fails closed (a duplicate or unreadable `Cookie` header means "no cookie"); the
//! store and the assertions only ever see [`SessionHash`], never the raw value; and
//! [`strip_gatehouse_cookies`] removes them before a request is proxied.

use std::fmt;
use std::time::Duration;

use http::header::{COOKIE, HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;

use super::{RandomError, b64url, is_b64url, random_bytes};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "__Host-gatehouse";
/// The login-transaction cookie's name (binds the password step, the TOTP step and CSRF).
pub const LOGIN_COOKIE: &str = "__Host-gatehouse-login";
/// How long a login transaction may take (password, then TOTP).
pub const LOGIN_MAX_AGE: Duration = Duration::from_secs(600);
/// Random bytes in a generated value (256 bits: unguessable, no need for a keyed hash).
pub const VALUE_BYTES: usize = 32;
/// Shortest value accepted (a 128-bit value); shorter ones are forged or truncated.
pub const MIN_VALUE_LEN: usize = 22;
/// Longest value accepted; bounds work done on attacker-supplied cookies.
pub const MAX_VALUE_LEN: usize = 128;

/// Every cookie this module sets shares these attributes (`__Host-` requires the first three
/// and no `Domain`).
const ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Lax";

/// An opaque, validated cookie value (base64url, bounded length). Its `Debug` hides it.
#[derive(Clone)]
pub struct CookieValue(String);

impl CookieValue {
    /// A fresh 256-bit random value.
    pub fn generate() -> Result<CookieValue, RandomError> {
        Ok(CookieValue(b64url(&random_bytes::<VALUE_BYTES>()?)))
    }

    /// Accepts `text` only if it is base64url and `MIN_VALUE_LEN..=MAX_VALUE_LEN` long.
    pub fn parse(text: &str) -> Option<CookieValue> {
        let ok = (MIN_VALUE_LEN..=MAX_VALUE_LEN).contains(&text.len()) && is_b64url(text);
        ok.then(|| CookieValue(text.to_string()))
    }

    /// The raw value: only for the `Set-Cookie` header. Never log it or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash under which the server side keeps this value (store key, assertion `sid`,
    /// CSRF binding): lowercase hex SHA-256, the same as the store's session `id_hash`.
    pub fn hash(&self) -> SessionHash {
        SessionHash(gatehouse_core::secret::hex_lower(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.0.as_bytes()),
        ))
    }
}

impl fmt::Debug for CookieValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieValue(<redacted>)")
    }
}

impl PartialEq for CookieValue {
    fn eq(&self, other: &CookieValue) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for CookieValue {}

/// hex(SHA-256(cookie value)): safe to store and log. Only made by
/// [`CookieValue::hash`], so a raw id cannot be passed where a hash is expected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHash(String);

impl SessionHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The store's `id_hash` of a session it just resumed from this cookie's value (the
    /// same SHA-256, so it is not computed twice per request).
    pub(crate) fn from_store(id_hash: String) -> SessionHash {
        SessionHash(id_hash)
    }
}

impl fmt::Display for SessionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `Set-Cookie` value for a new session lasting `max_age` (the session's absolute TTL).
pub fn set_session(value: &CookieValue, max_age: Duration) -> HeaderValue {
    set(SESSION_COOKIE, value, max_age)
}

/// `Set-Cookie` value that deletes the session cookie (logout, revoked or expired session).
pub fn clear_session() -> HeaderValue {
    HeaderValue::from_static(CLEAR_SESSION)
}

/// `Set-Cookie` value for a login transaction (Max-Age 600).
pub fn set_login(value: &CookieValue) -> HeaderValue {
    set(LOGIN_COOKIE, value, LOGIN_MAX_AGE)
}

/// `Set-Cookie` value that deletes the login-transaction cookie (login finished or failed).
pub fn clear_login() -> HeaderValue {
    HeaderValue::from_static(CLEAR_LOGIN)
}

const CLEAR_SESSION: &str = "__Host-gatehouse=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax";
const CLEAR_LOGIN: &str =
    "__Host-gatehouse-login=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax";

fn set(name: &'static str, value: &CookieValue, max_age: Duration) -> HeaderValue {
    let text = format!(
        "{name}={}; Max-Age={}; {ATTRIBUTES}",
        value.0,
        max_age.as_secs()
    );
    // A validated value is base64url, so this cannot fail; if it ever did, clearing the
    // cookie is the fail-closed answer.
    HeaderValue::try_from(text).unwrap_or_else(|_| {
        HeaderValue::from_static(if name == LOGIN_COOKIE {
            CLEAR_LOGIN
        } else {
            CLEAR_SESSION
        })
    })
}

/// The session cookie in a request, if exactly one valid one is present.
pub fn session(headers: &HeaderMap) -> Option<CookieValue> {
    find(headers, SESSION_COOKIE)
}

/// The login-transaction cookie in a request, if exactly one valid one is present.
pub fn login(headers: &HeaderMap) -> Option<CookieValue> {
    find(headers, LOGIN_COOKIE)
}

/// The value of cookie `name` over all `Cookie` headers. `None` (fail closed) when it is
/// absent, present more than once, invalid, or when any `Cookie` header is not visible ASCII
/// (an unreadable header could hide a duplicate).
pub fn find(headers: &HeaderMap, name: &str) -> Option<CookieValue> {
    let mut found: Option<&str> = None;
    for header in headers.get_all(COOKIE) {
        let text = header.to_str().ok()?;
        for pair in text.split(';') {
            let Some((n, v)) = pair.trim_start_matches([' ', '\t']).split_once('=') else {
                continue;
            };
            if n == name {
                if found.is_some() {
                    return None;
                }
                found = Some(v.trim_end_matches([' ', '\t']));
            }
        }
    }
    CookieValue::parse(found?)
}

/// Removes every cookie whose name starts with `__Host-gatehouse` (any case) from the
/// `Cookie` headers, so upstream apps never see the gateway's session or login ids. A
/// `Cookie` header that is not visible ASCII is dropped entirely.
pub fn strip_gatehouse_cookies(headers: &mut HeaderMap) {
    // Runs on every proxied request, which always carries the session cookie: no allocation
    // when nothing is kept, and a header with nothing to remove is kept as it came.
    let mut kept: Vec<HeaderValue> = Vec::new();
    let mut out = String::new();
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        out.clear();
        for pair in text
            .split(';')
            .map(|p| p.trim_matches([' ', '\t']))
            .filter(|p| !p.is_empty() && !is_gatehouse_pair(p))
        {
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(pair);
        }
        if out.is_empty() {
            continue;
        }
        if out == text {
            kept.push(header.clone());
        } else if let Ok(v) = HeaderValue::from_str(&out) {
            kept.push(v);
        }
    }
    headers.remove(COOKIE);
    for v in kept {
        headers.append(COOKIE, v);
    }
}

fn is_gatehouse_pair(pair: &str) -> bool {
    let name = pair
        .split_once('=')
        .map_or(pair, |(n, _)| n)
        .trim_matches([' ', '\t']);
    let prefix = SESSION_COOKIE.as_bytes();
    name.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    const V: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const W: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn generated_values_are_random_base64url_and_round_trip() {
        let a = CookieValue::generate().unwrap();
        let b = CookieValue::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert_eq!(CookieValue::parse(a.expose()), Some(a.clone()));
        assert_eq!(format!("{a:?}"), "CookieValue(<redacted>)");
        assert_ne!(a.hash().as_str(), a.expose());
        assert_eq!(a.hash(), a.clone().hash());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn set_cookie_attributes() {
        let v = CookieValue::parse(V).unwrap();
        let s = set_session(&v, Duration::from_secs(43200));
        assert_eq!(
            s,
            format!("__Host-gatehouse={V}; Max-Age=43200; Path=/; Secure; HttpOnly; SameSite=Lax")
                .as_str()
        );
        let l = set_login(&v);
        assert_eq!(
            l,
            format!(
                "__Host-gatehouse-login={V}; Max-Age=600; Path=/; Secure; HttpOnly; SameSite=Lax"
            )
            .as_str()
        );
        for h in [s, l, clear_session(), clear_login()] {
            let t = h.to_str().unwrap();
            assert!(t.starts_with("__Host-gatehouse"));
            assert!(!t.to_ascii_lowercase().contains("domain"), "{t}");
            for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
                assert!(t.split("; ").any(|a| a == attr), "{t} lacks {attr}");
            }
        }
        assert!(
            clear_session()
                .to_str()
                .unwrap()
                .starts_with("__Host-gatehouse=; Max-Age=0;")
        );
        assert!(
            clear_login()
                .to_str()
                .unwrap()
                .starts_with("__Host-gatehouse-login=; Max-Age=0;")
        );
    }

    #[test]
    fn finds_exactly_one_valid_cookie() {
        let table: &[(&[&str], Option<&str>, Option<&str>)] = &[
            // (Cookie headers, session found, login found)
            (&[], None, None),
            (&[&format!("__Host-gatehouse={V}")], Some(V), None),
            (&[&format!("a=b; __Host-gatehouse={V}; c=d")], Some(V), None),
            (&[&format!("a=b;__Host-gatehouse={V}")], Some(V), None),
            (
                &[&format!("__Host-gatehouse={V}; __Host-gatehouse-login={W}")],
                Some(V),
                Some(W),
            ),
            (
                &["a=b", &format!("__Host-gatehouse-login={W}")],
                None,
                Some(W),
            ),
            (
                &["flag; x", &format!("__Host-gatehouse={V}")],
                Some(V),
                None,
            ),
            // Duplicates, in one header or across several: fail closed.
            (
                &[&format!("__Host-gatehouse={V}; __Host-gatehouse={W}")],
                None,
                None,
            ),
            (
                &[&format!("__Host-gatehouse={V}; __Host-gatehouse={V}")],
                None,
                None,
            ),
            (
                &[
                    &format!("__Host-gatehouse={V}"),
                    &format!("__Host-gatehouse={W}"),
                ],
                None,
                None,
            ),
            (
                &[&format!("__Host-gatehouse={V}"), "__Host-gatehouse="],
                None,
                None,
            ),
            // Look-alike names are other cookies.
            (&[&format!("__host-gatehouse={V}")], None, None),
            (&[&format!("gatehouse={V}")], None, None),
            (&[&format!("__Host-gatehouse ={V}")], None, None),
            (&[&format!("__Host-gatehousex={V}")], None, None),
            // Bad values.
            (&["__Host-gatehouse="], None, None),
            (&["__Host-gatehouse=short"], None, None),
            (&[&format!("__Host-gatehouse=\"{V}\"")], None, None),
            (&[&format!("__Host-gatehouse={V}=")], None, None),
            (&[&format!("__Host-gatehouse={}+/", &V[..40])], None, None),
            (
                &[&format!(
                    "__Host-gatehouse={}",
                    "A".repeat(MAX_VALUE_LEN + 1)
                )],
                None,
                None,
            ),
            (&[&format!("__Host-gatehouse={V}%00")], None, None),
        ];
        for (cookies, session_want, login_want) in table {
            let h = headers(cookies);
            assert_eq!(
                session(&h).map(|v| v.expose().to_string()).as_deref(),
                *session_want,
                "{cookies:?}"
            );
            assert_eq!(
                login(&h).map(|v| v.expose().to_string()).as_deref(),
                *login_want,
                "{cookies:?}"
            );
        }
    }

    #[test]
    fn unreadable_cookie_header_fails_closed() {
        let mut h = headers(&[&format!("__Host-gatehouse={V}")]);
        h.append(COOKIE, HeaderValue::from_bytes(b"x=\xff").unwrap());
        assert_eq!(session(&h), None);
    }

    #[test]
    fn strips_gatehouse_cookies_before_proxying() {
        let mut h = headers(&[
            &format!("a=1; __Host-gatehouse={V}; b=2"),
            &format!("__HOST-GATEHOUSE-login={W}"),
            "c=3",
        ]);
        h.append(COOKIE, HeaderValue::from_bytes(b"x=\xff").unwrap());
        strip_gatehouse_cookies(&mut h);
        let left: Vec<_> = h
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(left, ["a=1; b=2", "c=3"]);
        let mut only = headers(&[&format!("__Host-gatehouse={V}")]);
        strip_gatehouse_cookies(&mut only);
        assert!(only.get(COOKIE).is_none());
    }
}
