//! Fail closed on a store outage, with a real redis-server: while Redis is down no login and
//! no proxied request passes (503 with a clear page), `/readyz` says why, and service resumes
//! by itself when Redis is back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use gatehouse_core::store::RedisStore;
use gatehouse_testkit::Redis;

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
    let mut redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let url = url::Url::parse(&redis.url()).unwrap();
    let key = gatehouse_core::store::RecordKey::new(
        &gatehouse_core::secret::SecretKey::from_bytes([3; 32]),
    );
    let store = Arc::new(RedisStore::connect(&url, key).await.unwrap());
    let (up, mut seen) = upstream(None).await;
    let h = start_with("", &[("app", HOST, up)], store).await;
    assert_eq!(h.h1(get("/before")).await.0.status(), 200);
    assert!(seen.recv().await.is_some());

    let mut redis = tokio::task::spawn_blocking(move || {
        redis.stop();
        redis
    })
    .await
    .unwrap();
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

    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    readyz_becomes(&h, 200).await;
    // The restarted Redis lost the session: the request is now a clean 401, not a 503.
    assert_eq!(h.h1(get_anonymous("/after", None)).await.0.status(), 401);
}
