//! The request headers a client may never get to an upstream: the documented list.
//!
//! Threat: the policy decides on one path, method, client and identity, and the upstream (or
//! a framework in it) acts on another one named in a header: `X-Original-URL` or
//! `X-Forwarded-Uri` rewriting the path after the check (oauth2-proxy's, Symfony's and IIS's
//! classic), `X-HTTP-Method-Override` turning an allowed GET into a DELETE, `True-Client-IP`
//! or `X-Real-IP` standing in for the client address, or the identity headers of another
//! proxy or cloud (`X-Authenticated-User`, `Cf-Access-*`, `X-Amzn-Oidc-*`, ...) that an app
//! configured for that proxy would believe. Mitigation: every header of [`FAMILIES`] is
//! removed before forwarding, whatever its case (names arrive lowercase) and with `_` read
//! as `-` (servers that fold `_` into `-` would otherwise see the name); the `*` families
//! are matched by prefix, so the next name a probe invents in a family is removed too.
//! Gatehouse then sets the identity (`X-Gatehouse-*`) and `X-Forwarded-For/Proto/Host`
//! itself. The README's "Hostile input" section lists the same families (a test holds the
//! two together).

use std::sync::OnceLock;

/// One family of removed request headers.
#[derive(Debug)]
pub struct Family {
    /// What the family claims, as the README names it.
    pub name: &'static str,
    /// Names removed exactly.
    pub exact: &'static [&'static str],
    /// Name prefixes: every name starting with one is removed.
    pub prefixes: &'static [&'static str],
}

/// Every removed request header, by family. Lowercase, `-` as separator.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "URL and path overrides",
        exact: &[
            "x-rewrite-url",
            "x-override-url",
            "x-http-destinationurl",
            "x-proxy-url",
            "x-matched-path",
            "x-now-route-matches",
            "x-host",
            "x-http-host-override",
        ],
        prefixes: &[
            "x-original-",
            "x-forwarded-",
            "x-envoy-",
            "x-middleware-",
            "x-invoke-",
        ],
    },
    Family {
        name: "method overrides",
        exact: &["x-method-override"],
        prefixes: &["x-http-method"],
    },
    Family {
        name: "client address claims",
        exact: &[
            "forwarded",
            "x-forwarded",
            "x-real-ip",
            "true-client-ip",
            "x-true-client-ip",
            "x-client-ip",
            "x-client-addr",
            "client-ip",
            "cf-connecting-ip",
            "cf-connecting-ipv6",
            "cf-pseudo-ipv4",
            "fastly-client-ip",
            "akamai-client-ip",
            "x-cluster-client-ip",
            "x-originating-ip",
            "x-remote-ip",
            "x-remote-addr",
            "x-proxyuser-ip",
            "x-azure-clientip",
            "x-azure-socketip",
            "x-appengine-user-ip",
            "wl-proxy-client-ip",
            "x-coming-from",
        ],
        prefixes: &["proxy-"],
    },
    Family {
        name: "identity headers of other proxies and clouds",
        exact: &[
            "gap-auth",
            "x-auth-user",
            "x-auth-username",
            "x-auth-userid",
            "x-auth-email",
            "x-auth-groups",
            "x-auth-roles",
            "x-auth-subject",
            "x-userinfo",
            "x-id-token",
            "x-access-token",
            "x-client-cert",
            "x-client-verify",
            "x-arr-clientcert",
        ],
        prefixes: &[
            "x-gatehouse-",
            "x-authenticated-",
            "x-remote-",
            "remote-",
            "x-webauth-",
            "x-auth-request-",
            "x-amzn-oidc-",
            "x-amzn-mtls-",
            "x-ms-client-principal",
            "x-ms-token-",
            "cf-access-",
            "x-goog-authenticated-user-",
            "x-goog-iap-",
            "x-pomerium-",
            "x-warpgate-",
            "teleport-",
            "x-teleport-",
            "x-vouch-",
            "x-consumer-",
            "x-credential-",
            "x-ssl-client-",
            "ssl-client-",
        ],
    },
];

