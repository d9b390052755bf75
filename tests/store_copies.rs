//! Two `gatehouse` processes on one real redis-server, the second answering from its copies
//! of sessions: a logout, a revocation and a `user lock` on the first end the session on the
//! second within the stated bound (`INVALIDATION_BOUND`), and so do a grant and its
//! revocation; killing the second's invalidation
//! link (`CLIENT KILL` by redis-cli) makes it fail closed until the link is back; Redis
//! restarted from an older snapshot, or without its data, brings no revoked session back; an
//! instance whose secret key differs from the store's refuses to start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_core::store::INVALIDATION_BOUND;

use crate::support;
use crate::support::client::empty;
use crate::support::identity::{LOGOUT_PATH, PORTAL_PATH, csrf_in, form, h1_with};
use crate::support::{Gatehouse, QUICK, Redis, Upstream, host, within};

use crate::support::pair::{pair, spec};

async fn status(gh: &Gatehouse, cookie: &str, path: &str) -> u16 {
    let mut c = h1_with(gh, &host("wiki"), cookie).await;
    let req = c.request("GET", path, &[("accept", "application/json")], empty());
    within(QUICK, path, c.send(req)).await.status.as_u16()
}

/// `redis-cli -p PORT ARGS...`: its output.
fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(redis.port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli (package redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Session reads and writes Redis has served so far: its `GET`s and `SET`s, less the one
/// `GET` and one `SET` of each audit-shipping script call (`EVALSHA`, the cursor).
fn session_commands(redis: &Redis) -> u64 {
    let stats = redis_cli(redis, &["INFO", "commandstats"]);
    let calls = |cmd: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix("cmdstat_")?.strip_prefix(cmd)?;
                rest.strip_prefix(":calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    // Scripts' own reads and writes, and the audit shipper's cursor (one SET per XADD) are
    // not session traffic.
    (calls("get") + calls("set")).saturating_sub(2 * calls("evalsha") + calls("xadd"))
}

/// Polls until `gh` answers `want` for `cookie` on `path`; the time it took.
async fn answers_on(
    gh: &Gatehouse,
    cookie: &str,
    path: &str,
    want: u16,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = status(gh, cookie, path).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{path} still {got} after {limit:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls until `gh` answers `want` for `cookie`; the time it took (panics past `limit`).
async fn answers(gh: &Gatehouse, cookie: &str, want: u16, limit: Duration) -> Duration {
    answers_on(gh, cookie, "/poll", want, limit).await
}

fn cli_ok(gh: &Gatehouse, args: &[&str]) {
    let out = tokio::task::block_in_place(|| gh.cli(args, None));
    assert!(
        out.status.success(),
        "gatehouse {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revocation_and_lock_on_a_end_the_session_on_b_within_the_bound() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let (a, b) = pair(&redis, &up).await;
    let mut cookies = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let u = a.create_user(name, &["staff"]).await;
        cookies.push(a.login(&host("wiki"), &u).await);
    }
    let [alice, bob, carol] = [&cookies[0], &cookies[1], &cookies[2]];
    for c in [alice, bob, carol] {
        assert_eq!(status(&b, c, "/warm").await, 200);
    }
    // b answers from its copies: no session read or write in Redis per request, only the
    // idle-clock write of each session once per second and the read after it.
    let before = session_commands(&redis);
    let start = Instant::now();
    for _ in 0..30 {
        for c in [alice, bob, carol] {
            assert_eq!(status(&b, c, "/copy").await, 200);
        }
    }
    let seconds = start.elapsed().as_secs() + 1;
    let spent = session_commands(&redis) - before;
    eprintln!(
        "90 requests on b in {:?}: {spent} session reads/writes",
        start.elapsed()
    );
    assert!(
        spent <= 3 * 2 * (seconds + 1) && spent < 30,
        "90 requests on b in {seconds} s cost {spent} session reads/writes"
    );

    // Logout on a.
    let mut c = h1_with(&a, &host("wiki"), alice).await;
    let portal = within(QUICK, "portal", c.get(PORTAL_PATH)).await;
    let csrf = csrf_in(&portal.text()).expect("logout csrf");
    let r = a
        .post_form(
            &host("wiki"),
            LOGOUT_PATH,
            Some(alice),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert!(
        matches!(r.status.as_u16(), 200 | 303),
        "logout: {}",
        r.status
    );
    let took = answers(&b, alice, 401, INVALIDATION_BOUND).await;
    eprintln!("logout on a ended the session on b after {took:?}");

    // Revocation from the CLI (talks to Redis).
    cli_ok(&a, &["session", "revoke", "bob"]);
    let took = answers(&b, bob, 401, INVALIDATION_BOUND).await;
    eprintln!("revocation ended the session on b after {took:?}");
    a.expect_audit("session_revoked", |e| e["user"] == "bob")
        .await;

    // `user lock` revokes the user's sessions everywhere.
    assert_eq!(status(&b, carol, "/before-lock").await, 200);
    cli_ok(&a, &["user", "lock", "carol"]);
    let took = answers(&b, carol, 401, INVALIDATION_BOUND).await;
    eprintln!("user lock ended the session on b after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_and_its_revocation_on_a_reach_b_within_the_bound() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let (a, b) = pair(&redis, &up).await;
    let dave = a.create_user("dave", &["contractors"]).await;
    let cookie = a.login(&host("wiki"), &dave).await;
    assert_eq!(status(&b, &cookie, "/page").await, 403, "no grant yet");
    let out = tokio::task::block_in_place(|| {
        a.cli(
            &[
                "grant",
                "add",
                "dave",
                "group:staff",
                "--for",
                "1h",
                "--reason",
                "INC-16",
            ],
            None,
        )
    });
    assert!(out.status.success(), "grant add: {out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let took = answers_on(&b, &cookie, "/page", 200, INVALIDATION_BOUND).await;
    eprintln!("a grant on a allowed on b after {took:?}");
    cli_ok(&a, &["grant", "revoke", &id]);
    let took = answers_on(&b, &cookie, "/page", 403, INVALIDATION_BOUND).await;
    eprintln!("its revocation on a refused on b after {took:?}");
    b.expect_audit("access_denied", |e| e["user"] == "dave")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_invalidation_link_fails_closed_until_it_is_back() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let (a, b) = pair(&redis, &up).await;
    let alice = a.create_user("alice", &["staff"]).await;
    let cookie = a.login(&host("wiki"), &alice).await;
    assert_eq!(status(&b, &cookie, "/warm").await, 200);

    let name = format!("name=gatehouse-link-{}-", b.pid());
    let list = redis_cli(&redis, &["CLIENT", "LIST"]);
    let line = list
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("no client {name}... in\n{list}"));
    let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
    let killed = redis_cli(&redis, &["CLIENT", "KILL", "ID", id]);
    assert_eq!(killed.trim(), "1", "CLIENT KILL: {killed}");
    let before = up.count();
    // b refuses (503, not a pass and not "log in again") until its link is back; a serves on.
    let start = Instant::now();
    let mut refused = false;
    loop {
        match status(&b, &cookie, "/during").await {
            503 => refused = true,
            200 if refused => break,
            200 => {}
            other => panic!("b answered {other} while its link was down"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "b did not come back (refused: {refused})"
        );
        if !refused {
            assert!(
                start.elapsed() < INVALIDATION_BOUND,
                "b kept serving without its link past the bound"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "b refused for a while and was back after {:?}",
        start.elapsed()
    );
    assert_eq!(status(&a, &cookie, "/a").await, 200);
    let passed = up.count() - before;
    // Only the answers after b came back (one) and a's request reached the upstream; b's
    // requests before the kill was noticed (within the bound) may have too.
    assert!(passed >= 2, "{passed}");
    assert!(
        b.stderr().contains("store invalidation link lost"),
        "b logs the loss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_older_or_no_data_brings_no_revoked_session_back() {
    let mut redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let (a, b) = pair(&redis, &up).await;
    let alice = a.create_user("alice", &["staff"]).await;
    let bob = a.create_user("bob", &["staff"]).await;
    let alice_cookie = a.login(&host("wiki"), &alice).await;
    let bob_cookie = a.login(&host("wiki"), &bob).await;
    for gh in [&a, &b] {
        assert_eq!(status(gh, &alice_cookie, "/warm").await, 200);
    }
    // A snapshot with alice's session, then her revocation.
    assert_eq!(redis_cli(&redis, &["SAVE"]).trim(), "OK");
    cli_ok(&a, &["session", "revoke", "alice"]);
    answers(&b, &alice_cookie, 401, INVALIDATION_BOUND).await;
    // Redis crashes and comes back from the snapshot, which still has alice's session.
    tokio::task::block_in_place(|| {
        redis.stop();
        redis.restart();
    });
    // bob's session came back with the snapshot: both instances serve it again...
    for gh in [&a, &b] {
        answers(gh, &bob_cookie, 200, Duration::from_secs(15)).await;
    }
    // ...but never alice's revoked one.
    for gh in [&a, &b] {
        assert_eq!(status(gh, &alice_cookie, "/resurrected").await, 401);
    }
    assert!(
        !up.paths().iter().any(|p| p == "/resurrected"),
        "a revoked session reached the upstream"
    );
    // Restarted without its data: every session is gone, copies included.
    tokio::task::block_in_place(|| {
        redis.stop();
        redis.forget_data();
        redis.restart();
    });
    for gh in [&a, &b] {
        answers(gh, &bob_cookie, 401, Duration::from_secs(15)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_another_secret_key_refuses_to_start() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let _a = Gatehouse::start(spec(&redis, &up)).await;
    // A second instance, same store, its own (different) secret key.
    let other = spec(&redis, &up);
    assert_ne!(other.secret_key, _a.spec.secret_key);
    let dir = support::TestDir::new("gw-other-key");
    let _pki = support::Pki::new(&dir.join("certs"));
    let config = dir.write("gatehouse.toml", other.to_toml());
    other.write_policies(&dir);
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(support::gatehouse::binary())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("GATEHOUSE_SECRET_KEY", &other.secret_key)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("an instance with another secret key kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (child.wait_with_output().unwrap(), dir)
    })
    .await
    .unwrap()
    .0;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("written with another secret key")
            && stderr.contains("every instance sharing a store must use the same secret key"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("gatehouse ready"),
        "it must not listen"
    );
}
