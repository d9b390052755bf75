//! TLS of the gateway: protocol versions per Mozilla profile (checked with rustls, and with
//! OpenSSL's s_client and curl for TLS 1.1, which rustls cannot speak), forward secrecy, and
//! certificate hot reload on SIGHUP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::client::{H1, H1Conn, peer_leaf, tls_connect};
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host, within};
use rustls::ProtocolVersion;

async fn gateway(profile: Option<&str>) -> (Gatehouse, Upstream) {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        tls_profile: profile.map(str::to_string),
        ..Default::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    (Gatehouse::start_signed_in(spec).await, up)
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?} (is it installed?): {e}"))
}

use crate::support::process::output_text as text;

/// `openssl s_client` with exactly one protocol version. For TLS 1.1, pass cipher
/// `DEFAULT@SECLEVEL=0` so that OpenSSL 3 itself still offers it (otherwise the refusal would be
/// the client's, proving nothing).
fn s_client(addr: SocketAddr, ca: &Path, version_flag: &str, cipher: &str) -> Output {
    run(Command::new("timeout").args([
        "10",
        "openssl",
        "s_client",
        "-connect",
        &addr.to_string(),
        "-servername",
        &host("echo"),
        "-CAfile",
        ca.to_str().unwrap(),
        version_flag,
        "-cipher",
        cipher,
    ]))
}

async fn s_client_async(
    gh: &Gatehouse,
    version_flag: &'static str,
    cipher: &'static str,
) -> Output {
    let (addr, ca) = (gh.gateway, gh.pki.ca_path.clone());
    tokio::task::spawn_blocking(move || s_client(addr, &ca, version_flag, cipher))
        .await
        .unwrap()
}

/// OpenSSL reports a fatal alert received from the peer as "... alert <description>": proof
/// that the client did send its hello and the server refused it.
fn server_alert(output: &str) -> bool {
    output.contains("alert protocol version") || output.contains("alert handshake failure")
}