/// A pattern of [`FAMILIES`]: the text and whether it is a prefix.
type Pattern = (&'static [u8], bool);

/// Buckets of the pattern table (a power of two).
const BUCKETS: usize = 512;
/// Every pattern is at least this long: a shorter name is never forbidden.
const MIN_LEN: usize = 5;

/// `b` with `_` read as `-`.
fn fold(b: u8) -> u8 {
    if b == b'_' { b'-' } else { b }
}

/// The bucket of a name (or pattern) by its first and third bytes (folded): names that
/// share a bucket with no pattern (nearly all) are decided by one lookup, and the few that
/// do are compared with one or two patterns, not with the whole list.
fn bucket(name: &[u8]) -> Option<usize> {
    let (b0, b2) = (name.first()?, name.get(2)?);
    Some((usize::from(fold(*b0)) * 37 + usize::from(fold(*b2))) % BUCKETS)
}

/// The patterns by bucket (one table, built once).
fn table() -> &'static [Vec<Pattern>] {
    static TABLE: OnceLock<Vec<Vec<Pattern>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: Vec<Vec<Pattern>> = vec![Vec::new(); BUCKETS];
        for f in FAMILIES {
            let all = f
                .exact
                .iter()
                .map(|e| (e.as_bytes(), false))
                .chain(f.prefixes.iter().map(|p| (p.as_bytes(), true)));
            for (text, prefix) in all {
                if let Some(slot) = bucket(text).and_then(|b| t.get_mut(b)) {
                    slot.push((text, prefix));
                }
            }
        }
        t
    })
}

/// `name` (lowercase) equals `pattern`, reading `_` in `name` as `-`.
fn eq_folded(name: &[u8], pattern: &[u8]) -> bool {
    name.len() == pattern.len()
        && name
            .iter()
            .zip(pattern)
            .all(|(&n, &p)| n == p || (n == b'_' && p == b'-'))
}

