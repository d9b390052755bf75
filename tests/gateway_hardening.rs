//! Hardening from an outside probe (issue 17), driven against the real binary with real HTTP
//! clients. Threats: the upstream acting on another path, method, client or identity than
//! the policy decided (override and identity headers of other proxies); an upstream touching
//! Gatehouse's own session cookie; a session cookie replayed on another host; a cross-site
//! WebSocket; a 401 without a challenge. Each test is table-driven over the variants a probe
//! tries next (case, `_` for `-`, prefixes of the `*` families, cookie prefixes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support::client::{echoed_headers, empty};
use crate::support::identity::urlencode;
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host, within};

/// A gateway with one echo app on `echo.gatehouse.localhost`, signed in.
async fn echo_gateway(spec: GatehouseSpec) -> (Gatehouse, Upstream) {
    let up = Upstream::start().await;
    let gh =
        Gatehouse::start_signed_in(spec.with_app(AppSpec::new("echo", &host("echo"), &up.url())))
            .await;
    (gh, up)
}

/// Every family of headers that would make the upstream act on something else than the
/// policy decided, with the spellings a probe tries (first the well-known name, then the
/// siblings, other cases and `_` for `-`).
const FAMILIES: &[(&str, &[&str])] = &[
    (
        "URL and path overrides",
        &[
            "X-Original-URL",
            "X-Original-URI",
            "X-Original-Path",
            "X_Original_URL",
            "X-Rewrite-URL",
            "X-REWRITE-URL",
            "X-Override-URL",
            "X-Forwarded-Path",
            "X-Forwarded-Uri",
            "X-Forwarded-Prefix",
            "X_Forwarded_Uri",
            "X-Envoy-Original-Path",
            "X-Middleware-Subrequest",
            "X-HTTP-DestinationURL",
        ],
    ),
    (
        "method overrides",
        &[
            "X-HTTP-Method-Override",
            "X-HTTP-Method",
            "X-Method-Override",
            "x_http_method_override",
            "X_Method_Override",
        ],
    ),
    (
        "client address claims",
        &[
            "True-Client-IP",
            "X-Client-IP",
            "X-Real-IP",
            "X_Real_IP",
            "CF-Connecting-IP",
            "CF-Connecting-IPv6",
            "Fastly-Client-IP",
            "X-Cluster-Client-IP",
            "Forwarded",
            "X-Originating-IP",
            "X-Remote-IP",
            "X-Remote-Addr",
            "Remote-Addr",
            "Client-IP",
            "Proxy-Client-IP",
            "WL-Proxy-Client-IP",
        ],
    ),
    (
        "identity headers of other proxies and clouds",
        &[
            "X-Gatehouse-User",
            "x_gatehouse_groups",
            "X-Authenticated-User",
            "X-Authenticated-Groups",
            "X_Authenticated_User",
            "X-Remote-User",
            "X-Remote-Group",
            "Remote-User",
            "Remote-Groups",
            "Remote_Email",
            "X-WebAuth-User",
            "X-WebAuth-Groups",
            "X-Auth-Request-User",
            "X-Auth-Request-Groups",
            "X-Amzn-Oidc-Identity",
            "X-Amzn-Oidc-Data",
            "X-MS-Client-Principal-Name",
            "X-MS-Client-Principal",
            "X-MS-Client-Principal-Idp",
            "Cf-Access-Authenticated-User-Email",
            "Cf-Access-Jwt-Assertion",
            "X-Goog-Authenticated-User-Email",
            "X-Goog-IAP-JWT-Assertion",
            "X-Forwarded-Email",
            "X-Forwarded-Groups",
            "X-Forwarded-Preferred-Username",
            "X-Forwarded-User",
            "X-Pomerium-Jwt-Assertion",
            "X-Warpgate-Username",
            "X-Auth-User",
            "X-Userinfo",
            "X-SSL-Client-DN",
        ],
    ),
];

