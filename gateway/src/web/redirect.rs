//! Where a browser may be sent after login (the `next` return URL).
//!
//! Threat: an open redirect. A phishing link `https://gatehouse/.gatehouse/login?next=//evil`
//! would show the real login page and then hand the freshly authenticated user to an
//! attacker's site (credential/TOTP phishing, token leaks via Referer). Browsers and URL
//! libraries "fix" many malformed URLs (`/\evil`, tabs and newlines removed, `https:evil`,
//! uppercase and IDN hosts), so a permissive check is easy to fool.
//! Mitigation: an allow-list, not a deny-list. Only a relative path starting with exactly one
//! `/`, or an `https://` URL whose host is exactly the gateway's public host or a configured
//! app host on the gateway's port, without userinfo. Only printable ASCII is accepted, `\` is
//! refused everywhere, and the value is percent-decoded once and checked again so
//! `/%2f/evil` or `/%5cevil` cannot turn into `//evil`. Anything refused leads to the portal.

use std::collections::BTreeSet;

use gatehouse_core::Config;

use super::PORTAL_PATH;

/// Longest return URL accepted; longer ones go to the portal.
pub const MAX_RETURN_URL_LEN: usize = 2048;

/// Why a return URL was refused (never echoes the URL: it is attacker-chosen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("return url refused: {reason}")]
pub struct RedirectRefused {
    pub reason: &'static str,
}

fn refuse(reason: &'static str) -> RedirectRefused {
    RedirectRefused { reason }
}

/// The hosts and port a return URL may name.
#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    /// Lowercase host names (as `url` serialises them: punycode, IPv6 in brackets).
    hosts: BTreeSet<String>,
    port: u16,
}

impl RedirectPolicy {
    /// `public_url` is the gateway's public URL; `app_hosts` the apps' hosts (lowercase, no
    /// port: they are served on the gateway's port).
    pub fn new<I, S>(public_url: &url::Url, app_hosts: I) -> RedirectPolicy
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut hosts = BTreeSet::new();
        if let Some(h) = public_url.host_str() {
            hosts.insert(h.to_string());
        }
        hosts.extend(app_hosts.into_iter().map(|h| h.as_ref().to_string()));
        RedirectPolicy {
            hosts,
            port: public_url.port_or_known_default().unwrap_or(443),
        }
    }

    /// The policy for a validated configuration: public host plus every app host.
    pub fn from_config(config: &Config) -> RedirectPolicy {
        RedirectPolicy::new(
            &config.gateway.public_url,
            config.apps.iter().map(|a| a.host.as_str()),
        )
    }

    /// The browser origins of the gateway's hosts (`https://host[:port]`, as sent in
    /// `Origin`), for [`check_origin`](super::csrf::check_origin): forms are served under
    /// `/.gatehouse/` on every host.
    pub fn origins(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| match self.port {
                443 => format!("https://{h}"),
                port => format!("https://{h}:{port}"),
            })
            .collect()
    }

    /// `raw` (already form/query-decoded once) if it is a safe place to send the browser.
    pub fn check<'a>(&self, raw: &'a str) -> Result<&'a str, RedirectRefused> {
        if raw.is_empty() || raw.len() > MAX_RETURN_URL_LEN {
            return Err(refuse("empty or too long"));
        }
        // Printable ASCII only: no whitespace, control characters (browsers silently drop
        // tab/CR/LF inside URLs), DEL or raw non-ASCII (IDN look-alikes), and no `\`
        // (browsers read it as `/`).
        if !raw
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'\\')
        {
            return Err(refuse("character outside printable ascii or a backslash"));
        }
        if raw.starts_with('/') {
            check_path(raw)?;
            return Ok(raw);
        }
        // Exactly lowercase `https://`: `HTTPS://`, `https:evil`, `https:/evil`, `http://`,
        // `javascript:`, `data:` and scheme-relative forms all fail here.
        let Some(rest) = raw.strip_prefix("https://") else {
            return Err(refuse("neither a relative path nor an https url"));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at_checked(end).unwrap_or((rest, ""));
        self.check_authority(authority)?;
        if tail.starts_with('/') {
            check_path(tail)?;
        } else {
            check_decoded(tail)?;
        }
        Ok(raw)
    }

    /// The URL to redirect to after login: `raw` when safe, else the portal.
    pub fn target_or_portal<'a>(&self, raw: Option<&'a str>) -> &'a str {
        match raw.map(|r| self.check(r)) {
            Some(Ok(safe)) => safe,
            _ => PORTAL_PATH,
        }
    }

    fn check_authority(&self, authority: &str) -> Result<(), RedirectRefused> {
        if authority.contains('@') {
            return Err(refuse("userinfo in url"));
        }
        // An IPv6 literal's colons sit inside brackets; the port colon is after `]`.
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, Some(p)),
            _ => (authority, None),
        };
        let host_ok = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'-' | b'.' | b'[' | b']' | b':')
            });
        if !host_ok || !self.hosts.contains(host) {
            return Err(refuse("host is not the gateway or a configured app"));
        }
        let port = match port {
            None => 443,
            // Canonical digits only: no sign, no leading zero, no empty port.
            Some(p)
                if !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && !p.starts_with('0') =>
            {
                p.parse::<u16>().map_err(|_| refuse("bad port"))?
            }
            Some(_) => return Err(refuse("bad port")),
        };
        if port != self.port {
            return Err(refuse("port differs from the gateway's"));
        }
        Ok(())
    }
}

