//! The gateway's certificate from outside: an expired or not-yet-valid certificate is
//! refused by `check-config`, at start and at reload (the running one stays); one expiring
//! within 14 days starts with a warning and shows in `gatehouse_tls_certificate_expiry_seconds`;
//! `gateway.tls_allow_expired` serves an invalid one, loudly; a missing file names its key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::client::{H1, peer_leaf, plain_get, tls_connect};
use crate::support::gatehouse::{binary, check_config};
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, Pki, QUICK, TestDir, host, within};

fn spec(extra: &str) -> (GatehouseSpec, String) {
    let spec = GatehouseSpec::default().with_app(AppSpec::new(
        "echo",
        &host("echo"),
        "http://127.0.0.1:9",
    ));
    let text = spec.to_toml().replacen(
        "tls_key = \"certs/gateway.key\"\n",
        &format!("tls_key = \"certs/gateway.key\"\n{extra}"),
        1,
    );
    (spec, text)
}

/// A config dir whose certificate is valid `days` (from, to) relative to today.
fn dir_with_cert(days: Option<(i64, i64)>, extra: &str) -> (TestDir, GatehouseSpec) {
    let dir = TestDir::new("certs");
    let mut pki = Pki::new(&dir.join("certs"));
    pki.issue_server_valid("gatehouse test server", 2, days);
    let (spec, text) = spec(extra);
    spec.write_policies(&dir);
    dir.write("gatehouse.toml", text);
    (dir, spec)
}

