//! Fail closed on a store outage, with a real redis-server: while Redis is down no login and
//! no proxied request passes (503 with a clear page), `/readyz` says why, and service resumes
//! by itself when Redis is back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use gatehouse_core::store::RedisStore;

struct Redis(Child);

impl Redis {
    /// Starts redis-server on `port` and waits until it accepts connections. A missing
    /// binary is a test failure.
    async fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let deadline = Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Redis(child)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `/readyz` (a readiness signal) until it answers `want`, within the deadline.
async fn readyz_becomes(h: &Harness, want: u16) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = h.admin_get("/readyz").await;
        if status.as_u16() == want {
            return body;
        }
        assert!(Instant::now() < deadline, "readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_service_resumes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = Redis::start(port).await;
    let url = url::Url::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    let key = gatehouse_core::store::RecordKey::new(
        &gatehouse_core::secret::SecretKey::from_bytes([3; 32]),
    );
    let store = Arc::new(RedisStore::connect(&url, key).await.unwrap());
    let (up, mut seen) = upstream(None).await;
    let h = start_with("", &[("app", HOST, up)], store).await;
    assert_eq!(h.h1(get("/before")).await.0.status(), 200);
    assert!(seen.recv().await.is_some());

    drop(redis);
    let why = readyz_becomes(&h, 503).await;
    assert!(why.contains("store"), "{why}");
    let (resp, body) = h.h1(get("/during")).await;
    assert_eq!(resp.status(), 503);
    assert!(String::from_utf8_lossy(&body).contains("session store"));
    let (resp, _) = h.h1(get_anonymous("/.gatehouse/login", None)).await;
    assert_eq!(resp.status(), 200, "the form itself needs no store");
    assert!(
        seen.try_recv().is_err(),
        "nothing passed while the store was down"
    );

    let _redis = Redis::start(port).await;
    readyz_becomes(&h, 200).await;
    // The restarted Redis lost the session: the request is now a clean 401, not a 503.
    assert_eq!(h.h1(get_anonymous("/after", None)).await.0.status(), 401);
}
