//! End-to-end tests of identity with the shared Redis store: a real redis-server per test,
//! one or two `gatehouse` processes on it. Sessions, login throttling counters and the TOTP replay
//! cache are shared between instances; `gatehouse session revoke` ends a user's sessions on
//! every instance, an open WebSocket included; a store outage fails closed (503, `/readyz`
//! 503) and heals by itself when Redis is back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use std::time::{Duration, Instant};

use crate::support::client::{echoed_headers, empty, plain_get};
use crate::support::identity::{LOGIN_PATH, fresh_totp_window, h1_with};
use crate::support::{Gatehouse, QUICK, Redis, Upstream, host, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::pair::{pair, spec};

async fn readyz(gh: &Gatehouse) -> u16 {
    within(QUICK, "readyz", plain_get(gh.admin, "127.0.0.1", "/readyz"))
        .await
        .status
        .as_u16()
}

/// Polls `/readyz` (the readiness signal) until it answers `want`, with a deadline.
async fn wait_ready(gh: &Gatehouse, want: u16, limit: Duration) {
    let start = Instant::now();
    loop {
        let got = readyz(gh).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "/readyz still {got} after {limit:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn api_get(gh: &Gatehouse, cookie: &str, path: &str) -> support::Resp {
    let mut c = h1_with(gh, &host("wiki"), cookie).await;
    let req = c.request("GET", path, &[("accept", "application/json")], empty());
    within(QUICK, path, c.send(req)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_instance_serves_on_the_other_and_revocation_ends_it_everywhere() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let (a, b) = pair(&redis, &up).await;
    let alice = a.create_user("alice", &["staff"]).await;
    let bob = a.create_user("bob", &["staff"]).await;
    let cookie = a.login(&host("wiki"), &alice).await;
    let bob_cookie = b.login(&host("wiki"), &bob).await;

    let r = api_get(&b, &cookie, "/on-b").await;
    assert_eq!(r.status, 200, "a's session on b: {}", r.text());
    assert_eq!(echoed_headers(&r.json(), "x-gatehouse-user"), vec!["alice"]);

    // A WebSocket through b, echoing.
    let mut c = h1_with(&b, &host("wiki"), &cookie).await;
    let req = c.upgrade_request("/ws", &[]);
    let resp = within(QUICK, "upgrade", c.send_head(req)).await.unwrap();
    assert_eq!(
        resp.status(),
        101,
        "upgrade through b: {:?}",
        resp.headers()
    );
    let upgraded = within(QUICK, "upgraded", hyper::upgrade::on(resp))
        .await
        .unwrap();
    let mut ws = hyper_util::rt::TokioIo::new(upgraded);
    ws.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    within(QUICK, "ws echo", ws.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(&back, b"ping");

    // `session list` sees both users' sessions.
    let out = tokio::task::block_in_place(|| a.cli(&["session", "list"], None));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "session list: {listed}");
    assert!(
        listed.contains("alice") && listed.contains("bob"),
        "session list:\n{listed}"
    );

    // Revoke alice from a's config (the CLI talks to Redis).
    let out = tokio::task::block_in_place(|| a.cli(&["session", "revoke", "alice"], None));
    assert!(
        out.status.success(),
        "session revoke: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    a.expect_audit("session_revoked", |e| e["user"] == "alice")
        .await;
    // The WebSocket through b is closed.
    let mut buf = [0u8; 64];
    let closed = within(QUICK, "websocket closed after revocation", async {
        loop {
            match ws.read(&mut buf).await {
                Ok(0) | Err(_) => break true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed);
    for (name, gh) in [("a", &a), ("b", &b)] {
        let r = api_get(gh, &cookie, "/after-revoke").await;
        assert_eq!(r.status, 401, "revoked session on {name}: {}", r.text());
    }
    // bob is untouched.
    assert_eq!(api_get(&a, &bob_cookie, "/bob").await.status, 200);
    assert!(
        !up.paths().iter().any(|p| p == "/after-revoke"),
        "a revoked session reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_instance_ends_the_session_on_the_other() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let (a, b) = pair(&redis, &up).await;
    let alice = a.create_user("alice", &["staff"]).await;
    let cookie = a.login(&host("wiki"), &alice).await;
    assert_eq!(api_get(&b, &cookie, "/x").await.status, 200);
    let mut c = h1_with(&b, &host("wiki"), &cookie).await;
    let portal = within(QUICK, "portal on b", c.get(support::identity::PORTAL_PATH)).await;
    let csrf = support::identity::csrf_in(&portal.text()).expect("logout csrf on b's portal");
    let r = b
        .post_form(
            &host("wiki"),
            support::identity::LOGOUT_PATH,
            Some(&cookie),
            support::identity::form(&[("csrf", &csrf)]),
        )
        .await;
    assert!(
        matches!(r.status.as_u16(), 200 | 303),
        "logout on b: {}",
        r.status
    );
    assert_eq!(
        api_get(&a, &cookie, "/y").await.status,
        401,
        "logged out on b, alive on a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_counters_and_the_totp_replay_cache_are_shared_between_instances() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let (a, b) = pair(&redis, &up).await;
    let alice = a.create_user("alice", &["staff"]).await;
    let carol = a.create_user("carol", &["staff"]).await;
    let h = host("wiki");
    // A code spent on a is refused on b.
    fresh_totp_window(10).await;
    let code = carol.code();
    let r = a.try_login(&h, &carol, &carol.password, &code, None).await;
    assert_eq!(r.status, 303, "carol on a: {}", r.text());
    let r = b.try_login(&h, &carol, &carol.password, &code, None).await;
    assert_eq!(r.status, 401, "carol's code replayed on b: {}", r.text());
    // Failures spread over both instances add up: five counted (the delays after the third
    // and the fourth waited out), then both instances make alice wait (4 s).
    let mut counted = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        assert!(Instant::now() < deadline, "failures not counted");
        if counted == 5 {
            break;
        }
        let gh = if i % 2 == 0 { &a } else { &b };
        let r = gh.try_login(&h, &alice, "wrong", &alice.code(), None).await;
        match r.status.as_u16() {
            401 => counted += 1,
            429 => {
                let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            other => panic!("failure {i}: {other}"),
        }
    }
    for (name, gh) in [("a", &a), ("b", &b)] {
        let r = gh
            .try_login(&h, &alice, &alice.password, &alice.code(), None)
            .await;
        assert_eq!(
            r.status,
            429,
            "alice after 5 failures, on {name}: {}",
            r.text()
        );
        assert!(r.header("retry-after").is_some());
    }
    let slowed = |e: &serde_json::Value| {
        e["user"] == "alice"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("slowed:"))
    };
    assert!(
        a.count_audit("login_failure", slowed) >= 1 && b.count_audit("login_failure", slowed) >= 1,
        "each instance refuses alice while the shared delay runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_with_503_and_service_returns_with_redis() {
    let mut redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let gh = Gatehouse::start(spec(&redis, &up)).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let bob = gh.create_user("bob", &["staff"]).await;
    let cookie = gh.login(&host("wiki"), &alice).await;
    assert_eq!(api_get(&gh, &cookie, "/up").await.status, 200);
    assert_eq!(readyz(&gh).await, 200);

    tokio::task::block_in_place(|| redis.stop());
    let before = up.count();
    let r = api_get(&gh, &cookie, "/down").await;
    assert_eq!(r.status, 503, "request with Redis down: {}", r.text());
    wait_ready(&gh, 503, QUICK).await;
    let f = gh.login_form(&host("wiki"), None).await;
    let body = support::identity::form(&[
        ("csrf", &f.csrf),
        ("user", "bob"),
        ("password", &bob.password),
        ("code", &bob.code()),
    ]);
    let r = gh
        .post_form(&host("wiki"), LOGIN_PATH, Some(&f.login_cookie), body)
        .await;
    assert_eq!(r.status, 503, "login with Redis down: {}", r.text());
    assert_eq!(
        up.count(),
        before,
        "a request reached the upstream with the store down"
    );

    tokio::task::block_in_place(|| redis.restart());
    wait_ready(&gh, 200, Duration::from_secs(15)).await;
    // The restarted Redis is empty (no persistence): old sessions are gone, logins work.
    let cookie = gh.login(&host("wiki"), &bob).await;
    let r = api_get(&gh, &cookie, "/back").await;
    assert_eq!(r.status, 200, "after Redis came back: {}", r.text());
}
