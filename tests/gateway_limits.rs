//! Limits that must refuse cleanly:
//! - an oversized request head is answered (431) and the connection closed gracefully (TLS
//!   close_notify and FIN), never reset: a reset can destroy the answer in the client's
//!   receive buffer (Windows and BSD stacks discard it; Linux keeps it, so here the reset
//!   itself is what is checked);
//! - hundreds of connections stalled before their first request from one address never keep
//!   a client from another address out; the refusals are counted and audited;
//! - an idle keep-alive connection is parked (its HTTP state let go) and still serves its
//!   next request, and still closes at the idle timeout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::support::client::{H1, H1Conn, plain_get};
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host, within};

/// How many times the oversized head is sent: a reset lost the answer in a fraction of tries.
const OVERSIZED_TRIES: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_kb_head_in_one_write_always_gets_its_431() {
    let up = Upstream::start().await;
    let gh = Gatehouse::start_signed_in(GatehouseSpec::default().with_app(AppSpec::new(
        "echo",
        &host("echo"),
        &up.url(),
    )))
    .await;
    let head = format!(
        "GET /big HTTP/1.1\r\nHost: {}\r\n{}X-Big: {}\r\n\r\n",
        host("echo"),
        gh.cookie_line(),
        "a".repeat(70 * 1000)
    );
    let mut failures = Vec::new();
    for i in 0..OVERSIZED_TRIES {
        let mut c = gh.raw(&host("echo")).await;
        // The whole head encrypted first, then put on the socket at once.
        let (_, tls) = c.tls.get_mut();
        tls.set_buffer_limit(None);
        tls.writer().write_all(head.as_bytes()).unwrap();
        // A write error means the gateway already closed: read what it sent.
        let _ = c.tls.flush().await;
        let (bytes, mut end) = read_to_end(&mut c.tls, QUICK).await;
        if matches!(end, End::Clean) && reset_follows(c.tls.get_ref().0).await {
            end = End::ResetAfterEof;
        }
        let text = String::from_utf8_lossy(&bytes);
        if !text.starts_with("HTTP/1.1 431 ") || !matches!(end, End::Clean) {
            failures.push(format!(
                "try {i}: {:?}, ended {end:?} after {} bytes",
                text.lines().next(),
                bytes.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {OVERSIZED_TRIES} tries were not answered and closed cleanly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(up.count(), 0, "nothing reached the upstream");
}

/// How a connection ended for the client.
#[derive(Debug)]
#[allow(dead_code, reason = "the fields are shown in failure messages")]
enum End {
    /// TLS close_notify, then EOF.
    Clean,
    /// An error (a reset shows as `ConnectionReset`; EOF without close_notify as
    /// `UnexpectedEof`).
    Error(std::io::ErrorKind),
    /// Still open at the deadline.
    Open,
    /// A clean end, then a reset: the server closed with the client's bytes unread.
    ResetAfterEof,
}

/// How long a reset may take to follow the server's FIN. There is no event for "no reset
/// will come": the server's close follows its FIN at once (it would reset within this time),
/// while a lingering server holds the socket open until the client closes.
const RESET_WINDOW: Duration = Duration::from_millis(200);

/// True when the socket reports a reset within [`RESET_WINDOW`] (the client has read the
/// EOF; it sends nothing, so a reset can only come from the server discarding unread bytes).
async fn reset_follows(tcp: &tokio::net::TcpStream) -> bool {
    let end = tokio::time::Instant::now() + RESET_WINDOW;
    while tokio::time::Instant::now() < end {
        if let Ok(Some(e)) = tcp.take_error() {
            // Linux reports a reset that follows a FIN as EPIPE (the socket is in CLOSE_WAIT).
            use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
            return matches!(e.kind(), ConnectionReset | BrokenPipe);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Reads until the server closes; returns the bytes and how it closed.
async fn read_to_end<R: AsyncRead + Unpin>(r: &mut R, limit: Duration) -> (Vec<u8>, End) {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Err(_) => return (bytes, End::Open),
            Ok(Ok(0)) => return (bytes, End::Clean),
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (bytes, End::Error(e.kind())),
        }
    }
}

/// Stalled connections from the flooding address (the per-source bound is 32).
const STALLED: usize = 300;
const PER_SOURCE: usize = 32;

/// A TCP connection to `to` from the loopback address `from` (any 127/8 address works).
async fn tcp_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    s.connect(to).await
}

/// `GET path` on the echo app from `from`, with the signed-in cookie: the status, or the
/// error that kept it from being asked.
async fn get_from(gh: &Gatehouse, from: &str, path: &str) -> Result<u16, String> {
    let tcp = tcp_from(from, gh.gateway)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host("echo")).unwrap();
    let tls = TlsConnector::from(gh.client_config(&[H1]))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let mut c = H1Conn::over(tls, &host("echo"))
        .await
        .with_cookie(gh.cookie_value());
    let r = within(QUICK, "a request", c.get(path)).await;
    Ok(r.status.as_u16())
}

/// The value of the metric line starting with `series ` (0 when absent).
async fn metric(gh: &Gatehouse, series: &str) -> u64 {
    let text = plain_get(gh.admin, "admin", "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Polls the metric until `pred` holds (the readiness signal that the gateway has dealt with
/// every connection), within [`QUICK`].
async fn metric_until(gh: &Gatehouse, series: &str, pred: impl Fn(u64) -> bool) -> u64 {
    let start = Instant::now();
    loop {
        let v = metric(gh, series).await;
        if pred(v) {
            return v;
        }
        assert!(start.elapsed() < QUICK, "{series} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stalled_connections_from_one_address_never_locks_out_another() {
    let up = Upstream::start().await;
    let gh = Gatehouse::start_signed_in(
        GatehouseSpec {
            // Long deadlines: the stalled connections stay for the whole test.
            tls_handshake_timeout: "30s".into(),
            header_timeout: "30s".into(),
            // Fewer slots than stalled connections: without a per-source bound, the flood
            // alone would fill them.
            max_connections: Some(100),
            ..GatehouseSpec::default()
        }
        .with_app(AppSpec::new("echo", &host("echo"), &up.url())),
    )
    .await;
    assert_eq!(get_from(&gh, "127.0.0.3", "/before").await, Ok(200));
    // The flood from 127.0.0.2: TLS handshakes that stall (half a record header, or nothing),
    // and handshaken connections that never send a request.
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let mut tcp = tcp_from("127.0.0.2", gh.gateway).await.unwrap();
        if i % 2 == 0 {
            let _ = tcp.write_all(&[0x16, 0x03, 0x01]).await;
        }
        stalled.push(tcp);
    }
    let refused = "gatehouse_preauth_refused_total{reason=\"per_source\"}";
    metric_until(&gh, refused, |v| v == (STALLED - PER_SOURCE) as u64).await;
    assert_eq!(
        metric(&gh, "gatehouse_preauth_connections").await,
        PER_SOURCE as u64
    );
    // Another address is served at once; the flooding one is refused before TLS.
    let t = Instant::now();
    assert_eq!(get_from(&gh, "127.0.0.3", "/during").await, Ok(200));
    eprintln!(
        "served from 127.0.0.3 in {:?} with {STALLED} stalled connections from 127.0.0.2",
        t.elapsed()
    );
    assert!(get_from(&gh, "127.0.0.2", "/flooder").await.is_err());
    // Audited, rate-limited: a few records summing the refusals, not one per refusal.
    let want = (STALLED - PER_SOURCE + 1) as u64;
    let start = Instant::now();
    let records = loop {
        let records: Vec<_> = gh
            .audit_events()
            .into_iter()
            .filter(|e| e["event"] == "preauth_refused" && e["client_addr"] == "127.0.0.2")
            .collect();
        let sum: u64 = records.iter().filter_map(|e| e["refused"].as_u64()).sum();
        if sum == want {
            break records;
        }
        assert!(
            start.elapsed() < QUICK,
            "audited {sum} of {want} refusals: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(records.len() <= 3, "rate-limited: {records:?}");
    assert!(
        records
            .iter()
            .all(|e| e["door"] == "https" && e["reason"] == "per_source")
    );
    assert!(
        !gh.audit_events()
            .iter()
            .any(|e| e["event"] == "preauth_refused" && e["client_addr"] == "127.0.0.3"),
        "the other address was never refused"
    );
    // The bound is on concurrent stalls, not a ban: once they go, the address is served.
    drop(stalled);
    metric_until(&gh, "gatehouse_preauth_connections", |v| v == 0).await;
    assert_eq!(get_from(&gh, "127.0.0.2", "/after").await, Ok(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_parked_and_serves_its_next_request() {
    let up = Upstream::start().await;
    let gh = Gatehouse::start_signed_in(GatehouseSpec::default().with_app(AppSpec::new(
        "echo",
        &host("echo"),
        &up.url(),
    )))
    .await;
    let mut c = gh.h1(&host("echo")).await;
    for round in 0..3 {
        let r = within(QUICK, "a request", c.get(&format!("/round/{round}"))).await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        // The readiness signal: the gauge counts the parked connection.
        metric_until(&gh, "gatehouse_parked_connections", |v| v == 1).await;
    }
    assert_eq!(up.count(), 3, "every request reached the upstream");
    let r = within(QUICK, "a request", c.get("/last")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        metric(&gh, "gatehouse_open_connections").await,
        1,
        "one connection throughout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_still_closes_at_the_idle_timeout() {
    let up = Upstream::start().await;
    let gh = Gatehouse::start_signed_in(
        GatehouseSpec {
            idle_timeout: "4s".into(),
            ..GatehouseSpec::default()
        }
        .with_app(AppSpec::new("echo", &host("echo"), &up.url())),
    )
    .await;
    let mut c = gh.raw(&host("echo")).await;
    let t = Instant::now();
    c.send(
        format!(
            "GET /once HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            host("echo"),
            gh.cookie_line()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    metric_until(&gh, "gatehouse_parked_connections", |v| v == 1).await;
    let out = c.read_until_close(QUICK).await;
    assert_eq!(out.status(), Some(200), "{}", out.text());
    assert!(out.closed, "still open after the idle timeout");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(3500),
        "closed after {waited:?}, before the 4 s idle timeout"
    );
    metric_until(&gh, "gatehouse_parked_connections", |v| v == 0).await;
}
