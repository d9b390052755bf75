//! End-to-end tests of the gateway library over real sockets: proxying, header hygiene,
//! hostile requests, error pages, upstream failures and WebSocket pass-through.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn proxies_http1_with_header_hygiene() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let req = Request::get("/a/./b/%2e%2e/c//d;x=1?q=%2F..&r=1")
        .header("host", HOST)
        .header("cookie", format!("{}; other=1", cookie()))
        .header("x-gatehouse-user", "admin")
        .header("X_Gatehouse_Groups", "root")
        .header("x-forwarded-user", "admin")
        .header("remote-user", "admin")
        .header("x-auth-request-email", "a@b")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("connection", "x-keep")
        .header("x-keep", "1")
        .header("x-ordinary", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (resp, body) = h.h1(req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body, "upstream ok");
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let s = seen.recv().await.unwrap();
    assert_eq!(s.uri.path(), "/a/c/d");
    assert_eq!(s.uri.query(), Some("q=%2F..&r=1"));
    assert_eq!(s.headers["host"], HOST);
    assert_eq!(s.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(s.headers["x-forwarded-proto"], "https");
    assert_eq!(s.headers["x-forwarded-host"], HOST);
    assert_eq!(s.headers["x-ordinary"], "kept");
    // Identity comes from the session, never from the client; our cookie never leaves.
    assert_eq!(s.headers["x-gatehouse-user"], USER);
    assert_eq!(s.headers["x-gatehouse-groups"], "staff");
    assert_eq!(s.headers.get_all("x-gatehouse-user").iter().count(), 1);
    assert!(s.headers.contains_key("x-gatehouse-assertion"));
    assert_eq!(s.headers["cookie"], "other=1");
    for gone in [
        "x_gatehouse_groups",
        "x-forwarded-user",
        "remote-user",
        "x-auth-request-email",
        "forwarded",
        "x-real-ip",
        "x-keep",
        "connection",
    ] {
        assert!(!s.headers.contains_key(gone), "{gone} reached the upstream");
    }
    assert_eq!(s.headers.get_all("x-forwarded-for").iter().count(), 1);
}

#[tokio::test]
async fn proxies_http2_to_http1_upstream() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let (resp, body) = h.h2(get_h2("/x?y=1")).await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(body, "upstream ok");
    let s = seen.recv().await.unwrap();
    assert_eq!(s.version, http::Version::HTTP_11);
    assert_eq!(s.headers["host"], HOST);
    assert_eq!(s.uri.path_and_query().unwrap().as_str(), "/x?y=1");
}

#[tokio::test]
async fn streams_request_bodies() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let resp = h
        .raw(format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").as_bytes())
        .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let s = seen.recv().await.unwrap();
    assert_eq!(s.method, "POST");
    assert_eq!(s.body, "hello world");
    // A body far larger than the head buffer streams through (HTTP/1 and HTTP/2).
    let big = Bytes::from(vec![b'x'; 3 * 1024 * 1024 + 7]);
    let req = Request::post("/big")
        .header("host", HOST)
        .header("cookie", cookie())
        .body(Full::new(big.clone()))
        .unwrap();
    assert_eq!(h.h1(req).await.0.status(), 200);
    assert_eq!(seen.recv().await.unwrap().body, big);
    let mut req = get_h2("/big2");
    *req.method_mut() = http::Method::POST;
    *req.body_mut() = Full::new(big.clone());
    assert_eq!(h.h2(req).await.0.status(), 200);
    assert_eq!(seen.recv().await.unwrap().body, big);
}

#[tokio::test]
async fn smuggling_is_refused_and_never_forwarded() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let attacks = [
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: +5\r\n\r\nhello",
        "POST / HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: {H}\r\nHost: other\r\n\r\n",
        "GET http://other.example/ HTTP/1.1\r\nHost: {H}\r\n\r\n",
        "GET /a%2fb HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n",
        "GET /a/..%5c..%5cetc HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n",
        "GET /../etc/passwd HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n",
        "GET /a%00 HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n",
    ];
    for a in attacks {
        let a = a.replace("{H}", HOST);
        let resp = h.raw(a.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{a:?} -> {resp}");
        assert!(
            resp.matches("HTTP/1.1").count() == 1,
            "a second response: {resp}"
        );
    }
    // The upstream saw none of them: the next request it sees is this one.
    let (resp, _) = h.h1(get("/after")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.recv().await.unwrap().uri.path(), "/after");
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(33 * 1024)
    );
    assert!(h.raw(big.as_bytes()).await.starts_with("HTTP/1.1 431"));
    let mut many = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-H{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    assert!(h.raw(many.as_bytes()).await.starts_with("HTTP/1.1 431"));
}