/// True for a request header name (lowercase, as hyper gives it) of [`FAMILIES`], with `_`
/// read as `-`. No allocation: it runs on every header of every request.
pub fn is_forbidden(name: &str) -> bool {
    let name = name.as_bytes();
    if name.len() < MIN_LEN {
        return false;
    }
    let Some(candidates) = bucket(name).and_then(|b| table().get(b)) else {
        return false;
    };
    candidates.iter().any(|&(pattern, prefix)| {
        if prefix {
            name.get(..pattern.len())
                .is_some_and(|head| eq_folded(head, pattern))
        } else {
            eq_folded(name, pattern)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family with what a probe sends first and what it tries next (case is folded
    /// by hyper before this runs; `_` spellings are tried here).
    #[test]
    fn forbidden_families_table() {
        let removed: &[(&str, &[&str])] = &[
            (
                "path",
                &[
                    "x-original-url",
                    "x-original-uri",
                    "x-original-path",
                    "x_original_url",
                    "x-rewrite-url",
                    "x_rewrite_url",
                    "x-override-url",
                    "x-forwarded-path",
                    "x-forwarded-uri",
                    "x-forwarded-prefix",
                    "x_forwarded_uri",
                    "x-forwarded-host",
                    "x-forwarded-server",
                    "x-envoy-original-path",
                    "x-middleware-subrequest",
                    "x-invoke-path",
                    "x-http-destinationurl",
                    "x-host",
                ],
            ),
            (
                "method",
                &[
                    "x-http-method-override",
                    "x-http-method",
                    "x-method-override",
                    "x_http_method_override",
                    "x_method_override",
                ],
            ),
            (
                "client",
                &[
                    "true-client-ip",
                    "true_client_ip",
                    "x-client-ip",
                    "x-real-ip",
                    "x_real_ip",
                    "cf-connecting-ip",
                    "cf-connecting-ipv6",
                    "fastly-client-ip",
                    "x-cluster-client-ip",
                    "forwarded",
                    "x-forwarded",
                    "x-forwarded-for",
                    "x-originating-ip",
                    "x-remote-ip",
                    "x-remote-addr",
                    "remote-addr",
                    "client-ip",
                    "proxy-client-ip",
                    "wl-proxy-client-ip",
                    "proxy-authorization",
                ],
            ),
            (
                "identity",
                &[
                    "x-gatehouse-user",
                    "x_gatehouse_groups",
                    "x-gatehouse_assertion",
                    "x-authenticated-user",
                    "x-authenticated-groups",
                    "x-authenticated-userid",
                    "x_authenticated_user",
                    "x-remote-user",
                    "x-remote-group",
                    "x-remote-groups",
                    "remote-user",
                    "remote_user",
                    "remote-groups",
                    "remote-email",
                    "x-webauth-user",
                    "x-webauth-groups",
                    "x_webauth_user",
                    "x-auth-request-user",
                    "x-auth-request-email",
                    "x-auth-request-preferred-username",
                    "x-amzn-oidc-identity",
                    "x-amzn-oidc-data",
                    "x-amzn-oidc-accesstoken",
                    "x-ms-client-principal",
                    "x-ms-client-principal-name",
                    "x-ms-client-principal-id",
                    "x-ms-client-principal-idp",
                    "x-ms-token-aad-id-token",
                    "cf-access-authenticated-user-email",
                    "cf-access-jwt-assertion",
                    "cf_access_authenticated_user_email",
                    "x-goog-authenticated-user-email",
                    "x-goog-authenticated-user-id",
                    "x-goog-iap-jwt-assertion",
                    "x-forwarded-email",
                    "x-forwarded-groups",
                    "x-forwarded-preferred-username",
                    "x-forwarded-user",
                    "x-forwarded-access-token",
                    "x-pomerium-jwt-assertion",
                    "x-pomerium-claim-email",
                    "x-warpgate-username",
                    "teleport-jwt-assertion",
                    "x-vouch-user",
                    "x-consumer-username",
                    "x-auth-user",
                    "x-auth-username",
                    "x-auth-email",
                    "x-auth-groups",
                    "x-auth-roles",
                    "gap-auth",
                    "x-userinfo",
                    "x-ssl-client-dn",
                    "ssl-client-cert",
                    "x-client-cert",
                ],
            ),
        ];
        for (family, names) in removed {
            for name in *names {
                assert!(is_forbidden(name), "{family}: {name} passes");
            }
        }
        for kept in [
            "accept",
            "authorization",
            "cookie",
            "content-type",
            "user-agent",
            "x-request-id",
            "x-requested-with",
            "x-csrf-token",
            "x-user",
            "x-auth-token",
            "x-client-version",
            "x-originalish",
            "referer",
            "origin",
            "priority",
            "remote",
            "cf-ray",
            "te",
            "",
            "x",
            "x-forwarde",
        ] {
            assert!(!is_forbidden(kept), "{kept} is removed");
        }
    }

    #[test]
    fn patterns_are_lowercase_dash_separated_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            for p in f.exact.iter().chain(f.prefixes) {
                assert!(p.len() >= MIN_LEN, "{p} is shorter than MIN_LEN");
                assert!(
                    p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{p}"
                );
                assert!(seen.insert(*p), "{p} listed twice");
            }
        }
    }
}

#[cfg(test)]
mod readme {
    use super::FAMILIES;

    /// The README's "Hostile input" table lists exactly what is removed: every family by its
    /// name, every exact name, every prefix as `prefix*`.
    #[test]
    fn readme_lists_every_removed_header() {
        let readme = include_str!("../../../README.md").to_ascii_lowercase();
        let section = readme
            .split("## hostile input")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a Hostile input section");
        for f in FAMILIES {
            assert!(
                section.contains(&format!("| {} |", f.name.to_ascii_lowercase())),
                "README lacks the family {}",
                f.name
            );
            for e in f.exact {
                assert!(section.contains(&format!("`{e}`")), "README lacks `{e}`");
            }
            for p in f.prefixes {
                let shown = format!("`{}*`", p.trim_end_matches('-'));
                let shown_dash = format!("`{p}*`");
                assert!(
                    section.contains(&shown) || section.contains(&shown_dash),
                    "README lacks `{p}*`"
                );
            }
        }
    }
}
