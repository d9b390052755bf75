//! End-to-end tests of the gateway library over real sockets: timeouts, idle connections,
//! drain, certificate reload, TLS profiles, the redirect and admin listeners.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

#[tokio::test]
async fn slowloris_is_cut_by_header_timeout() {
    let (up, _seen) = upstream(None).await;
    let h = start("header_timeout = \"1s\"", &[("app", HOST, up)]).await;
    let mut s = h.tls(&[b"http/1.1"]).await;
    let t = Instant::now();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("slow head was not cut")
        .ok();
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[tokio::test]
async fn silent_connection_is_cut_by_header_timeout() {
    let (up, _seen) = upstream(None).await;
    let h = start("header_timeout = \"1s\"", &[("app", HOST, up)]).await;
    let mut s = h.tls(&[]).await;
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("silent connection was not cut")
        .ok();
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed() {
    let (up, _seen) = upstream(None).await;
    let h = start(
        "idle_timeout = \"1s\"\nheader_timeout = \"30s\"",
        &[("app", HOST, up)],
    )
    .await;
    for alpn in [b"http/1.1".as_slice(), b"h2".as_slice()] {
        let io = TokioIo::new(h.tls(&[alpn]).await);
        let t;
        if alpn == b"h2" {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            let conn = tokio::spawn(conn);
            let (resp, _) = collect(send.send_request(get_h2("/")).await.unwrap()).await;
            assert_eq!(resp.status(), 200);
            t = Instant::now();
            tokio::time::timeout(DEADLINE, conn)
                .await
                .expect("idle h2 connection not closed")
                .unwrap()
                .ok();
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            let conn = tokio::spawn(conn);
            let (resp, _) = collect(send.send_request(get("/")).await.unwrap()).await;
            assert_eq!(resp.status(), 200);
            t = Instant::now();
            tokio::time::timeout(DEADLINE, conn)
                .await
                .expect("idle h1 connection not closed")
                .unwrap()
                .ok();
        }
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "closed too early: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn drain_waits_for_in_flight_requests() {
    let gate = Arc::new(Notify::new());
    let (up, mut seen) = upstream(Some(gate.clone())).await;
    let mut h = start("shutdown_grace = \"20s\"", &[("app", HOST, up)]).await;
    assert_eq!(h.admin_get("/readyz").await.0, 200);
    let io = TokioIo::new(h.tls(&[b"http/1.1"]).await);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let pending =
        tokio::spawn(async move { collect(send.send_request(get("/slow")).await.unwrap()).await });
    seen.recv().await.unwrap();
    h.stop.cancel();
    // While draining, /readyz says so; new connections are refused.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = h.admin_get("/readyz").await;
        if status == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "readyz never reported draining");
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let (resp, body) = pending.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body, "upstream ok");
    let report = h.shutdown().await;
    assert!(report.drained);
    assert_eq!(report.remaining, 0);
    assert!(
        TcpStream::connect(h.bound.https).await.is_err(),
        "listener still open after drain"
    );
}

#[tokio::test]
async fn drain_reports_connections_left_after_grace() {
    let (silent, mut accepted) = silent_upstream().await;
    let mut h = start("shutdown_grace = \"1s\"", &[("app", HOST, silent)]).await;
    let io = TokioIo::new(h.tls(&[b"http/1.1"]).await);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let pending = tokio::spawn(async move { send.send_request(get("/hang")).await });
    // The request is in flight once the gateway has connected to the upstream.
    tokio::time::timeout(DEADLINE, accepted.recv())
        .await
        .unwrap()
        .unwrap();
    let report = h.shutdown().await;
    assert!(!report.drained);
    assert_eq!(report.remaining, 1);
    assert!(
        pending.await.unwrap().is_err(),
        "the hung request is cut after the grace period"
    );
}

async fn served_leaf(h: &Harness) -> Vec<u8> {
    let tcp = TcpStream::connect(h.bound.https).await.unwrap();
    let s = h
        .connector(&[b"http/1.1"])
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn certificate_reload_swaps_and_refuses_broken_files() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let certs = h.dir.0.join("certs");
    let (cert, key) = (certs.join("gateway.crt"), certs.join("gateway.key"));
    let before = served_leaf(&h).await;
    // Broken: the old certificate stays.
    let good_key = std::fs::read(&key).unwrap();
    std::fs::write(
        &cert,
        b"-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    h.reloader.reload();
    assert_eq!(served_leaf(&h).await, before);
    // A new pair from the same CA (ensure() regenerates the missing server files).
    std::fs::remove_file(&cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    gatehouse_gateway::devcert::ensure(&certs, &cert, &key).unwrap();
    assert_ne!(std::fs::read(&key).unwrap(), good_key);
    h.reloader.reload();
    let after = served_leaf(&h).await;
    assert_ne!(after, before);
    // The file watcher also picks up a change by itself.
    std::fs::remove_file(&cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    gatehouse_gateway::devcert::ensure(&certs, &cert, &key).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while served_leaf(&h).await == after {
        assert!(Instant::now() < deadline, "file change not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await; // polling an mtime watcher
    }
}

#[tokio::test]
async fn redirect_listener_sends_308_to_public_host() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let tcp = TcpStream::connect(h.bound.redirect.unwrap()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/path?q=1")
        .header("host", "evil.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (resp, _) = collect(send.send_request(req).await.unwrap()).await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        "https://gatehouse.localhost:8443/path?q=1"
    );
}

#[tokio::test]
async fn admin_health_and_metrics() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    assert_eq!(
        h.admin_get("/healthz").await,
        (http::StatusCode::OK, "ok\n".to_string())
    );
    let (resp, _) = h.h1(get("/")).await;
    assert_eq!(resp.status(), 200);
    // A failed handshake is counted.
    let mut tcp = TcpStream::connect(h.bound.https).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut sink)).await;
    let (status, m) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "gatehouse_http_requests_total{app=\"app\",status=\"200\"} 1",
        "gatehouse_http_request_duration_seconds_count{app=\"app\"} 1",
        "gatehouse_tls_handshake_failures_total 1",
        "gatehouse_open_connections",
    ] {
        assert!(m.contains(needle), "missing {needle}:\n{m}");
    }
}

#[tokio::test]
async fn tls_profiles() {
    let (up, _seen) = upstream(None).await;
    let tls12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    for (profile, tls12_ok) in [("intermediate", true), ("modern", false)] {
        let h = start(
            &format!("tls_profile = \"{profile}\""),
            &[("app", HOST, up)],
        )
        .await;
        let tcp = TcpStream::connect(h.bound.https).await.unwrap();
        let r = connector(&h.ca(), &[b"http/1.1"], Some(tls12))
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await;
        assert_eq!(r.is_ok(), tls12_ok, "{profile}");
        if let Ok(s) = r {
            let suite = s.get_ref().1.negotiated_cipher_suite().unwrap().suite();
            assert!(
                format!("{suite:?}").starts_with("TLS_ECDHE_ECDSA_WITH_"),
                "{suite:?}"
            );
        }
        let s = h.tls(&[b"h2"]).await;
        assert_eq!(
            s.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    }
}

#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_while_idle() {
    // The head deadline runs from a head's first byte, not while a keep-alive connection
    // waits: idle connections are governed by idle_timeout.
    let (up, _seen) = upstream(None).await;
    let h = start(
        "header_timeout = \"1s\"\nidle_timeout = \"10s\"",
        &[("app", HOST, up)],
    )
    .await;
    let io = TokioIo::new(h.tls(&[b"http/1.1"]).await);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let (resp, _) = collect(send.send_request(get("/one")).await.unwrap()).await;
    assert_eq!(resp.status(), 200);
    // Idle for twice the header timeout (the scenario itself, not a synchronisation).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = tokio::time::timeout(DEADLINE, send.send_request(get("/two")))
        .await
        .expect("second request timed out");
    let (resp, _) = collect(again.expect("the idle connection was closed")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn leading_empty_lines_do_not_escape_the_head_deadline() {
    // Empty lines before a request line are allowed (and skipped), so they start the head
    // deadline too: trickling them forever does not hold a connection open.
    let (up, _seen) = upstream(None).await;
    let h = start("header_timeout = \"1s\"", &[("app", HOST, up)]).await;
    let mut s = h.tls(&[b"http/1.1"]).await;
    let t = Instant::now();
    let cut = tokio::time::timeout(DEADLINE, async {
        loop {
            if s.write_all(b"\r\n").await.is_err() {
                return;
            }
            let mut buf = [0u8; 64];
            // The client's own pacing: one empty line every 200 ms.
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
            {
                return;
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "trickled empty lines kept the connection open");
    assert!(t.elapsed() >= Duration::from_millis(900));
}
