//! The reviewer console (`/.gatehouse/review`) through the real binary, with a live SSH
//! session through the bastion to a real sshd: a signed-in user without `gatehouse:review`
//! gets 403 on every endpoint under the prefix, the live stream included, each refusal an
//! `access_denied` record; an auditor watches the live terminal; a reviewer without
//! `gatehouse:terminate` cannot end the session, one with it ends it (reason on record) and
//! the client's ssh connection closes. The browser test (a real Chromium) is in
//! `review_browser.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::Value;

use crate::bastion::Env;
use crate::recordings::{PROMPT, SET_PROMPT, Terminal, find};
use crate::support::client::{H1, H1Conn, Resp, empty, full};
use crate::support::identity::{PUBLIC_HOST, csrf_in, form};
use crate::support::{QUICK, within};

/// Auditors review; incident responders may also end sessions.
pub(crate) const AUDITORS: &str = "p, group:auditor, gatehouse:review, *, allow\n\
                                   p, group:incident, gatehouse:review, *, allow\n\
                                   p, group:incident, gatehouse:terminate, *, allow\n";

const REVIEW: &str = "/.gatehouse/review";

/// A connection to the public host with `cookie`.
async fn conn(env: &Env, cookie: Option<&str>) -> H1Conn {
    let cfg = env.pki.client_config(&[H1], None);
    H1Conn::connect(env.gateway, PUBLIC_HOST, cfg)
        .await
        .with_cookie(cookie.map(str::to_string))
}

async fn request(env: &Env, cookie: Option<&str>, method: &str, path: &str, body: &str) -> Resp {
    let mut c = conn(env, cookie).await;
    let headers: &[(&str, &str)] = if method == "POST" {
        &[("content-type", "application/x-www-form-urlencoded")]
    } else {
        &[("accept", "text/html")]
    };
    let req = c.request(method, path, headers, full(body.to_string()));
    within(QUICK, "console request", c.send(req)).await
}

/// Signs `name` (made with `groups`) in on the web; the session cookie.
async fn signed_in(env: &Env, name: &str, groups: &str) -> String {
    let user = env.add_user(name, groups);
    crate::support::identity::fresh_totp_window(5).await;
    let (status, cookie) = env.web_session(&user, &user.code(0)).await;
    assert_eq!(status, 303, "login of {name}");
    cookie.expect("a session cookie")
}

/// A live shell of alice on `staging` at its prompt, and its recording id.
fn live_shell(env: &Env) -> (Terminal, String) {
    let mut t = Terminal::open(env, "alice:root@staging", None);
    t.wait_for("# ");
    t.run(SET_PROMPT, PROMPT);
    t.run("echo console-was-here", "console-was-here");
    let found = find(env, &["--user", "alice", "--command", "console-was-here"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0]["ended_at"].is_null(), "{found:?}");
    (t, found[0]["id"].as_str().unwrap().to_string())
}

