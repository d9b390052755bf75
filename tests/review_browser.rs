//! The reviewer console in a real browser (Debian's Chromium driven by playwright-core
//! through `tests/browser/review.mjs`): an auditor signs in, searches for a command typed in
//! an SSH session through the bastion, opens the session, plays it and the command appears
//! on the player's screen (read from the DOM); the command timeline jumps the player back to
//! it; the pages load nothing from elsewhere and break none of their CSP rules. Screenshots
//! of the list and the session page are saved under the test's temp directory
//! (`CARGO_TARGET_TMPDIR/screenshots/review-*.png`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use crate::bastion::Env;
use crate::recordings::{PROMPT, SET_PROMPT, Terminal, find};
use crate::review::AUDITORS;

/// A command only this session typed (edited with backspace on the way).
const COMMAND: &str = "echo quarterly-audit-marker";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_finds_opens_and_replays_a_typed_command_in_a_real_browser() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = tokio::task::spawn_blocking(move || Env::start_full(false, "", AUDITORS, Some(port)))
        .await
        .unwrap();
    env.add_user("alice", "sre");
    tokio::task::block_in_place(|| {
        let mut t = Terminal::open(&env, "alice:root@staging", None);
        t.wait_for("# ");
        t.run(SET_PROMPT, PROMPT);
        t.run("ls / >/dev/null", PROMPT);
        t.run(
            "echo quarterly-audit-markre\x7f\x7fer",
            "quarterly-audit-marker",
        );
        t.run("echo done", "done");
        t.exit();
    });
    find(&env, &["--command", COMMAND]);
    let carol = env.add_user("carol", "auditor");
    crate::support::identity::fresh_totp_window(20).await;

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let (list_png, session_png) = (
        shots.join("review-list.png"),
        shots.join("review-session.png"),
    );
    for f in [&list_png, &session_png] {
        let _ = std::fs::remove_file(f);
    }
    let origin = format!("https://gatehouse.localhost:{port}");
    let input = serde_json::json!({
        "origin": origin,
        "user": carol.name,
        "password": carol.password(),
        "code": carol.code(0),
        "command": COMMAND,
        "shots": { "list": list_png, "session": session_png },
    });
    let seen = tokio::task::spawn_blocking(move || crate::browser::browse("review.mjs", &input))
        .await
        .unwrap();
    assert!(seen.get("error").is_none(), "browser: {seen:#}");

    // The console asked for a login and came back to itself.
    let landed = seen["landed"]["url"].as_str().unwrap();
    assert!(
        landed.starts_with(&format!("{origin}/.gatehouse/login?next=")),
        "{landed}"
    );
    assert_eq!(
        seen["console_home"]["url"],
        format!("{origin}/.gatehouse/review")
    );
    // The search found the session; playing it put the command on the player's screen.
    let list = seen["list"]["body"].as_str().unwrap();
    assert!(list.contains("1 found"), "{list}");
    assert!(
        seen["session"]["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{origin}/.gatehouse/review/s/"))
    );
    let played = seen["played"]["screen"].as_str().unwrap();
    assert!(played.contains(COMMAND), "{played}");
    assert!(
        played.contains("quarterly-audit-marker\n"),
        "its output too: {played}"
    );
    // At the start the command is not on the screen; the timeline jumps back to it.
    assert!(
        !seen["at_start"]["screen"]
            .as_str()
            .unwrap()
            .contains(COMMAND)
    );
    let jumps: Vec<&str> = seen["jumps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap())
        .collect();
    assert!(jumps.iter().any(|j| j.contains(COMMAND)), "{jumps:?}");
    assert!(
        !jumps.iter().any(|j| j.contains("markre")),
        "raw keys: {jumps:?}"
    );
    assert!(seen["jumped"]["screen"].as_str().unwrap().contains(COMMAND));
    // Nothing from elsewhere; no CSP violation or script error.
    for h in seen["requests"].as_array().unwrap() {
        assert_eq!(h.as_str().unwrap(), format!("gatehouse.localhost:{port}"));
    }
    let console = seen["console"].as_array().unwrap();
    assert!(
        console.iter().all(|m| {
            let m = m.as_str().unwrap_or_default();
            !m.contains("Content Security Policy") && !m.starts_with("pageerror")
        }),
        "browser console: {console:?}"
    );
    for f in [&list_png, &session_png] {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", f.display());
    }
    // The reads were audited: the list with its search, the open, the replay.
    for action in ["list", "open", "replay"] {
        env.expect_audit(action, |e| {
            e["event"] == "recording_access"
                && e["action"] == action
                && e["actor"] == "review:carol"
        });
    }
    env.expect_audit("the search", |e| {
        e["action"] == "list"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("quarterly-audit-marker"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_watches_a_live_terminal_in_a_real_browser() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = tokio::task::spawn_blocking(move || Env::start_full(false, "", AUDITORS, Some(port)))
        .await
        .unwrap();
    env.add_user("alice", "sre");
    let mut term = tokio::task::block_in_place(|| {
        let mut t = Terminal::open(&env, "alice:root@staging", None);
        t.wait_for("# ");
        t.run(SET_PROMPT, PROMPT);
        t.run("uname -s", "Linux");
        t
    });
    find(&env, &["--user", "alice", "--command", "uname -s"]);
    let dave = env.add_user("dave", "incident");
    crate::support::identity::fresh_totp_window(20).await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let (list_png, live_png) = (
        shots.join("review-live-list.png"),
        shots.join("review-live.png"),
    );
    let input = serde_json::json!({
        "origin": format!("https://gatehouse.localhost:{port}"),
        "user": dave.name,
        "password": dave.password(),
        "code": dave.code(0),
        "expect": "typed-while-watched",
        "shots": { "list": list_png, "live": live_png },
    });
    let browser =
        tokio::task::spawn_blocking(move || crate::browser::browse("review_live.mjs", &input));
    // Once the browser's live stream is open (its audit record is the signal), type.
    tokio::task::block_in_place(|| {
        env.expect_audit("dave's watch", |e| {
            e["event"] == "recording_access"
                && e["action"] == "watch"
                && e["actor"] == "review:dave"
        });
        term.run("echo typed-while-watched", "typed-while-watched");
    });
    let seen = browser.await.unwrap();
    assert!(seen.get("error").is_none(), "browser: {seen:#}");
    assert!(seen["list"]["live"].as_str().unwrap().contains("alice"));
    let screen = seen["live"]["screen"].as_str().unwrap();
    assert!(screen.contains("echo typed-while-watched"), "{screen}");
    assert!(
        screen.contains("uname -s\nLinux"),
        "what was on screen before: {screen}"
    );
    let console = seen["console"].as_array().unwrap();
    assert!(
        console.iter().all(|m| {
            let m = m.as_str().unwrap_or_default();
            !m.contains("Content Security Policy") && !m.starts_with("pageerror")
        }),
        "browser console: {console:?}"
    );
    for f in [&list_png, &live_png] {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", f.display());
    }
    tokio::task::block_in_place(|| term.exit());
}
