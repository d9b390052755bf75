//! Self-checks of the test harness (upstream endpoints, hashing, ready-line parsing), so a
//! failing gateway test points at the gateway, not at the harness.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use crate::support::client::{H1Conn, full, plain_get};
use crate::support::upstream::{MIB, PatternBody, pattern_sha256};
use crate::support::{QUICK, Upstream, within};
use http_body_util::BodyExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_echo_counts_and_reports_headers() {
    let up = Upstream::start().await;
    let r = within(QUICK, "echo", plain_get(up.addr, "example", "/a/b?c=d")).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], "/a/b");
    assert_eq!(echo["query"], "c=d");
    assert_eq!(
        support::client::echoed_headers(&echo, "host"),
        vec!["example".to_string()]
    );
    assert_eq!(up.count(), 1);
    up.wait_for_count(1, QUICK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_download_and_upload_match_the_pattern_hash() {
    let up = Upstream::start().await;
    let tcp = tokio::net::TcpStream::connect(up.addr).await.unwrap();
    let mut c = H1Conn::over(tcp, "example").await;
    let r = within(QUICK, "download", c.get("/download/3")).await;
    assert_eq!(r.body.len() as u64, 3 * MIB);
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, &r.body);
    assert_eq!(
        support::upstream::hex(&sha2::Digest::finalize(h)),
        pattern_sha256(3 * MIB)
    );
    let body = PatternBody::new(3 * MIB + 17)
        .map_err(|e| match e {})
        .boxed();
    let req = c.request("POST", "/upload", &[], body);
    let r = within(QUICK, "upload", c.send(req)).await;
    assert_eq!(r.json()["bytes"], 3 * MIB + 17);
    assert_eq!(r.json()["sha256"], pattern_sha256(3 * MIB + 17));
    let req = c.request("POST", "/upload", &[], full("x"));
    assert_eq!(
        within(QUICK, "upload", c.send(req)).await.json()["bytes"],
        1
    );
}

#[test]
fn ready_line_is_parsed() {
    let r = support::gatehouse::parse_ready(
        "gatehouse ready: gateway=https://127.0.0.1:4431 admin=http://127.0.0.1:9001 redirect=http://127.0.0.1:8080",
    )
    .unwrap();
    assert_eq!(r.gateway.port(), 4431);
    assert_eq!(r.admin.port(), 9001);
    assert_eq!(r.redirect.map(|a| a.port()), Some(8080));
    assert!(support::gatehouse::parse_ready("gatehouse ready: admin=http://127.0.0.1:1").is_none());
}

#[test]
fn test_pki_issues_a_chain_the_client_config_trusts() {
    let dir = support::TestDir::new("pki");
    let mut pki = support::Pki::new(dir.path());
    let first = pki.server_der.clone();
    assert_eq!(support::pki::read_pem_cert(&pki.cert_path), first);
    pki.issue_server("second", 2);
    assert_ne!(pki.server_der, first);
    assert_eq!(support::pki::read_pem_cert(&pki.cert_path), pki.server_der);
    let _ = pki.client_config(&[b"h2"], None);
}
