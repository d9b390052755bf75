//! Header and path hygiene on the way to the upstream. Threat: a client impersonating a user
//! through identity headers, hiding its address behind a forged X-Forwarded-For, or reaching a
//! path the policy did not see (dot segments, encoded slashes). Mitigation under test: the
//! gateway strips identity headers, sets X-Forwarded-* itself, forwards the normalised path
//! and refuses ambiguous ones — checked by what a real upstream receives.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support::client::{echoed_headers, empty};
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host, within};

/// A gateway with one echo app on `echo.gatehouse.localhost`.
async fn echo_gateway(spec: GatehouseSpec) -> (Gatehouse, Upstream) {
    let up = Upstream::start().await;
    let gh =
        Gatehouse::start_signed_in(spec.with_app(AppSpec::new("echo", &host("echo"), &up.url())))
            .await;
    (gh, up)
}

/// Spellings of identity headers a client may try to smuggle to the upstream.
const SPOOFED: &[&str] = &[
    "X-Gatehouse-User",
    "x_gatehouse_user",
    "X-GATEHOUSE-USER",
    "X-Gatehouse-Groups",
    "x_gatehouse_groups",
    "X-Gatehouse-Assertion",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "Remote-User",
    "Remote_User",
    "X-Remote-User",
    "X-Auth-Request-User",
];
const SPOOF_VALUE: &str = "spoofed-admin-7f3a";

/// A benign header carrying the marker: it must arrive, proving the check below can see a leak.
const CONTROL_HEADER: &str = "x-app-note";

