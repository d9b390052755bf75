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
use crate::support::identity::{PUBLIC_HOST, h1_with, urlencode};
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, TEST_USER, Upstream, host, within};

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

/// Two apps (`wiki`, `tools`), both open to the test group; with `console`, `tools` also
/// accepts WebSockets from `https://console.example.com`.
async fn two_apps(console: bool) -> (Gatehouse, Upstream, Upstream) {
    let wiki = Upstream::start().await;
    let tools = Upstream::start().await;
    let mut tools_app = AppSpec::new("tools", &host("tools"), &tools.url());
    if console {
        tools_app = tools_app.allow_origin("https://console.example.com");
    }
    let spec = GatehouseSpec::default()
        .with_app(AppSpec::new("wiki", &host("wiki"), &wiki.url()))
        .with_app(tools_app);
    (Gatehouse::start_signed_in(spec).await, wiki, tools)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_refused_on_any_other_host_than_its_own() {
    let (gh, wiki, tools) = two_apps(false).await;
    // Signed in on the wiki (the first app's host).
    let cookie = gh.cookie_value().unwrap();
    let mut c = h1_with(&gh, &host("wiki"), &cookie).await;
    assert_eq!(within(QUICK, "own host", c.get("/")).await.status, 200);
    // The same cookie carried to the other app host, and to the public host's portal.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);
    let cases: &[Case] = &[
        ("tools API", "tools", &[], 401),
        ("tools browser", "tools", &[("accept", "text/html")], 303),
        ("portal", "gatehouse", &[("accept", "text/html")], 303),
    ];
    for (what, name, extra, status) in cases {
        let h = if *name == "gatehouse" {
            PUBLIC_HOST.to_string()
        } else {
            host(name)
        };
        let path = if *name == "gatehouse" {
            "/.gatehouse/"
        } else {
            "/"
        };
        let mut c = h1_with(&gh, &h, &cookie).await;
        let req = c.request("GET", path, extra, empty());
        let r = within(QUICK, what, c.send(req)).await;
        assert_eq!(r.status.as_u16(), *status, "{what}: {}", r.text());
        if *status == 303 {
            let loc = r.header("location").unwrap_or_default();
            assert!(loc.starts_with("/.gatehouse/login"), "{what}: {loc}");
        }
        gh.expect_audit("session_host_mismatch", |e| {
            e["user"] == TEST_USER
                && e["host"] == h.as_str()
                && e["issued_for"] == host("wiki").as_str()
                && e["client_addr"] == "127.0.0.1"
                && e["session"].as_str().is_some_and(|s| s.len() == 64)
        })
        .await;
    }
    assert_eq!(
        tools.count(),
        0,
        "the tools app was reached: {:?}",
        tools.paths()
    );
    // Still a session of the wiki.
    assert_eq!(
        within(QUICK, "own host again", c.get("/")).await.status,
        200
    );
    assert_eq!(wiki.count(), 2);
}

/// An upgrade request to the tools app with these `Origin` headers.
async fn upgrade(gh: &Gatehouse, cookie: &str, origins: &[&str]) -> u16 {
    let mut c = h1_with(gh, &host("tools"), cookie).await;
    let extra: Vec<(&str, &str)> = origins.iter().map(|o| ("origin", *o)).collect();
    let req = c.upgrade_request("/ws", &extra);
    let resp = within(QUICK, "upgrade", c.send_head(req)).await.unwrap();
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_from_a_foreign_origin_are_refused_and_audited() {
    let (gh, _wiki, _tools) = two_apps(true).await;
    let user = gh
        .create_user("wsuser", &[crate::support::TEST_GROUP])
        .await;
    let cookie = gh.login(&host("tools"), &user).await;
    let tools = host("tools");
    let own = format!("https://{tools}");
    let own_caps = format!("https://{}", tools.to_ascii_uppercase());
    let plain_http = format!("http://{tools}");
    let suffix = format!("https://{tools}.evil.example");
    let cases: Vec<(&str, Vec<&str>, u16)> = vec![
        ("own origin", vec![own.as_str()], 101),
        ("own origin, other case", vec![own_caps.as_str()], 101),
        ("no origin (not a browser)", vec![], 101),
        (
            "configured origin",
            vec!["https://console.example.com"],
            101,
        ),
        ("foreign site", vec!["https://evil.example"], 403),
        ("the app over plain http", vec![plain_http.as_str()], 403),
        ("a look-alike suffix", vec![suffix.as_str()], 403),
        (
            "another app host",
            vec!["https://wiki.gatehouse.localhost"],
            403,
        ),
        ("opaque origin", vec!["null"], 403),
        (
            "two origins",
            vec![own.as_str(), "https://evil.example"],
            403,
        ),
    ];
    for (what, origins, want) in &cases {
        let got = upgrade(&gh, &cookie, origins).await;
        assert_eq!(got, *want, "{what}: {origins:?}");
        if *want == 403 {
            let shown = if origins.len() > 1 {
                "multiple"
            } else {
                origins[0]
            };
            gh.expect_audit("websocket_origin_refused", |e| {
                e["user"] == "wsuser"
                    && e["app"] == "tools"
                    && e["origin"] == shown
                    && e["client_addr"] == "127.0.0.1"
            })
            .await;
        }
    }
    let refused = cases.iter().filter(|c| c.2 == 403).count();
    assert_eq!(
        gh.count_audit("websocket_origin_refused", |e| e["user"] == "wsuser"),
        refused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_401_carries_www_authenticate() {
    let (gh, _up) = echo_gateway(GatehouseSpec::default()).await;
    let user = gh
        .create_user("challenged", &[crate::support::TEST_GROUP])
        .await;
    let echo = host("echo");
    let mut answers = Vec::new();
    // No session: an API request (no HTML accepted), and a POST.
    let mut c = gh.h1_anon(&echo).await;
    answers.push((
        "API without session",
        within(QUICK, "api", c.get("/api")).await,
    ));
    let req = c.request("POST", "/api", &[("accept", "text/html")], empty());
    answers.push((
        "POST without session",
        within(QUICK, "post", c.send(req)).await,
    ));
    // A forged or unknown session cookie.
    let forged = format!("__Host-gatehouse={}", "a".repeat(64));
    let mut c = h1_with(&gh, &echo, &forged).await;
    answers.push((
        "unknown session",
        within(QUICK, "forged", c.get("/api")).await,
    ));
    // A failed login (wrong password).
    let r = gh
        .try_login(&echo, &user, "wrong-password-123", &user.code(), None)
        .await;
    answers.push(("failed login", r));
    // Over HTTP/2 as well.
    let mut c2 = gh.h2_anon(&echo).await;
    answers.push((
        "HTTP/2 without session",
        within(QUICK, "h2", c2.get("/api")).await,
    ));
    for (what, r) in answers {
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Cookie ") && challenge.contains("realm=\"Gatehouse\""),
            "{what}: WWW-Authenticate {challenge:?}"
        );
    }
}
