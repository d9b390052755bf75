//! Header hygiene between client, gateway and upstream.
//!
//! Threat: a client making the upstream act on another path, method, client or identity than
//! the policy decided (the families of [`FAMILIES`]), or steering the hop (`Connection:
//! x-gatehouse-user`, `TE`, `Upgrade`); an upstream setting or clearing Gatehouse's own
//! session cookie. Mitigation: those request headers are always removed and the gateway sets
//! the identity and forwarding headers itself; hop-by-hop and framing headers are dropped so
//! hyper re-frames each hop; an upstream's `Set-Cookie` for a Gatehouse cookie is dropped
//! ([`is_gatehouse_cookie`]). Each message's names are read in one pass, without
//! allocating unless something must be removed. Proxied responses always get HSTS
//! (Gatehouse's own responses get `crate::pages::security_headers`).

mod forbidden;
mod set_cookie;

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// HSTS value; the max-age is `defaults::HSTS_MAX_AGE_SECS` (checked by a test).
pub const HSTS: &str = "max-age=63072000; includeSubDomains";
/// CSP added to proxied responses that set no framing policy: framing only, nothing else, so
/// the app's own content keeps working.
pub const PROXIED_CSP: &str = "frame-ancestors 'none'";

pub use forbidden::{FAMILIES, Family, is_forbidden};
pub use set_cookie::is_gatehouse_cookie;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

const HOP_BY_HOP_COUNT: usize = 7;
/// Hop-by-hop headers (RFC 9110 §7.6.1) plus framing headers, which hyper re-creates per hop.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// A `Connection` token that names nothing to remove beyond the fixed hop-by-hop set
/// (the common `keep-alive` / `close` / `upgrade`): no name needs to be parsed for it.
fn names_nothing_more(token: &str) -> bool {
    token.is_empty()
        || [
            "close",
            "keep-alive",
            "upgrade",
            "te",
            "trailer",
            "transfer-encoding",
            "proxy-connection",
        ]
        .iter()
        .any(|k| token.eq_ignore_ascii_case(k))
}

/// Which of [`HOP_BY_HOP`] `name` is, if any.
fn hop_index(name: &HeaderName) -> Option<usize> {
    HOP_BY_HOP.iter().position(|h| h == name)
}

