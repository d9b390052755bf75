//! Quick-start smoke test: `gatehouse serve` with no config in an empty directory generates dev
//! certificates, announces itself and proxies the demo app. The quick-start binds the fixed
//! ports 127.0.0.1:8443 and 127.0.0.1:9443, so this is the only test that uses fixed ports and
//! it lives alone in this test binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::client::{H1, H1Conn};
use support::gatehouse::{binary, spawn_until_ready};
use support::pki::{client_config_for, read_pem_cert};
use support::{QUICK, TestDir, within};

const FIXED_PORTS: &[u16] = &[8443, 9443];

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
    let mut c = H1Conn::connect(ready.gateway, "demo.gatehouse.localhost", cfg).await;
    let r = within(QUICK, "demo app", c.get("/")).await;
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