fn start() -> Env {
    let env = Env::start_full(false, "", AUDITORS, None);
    env.add_user("alice", "sre");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_auditors_get_403_on_every_console_endpoint_including_the_live_stream() {
    let env = tokio::task::spawn_blocking(start).await.unwrap();
    let (term, id) = tokio::task::block_in_place(|| live_shell(&env));
    let bob = signed_in(&env, "bob", "sre").await;
    let carol = signed_in(&env, "carol", "auditor").await;

    // Every endpoint, known or not, with the session's real id: the gate runs first.
    let s = format!("{REVIEW}/s/{id}");
    let table: Vec<(&str, String)> = vec![
        ("GET", REVIEW.to_string()),
        ("GET", format!("{REVIEW}/")),
        ("GET", format!("{REVIEW}?q=console-was-here")),
        ("GET", format!("{REVIEW}/static/player.js")),
        ("GET", format!("{REVIEW}/static/review.css")),
        ("GET", s.clone()),
        ("GET", format!("{s}/frames?from=0&to=60")),
        ("GET", format!("{s}/export")),
        ("GET", format!("{s}/live")),
        ("POST", format!("{s}/terminate")),
        ("GET", format!("{REVIEW}/no-such-page")),
        ("DELETE", s.clone()),
    ];
    for (method, path) in &table {
        let r = request(&env, Some(&bob), method, path, "reason=x").await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        assert!(r.text().contains("incident"), "{method} {path}");
        assert!(!r.text().contains("console-was-here"), "{method} {path}");
    }
    // Each refusal is on record, with bob's session.
    let denied = |e: &Value| {
        e["event"] == "access_denied" && e["user"] == "bob" && e["object"] == "gatehouse:review"
    };
    let start = Instant::now();
    loop {
        let n = env.audit().iter().filter(|e| denied(e)).count();
        if n == table.len() {
            break;
        }
        assert!(start.elapsed() < QUICK, "{n} access_denied records of bob");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        env.audit()
            .iter()
            .filter(|e| denied(e))
            .all(|e| e["session"].is_string() && e["incident_id"].is_string())
    );
    // Nobody signed in: the login (pages) or 401 (everything else), never the data.
    let r = request(&env, None, "GET", REVIEW, "").await;
    assert_eq!(r.status, 303);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/.gatehouse/login?next=%2F.gatehouse%2Freview")
    );
    for path in [format!("{s}/live"), format!("{s}/frames"), s.clone()] {
        let r = request(&env, None, "GET", &path, "").await;
        assert_eq!(r.status, 401, "{path}");
    }

    // An auditor sees the live session listed and watches its terminal.
    let r = request(&env, Some(&carol), "GET", REVIEW, "").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains(&id), "{}", r.text());
    let mut c = conn(&env, Some(&carol)).await;
    let req = c.request("GET", &format!("{s}/live"), &[], empty());
    let resp = within(QUICK, "live stream head", c.send_head(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut seen = String::new();
    let deadline = Instant::now() + QUICK;
    while !seen.contains("console-was-here") {
        assert!(Instant::now() < deadline, "live stream showed: {seen}");
        let frame = within(QUICK, "live frame", body.frame()).await;
        if let Some(Ok(f)) = frame
            && let Some(d) = f.data_ref()
        {
            seen.push_str(&String::from_utf8_lossy(d));
        }
    }
    assert!(seen.contains("event: frame"), "{seen}");
    env.expect_audit("carol's watch", |e| {
        e["event"] == "recording_access"
            && e["action"] == "watch"
            && e["actor"] == "review:carol"
            && e["recording_id"] == id.as_str()
    });
    env.expect_audit("carol's list", |e| {
        e["event"] == "recording_access" && e["action"] == "list" && e["actor"] == "review:carol"
    });
    tokio::task::block_in_place(|| term.exit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_holder_of_terminate_ends_a_live_ssh_session_and_the_client_is_disconnected() {
    let env = tokio::task::spawn_blocking(start).await.unwrap();
    let (mut term, id) = tokio::task::block_in_place(|| live_shell(&env));
    let carol = signed_in(&env, "carol", "auditor").await;
    let dave = signed_in(&env, "dave", "incident").await;
    let page = format!("{REVIEW}/s/{id}");
    let end = format!("{page}/terminate");

    // A reviewer without `gatehouse:terminate`: refused (with a valid form), on record, and
    // the session goes on.
    let r = request(&env, Some(&carol), "GET", &page, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let csrf = csrf_in(&r.text()).expect("a terminate form");
    let body = form(&[("csrf", &csrf), ("reason", "not mine to end")]);
    let r = request(&env, Some(&carol), "POST", &end, &body).await;
    assert_eq!(r.status, 403, "{}", r.text());
    env.expect_audit("carol refused", |e| {
        e["event"] == "access_denied"
            && e["user"] == "carol"
            && e["object"] == "gatehouse:terminate"
    });
    tokio::task::block_in_place(|| term.run("echo still-here", "still-here"));

    // With it: no CSRF token or a foreign origin is refused; with both, the session ends.
    let r = request(&env, Some(&dave), "GET", &page, "").await;
    let csrf = csrf_in(&r.text()).expect("a terminate form");
    let r = request(&env, Some(&dave), "POST", &end, "reason=x").await;
    assert_eq!(r.status, 403, "no csrf");
    let r = request(&env, Some(&dave), "POST", &end, &form(&[("csrf", &csrf)])).await;
    assert_eq!(r.status, 400, "no reason");
    tokio::task::block_in_place(|| term.run("echo still-alive", "still-alive"));
    let reason = "copying the customer table off prod";
    let body = form(&[("csrf", &csrf), ("reason", reason)]);
    let r = request(&env, Some(&dave), "POST", &end, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("was ended"), "{}", r.text());
    tokio::task::block_in_place(|| {
        let start = Instant::now();
        while term.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < QUICK, "the ssh client is still connected");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let rec = env.expect_audit("session_terminated", |e| e["event"] == "session_terminated");
    assert_eq!(rec["reason"], reason);
    assert_eq!(rec["by"], "review:dave");
    assert_eq!(
        (rec["user"].as_str(), rec["kind"].as_str()),
        (Some("alice"), Some("ssh"))
    );
    assert_eq!(rec["recording_id"], id.as_str());
    env.expect_audit("the connection's close", |e| {
        e["event"] == "ssh_connection_close" && e["reason"] == "ended by a reviewer"
    });
    // Ended: the page no longer offers to end it, and a second try ends nothing.
    let start = Instant::now();
    loop {
        let r = request(&env, Some(&dave), "GET", &page, "").await;
        if csrf_in(&r.text()).is_none() {
            break;
        }
        assert!(start.elapsed() < QUICK, "the session still shows as live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = request(&env, Some(&dave), "POST", &end, &body).await;
    assert_eq!(r.status, 409, "{}", r.text());
}