#[tokio::test]
async fn unknown_host_and_reserved_prefix_get_pages() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let req = Request::get("/")
        .header("host", "nope.gatehouse.localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (resp, body) = h.h1(req).await;
    assert_eq!(resp.status(), 404);
    assert!(String::from_utf8_lossy(&body).contains("Request id"));
    for name in [
        "strict-transport-security",
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(resp.headers().contains_key(name), "{name}");
    }
    let (resp, _) = h.h1(get("/.gatehouse/health")).await;
    assert_eq!(resp.status(), 404);
    // The normalised path is what counts: this is the portal, answered by Gatehouse.
    let (resp, body) = h.h1(get("/x/../.gatehouse/")).await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&body).contains("Your applications"));
    assert!(seen.try_recv().is_err(), "reserved paths are never proxied");
}

#[tokio::test]
async fn upstream_failures_are_502_and_504() {
    let down = closed_port().await;
    let (silent, _accepted) = silent_upstream().await;
    let h = start(
        "upstream_timeout = \"1s\"",
        &[
            ("down", "down.gatehouse.localhost", down),
            ("slow", "slow.gatehouse.localhost", silent),
        ],
    )
    .await;
    let req = |host: &str, cookie: &str| {
        Request::get("/")
            .header("host", host)
            .header("cookie", cookie)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let (down_host, slow_host) = ("down.gatehouse.localhost", "slow.gatehouse.localhost");
    let (resp, _) = h.h1(req(down_host, &h.cookie_for(down_host).await)).await;
    assert_eq!(resp.status(), 502);
    let slow_cookie = h.cookie_for(slow_host).await;
    let t = Instant::now();
    let (resp, _) = h.h1(req(slow_host, &slow_cookie)).await;
    assert_eq!(resp.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(5));
    let (_, metrics) = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("gatehouse_upstream_errors_total{app=\"down\",kind=\"connect\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_upstream_errors_total{app=\"slow\",kind=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_http_requests_total{app=\"down\",status=\"502\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let (up, _seen) = upstream(None).await;
    let mut h = start("", &[("app", HOST, up)]).await;
    let mut s = h.tls(&[b"http/1.1"]).await;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nCookie: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        h.cookie
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(DEADLINE, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping over the tunnel").await.unwrap();
    let mut echo = [0u8; 20];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping over the tunnel");
    // The tunnel holds its connection slot, and shutdown closes it.
    let (_, m) = h.admin_get("/metrics").await;
    assert!(m.contains("gatehouse_open_connections 1"), "{m}");
    let report = h.shutdown().await;
    assert!(report.drained);
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
        .await
        .expect("tunnel not closed")
        .ok();
}

#[tokio::test]
async fn http2_host_must_agree_and_header_count_is_capped() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let mut req = get_h2("/");
    req.headers_mut()
        .insert("host", "other.gatehouse.localhost".parse().unwrap());
    let (resp, _) = h.h2(req).await;
    assert_eq!(resp.status(), 400);
    let mut req = get_h2("/");
    for i in 0..101 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
            "1".parse().unwrap(),
        );
    }
    let (resp, _) = h.h2(req).await;
    assert_eq!(resp.status(), 431);
    assert!(seen.try_recv().is_err());
}

/// An upstream that answers one request per connection and then closes it without saying
/// so (no `Connection: close`), like a server whose keep-alive timeout just ran out.
async fn one_shot_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_reused_upstream_connection_closed_by_the_upstream_is_replaced() {
    // One client connection, several requests: the upstream connection the first request
    // used is closed by the upstream, so each later request needs a fresh one, whether the
    // close was already seen or is found when the request is sent (retried once).
    let (up, accepted) = one_shot_upstream().await;
    let h = start("", &[("app", HOST, up)]).await;
    let io = TokioIo::new(h.tls(&[b"http/1.1"]).await);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    for i in 0..5 {
        let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(get("/")))
            .await
            .unwrap()
            .unwrap();
        let (resp, body) = collect(resp).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(body, "ok", "request {i}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

/// An upstream answering every request on a keep-alive connection with `size` bytes,
/// written in small pieces so each answer is still streaming when the next request comes.
async fn big_body_upstream(size: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
                    if tcp.write_all(h.as_bytes()).await.is_err() {
                        return;
                    }
                    let piece = vec![b'x'; 16 * 1024];
                    let mut left = size;
                    while left > 0 {
                        let n = left.min(piece.len());
                        if tcp.write_all(&piece[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_http2_streams_each_get_their_whole_body() {
    // An HTTP/2 client opens an upstream connection per concurrent stream and keeps only a
    // few idle for reuse: the ones it lets go are still streaming and must finish.
    const SIZE: usize = 2_000_000;
    let up = big_body_upstream(SIZE).await;
    let h = start("", &[("app", HOST, up)]).await;
    let io = TokioIo::new(h.tls(&[b"h2"]).await);
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut send = send.clone();
        let req = get_h2(&format!("/big/{i}"));
        tasks.push(tokio::spawn(async move {
            let resp = send.send_request(req).await.unwrap();
            collect(resp).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (resp, body) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200, "stream {i}");
        assert_eq!(body.len(), SIZE, "stream {i}");
    }
}