fn curl(gh: &Gatehouse, version_args: &[&str]) -> Output {
    let port = gh.gateway.port();
    // The session cookie goes in a header file, not on the command line.
    let cookie_file = gh.dir.write("curl-cookie.txt", gh.cookie_line());
    let mut cmd = Command::new("curl");
    cmd.arg("-H").arg(format!("@{}", cookie_file.display()));
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "--http1.1",
        "--cacert",
        gh.pki.ca_path.to_str().unwrap(),
    ])
    .arg("--resolve")
    .arg(format!("{}:{port}:127.0.0.1", host("echo")))
    .args(version_args)
    .args(["-o", "/dev/null", "-w", "%{http_code}"])
    .arg(format!("https://{}:{port}/curl", host("echo")));
    run(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls11_is_refused_by_the_server_openssl_s_client() {
    let (gh, up) = gateway(None).await;
    let out = s_client_async(&gh, "-tls1_1", "DEFAULT@SECLEVEL=0").await;
    let t = text(&out);
    assert!(!out.status.success(), "TLS 1.1 handshake succeeded:\n{t}");
    assert!(
        server_alert(&t),
        "want an alert from the server (protocol_version or handshake_failure), got:\n{t}"
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls11_is_refused_by_the_server_curl() {
    let (gh, up) = gateway(None).await;
    let out = curl(
        &gh,
        &[
            "--tlsv1.1",
            "--tls-max",
            "1.1",
            "--ciphers",
            "DEFAULT@SECLEVEL=0",
        ],
    );
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(35),
        "curl --tls-max 1.1: want exit 35 (handshake failed), got:\n{t}"
    );
    assert!(
        server_alert(&t),
        "want an alert from the server (protocol_version or handshake_failure), got:\n{t}"
    );
    // The same tool with TLS 1.2 gets through: the refusal above is about the version.
    let ok = curl(&gh, &["--tlsv1.2", "--tls-max", "1.2"]);
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "200",
        "curl over TLS 1.2: {}",
        text(&ok)
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_is_accepted_with_the_intermediate_profile() {
    let (gh, up) = gateway(None).await;
    let cfg = gh
        .pki
        .client_config(&[H1], Some(&[&rustls::version::TLS12]));
    let tls = within(QUICK, "tls12", tls_connect(gh.gateway, &host("echo"), cfg))
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert!(
        format!("{suite:?}").contains("ECDHE"),
        "TLS 1.2 suite {suite:?} is not forward secret"
    );
    let mut c = H1Conn::over(tls, &host("echo"))
        .await
        .with_cookie(gh.cookie_value());
    assert_eq!(
        within(QUICK, "request over TLS 1.2", c.get("/"))
            .await
            .status,
        200
    );
    // And OpenSSL agrees.
    let out = s_client_async(&gh, "-tls1_2", "DEFAULT").await;
    let t = text(&out);
    assert!(
        t.contains("Protocol  : TLSv1.2") || t.contains("Protocol: TLSv1.2"),
        "s_client -tls1_2:\n{t}"
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_without_forward_secrecy_is_refused() {
    let (gh, _up) = gateway(None).await;
    // Static-RSA and plain-CBC suites only: none is in the intermediate profile.
    let out = s_client_async(
        &gh,
        "-tls1_2",
        "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA",
    )
    .await;
    let t = text(&out);
    assert!(
        !out.status.success(),
        "non-forward-secret TLS 1.2 suite accepted:\n{t}"
    );
    assert!(
        t.contains("alert handshake failure") || t.contains("alert insufficient security"),
        "want a handshake alert:\n{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_is_refused_with_the_modern_profile() {
    let (gh, up) = gateway(Some("modern")).await;
    let cfg = gh
        .pki
        .client_config(&[H1], Some(&[&rustls::version::TLS12]));
    let res = within(
        QUICK,
        "tls12 vs modern",
        tls_connect(gh.gateway, &host("echo"), cfg),
    )
    .await;
    let Err(err) = res else {
        panic!("TLS 1.2 handshake succeeded against tls_profile = modern");
    };
    assert!(
        format!("{err}").to_lowercase().contains("protocolversion")
            || format!("{err:?}").contains("ProtocolVersion"),
        "want a protocol_version alert, got {err:?}"
    );
    // TLS 1.3 works.
    let cfg = gh
        .pki
        .client_config(&[H1], Some(&[&rustls::version::TLS13]));
    let tls = within(QUICK, "tls13", tls_connect(gh.gateway, &host("echo"), cfg))
        .await
        .expect("TLS 1.3 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    let mut c = H1Conn::over(tls, &host("echo"))
        .await
        .with_cookie(gh.cookie_value());
    assert_eq!(
        within(QUICK, "request over TLS 1.3", c.get("/"))
            .await
            .status,
        200
    );
    assert_eq!(up.count(), 1);
}

/// Polls new connections until the gateway presents `want`, with a deadline.
async fn wait_for_cert(
    gh: &Gatehouse,
    want: &rustls_pki_types::CertificateDer<'static>,
    limit: Duration,
) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match tls_connect(gh.gateway, &host("echo"), gh.client_config(&[H1])).await {
            Ok(tls) if peer_leaf(&tls).as_ref() == Some(want) => return,
            Ok(_) => last = "old certificate".into(),
            Err(e) => panic!("a handshake failed during certificate reload: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the new certificate was not served within {limit:?} (last: {last})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_open_connections_stay_usable() {
    let (mut gh, up) = gateway(None).await;
    let first = gh.pki.server_der.clone();
    let mut old = H1Conn::connect(gh.gateway, &host("echo"), gh.client_config(&[H1]))
        .await
        .with_cookie(gh.cookie_value());
    assert_eq!(old.leaf.as_ref(), Some(&first), "initial certificate");
    assert_eq!(
        within(QUICK, "before reload", old.get("/before"))
            .await
            .status,
        200
    );

    // Same size and mtime as before: the file watcher cannot see this change, only SIGHUP can.
    gh.pki
        .issue_server_unnoticeably("gatehouse test server 2", 2);
    let second = gh.pki.server_der.clone();
    assert_ne!(first, second);
    gh.signal("HUP");
    wait_for_cert(&gh, &second, Duration::from_secs(10)).await;

    let r = within(QUICK, "old connection after reload", old.get("/after")).await;
    assert_eq!(
        r.status, 200,
        "the connection opened before the reload broke"
    );
    let mut new = H1Conn::connect(gh.gateway, &host("echo"), gh.client_config(&[H1]))
        .await
        .with_cookie(gh.cookie_value());
    assert_eq!(new.leaf.as_ref(), Some(&second));
    assert_eq!(
        within(QUICK, "new connection", new.get("/new"))
            .await
            .status,
        200
    );
    assert_eq!(up.count(), 3);
    assert!(
        gh.wait_exit(Duration::ZERO).is_none(),
        "gatehouse exited on SIGHUP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_certificate_keeps_serving_the_old_one() {
    let (mut gh, _up) = gateway(None).await;
    let first = gh.pki.server_der.clone();
    std::fs::write(
        &gh.pki.cert_path,
        b"-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    gh.signal("HUP");
    // Then a good certificate and a second SIGHUP; every handshake in between must succeed
    // with the first or the third certificate (never fail, never an empty chain).
    let probe_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < probe_until {
        let tls = tls_connect(gh.gateway, &host("echo"), gh.client_config(&[H1]))
            .await
            .expect("a broken certificate file broke new handshakes");
        assert_eq!(peer_leaf(&tls).as_ref(), Some(&first));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gh.pki.issue_server("gatehouse test server 3", 3);
    let third = gh.pki.server_der.clone();
    gh.signal("HUP");
    wait_for_cert(&gh, &third, Duration::from_secs(10)).await;
    assert!(
        gh.wait_exit(Duration::ZERO).is_none(),
        "gatehouse exited on a bad reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_file_change_is_picked_up_without_a_signal() {
    // product.md: "certificate hot reload (SIGHUP or file change)".
    let (mut gh, _up) = gateway(None).await;
    let mut old = H1Conn::connect(gh.gateway, &host("echo"), gh.client_config(&[H1]))
        .await
        .with_cookie(gh.cookie_value());
    assert_eq!(within(QUICK, "before", old.get("/")).await.status, 200);
    gh.pki.issue_server("gatehouse test server 4", 4);
    let fresh = gh.pki.server_der.clone();
    wait_for_cert(&gh, &fresh, Duration::from_secs(15)).await;
    assert_eq!(
        within(QUICK, "old connection", old.get("/")).await.status,
        200
    );
}