const MARK: &str = "probe-7f3a";
/// A benign header carrying the marker: it must arrive, proving the check can see a leak.
const CONTROL: &str = "x-app-note";

/// The names of headers that reached the upstream carrying the marker, besides the control.
fn leaked(echo: &serde_json::Value) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0].as_str() != Some(CONTROL))
        .filter(|p| p[1].as_str().unwrap_or_default().contains(MARK))
        .map(|p| p[0].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_and_foreign_identity_headers_never_reach_the_upstream() {
    let (gh, up) = echo_gateway(GatehouseSpec::default()).await;
    let mut wrong = Vec::new();
    for (family, names) in FAMILIES {
        let mut extra: Vec<(&str, &str)> = names.iter().map(|n| (*n, MARK)).collect();
        extra.push((CONTROL, MARK));
        for proto in ["h1", "h2"] {
            let r = if proto == "h1" {
                let mut c = gh.h1(&host("echo")).await;
                let req = c.request("GET", "/probe", &extra, empty());
                within(QUICK, family, c.send(req)).await
            } else {
                let mut c = gh.h2(&host("echo")).await;
                let req = c.request("GET", "/probe", &extra, empty());
                within(QUICK, family, c.send(req)).await
            };
            assert_eq!(r.status, 200, "{family} over {proto}: {}", r.text());
            let echo = r.json();
            assert_eq!(
                echoed_headers(&echo, CONTROL),
                vec![MARK.to_string()],
                "{family} over {proto}: the control header did not arrive"
            );
            // The upstream saw the policy's request: the path and method it decided on.
            assert_eq!(echo["path"], "/probe", "{family} over {proto}");
            assert_eq!(echo["method"], "GET", "{family} over {proto}");
            let leaks = leaked(&echo);
            if !leaks.is_empty() {
                wrong.push(format!("{family} over {proto}: {leaks:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "headers reached the upstream: {wrong:#?}");
    assert_eq!(up.count(), 2 * FAMILIES.len() as u64);
}

/// `Set-Cookie` lines an upstream may try against Gatehouse's session, and whether they must
/// reach the browser.
const SET_COOKIES: &[(&str, bool)] = &[
    ("__Host-gatehouse=attacker; Path=/; Secure; HttpOnly", false),
    ("__Host-gatehouse=; Max-Age=0; Path=/; Secure", false),
    ("__host-gatehouse=attacker; Path=/; Secure", false),
    ("__HOST-GATEHOUSE=attacker; Path=/; Secure", false),
    ("__Secure-gatehouse=attacker; Path=/; Secure", false),
    ("gatehouse=attacker; Path=/", false),
    ("__Host-gatehouse-login=attacker; Path=/; Secure", false),
    ("=__Host-gatehouse=attacker; Path=/; Secure", false),
    (" __Host-gatehouse =attacker; Path=/; Secure", false),
    ("app_session=fine; Path=/; Secure", true),
    ("theme=dark", true),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cannot_set_or_clear_the_gatehouse_session() {
    let (gh, _up) = echo_gateway(GatehouseSpec::default()).await;
    let query: Vec<String> = SET_COOKIES
        .iter()
        .map(|(c, _)| format!("c={}", urlencode(c)))
        .collect();
    let path = format!("/set-cookie?{}", query.join("&"));
    let mut c = gh.h1(&host("echo")).await;
    let r = within(QUICK, "set-cookie", c.get(&path)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got: Vec<String> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    for (line, passes) in SET_COOKIES {
        assert_eq!(
            got.iter().any(|g| g == line),
            *passes,
            "{line:?}: reached the browser = {}; all: {got:?}",
            !passes
        );
    }
    gh.expect_log_line("the dropped Set-Cookie", |l| {
        l.contains("Set-Cookie dropped") && l.contains("echo")
    })
    .await;
    // The session still works: the upstream changed nothing.
    let r = within(QUICK, "after", c.get("/still-signed-in")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