fn assert_no_spoof(echo: &serde_json::Value, what: &str) {
    assert_eq!(
        echoed_headers(echo, CONTROL_HEADER),
        vec![SPOOF_VALUE.to_string()],
        "{what}: the benign control header did not arrive; echo: {echo}"
    );
    let leaked: Vec<_> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0].as_str() != Some(CONTROL_HEADER))
        .filter(|p| p[1].as_str().unwrap_or_default().contains(SPOOF_VALUE))
        .collect();
    assert!(
        leaked.is_empty(),
        "{what}: spoofed identity headers reached the upstream: {leaked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let (gh, up) = echo_gateway(GatehouseSpec::default()).await;
    let mut extra: Vec<(&str, &str)> = SPOOFED.iter().map(|h| (*h, SPOOF_VALUE)).collect();
    extra.push((CONTROL_HEADER, SPOOF_VALUE));
    let mut c = gh.h1(&host("echo")).await;
    let req = c.request("GET", "/whoami", &extra, empty());
    let r = within(QUICK, "h1", c.send(req)).await;
    assert_eq!(r.status, 200, "body: {}", r.text());
    assert_no_spoof(&r.json(), "HTTP/1.1");
    let mut c2 = gh.h2(&host("echo")).await;
    let lower: Vec<String> = SPOOFED.iter().map(|h| h.to_ascii_lowercase()).collect();
    let mut extra2: Vec<(&str, &str)> = lower.iter().map(|h| (h.as_str(), SPOOF_VALUE)).collect();
    extra2.push((CONTROL_HEADER, SPOOF_VALUE));
    let req = c2.request("GET", "/whoami", &extra2, empty());
    let r = within(QUICK, "h2", c2.send(req)).await;
    assert_eq!(r.status, 200);
    assert_no_spoof(&r.json(), "HTTP/2");
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_the_client_ip_not_the_clients_claim() {
    let (gh, _up) = echo_gateway(GatehouseSpec::default()).await;
    let mut c = gh.h1(&host("echo")).await;
    let req = c.request(
        "GET",
        "/",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-for", "7.7.7.7"),
        ],
        empty(),
    );
    let r = within(QUICK, "xff", c.send(req)).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(
        echoed_headers(&echo, "x-forwarded-for"),
        vec!["127.0.0.1".to_string()],
        "echo: {echo}"
    );
    assert_eq!(
        echoed_headers(&echo, "x-forwarded-proto"),
        vec!["https".to_string()],
        "echo: {echo}"
    );
    // The same over HTTP/2.
    let mut c2 = gh.h2(&host("echo")).await;
    let req = c2.request("GET", "/", &[("x-forwarded-for", "6.6.6.6")], empty());
    let echo = within(QUICK, "xff h2", c2.send(req)).await.json();
    assert_eq!(
        echoed_headers(&echo, "x-forwarded-for"),
        vec!["127.0.0.1".to_string()],
        "HTTP/2 echo: {echo}"
    );
    assert_eq!(
        echoed_headers(&echo, "x-forwarded-proto"),
        vec!["https".to_string()],
        "HTTP/2 echo: {echo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_cannot_remove_the_forwarded_headers() {
    // Hop-by-hop abuse: a client names the headers the gateway adds in `Connection`, hoping a
    // proxy strips them after adding them (or keeps the client's own values).
    let (gh, _up) = echo_gateway(GatehouseSpec::default()).await;
    let mut c = gh.h1(&host("echo")).await;
    let req = c.request(
        "GET",
        "/",
        &[
            (
                "connection",
                "keep-alive, x-forwarded-for, x-forwarded-proto",
            ),
            ("x-forwarded-for", "6.6.6.6"),
        ],
        empty(),
    );
    let r = within(QUICK, "hop-by-hop", c.send(req)).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(
        echoed_headers(&echo, "x-forwarded-for"),
        vec!["127.0.0.1".to_string()],
        "echo: {echo}"
    );
    assert_eq!(
        echoed_headers(&echo, "x-forwarded-proto"),
        vec!["https".to_string()],
        "echo: {echo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_receives_the_normalised_path() {
    let (gh, _up) = echo_gateway(GatehouseSpec::default()).await;
    let mut c = gh.h1(&host("echo")).await;
    let cases = [
        ("/a/./b//c", "/a/b/c"),
        ("/a/x/../b/c", "/a/b/c"),
        ("//a///b/c", "/a/b/c"),
        ("/%61/b/%63", "/a/b/c"),
        ("/a/%2e/b/c", "/a/b/c"),
    ];
    let mut wrong = Vec::new();
    for (sent, want) in cases {
        let r = within(QUICK, sent, c.get(sent)).await;
        if r.status != 200 {
            wrong.push(format!(
                "{sent}: status {} (want 200 and path {want})",
                r.status
            ));
            continue;
        }
        let got = r.json()["path"].as_str().unwrap().to_string();
        if got != want {
            wrong.push(format!("{sent}: upstream saw {got}, want {want}"));
        }
    }
    // Dot segments above the root never reach the upstream: refused, or clamped at the root.
    for sent in ["/../x", "/a/../../x", "/%2e%2e/x"] {
        let mut c = gh.h1(&host("echo")).await;
        let r = within(QUICK, sent, c.get(sent)).await;
        if r.status == 200 {
            let got = r.json()["path"].as_str().unwrap().to_string();
            if got != "/x" {
                wrong.push(format!("{sent}: upstream saw {got}, want /x (or a 400)"));
            }
        } else if r.status != 400 {
            wrong.push(format!("{sent}: status {}, want 400 or /x", r.status));
        }
    }
    assert!(wrong.is_empty(), "path normalisation: {wrong:#?}");
    // The query string is passed on unchanged.
    let r = within(QUICK, "query", c.get("/a//b?x=%2F&y=1")).await;
    assert_eq!(r.json()["query"], "x=%2F&y=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_refused_with_400() {
    let (gh, up) = echo_gateway(GatehouseSpec::default()).await;
    let mut wrong = Vec::new();
    for path in [
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a%5Cb",
        "/a%00b",
        "/%2e%2e%2fetc/passwd",
    ] {
        // A fresh connection each time: the gateway may close after a 400.
        let mut c = gh.h1(&host("echo")).await;
        let r = within(QUICK, path, c.get(path)).await;
        if r.status != 400 {
            wrong.push(format!("{path}: status {}", r.status));
        }
    }
    assert!(wrong.is_empty(), "ambiguous paths not refused: {wrong:?}");
    assert_eq!(up.count(), 0, "upstream got {:?}", up.paths());
}
