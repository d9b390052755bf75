//! Changes to `users.toml` reach live web sessions, from outside: the real binary, a user
//! logged in over HTTPS, then the file edited as an administrator would (a group taken away,
//! then the user locked); the next requests follow within the reload bound, and every
//! refusal is in the audit log. `edit_user` also serves bastion_live.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::identity_sessions::open_ws;
use crate::support::client::echoed_headers;
use crate::support::identity::h1_with;
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Resp, Upstream, host, within};

/// How long a change to users.toml may take to reach the next request: the reload interval
/// (1 s) with room for a busy machine.
pub(crate) const REACH: Duration = Duration::from_secs(5);

/// Edits the record of `user` in the users file at `path` with `f`, as an administrator
/// editing the TOML would (the file is rewritten in place).
pub(crate) fn edit_user(path: &Path, user: &str, f: impl FnOnce(&mut toml::Table)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let users = doc
        .get_mut("users")
        .and_then(toml::Value::as_array_mut)
        .expect("a users array");
    let rec = users
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|t| t.get("name").and_then(toml::Value::as_str) == Some(user))
        .unwrap_or_else(|| panic!("no user {user} in {}", path.display()));
    f(rec);
    std::fs::write(path, toml::to_string(&doc).unwrap()).unwrap();
}

/// `groups = [...]` for [`edit_user`].
pub(crate) fn set_groups(groups: &[&str]) -> impl FnOnce(&mut toml::Table) {
    let groups: Vec<toml::Value> = groups.iter().map(|g| toml::Value::from(*g)).collect();
    move |t| {
        t.insert("groups".into(), toml::Value::Array(groups));
    }
}

const POLICY: &str = "\
p, group:staff, app:wiki/index, GET, allow
p, group:payroll, app:wiki/payroll/*, GET, allow
p, group:payroll, app:wiki/ws, GET, allow
";

async fn get(gh: &Gatehouse, cookie: &str, path: &str) -> Resp {
    h1_with(gh, &host("wiki"), cookie).await.get(path).await
}

/// Polls `path` until its status is `want`; how long it took.
async fn until_status(gh: &Gatehouse, cookie: &str, path: &str, want: u16) -> Duration {
    let t0 = Instant::now();
    loop {
        let r = get(gh, cookie, path).await;
        if r.status == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < REACH,
            "{path} still {} after {REACH:?}: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_taken_away_and_a_lock_in_users_toml_reach_the_live_web_session() {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        policy_csv: Some(POLICY.into()),
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("wiki", &host("wiki"), &up.url()));
    let gh = Gatehouse::start(spec).await;
    let alice = gh.create_user("alice", &["staff", "payroll"]).await;
    let cookie = gh.login(&host("wiki"), &alice).await;
    let r = get(&gh, &cookie, "/payroll/slip").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut groups = echoed_headers(&r.json(), "x-gatehouse-groups").join(",");
    assert!(groups.contains("payroll"), "{groups}");
    // A WebSocket that only `payroll` allows.
    let mut ws = open_ws(&gh, Some(&cookie))
        .await
        .unwrap_or_else(|s| panic!("upgrade with payroll: {s}"));
    ws.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    within(QUICK, "echo", ws.read_exact(&mut back))
        .await
        .unwrap();

    // An administrator takes `payroll` away in the file: the same session, next request; the
    // open WebSocket is closed and cannot be opened again.
    edit_user(&gh.path("users.toml"), "alice", set_groups(&["staff"]));
    let took = until_status(&gh, &cookie, "/payroll/slip", 403).await;
    eprintln!("group removal reached the live web session in {took:?}");
    let mut buf = [0u8; 16];
    within(
        REACH,
        "the websocket closed after its group was taken away",
        async {
            loop {
                match ws.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        },
    )
    .await;
    assert_eq!(open_ws(&gh, Some(&cookie)).await.err(), Some(403));
    gh.expect_audit("access_denied", |e| {
        e["user"] == "alice" && e["object"] == "app:wiki/payroll/slip"
    })
    .await;
    let r = get(&gh, &cookie, "/index").await;
    assert_eq!(r.status, 200, "the session lives on: {}", r.text());
    groups = echoed_headers(&r.json(), "x-gatehouse-groups").join(",");
    assert_eq!(groups, "staff", "the upstream is told the groups of now");

    // Locked in the file: the running instance revokes the user's sessions.
    edit_user(&gh.path("users.toml"), "alice", |t| {
        t.insert("locked".into(), toml::Value::Boolean(true));
    });
    let took = until_status(&gh, &cookie, "/index", 401).await;
    eprintln!("a lock reached the live web session in {took:?}");
    gh.expect_audit("session_revoked", |e| {
        e["user"] == "alice" && e["by"] == "account locked in users.toml"
    })
    .await;
}