/// A path (plus query/fragment) starting with `/`: refused if it, or its once-decoded form,
/// starts with `//` or `/\` (scheme-relative: another host), or decodes to control characters
/// or a backslash.
fn check_path(path: &str) -> Result<(), RedirectRefused> {
    if path.starts_with("//") {
        return Err(refuse("scheme-relative url"));
    }
    let decoded = check_decoded(path)?;
    if decoded.starts_with(b"//") {
        return Err(refuse("encoded scheme-relative url"));
    }
    Ok(())
}

/// Percent-decodes once and refuses control characters, DEL and `\` in the result, and any
/// malformed escape.
fn check_decoded(text: &str) -> Result<Vec<u8>, RedirectRefused> {
    let decoded =
        percent_decode(text.as_bytes()).ok_or_else(|| refuse("malformed percent escape"))?;
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\') {
        return Err(refuse("encoded control character or backslash"));
    }
    Ok(decoded)
}

/// `%XX` decoding (no `+` rule: this is a URL, not a form); `None` on a bad escape.
fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut it = input.iter();
    while let Some(&b) = it.next() {
        if b == b'%' {
            let hi = hex_val(*it.next()?)?;
            let lo = hex_val(*it.next()?)?;
            out.push((hi << 4) | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        let public = url::Url::parse("https://gatehouse.localhost:8443").unwrap();
        RedirectPolicy::new(&public, ["grafana.gatehouse.localhost", "wiki.example.com"])
    }

    #[test]
    fn accepts_same_site_targets() {
        let p = policy();
        for ok in [
            "/",
            "/grafana/d/abc?orgId=1&x=%20y#panel",
            "/wiki/My%20Page",
            "/caf%C3%A9",
            "/a//b",
            "/.gatehouse/",
            "https://gatehouse.localhost:8443",
            "https://gatehouse.localhost:8443/",
            "https://grafana.gatehouse.localhost:8443/d/x?y=1",
            "https://wiki.example.com:8443?q=1",
            "https://wiki.example.com:8443#top",
        ] {
            assert_eq!(p.check(ok), Ok(ok), "{ok:?} should be accepted");
            assert_eq!(p.target_or_portal(Some(ok)), ok);
        }
    }

    #[test]
    fn refuses_hostile_targets() {
        let p = policy();
        for bad in [
            "",
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\/evil.com",
            "\\\\evil.com",
            "%2f%2fevil.com",
            "%2F%2Fevil.com",
            "/%2fevil.com",
            "/%2F/evil.com",
            "/%5cevil.com",
            "/%5Cevil.com",
            "/%09/evil.com",
            "/%0d%0aSet-Cookie:x=y",
            "/%00",
            "/%",
            "/%zz",
            "/%4",
            "https:evil.com",
            "https:/evil.com",
            "https:\\\\evil.com",
            "http://gatehouse.localhost:8443/",
            "HTTPS://gatehouse.localhost:8443/",
            "Https://gatehouse.localhost:8443/",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:x",
            "evil.com",
            "?next=//evil",
            "#x",
            " /foo",
            "/foo bar",
            "\t//evil.com",
            "/\t/evil.com",
            "/\n/evil.com",
            "/\r\n/evil.com",
            "/\u{7f}",
            "/caf\u{e9}",
            "https://evil.com/",
            "https://evil.com:8443/",
            "https://gh@evil.com",
            "https://gatehouse.localhost:8443@evil.com/",
            "https://evil.com@gatehouse.localhost:8443/",
            "https://gatehouse.localhost%2f@evil.com",
            "https://gatehouse.localhost:8443%2f%2fevil.com",
            "https://GATEHOUSE.localhost:8443/",
            "https://Gatehouse.Localhost:8443/",
            "https://gatehouse.localhost.:8443/",
            "https://gatehouse.localhost.evil.com:8443/",
            "https://evilgatehouse.localhost:8443/",
            "https://gаtehouse.localhost:8443/",
            "https://xn--gtehouse-7fg.localhost:8443/",
            "https://gatehouse.localhost/",
            "https://gatehouse.localhost:443/",
            "https://gatehouse.localhost:08443/",
            "https://gatehouse.localhost:+8443/",
            "https://gatehouse.localhost:/",
            "https://gatehouse.localhost:99999/",
            "https://gatehouse.localhost:8443\\@evil.com",
            "https://gatehouse.localhost:8443/%5c%5cevil.com",
            "https://gatehouse.localhost:8443//evil.com",
            "https://gatehouse.localhost:8443/%2f/evil.com",
            "https://",
            "https:///evil.com",
        ] {
            assert!(p.check(bad).is_err(), "{bad:?} should be refused");
            assert_eq!(p.target_or_portal(Some(bad)), PORTAL_PATH, "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_RETURN_URL_LEN));
        assert!(p.check(&long).is_err());
        assert_eq!(p.target_or_portal(None), PORTAL_PATH);
    }

    #[test]
    fn default_port_and_ipv6_public_urls() {
        let p = RedirectPolicy::new(
            &url::Url::parse("https://gate.example.com").unwrap(),
            Vec::<String>::new(),
        );
        assert!(p.check("https://gate.example.com/x").is_ok());
        assert!(p.check("https://gate.example.com:443/x").is_ok());
        assert!(p.check("https://gate.example.com:8443/x").is_err());
        let p6 = RedirectPolicy::new(
            &url::Url::parse("https://[::1]:8443").unwrap(),
            Vec::<String>::new(),
        );
        assert!(p6.check("https://[::1]:8443/x").is_ok());
        assert!(p6.check("https://[::1]/x").is_err());
        assert!(p6.check("https://[::2]:8443/x").is_err());
    }

    #[test]
    fn origins_match_what_browsers_send() {
        assert_eq!(
            policy().origins(),
            [
                "https://gatehouse.localhost:8443",
                "https://grafana.gatehouse.localhost:8443",
                "https://wiki.example.com:8443"
            ]
        );
        let public = url::Url::parse("https://gate.example.com").unwrap();
        let p = RedirectPolicy::new(&public, Vec::<String>::new());
        assert_eq!(p.origins(), [crate::web::csrf::origin_of(&public)]);
    }

    #[test]
    fn refusal_reason_never_echoes_input() {
        let err = policy().check("https://secret-token@evil.com").unwrap_err();
        assert!(!err.to_string().contains("secret-token"));
    }
}
