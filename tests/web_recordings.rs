//! Web sessions recorded, through the real binary: a user signs in with password and TOTP,
//! browses an app (allowed pages, a denied one), and `gatehouse recordings list --user` /
//! `--app` find the session; `recordings export` gives its requests as JSON lines whose paths,
//! statuses, sizes and request ids are those of the session's audit records; after logout
//! the session shows as ended; a path given as a recording id is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::identity::{LOGOUT_PATH, PORTAL_PATH, csrf_in, form, h1_with};
use crate::support::scenario::wiki;
use crate::support::{Gatehouse, GatehouseSpec, QUICK, host, within};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `recordings ARGS`: must succeed; stdout as JSON lines.
fn json_lines(gh: &Gatehouse, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["recordings"];
    all.extend_from_slice(args);
    let out = tokio::task::block_in_place(|| gh.cli(&all, None));
    assert!(
        out.status.success(),
        "recordings {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Polls `recordings ARGS` (the index and the completion records are written as the session
/// runs, a moment after the answers) until `ok` holds; fails with what was last seen.
async fn until(gh: &Gatehouse, args: &[&str], ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let found = json_lines(gh, args);
        if ok(&found) {
            if start.elapsed() > QUICK / 2 {
                eprintln!("recordings {args:?} matched after {:?}", start.elapsed());
            }
            return found;
        }
        // A quiet connection's answers are written at its next idle check (a few seconds); a
        // loaded machine stretches that and each CLI run.
        assert!(
            start.elapsed() < 3 * QUICK,
            "recordings {args:?} never matched; last: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_session_is_found_exported_from_its_audit_records_and_ended_at_logout() {
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let wiki_host = host("wiki");
    let cookie = gh.login(&wiki_host, &alice).await;
    let mut c = h1_with(&gh, &wiki_host, &cookie).await;
    let asked = [
        ("/docs/start", 200),
        ("/docs/page?q=1", 200),
        ("/admin/secret", 403),
        ("/docs/end", 200),
    ];
    for (path, status) in asked {
        let r = within(QUICK, path, c.get(path)).await;
        assert_eq!(r.status, status, "GET {path}: {}", r.text());
    }
    assert_eq!(up.count(), 3, "only the allowed requests went upstream");

    // Found by user (and by app once its first use is noted), live, with the contract's fields.
    let listed = until(&gh, &["list", "--user", "alice", "--json"], |f| {
        f.len() == 1 && f[0]["apps"] == serde_json::json!(["wiki"])
    })
    .await;
    let s = &listed[0];
    assert_eq!(
        (s["kind"].as_str(), s["user"].as_str()),
        (Some("web"), Some("alice"))
    );
    assert_eq!(s["app"], "wiki");
    assert!(s["started_at"].is_string(), "{s}");
    assert!(s["ended_at"].is_null(), "live: {s}");
    let id = s["id"].as_str().unwrap().to_string();
    let by_app = json_lines(&gh, &["list", "--app", "wiki", "--json"]);
    assert_eq!(by_app.len(), 1);
    assert_eq!(by_app[0]["id"], id.as_str());
    assert!(json_lines(&gh, &["list", "--user", "bob", "--json"]).is_empty());
    assert!(json_lines(&gh, &["list", "--app", "other", "--json"]).is_empty());

    // Exported: one line per request, in order, with the answers once they are recorded.
    let exported = until(&gh, &["export", &id], |f| {
        f.len() == asked.len() && f.iter().all(|r| r["status"].is_u64())
    })
    .await;
    let session = gh
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "access_allowed" && e["object"] == "app:wiki/docs/start")
        .expect("the first request's access record")["session"]
        .clone();
    let events = gh.audit_events();
    let decisions: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["session"] == session
                && (e["event"] == "access_allowed" || e["event"] == "access_denied")
        })
        .collect();
    assert_eq!(decisions.len(), asked.len(), "{decisions:#?}");
    for ((r, d), (path, status)) in exported.iter().zip(&decisions).zip(asked) {
        let path = path.split('?').next().unwrap();
        assert_eq!(r["path"], path, "{r}");
        assert_eq!(r["method"], "GET");
        assert_eq!(r["host"], wiki_host.as_str());
        assert_eq!(r["status"], status, "{r}");
        assert_eq!(r["request_id"], d["request_id"], "{r} vs {d}");
        assert_eq!(format!("app:wiki{path}"), d["object"].as_str().unwrap());
        if status == 200 {
            assert_eq!(r["decision"], "allow");
            let (record, done) = events
                .iter()
                .filter(|e| e["event"] == "requests_completed")
                .find_map(|e| {
                    let a = e["answers"].as_array()?;
                    let done = a.iter().find(|a| a["request_id"] == d["request_id"])?;
                    Some((e, done))
                })
                .unwrap_or_else(|| panic!("no answer recorded for {d}"));
            assert_eq!(record["session"], session);
            assert_eq!(r["status"], done["status"]);
            assert_eq!(r["bytes"], done["bytes"]);
            assert!(r["bytes"].as_u64().unwrap() > 0, "{r}");
            assert!(r["duration_ms"].is_u64(), "{r}");
        } else {
            assert_eq!(r["decision"], "deny");
            assert_eq!(r["incident_id"], d["incident_id"]);
        }
    }

    // Logout ends it.
    let portal = within(QUICK, "portal", c.get(PORTAL_PATH)).await;
    let csrf = csrf_in(&portal.text()).expect("logout form");
    let r = gh
        .post_form(
            &wiki_host,
            LOGOUT_PATH,
            Some(&cookie),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert!(
        matches!(r.status.as_u16(), 200 | 303),
        "logout: {}",
        r.status
    );
    let ended = until(&gh, &["list", "--user", "alice", "--json"], |f| {
        f.len() == 1 && f[0]["ended_at"].is_string()
    })
    .await;
    assert_eq!(ended[0]["id"], id.as_str());
    // The export reads the same after the end, and every read is on record.
    assert_eq!(json_lines(&gh, &["export", &id]), exported);
    assert!(
        gh.count_audit("recording_access", |e| e["action"] == "export"
            && e["recording_id"] == id.as_str())
            >= 2
    );

    // A path is never a recording id.
    for bad in [
        "../../data/secret.key",
        "../recordings/index.sqlite",
        &id[..31],
    ] {
        let out = tokio::task::block_in_place(|| gh.cli(&["recordings", "export", bad], None));
        assert_eq!(out.status.code(), Some(1), "export {bad}");
        assert!(
            text(&out.stderr).contains("is not a recording id"),
            "{}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_whose_session_cannot_be_recorded_is_refused_and_audited() {
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let dir = gh.dir.join("data/recordings");
    assert!(dir.is_dir(), "{}", dir.display());
    // The recordings directory is gone (a file in its place; root ignores permissions): no
    // new session may start.
    let moved = gh.dir.join("data/recordings.moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    crate::support::identity::fresh_totp_window(2).await;
    let r = gh
        .try_login(&host("wiki"), &alice, &alice.password, &alice.code(), None)
        .await;
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("cannot be recorded"), "{}", r.text());
    assert!(
        crate::support::identity::set_cookie(&r, crate::support::identity::SESSION_COOKIE)
            .is_none_or(|v| v.is_empty()),
        "a session cookie was set: {:?}",
        r.headers
    );
    gh.expect_audit("login_failure", |e| {
        e["user"] == "alice" && e["reason"] == "recording unavailable"
    })
    .await;
    assert_eq!(up.count(), 0);
    assert!(json_lines(&gh, &["list", "--user", "alice", "--json"]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_a_restart_of_the_in_process_store_end_live_web_sessions() {
    let (mut gh, _up) = wiki(GatehouseSpec::default()).await;
    let wiki_host = host("wiki");
    for name in ["alice", "bob"] {
        let user = gh.create_user(name, &["staff"]).await;
        let cookie = gh.login(&wiki_host, &user).await;
        let mut c = h1_with(&gh, &wiki_host, &cookie).await;
        assert_eq!(within(QUICK, "page", c.get("/p")).await.status, 200);
    }
    let live = |f: &[Value]| f.len() == 1 && f[0]["ended_at"].is_null();
    let ended = |f: &[Value]| f.len() == 1 && f[0]["ended_at"].is_string();
    until(&gh, &["list", "--user", "alice", "--json"], live).await;
    until(&gh, &["list", "--user", "bob", "--json"], live).await;

    let out = tokio::task::block_in_place(|| gh.cli(&["session", "revoke", "alice"], None));
    assert!(out.status.success(), "{}", text(&out.stderr));
    until(&gh, &["list", "--user", "alice", "--json"], ended).await;
    assert!(live(&json_lines(&gh, &["list", "--user", "bob", "--json"])));

    // The in-process store's sessions end with the process: the restarted gateway ends
    // their recordings (a crash of an SSH recording is recovered apart, see `recordings`).
    tokio::task::block_in_place(|| gh.restart_blocking());
    until(&gh, &["list", "--user", "bob", "--json"], ended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_on_one_connection_are_written_together_even_while_it_stays_open() {
    let (gh, _up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let wiki_host = host("wiki");
    let cookie = gh.login(&wiki_host, &alice).await;
    let mut c = h1_with(&gh, &wiki_host, &cookie).await;
    const N: usize = 150;
    for i in 0..N {
        let path = format!("/docs/{i}");
        assert_eq!(within(QUICK, &path, c.get(&path)).await.status, 200);
    }
    // The connection stays open and quiet: its answers are written all the same.
    let id = until(&gh, &["list", "--user", "alice", "--json"], |f| {
        f.len() == 1
    })
    .await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let exported = until(&gh, &["export", &id], |f| {
        f.len() == N && f.iter().all(|r| r["status"] == 200)
    })
    .await;
    assert!(exported.iter().all(|r| r["bytes"].as_u64() > Some(0)));
    let events = gh.audit_events();
    assert!(!events.iter().any(|e| e["event"] == "request_completed"));
    let records: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "requests_completed")
        .collect();
    let answers: usize = records
        .iter()
        .map(|e| e["answers"].as_array().unwrap().len())
        .sum();
    assert_eq!(answers, N);
    // At most 64 a record, and one a second while it serves: far fewer records than
    // answers even on a slow machine.
    assert!(
        records.len() * 4 <= N,
        "{} records for {N} answers",
        records.len()
    );
    drop(c);
}