/// Removes hop-by-hop headers, including those the Connection header names (`present`: which
/// of [`HOP_BY_HOP`] the caller's pass over the names saw). For an upgrade, `Connection:
/// upgrade` and `Upgrade` are put back afterwards.
fn strip_hop_by_hop(
    headers: &mut HeaderMap,
    keep_upgrade: bool,
    present: [bool; HOP_BY_HOP_COUNT],
) {
    if !present.contains(&true) {
        // No Connection header either: nothing names another header, nothing to put back.
        return;
    }
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let tokens = || {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
    };
    // Names are parsed (and collected) only when a token names another header.
    if tokens().any(|t| !names_nothing_more(t)) {
        let listed: Vec<HeaderName> = tokens()
            .filter(|t| !names_nothing_more(t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            // Never let a client make us drop a header we set or need (e.g. `Connection: host`).
            if name != header::HOST {
                headers.remove(&name);
            }
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, UPGRADE_TOKEN);
        headers.insert(header::UPGRADE, up);
    }
}

/// True when the request asks for a WebSocket upgrade (HTTP/1.1 `Upgrade: websocket` with a
/// `Connection: upgrade` token).
pub fn wants_websocket(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    upgrade
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// The `X-Forwarded-For` value of a client address (made once per connection).
pub fn forwarded_for(client_ip: IpAddr) -> HeaderValue {
    // An address prints as digits, hex, `.` and `:`: always a valid header value.
    HeaderValue::from_str(&client_ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Prepares a client request's headers for the upstream. `forwarded_for` is the client's
/// address ([`forwarded_for`]), `authority` the Host the client asked for.
pub fn prepare_request(
    headers: &mut HeaderMap,
    websocket: bool,
    forwarded_for: &HeaderValue,
    authority: &str,
) {
    // One pass over the names: hop-by-hop headers and forbidden ones (a removal by name
    // hashes and probes even when the name is absent, so nothing is removed blindly).
    let mut hop = [false; HOP_BY_HOP_COUNT];
    let mut forbidden = false;
    for name in headers.keys() {
        if let Some(slot) = hop_index(name).and_then(|i| hop.get_mut(i)) {
            *slot = true;
        } else if is_forbidden(name.as_str()) {
            forbidden = true;
        }
    }
    strip_hop_by_hop(headers, websocket, hop);
    headers.remove(header::CONTENT_LENGTH);
    if forbidden {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_forbidden(n.as_str()))
            .cloned()
            .collect();
        for name in names {
            headers.remove(&name);
        }
    }
    headers.insert(X_FORWARDED_FOR, forwarded_for.clone());
    headers.insert(X_FORWARDED_PROTO, HTTPS);
    // The upstream sees the Host the client asked for (HTTP/2 clients send `:authority`);
    // an HTTP/1 request's own Host header already holds it.
    let host = match headers.get(header::HOST) {
        Some(v) if v.as_bytes() == authority.as_bytes() => Some(v.clone()),
        _ => HeaderValue::from_str(authority).ok(),
    };
    if let Some(v) = host {
        headers.insert(X_FORWARDED_HOST, v.clone());
        headers.insert(header::HOST, v);
    }
}

const HTTPS: HeaderValue = HeaderValue::from_static("https");
const HSTS_VALUE: HeaderValue = HeaderValue::from_static(HSTS);
const PROXIED_CSP_VALUE: HeaderValue = HeaderValue::from_static(PROXIED_CSP);
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const DENY: HeaderValue = HeaderValue::from_static("DENY");
const NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");

/// Prepares an upstream response's headers for the client; returns how many `Set-Cookie`
/// headers for Gatehouse's own cookies were dropped (the caller logs them).
pub fn prepare_response(headers: &mut HeaderMap, switching: bool) -> usize {
    // One pass over the names: hop-by-hop headers, `Set-Cookie`, and which of the app's own
    // security headers are there.
    let mut hop = [false; HOP_BY_HOP_COUNT];
    let (mut csp, mut xfo, mut nosniff, mut referrer, mut cookies) =
        (false, false, false, false, false);
    for name in headers.keys() {
        if let Some(slot) = hop_index(name).and_then(|i| hop.get_mut(i)) {
            *slot = true;
        } else if name == header::SET_COOKIE {
            cookies = true;
        } else if name == header::CONTENT_SECURITY_POLICY {
            csp = true;
        } else if name == header::X_FRAME_OPTIONS {
            xfo = true;
        } else if name == header::X_CONTENT_TYPE_OPTIONS {
            nosniff = true;
        } else if name == header::REFERRER_POLICY {
            referrer = true;
        }
    }
    strip_hop_by_hop(headers, switching, hop);
    let dropped = if cookies {
        set_cookie::drop_gatehouse_cookies(headers)
    } else {
        0
    };
    headers.insert(header::STRICT_TRANSPORT_SECURITY, HSTS_VALUE);
    // Framing protection only where the app expressed no framing policy of its own (a CSP
    // `frame-ancestors` would override an app's `X-Frame-Options: SAMEORIGIN`).
    if !csp && !xfo {
        headers.append(header::CONTENT_SECURITY_POLICY, PROXIED_CSP_VALUE);
    }
    // The app's own values win; these fill only what it left out.
    if !nosniff {
        headers.append(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    }
    if !xfo {
        headers.append(header::X_FRAME_OPTIONS, DENY);
    }
    if !referrer {
        headers.append(header::REFERRER_POLICY, NO_REFERRER);
    }
    dropped
}

#[cfg(test)]
mod tests {
    use gatehouse_core::config::defaults::HSTS_MAX_AGE_SECS;

    use super::*;

    fn map(list: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in list {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn hsts_matches_default() {
        assert_eq!(
            HSTS,
            format!("max-age={HSTS_MAX_AGE_SECS}; includeSubDomains")
        );
    }

    #[test]
    fn request_preparation() {
        let mut h = map(&[
            ("host", "App.example:8443"),
            ("x-gatehouse-user", "admin"),
            ("X_GATEHOUSE_GROUPS", "root"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("connection", "keep-alive, x-keep-me, host"),
            ("x-keep-me", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("content-length", "10"),
            ("proxy-authorization", "Basic x"),
            ("accept", "*/*"),
        ]);
        prepare_request(
            &mut h,
            false,
            &forwarded_for("10.1.2.3".parse().unwrap()),
            "App.example:8443",
        );
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "accept",
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "App.example:8443");
        assert_eq!(h["host"], "App.example:8443");
    }

    #[test]
    fn websocket_upgrade_kept() {
        let mut h = map(&[
            ("host", "a"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(wants_websocket(&h));
        prepare_request(&mut h, true, &forwarded_for("::1".parse().unwrap()), "a");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
        assert!(!wants_websocket(&map(&[("upgrade", "websocket")])));
        assert!(!wants_websocket(&map(&[
            ("upgrade", "h2c"),
            ("connection", "upgrade")
        ])));
    }

    #[test]
    fn response_preparation() {
        let mut h = map(&[
            ("x-frame-options", "SAMEORIGIN"),
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
            ("content-length", "5"),
        ]);
        prepare_response(&mut h, false);
        assert_eq!(h["strict-transport-security"], HSTS);
        assert_eq!(h["x-frame-options"], "SAMEORIGIN");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["content-length"], "5");
        assert!(!h.contains_key("transfer-encoding") && !h.contains_key("connection"));
        assert!(
            !h.contains_key("content-security-policy"),
            "the app chose its framing policy"
        );
        let mut h = map(&[("content-type", "text/html")]);
        prepare_response(&mut h, false);
        assert_eq!(h["content-security-policy"], PROXIED_CSP);
        assert_eq!(h["x-frame-options"], "DENY");
        let mut h = map(&[("content-security-policy", "default-src 'self'")]);
        prepare_response(&mut h, false);
        assert_eq!(h["content-security-policy"], "default-src 'self'");
    }
}
