//! Quick-start smoke test: `gatehouse serve` with no config in an empty directory generates dev
//! certificates, announces itself, prints a demo user (password and TOTP enrolment), refuses
//! the demo app without a session, and proxies it once that user has logged in. The quick-start binds the fixed
//! ports 127.0.0.1:8443 and 127.0.0.1:9443, so this is the only test that uses fixed ports and
//! it lives alone in this test binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::client::{H1, H1Conn, empty, full};
use crate::support::gatehouse::{binary, spawn_until_ready};
use crate::support::identity::{
    LOGIN_COOKIE, LOGIN_PATH, SESSION_COOKIE, csrf_in, form, fresh_totp_window, otpauth_in,
    set_cookie, totp_from_base32, unix_now,
};
use crate::support::pki::{client_config_for, read_pem_cert};
use crate::support::{QUICK, TestDir, within};

const FIXED_PORTS: &[u16] = &[8443, 9443, 2222];

/// Waits (with a deadline) until the quick-start's fixed ports are free, e.g. while a previous
/// run's process is still exiting; a port held by something else fails the test by name.
fn wait_for_free_ports() {
    let start = Instant::now();
    for port in FIXED_PORTS {
        loop {
            match std::net::TcpListener::bind(("127.0.0.1", *port)) {
                Ok(l) => {
                    drop(l);
                    break;
                }
                Err(e) if start.elapsed() < Duration::from_secs(15) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!(
                    "quick-start port 127.0.0.1:{port} is busy ({e}); stop whatever holds it"
                ),
            }
        }
    }
}

/// Serialises quick-start runs across test processes (several engineers or CI jobs on one
/// machine): an advisory lock on a file in the temp dir, taken with a deadline.
fn quickstart_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("gatehouse-quickstart-test.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return file,
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("another quick-start test holds {} ({e:?})", path.display()),
        }
    }
}

struct Killed(
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<String>>,
);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!("--- quick-start stderr ---\n{}", self.1.lock().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_serves_the_demo_app_with_generated_certificates() {
    let dir = TestDir::new("quickstart");
    let _lock = tokio::task::spawn_blocking(|| {
        let lock = quickstart_lock();
        wait_for_free_ports();
        lock
    })
    .await
    .unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .current_dir(dir.path())
        .env_remove("RUST_LOG");
    let (child, ready, stdout, stderr) =
        tokio::task::spawn_blocking(move || spawn_until_ready(cmd))
            .await
            .unwrap();
    let _guard = Killed(child, stderr);
    assert_eq!(ready.gateway.port(), 8443, "quick-start gateway port");
    assert_eq!(ready.admin.port(), 9443, "quick-start admin port");
    assert!(ready.gateway.ip().is_loopback() && ready.admin.ip().is_loopback());

    let ca_path = dir.join("certs/ca.crt");
    assert!(
        ca_path.is_file(),
        "certs/ca.crt not created; stdout:\n{}",
        stdout.lock().unwrap()
    );
    let ca = read_pem_cert(&ca_path);
    let cfg = client_config_for(&ca, &[H1], None);
    let demo_host = "demo.gatehouse.localhost";
    // The demo user's lines follow the ready line: wait for them (deadline, no sleep-only).
    let printed = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            let text = stdout.lock().unwrap().clone();
            if text.contains("otpauth://") && text.contains("password: ") {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the quick-start printed no demo password and otpauth URI:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let password = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("a `password: ...` line")
        .trim()
        .to_string();
    let (_uri, secret) = otpauth_in(&printed).expect("an otpauth URI with a secret");
    let totp = totp_from_base32(&secret);

    // Without a session the demo app is not served.
    let mut c = H1Conn::connect(ready.gateway, demo_host, cfg.clone()).await;
    let r = within(QUICK, "demo app, anonymous", c.get("/")).await;
    assert_eq!(r.status, 401, "anonymous API-style GET: {}", r.text());

    // Log in as the demo user through the real form.
    let page = within(QUICK, "login form", c.get(LOGIN_PATH)).await;
    assert_eq!(page.status, 200, "login form: {}", page.text());
    let login_cookie = set_cookie(&page, LOGIN_COOKIE).expect("login cookie");
    let csrf = csrf_in(&page.text()).expect("csrf field");
    fresh_totp_window(2).await;
    let code = totp.generate(unix_now()).to_string();
    let body = form(&[
        ("csrf", &csrf),
        ("user", "demo"),
        ("password", &password),
        ("code", &code),
    ]);
    let login_cookie = format!("{LOGIN_COOKIE}={login_cookie}");
    let req = c.request(
        "POST",
        LOGIN_PATH,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &login_cookie),
        ],
        full(body),
    );
    let r = within(QUICK, "login", c.send(req)).await;
    assert_eq!(r.status, 303, "demo login: {}", r.text());
    let session = set_cookie(&r, SESSION_COOKIE).expect("session cookie");
    let mut c = H1Conn::connect(ready.gateway, demo_host, cfg)
        .await
        .with_cookie(Some(format!("{SESSION_COOKIE}={session}")));
    let r = within(
        QUICK,
        "demo app",
        c.send(c.request("GET", "/", &[], empty())),
    )
    .await;
    assert_eq!(r.status, 200, "demo app through the gateway: {}", r.text());
    assert!(
        !r.body.is_empty(),
        "the demo app answered with an empty body"
    );
    let health = within(
        QUICK,
        "healthz",
        support::client::plain_get(ready.admin, "127.0.0.1", "/healthz"),
    )
    .await;
    assert_eq!(health.status, 200);
}
