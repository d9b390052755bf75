//! An upstream's `Set-Cookie` for Gatehouse's own cookies.
//!
//! Threat: an app behind the gateway (compromised, or simply careless) fixing, replacing or
//! clearing the user's Gatehouse session: `Set-Cookie: __Host-gatehouse=<attacker's
//! session>` (session fixation), `...; Max-Age=0` (forced logout), a second
//! `__Host-gatehouse` under another case or prefix (the session parser then sees a duplicate
//! and fails closed: a denial of service), or a nameless cookie `=__Host-gatehouse=x` that a
//! browser sends back as `__Host-gatehouse=x`. Mitigation: every `Set-Cookie` whose name —
//! or, for a nameless cookie, whose value's leading name — is Gatehouse's, in any case and
//! with or without the `__Host-`/`__Secure-` prefix, is dropped before the response reaches
//! the browser; the caller logs it. Gatehouse reserves every cookie name starting with
//! `gatehouse`.

use http::header::{HeaderMap, HeaderValue, SET_COOKIE};

/// The name every Gatehouse cookie starts with, after its `__Host-` prefix.
const RESERVED: &[u8] = b"gatehouse";

fn strip_prefix_ignore_case<'a>(text: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    text.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .and_then(|_| text.get(prefix.len()..))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A cookie name (as a browser will store it) that is Gatehouse's.
fn is_reserved_name(name: &[u8]) -> bool {
    let name = trim(name);
    let bare = strip_prefix_ignore_case(name, b"__host-")
        .or_else(|| strip_prefix_ignore_case(name, b"__secure-"))
        .unwrap_or(name);
    strip_prefix_ignore_case(bare, RESERVED).is_some()
}

/// True when a `Set-Cookie` value sets a Gatehouse cookie (see the module docs).
pub fn is_gatehouse_cookie(set_cookie: &[u8]) -> bool {
    let pair = set_cookie.split(|&b| b == b';').next().unwrap_or_default();
    match pair.iter().position(|&b| b == b'=') {
        Some(eq) => {
            let (name, value) = (pair.get(..eq).unwrap_or_default(), pair.get(eq + 1..));
            if trim(name).is_empty() {
                // Nameless: the browser sends the value alone, which reads as `name=value`.
                let value = value.unwrap_or_default();
                let inner = value.split(|&b| b == b'=').next().unwrap_or_default();
                is_reserved_name(inner)
            } else {
                is_reserved_name(name)
            }
        }
        // No `=`: a nameless cookie whose value is the whole pair.
        None => is_reserved_name(pair),
    }
}

/// Removes every `Set-Cookie` for a Gatehouse cookie; returns how many.
pub(super) fn drop_gatehouse_cookies(headers: &mut HeaderMap) -> usize {
    let dropped = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| is_gatehouse_cookie(v.as_bytes()))
        .count();
    if dropped > 0 {
        let kept: Vec<HeaderValue> = headers
            .get_all(SET_COOKIE)
            .iter()
            .filter(|v| !is_gatehouse_cookie(v.as_bytes()))
            .cloned()
            .collect();
        headers.remove(SET_COOKIE);
        for v in kept {
            headers.append(SET_COOKIE, v);
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gatehouse_cookies_in_every_spelling_are_recognised() {
        let table: &[(&str, bool)] = &[
            ("__Host-gatehouse=abc; Path=/; Secure; HttpOnly", true),
            ("__Host-gatehouse=; Max-Age=0; Path=/; Secure", true),
            ("__Host-gatehouse-login=x", true),
            ("__host-gatehouse=x", true),
            ("__HOST-GATEHOUSE=x", true),
            ("__Secure-gatehouse=x; Secure", true),
            ("__secure-Gatehouse-login=x", true),
            ("gatehouse=x", true),
            ("GateHouse=x", true),
            ("gatehouse_anything=x", true),
            (" __Host-gatehouse =x", true),
            ("\t__Host-gatehouse=x", true),
            ("=__Host-gatehouse=x", true),
            (" =gatehouse=x", true),
            ("__Host-gatehouse", true),
            ("session=abc; Path=/", false),
            ("__Host-session=abc", false),
            ("app_gatehouse=x", false),
            ("x=__Host-gatehouse", false),
            ("=other=x", false),
            ("", false),
            ("__Host-=x", false),
            ("__Host-gate=x", false),
        ];
        for (value, want) in table {
            assert_eq!(is_gatehouse_cookie(value.as_bytes()), *want, "{value:?}");
        }
    }

    #[test]
    fn only_gatehouse_set_cookies_are_dropped() {
        let mut h = HeaderMap::new();
        for v in [
            "a=1",
            "__Host-gatehouse=evil; Path=/; Secure",
            "b=2",
            "=__Host-gatehouse=evil",
        ] {
            h.append(SET_COOKIE, HeaderValue::from_static(v));
        }
        assert_eq!(drop_gatehouse_cookies(&mut h), 2);
        let left: Vec<_> = h.get_all(SET_COOKIE).iter().collect();
        assert_eq!(left, ["a=1", "b=2"]);
        assert_eq!(drop_gatehouse_cookies(&mut h), 0);
    }
}
