//! Hostile HTTP against the gateway: request smuggling (conflicting or obfuscated framing),
//! oversized heads, slow clients. Each attack must be answered 400/431 (or cut off), the
//! connection closed, and nothing may reach the upstream. Every request (the smuggled ones
//! too) carries a valid session cookie, so "nothing reached the upstream" is about framing:
//! had the gateway accepted the bytes, authentication would have let them through.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use std::time::Duration;

use crate::support::client::RawOutcome;
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host};

async fn gateway() -> (Gatehouse, Upstream) {
    let up = Upstream::start().await;
    let gh = Gatehouse::start_signed_in(GatehouseSpec::default().with_app(AppSpec::new(
        "echo",
        &host("echo"),
        &up.url(),
    )))
    .await;
    (gh, up)
}

/// Stands for the session cookie's header line in request templates; [`with_cookie`]
/// replaces it.
const COOKIE: &str = "@COOKIE@\r\n";

/// `bytes` with every [`COOKIE`] marker replaced by the gateway's `Cookie:` line.
fn with_cookie(gh: &Gatehouse, bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let line = gh.cookie_line();
    assert!(!line.is_empty(), "the gateway has no session cookie");
    text.replace(COOKIE, &line).into_bytes()
}

/// Sends `head_and_body` raw over TLS and reads until the gateway closes (or QUICK passes).
async fn attack(gh: &Gatehouse, bytes: &[u8]) -> RawOutcome {
    let mut c = gh.raw(&host("echo")).await;
    // A write error means the gateway already closed: that is fine, read what it sent.
    let _ = c.send(&with_cookie(gh, bytes)).await;
    c.read_until_close(QUICK).await
}

