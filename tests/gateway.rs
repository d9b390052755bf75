//! End-to-end tests of the gateway's proxying: protocols, routing, errors, security headers
//! and the admin listener (header and path hygiene are in gateway_hygiene.rs). Each test runs
//! its own `gatehouse` process against a real upstream that counts what reaches it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use std::time::{Duration, Instant};

use crate::support::client::{H1, H1Conn, H2, empty, plain_get, tls_connect};
use crate::support::upstream::closed_port;
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Resp, Upstream, host, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A gateway with one echo app on `echo.gatehouse.localhost`.
async fn echo_gateway(spec: GatehouseSpec) -> (Gatehouse, Upstream) {
    let up = Upstream::start().await;
    let gh =
        Gatehouse::start_signed_in(spec.with_app(AppSpec::new("echo", &host("echo"), &up.url())))
            .await;
    (gh, up)
}

fn assert_security_headers(r: &Resp, what: &str) {
    let hsts = r.header("strict-transport-security").unwrap_or_default();
    assert!(
        hsts.contains("max-age=63072000"),
        "{what}: strict-transport-security is {hsts:?}, want max-age=63072000"
    );
    for name in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(
            r.header(name).is_some(),
            "{what}: no {name} header; headers {:?}",
            r.headers
        );
    }
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}: x-content-type-options"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_request_is_proxied_with_alpn_http11() {
    let (gh, up) = echo_gateway(GatehouseSpec::default()).await;
    let mut c = H1Conn::connect(gh.gateway, &host("echo"), gh.client_config(&[H1]))
        .await
        .with_cookie(gh.cookie_value());
    assert_eq!(c.alpn.as_deref(), Some(H1), "negotiated ALPN");
    let r = within(QUICK, "echo over HTTP/1.1", c.get("/hello/world?x=1&y=two")).await;
    assert_eq!(r.status, 200, "body: {}", r.text());
    let echo = r.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/hello/world");
    assert_eq!(echo["query"], "x=1&y=two");
    assert_eq!(up.count(), 1);
    // Keep-alive: a second request on the same connection.
    let req = c.request(
        "POST",
        "/post",
        &[("content-type", "text/plain")],
        support::client::full("abc"),
    );
    let r = within(QUICK, "second request", c.send(req)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_request_is_proxied_with_alpn_h2() {
    let (gh, up) = echo_gateway(GatehouseSpec::default()).await;
    let mut c = gh.h2(&host("echo")).await;
    assert_eq!(c.alpn.as_deref(), Some(H2), "negotiated ALPN");
    let r = within(QUICK, "echo over HTTP/2", c.get("/h2/path?q=1")).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status, 200, "body: {}", r.text());
    let echo = r.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/h2/path");
    assert_eq!(echo["query"], "q=1");
    // Several concurrent streams on one connection.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let req = c.request("GET", &format!("/stream/{i}"), &[], empty());
        let mut send = c.send.clone();
        tasks.push(tokio::spawn(async move {
            let resp = send.send_request(req).await.unwrap();
            support::client::collect(resp).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = within(QUICK, "concurrent h2 stream", t).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["path"], format!("/stream/{i}"));
    }
    assert_eq!(up.count(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offering_both_prefers_h2() {
    let (gh, _up) = echo_gateway(GatehouseSpec::default()).await;
    let tls = tls_connect(gh.gateway, &host("echo"), gh.client_config(&[H2, H1]))
        .await
        .unwrap();
    assert_eq!(support::client::negotiated_alpn(&tls).as_deref(), Some(H2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_alpn_is_served_http11() {
    let (gh, up) = echo_gateway(GatehouseSpec::default()).await;
    let mut c = H1Conn::connect(gh.gateway, &host("echo"), gh.client_config(&[]))
        .await
        .with_cookie(gh.cookie_value());
    assert_eq!(c.alpn, None, "no ALPN offered, none negotiated");
    let r = within(QUICK, "no-ALPN request", c.get("/no-alpn")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/no-alpn");
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_passed_through_and_echoes() {
    let (gh, _up) = echo_gateway(GatehouseSpec::default()).await;
    let mut c = gh.h1(&host("echo")).await;
    let req = c.upgrade_request("/ws", &[]);
    let resp = within(QUICK, "upgrade response", c.send_head(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101, "upgrade refused: {:?}", resp.headers());
    let upgraded = within(QUICK, "upgrade", hyper::upgrade::on(resp))
        .await
        .unwrap();
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    for msg in [
        &b"hello through the gateway"[..],
        &[0u8, 1, 2, 255, 254][..],
        &vec![b'x'; 200_000][..],
    ] {
        io.write_all(msg).await.unwrap();
        io.flush().await.unwrap();
        let mut back = vec![0u8; msg.len()];
        within(QUICK, "echoed bytes", io.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_path_prefix() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let spec = GatehouseSpec::default()
        .with_app(AppSpec::new("main", &host("app"), &a.url()))
        .with_app(AppSpec::new("sub", &host("app"), &b.url()).prefix("/sub"));
    let gh = Gatehouse::start_signed_in(spec).await;
    let mut c = gh.h1(&host("app")).await;
    for (path, want_a, want_b) in [
        ("/", 1, 0),
        ("/sub", 1, 1),
        ("/sub/x", 1, 2),
        ("/subway", 2, 2),
    ] {
        let r = within(QUICK, path, c.get(path)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            (a.count(), b.count()),
            (want_a, want_b),
            "after {path}: a={:?} b={:?}",
            a.paths(),
            b.paths()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_404_and_reaches_no_upstream() {
    let (gh, up) = echo_gateway(GatehouseSpec::default()).await;
    let mut c = gh.h1(&host("nobody")).await;
    let r = within(QUICK, "unknown host", c.get("/")).await;
    assert_eq!(r.status, 404, "body: {}", r.text());
    let mut c2 = gh.h2(&host("nobody")).await;
    let r2 = within(QUICK, "unknown host over h2", c2.get("/x")).await;
    assert_eq!(r2.status, 404);
    assert_eq!(up.count(), 0, "upstream got {:?}", up.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502() {
    let dead = closed_port();
    let spec = GatehouseSpec::default().with_app(AppSpec::new(
        "dead",
        &host("dead"),
        &format!("http://{dead}"),
    ));
    let gh = Gatehouse::start_signed_in(spec).await;
    let mut c = gh.h1(&host("dead")).await;
    let r = within(QUICK, "502", c.get("/")).await;
    assert_eq!(r.status, 502, "body: {}", r.text());
    assert_security_headers(&r, "502 page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_timeout_is_504_within_the_timeout() {
    let spec = GatehouseSpec {
        upstream_timeout: "1s".into(),
        ..Default::default()
    };
    let (gh, up) = echo_gateway(spec).await;
    let mut c = gh.h1(&host("echo")).await;
    let start = Instant::now();
    let r = within(QUICK, "504", c.get("/slow/6000")).await;
    let took = start.elapsed();
    assert_eq!(r.status, 504, "body: {}", r.text());
    assert_eq!(up.count(), 1, "the slow request reached the upstream");
    assert!(
        took >= Duration::from_millis(900),
        "504 after {took:?}, before upstream_timeout (1s)"
    );
    assert!(
        took < Duration::from_millis(3500),
        "504 after {took:?}, want about upstream_timeout (1s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_own_404_and_on_proxied_responses() {
    let (gh, _up) = echo_gateway(GatehouseSpec::default()).await;
    let mut c = gh.h1(&host("nobody")).await;
    let r = within(QUICK, "404", c.get("/")).await;
    assert_eq!(r.status, 404);
    assert_security_headers(&r, "own 404 (HTTP/1.1)");
    let mut c2 = gh.h2(&host("nobody")).await;
    let r = within(QUICK, "404 h2", c2.get("/")).await;
    assert_security_headers(&r, "own 404 (HTTP/2)");
    let mut p = gh.h1(&host("echo")).await;
    let r = within(QUICK, "proxied", p.get("/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-upstream").as_deref(),
        Some("echo"),
        "upstream headers kept"
    );
    let hsts = r.header("strict-transport-security").unwrap_or_default();
    assert!(
        hsts.contains("max-age=63072000"),
        "proxied response HSTS {hsts:?}"
    );
    let mut p2 = gh.h2(&host("echo")).await;
    let r = within(QUICK, "proxied h2", p2.get("/")).await;
    let hsts = r.header("strict-transport-security").unwrap_or_default();
    assert!(
        hsts.contains("max-age=63072000"),
        "proxied h2 response HSTS {hsts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_health_ready_and_metrics() {
    let (gh, _up) = echo_gateway(GatehouseSpec::default()).await;
    let r = within(
        QUICK,
        "healthz",
        plain_get(gh.admin, "127.0.0.1", "/healthz"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = within(QUICK, "readyz", plain_get(gh.admin, "127.0.0.1", "/readyz")).await;
    assert_eq!(r.status, 200);
    // One proxied request, one broken handshake, one connection held open.
    let mut c = gh.h1(&host("echo")).await;
    assert_eq!(within(QUICK, "proxied", c.get("/")).await.status, 200);
    let mut junk = tokio::net::TcpStream::connect(gh.gateway).await.unwrap();
    junk.write_all(b"this is not a TLS client hello\r\n\r\n")
        .await
        .unwrap();
    let _ = within(
        QUICK,
        "junk handshake closed",
        support::client::read_until_close(&mut junk, QUICK),
    )
    .await;
    let r = within(
        QUICK,
        "metrics",
        plain_get(gh.admin, "127.0.0.1", "/metrics"),
    )
    .await;
    assert_eq!(r.status, 200);
    let text = r.text();
    let total = |name: &str| -> Option<f64> {
        let values: Vec<f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let requests = total("gatehouse_http_requests_total");
    assert!(
        requests.is_some_and(|v| v >= 1.0),
        "gatehouse_http_requests_total {requests:?} in:\n{text}"
    );
    let open = total("gatehouse_open_connections");
    assert!(
        open.is_some_and(|v| v >= 1.0),
        "gatehouse_open_connections {open:?} with one open connection, in:\n{text}"
    );
    let failures = total("gatehouse_tls_handshake_failures_total");
    assert!(
        failures.is_some_and(|v| v >= 1.0),
        "gatehouse_tls_handshake_failures_total {failures:?} after a junk handshake, in:\n{text}"
    );
    // Unknown admin path.
    let r = within(
        QUICK,
        "admin 404",
        plain_get(gh.admin, "127.0.0.1", "/nope"),
    )
    .await;
    assert_eq!(r.status, 404);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_redirect_listener_only_redirects_to_https() {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        redirect: true,
        ..Default::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let gh = Gatehouse::start_signed_in(spec).await;
    let addr = gh
        .ready
        .redirect
        .expect("ready line names redirect=http://... when http_redirect_listen is set");
    // With a valid session cookie: were the plain listener to proxy, the request would pass
    // authentication and reach the upstream.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut plain = H1Conn::over(tcp, &host("echo"))
        .await
        .with_cookie(gh.cookie_value());
    let r = within(QUICK, "redirect", plain.get("/some/path?q=1")).await;
    assert!(
        matches!(r.status.as_u16(), 301 | 302 | 307 | 308),
        "status {}",
        r.status
    );
    let loc = r.header("location").unwrap_or_default();
    assert!(loc.starts_with("https://"), "location {loc:?}");
    assert_eq!(up.count(), 0, "plain HTTP reached the upstream");
}