/// Days of validity relative to today, `tls_allow_expired`, check-config's exit, what its
/// stderr says.
type Case = (Option<(i64, i64)>, bool, i32, &'static str);

const CASES: &[Case] = &[
    (Some((-30, -1)), false, 1, "expired at"),
    (Some((1, 30)), false, 1, "not valid before"),
    (Some((-1, 5)), false, 0, "expires in"),
    (Some((-30, 60)), false, 0, ""),
    (Some((-30, -1)), true, 0, "SERVED ANYWAY"),
    (Some((1, 30)), true, 0, "SERVED ANYWAY"),
];

#[test]
fn check_config_refuses_certificates_outside_their_validity() {
    let mut wrong = Vec::new();
    for (days, allow, want_code, needle) in CASES {
        let extra = if *allow {
            "tls_allow_expired = true\n"
        } else {
            ""
        };
        let (dir, _) = dir_with_cert(*days, extra);
        let (code, out, err) = check_config(&dir.join("gatehouse.toml"));
        let mut problems = Vec::new();
        if code != Some(*want_code) {
            problems.push(format!("exit {code:?}, want {want_code}"));
        }
        if !err.contains(needle) {
            problems.push(format!("stderr lacks {needle:?}"));
        }
        if *want_code == 1 && !(err.contains("fix:") && err.contains("gatehouse.toml")) {
            problems.push("stderr names no fix or no config file".into());
        }
        if needle.is_empty() && err.contains("warning") {
            problems.push("a warning for a certificate valid for two months".into());
        }
        if !problems.is_empty() {
            wrong.push(format!(
                "{days:?} allow={allow}: {}\n  stdout: {out}\n  stderr: {err}",
                problems.join("; ")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Runs `gatehouse serve` on `dir` and waits (deadline) for it to exit: its status and stderr.
fn serve_until_exit(dir: &TestDir, spec: &GatehouseSpec) -> (Option<i32>, String) {
    let mut child = Command::new(binary())
        .arg("serve")
        .arg("--config")
        .arg(dir.join("gatehouse.toml"))
        .env("GATEHOUSE_SECRET_KEY", &spec.secret_key)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "gatehouse serve did not exit within 60 s\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_refuses_to_start_with_an_expired_or_missing_certificate() {
    for (days, needle) in [
        (Some((-30, -1)), "expired at"),
        (Some((2, 30)), "not valid before"),
    ] {
        let (dir, spec) = dir_with_cert(days, "");
        let (code, err) = serve_until_exit(&dir, &spec);
        assert_ne!(code, Some(0), "{days:?}: started; stderr: {err}");
        assert!(err.contains(needle), "{days:?}: stderr: {err}");
    }
    let (dir, spec) = dir_with_cert(None, "");
    std::fs::remove_file(dir.join("certs/gateway.crt")).unwrap();
    let (code, err) = serve_until_exit(&dir, &spec);
    assert_ne!(
        code,
        Some(0),
        "started without a certificate; stderr: {err}"
    );
    assert!(
        err.contains("`gateway.tls_cert`")
            && err.contains("does not exist")
            && err.contains("fix:"),
        "stderr: {err}"
    );
}

/// The value of a metric line `name value` on the admin listener.
async fn metric(gh: &Gatehouse, name: &str) -> Option<f64> {
    let r = within(
        QUICK,
        "metrics",
        plain_get(gh.admin, "127.0.0.1", "/metrics"),
    )
    .await;
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn served_leaf(gh: &Gatehouse) -> rustls_pki_types::CertificateDer<'static> {
    let tls = tls_connect(gh.gateway, &host("echo"), gh.client_config(&[H1]))
        .await
        .expect("handshake");
    peer_leaf(&tls).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_an_invalid_certificate_and_warns_before_expiry() {
    let mut gh = Gatehouse::start(spec("").0).await;
    let first = gh.pki.server_der.clone();
    let metric_name = "gatehouse_tls_certificate_expiry_seconds";
    let at_start = metric(&gh, metric_name).await.expect("expiry metric");
    assert!(at_start > unix_now() + 365.0 * 86_400.0, "{at_start}");
    // Expired, then not yet valid: refused at reload, the first certificate stays.
    for (serial, days) in [(5u64, (-30, -1)), (6, (3, 30))] {
        gh.pki
            .issue_server_valid("gatehouse bad server", serial, Some(days));
        gh.signal("HUP");
        let needle = if days.0 < 0 {
            "expired at"
        } else {
            "not valid before"
        };
        gh.expect_log_line("the refused reload", |l| {
            l.contains("reload refused") && l.contains(needle)
        })
        .await;
        assert_eq!(served_leaf(&gh).await, first, "{days:?} was swapped in");
        assert_eq!(metric(&gh, metric_name).await, Some(at_start));
    }
    // Expiring in 5 days: served, with a warning, and the metric follows it.
    gh.pki
        .issue_server_valid("gatehouse short server", 7, Some((-1, 5)));
    let short = gh.pki.server_der.clone();
    gh.signal("HUP");
    let start = Instant::now();
    while served_leaf(&gh).await != short {
        assert!(
            start.elapsed() < QUICK,
            "the short-lived certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gh.expect_log_line("the expiry warning", |l| {
        l.contains("WARN") && l.contains("expires in") && l.contains("day(s)")
    })
    .await;
    let expiry = metric(&gh, metric_name).await.unwrap();
    let now = unix_now();
    assert!(
        expiry > now + 3.0 * 86_400.0 && expiry < now + 6.0 * 86_400.0,
        "{expiry} vs now {now}"
    );
    assert!(gh.wait_exit(Duration::ZERO).is_none(), "gatehouse exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_expired_serves_an_expired_certificate_loudly() {
    let (dir, spec) = dir_with_cert(Some((-30, -1)), "tls_allow_expired = true\n");
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("gatehouse.toml"))
        .env("GATEHOUSE_SECRET_KEY", &spec.secret_key)
        .current_dir(dir.path());
    let (mut child, ready, _out, err) = crate::support::gatehouse::spawn_until_ready(cmd);
    // The line is written before the ready line; its pipe may be read a moment later.
    let start = Instant::now();
    let mut text = err.lock().unwrap().clone();
    while !text.contains("SERVED ANYWAY") && start.elapsed() < QUICK {
        std::thread::sleep(Duration::from_millis(50));
        text = err.lock().unwrap().clone();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready.gateway.port() != 0);
    assert!(
        text.contains("ERROR") && text.contains("SERVED ANYWAY"),
        "no loud error: {text}"
    );
}