/// The attack got `want`, the connection was closed, and the upstream saw nothing.
async fn assert_refused(name: &str, bytes: &[u8], want: u16) {
    let (gh, up) = gateway().await;
    // Sanity: the same route works for a well-formed request, so a refusal is about framing.
    let ok = attack(
        &gh,
        format!(
            "GET /ok HTTP/1.1\r\nHost: {}\r\n{COOKIE}Connection: close\r\n\r\n",
            host("echo")
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(
        ok.status(),
        Some(200),
        "{name}: well-formed control request failed: {}",
        ok.text()
    );
    let before = up.count();
    let out = attack(&gh, bytes).await;
    assert_eq!(
        out.status(),
        Some(want),
        "{name}: response {:?}",
        out.text()
    );
    assert!(
        out.closed,
        "{name}: connection still open {:?} after the response",
        out.elapsed
    );
    // The upstream request count is read after the gateway closed: nothing can still be in flight.
    assert_eq!(
        up.count(),
        before,
        "{name}: reached the upstream: {:?}",
        up.paths()
    );
}

fn req(headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /smuggle HTTP/1.1\r\nHost: {}\r\n{COOKIE}{headers}\r\n{body}",
        host("echo")
    )
    .into_bytes()
}

const SMUGGLED: &str =
    "GET /smuggled HTTP/1.1\r\nHost: echo.gatehouse.localhost\r\n@COOKIE@\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_content_lengths_are_400() {
    assert_refused(
        "CL.CL differing",
        &req("Content-Length: 5\r\nContent-Length: 50\r\n", "hello"),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_equal_content_lengths_are_400() {
    assert_refused(
        "CL.CL equal",
        &req("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_list_is_400() {
    assert_refused("CL list", &req("Content-Length: 5, 5\r\n", "hello"), 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_400() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cl = body.len() - SMUGGLED.len();
    assert_refused(
        "CL.TE",
        &req(
            &format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\n"),
            &body,
        ),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_with_content_length_after_is_400() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    assert_refused(
        "TE.CL",
        &req("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", &body),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_transfer_encoding_is_400() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    assert_refused(
        "TE.TE",
        &req(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            &body,
        ),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obfuscated_transfer_encoding_value_is_400() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    assert_refused(
        "TE xchunked",
        &req("Transfer-Encoding: xchunked\r\n", &body),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_list_hiding_chunked_is_400() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    assert_refused(
        "TE chunked, identity",
        &req("Transfer-Encoding: chunked, identity\r\n", &body),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_with_space_before_colon_is_400() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    assert_refused(
        "TE space before colon",
        &req("Transfer-Encoding : chunked\r\n", &body),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_line_folding_is_400() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    assert_refused(
        "TE obs-fold",
        &req("Transfer-Encoding:\r\n chunked\r\n", &body),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_over_32_kib_is_431() {
    let big = "a".repeat(33 * 1024);
    let bytes = format!(
        "GET /big HTTP/1.1\r\nHost: {}\r\n{COOKIE}X-Big: {big}\r\n\r\n",
        host("echo")
    );
    assert_refused("33 KiB header", bytes.as_bytes(), 431).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_over_32_kib_in_many_headers_is_431() {
    // 40 headers of 1 KiB: under the count limit, over the size limit.
    let mut head = format!("GET /big HTTP/1.1\r\nHost: {}\r\n{COOKIE}", host("echo"));
    for i in 0..40 {
        head.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(1024)));
    }
    head.push_str("\r\n");
    assert_refused("40 x 1 KiB headers", head.as_bytes(), 431).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_headers_is_431() {
    let mut head = format!("GET /many HTTP/1.1\r\nHost: {}\r\n{COOKIE}", host("echo"));
    for i in 0..101 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    assert_refused("101 headers", head.as_bytes(), 431).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_half_a_head_is_cut_off_within_header_timeout() {
    // header_timeout is 2s in the default spec.
    let (gh, up) = gateway().await;
    let mut c = gh.raw(&host("echo")).await;
    c.send(&with_cookie(
        &gh,
        format!(
            "GET /slow-client HTTP/1.1\r\nHost: {}\r\n{COOKIE}X-Half: abc",
            host("echo")
        )
        .as_bytes(),
    ))
    .await
    .unwrap();
    let out = c.read_until_close(Duration::from_secs(8)).await;
    assert!(
        out.closed,
        "half a head: connection still open after {:?}",
        out.elapsed
    );
    assert!(
        out.elapsed >= Duration::from_millis(1000),
        "cut off after {:?}: sooner than header_timeout (2s) allows",
        out.elapsed
    );
    assert!(
        out.elapsed <= Duration::from_secs(5),
        "cut off after {:?}, want header_timeout (2s) + margin",
        out.elapsed
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_trickling_head_is_cut_off_within_header_timeout() {
    // One byte every 200 ms keeps every read short: only a deadline on the whole head stops it.
    let (gh, up) = gateway().await;
    let mut c = gh.raw(&host("echo")).await;
    c.send(&with_cookie(
        &gh,
        format!(
            "GET /trickle HTTP/1.1\r\nHost: {}\r\n{COOKIE}",
            host("echo")
        )
        .as_bytes(),
    ))
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let mut cut = None;
    while start.elapsed() < Duration::from_secs(8) {
        // The client's own pacing, not synchronisation: this test is about a slow client.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if c.send(b"X").await.is_err() {
            cut = Some(start.elapsed());
            break;
        }
        let probe = c.read_until_close(Duration::from_millis(1)).await;
        if probe.closed {
            cut = Some(start.elapsed());
            break;
        }
    }
    let cut =
        cut.unwrap_or_else(|| panic!("trickling head still accepted after {:?}", start.elapsed()));
    assert!(
        cut <= Duration::from_secs(5),
        "cut off after {cut:?}, want header_timeout (2s) + margin"
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_400() {
    let bytes = format!(
        "GET /two-hosts HTTP/1.1\r\nHost: {}\r\nHost: {}\r\n{COOKIE}\r\n",
        host("echo"),
        host("other")
    );
    assert_refused("two Host headers", bytes.as_bytes(), 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_responses_to_hostile_requests_carry_security_headers() {
    let (gh, _up) = gateway().await;
    let mut many = format!("GET /many HTTP/1.1\r\nHost: {}\r\n{COOKIE}", host("echo"));
    for i in 0..101 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let cases = [
        (
            "400 for CL.CL",
            req("Content-Length: 5\r\nContent-Length: 50\r\n", "hello"),
        ),
        ("431 for 101 headers", many.into_bytes()),
    ];
    let mut missing = Vec::new();
    for (name, bytes) in cases {
        let out = attack(&gh, &bytes).await;
        let text = out.text().to_ascii_lowercase();
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        for h in [
            "strict-transport-security: max-age=63072000",
            "x-content-type-options: nosniff",
            "content-security-policy:",
        ] {
            if !head.contains(h) {
                missing.push(format!("{name}: no `{h}` in {head:?}"));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_a_keep_alive_connection_is_cut_off_within_header_timeout() {
    // A good request first, then half of the next head on the same connection.
    let (gh, up) = gateway().await;
    let mut c = gh.raw(&host("echo")).await;
    let first = format!(
        "GET /first HTTP/1.1\r\nHost: {}\r\n{COOKIE}\r\n",
        host("echo")
    );
    c.send(&with_cookie(&gh, first.as_bytes())).await.unwrap();
    up.wait_for_count(1, QUICK).await;
    c.send(&with_cookie(
        &gh,
        format!(
            "GET /second HTTP/1.1\r\nHost: {}\r\n{COOKIE}X-Half: a",
            host("echo")
        )
        .as_bytes(),
    ))
    .await
    .unwrap();
    let out = c.read_until_close(Duration::from_secs(8)).await;
    assert!(
        out.closed,
        "second half-head: connection still open after {:?}",
        out.elapsed
    );
    assert!(
        out.elapsed <= Duration::from_secs(5),
        "cut off after {:?}, want header_timeout (2s) + margin",
        out.elapsed
    );
    assert_eq!(
        out.status(),
        Some(200),
        "the first response: {}",
        out.text()
    );
    assert_eq!(up.count(), 1, "upstream got {:?}", up.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_sends_no_request_is_closed_within_header_timeout() {
    let (gh, up) = gateway().await;
    let mut c = gh.raw(&host("echo")).await;
    let out = c.read_until_close(Duration::from_secs(8)).await;
    assert!(
        out.closed,
        "silent connection still open after {:?}",
        out.elapsed
    );
    assert!(
        out.elapsed <= Duration::from_secs(5),
        "closed after {:?}, want header_timeout (2s) + margin",
        out.elapsed
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshake_is_closed_within_tls_handshake_timeout() {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        tls_handshake_timeout: "1s".into(),
        header_timeout: "5s".into(),
        ..Default::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let gh = Gatehouse::start_signed_in(spec).await;
    let mut tcp = tokio::net::TcpStream::connect(gh.gateway).await.unwrap();
    // The first 5 bytes of a TLS record header, then nothing.
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let out = support::client::read_until_close(&mut tcp, Duration::from_secs(6)).await;
    assert!(
        out.closed,
        "stalled handshake still open after {:?}",
        out.elapsed
    );
    assert!(
        out.elapsed <= Duration::from_secs(4),
        "closed after {:?}, want tls_handshake_timeout (1s) + margin",
        out.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        idle_timeout: "1s".into(),
        header_timeout: "10s".into(),
        ..Default::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let gh = Gatehouse::start_signed_in(spec).await;
    let mut c = gh.raw(&host("echo")).await;
    let once = format!(
        "GET /once HTTP/1.1\r\nHost: {}\r\n{COOKIE}\r\n",
        host("echo")
    );
    c.send(&with_cookie(&gh, once.as_bytes())).await.unwrap();
    let out = c.read_until_close(Duration::from_secs(8)).await;
    assert_eq!(out.status(), Some(200), "{}", out.text());
    assert!(
        out.closed,
        "idle keep-alive connection still open after {:?}",
        out.elapsed
    );
    assert!(
        out.elapsed <= Duration::from_secs(4),
        "closed after {:?}, want idle_timeout (1s) + margin",
        out.elapsed
    );
}
