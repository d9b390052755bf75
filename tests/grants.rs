//! Just-in-time grants through the real binary: a user the policy denies is granted an app
//! with a reason, reaches it (the audit record carries the grant and its reason) and is
//! refused on the next request after `grant revoke`, without a new login; a deny line beats
//! a grant; a grant cannot outlive `[grants] max_duration`; `--reason ''` is refused. With
//! `memory://` the CLI reaches the server through its control socket, which refuses another
//! uid (the client run as `nobody`); with Redis a grant made through one instance takes
//! effect on another, and so does its revocation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::client::empty;
use crate::support::gatehouse::binary;
use crate::support::identity::h1_with;
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Redis, Upstream, host, within};

/// Contractors may read the wiki; nobody may touch payroll's secret part.
const POLICY: &str = "\
p, group:contractors, app:wiki/*, GET, allow
p, group:contractors, app:payroll/secret/*, *, deny
";

fn spec(store_url: String, up: &Upstream) -> GatehouseSpec {
    GatehouseSpec {
        store_url,
        policy_csv: Some(POLICY.into()),
        extra_toml: "\n[grants]\nmax_duration = \"1d\"\n".into(),
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("payroll", &host("payroll"), &up.url()))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the CLI against `gh`'s config; asserts success; its stdout.
fn ok(gh: &Gatehouse, args: &[&str]) -> String {
    let out = tokio::task::block_in_place(|| gh.cli(args, None));
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn refused(gh: &Gatehouse, args: &[&str]) -> String {
    let out = tokio::task::block_in_place(|| gh.cli(args, None));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} must fail: {}",
        text(&out)
    );
    text(&out)
}

async fn get(gh: &Gatehouse, cookie: &str, method: &str, path: &str) -> u16 {
    let mut c = h1_with(gh, &host("payroll"), cookie).await;
    let req = c.request(method, path, &[("accept", "application/json")], empty());
    within(QUICK, path, c.send(req)).await.status.as_u16()
}

/// Polls until `GET path` answers `want` (a change reaching another instance).
async fn wait_status(gh: &Gatehouse, cookie: &str, path: &str, want: u16, limit: Duration) {
    let start = Instant::now();
    loop {
        let got = get(gh, cookie, "GET", path).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{path} still {got} after {limit:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_user_is_granted_an_app_with_a_reason_and_refused_after_revocation() {
    let up = Upstream::start().await;
    let gh = Gatehouse::start(spec("memory://".into(), &up)).await;
    let dave = gh.create_user("dave", &["contractors"]).await;
    let cookie = gh.login(&host("payroll"), &dave).await;
    // One keep-alive connection throughout: no new login, no new connection.
    let mut c = h1_with(&gh, &host("payroll"), &cookie).await;
    let mut status = async |method: &str, path: &str| {
        let req = c.request(method, path, &[("accept", "application/json")], empty());
        within(QUICK, path, c.send(req)).await.status.as_u16()
    };
    assert_eq!(status("GET", "/report").await, 403);
    gh.expect_audit("access_denied", |e| e["user"] == "dave")
        .await;

    // Refused grants: no reason, longer than the maximum (1d here), a whole door.
    let grant = |extra: &[&str]| {
        let mut a = vec!["grant", "add", "dave", "app:payroll/*", "--action", "GET"];
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let args = grant(&["--for", "1h", "--reason", ""]);
    let out = refused(&gh, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("a grant needs a reason"), "{out}");
    let args = grant(&["--for", "25h", "--reason", "x"]);
    let out = refused(&gh, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.contains("longer than the allowed maximum of 1day"),
        "{out}"
    );
    let out = refused(
        &gh,
        &[
            "grant", "add", "dave", "app:*", "--for", "1h", "--reason", "x",
        ],
    );
    assert!(out.contains("name one app or target"), "{out}");
    assert!(
        ok(&gh, &["grant", "list"]).is_empty(),
        "nothing was granted"
    );
    assert_eq!(gh.count_audit("grant_created", |_| true), 0);

    // Granted: reached on the same connection, the record names the grant and its reason.
    let reason = "INC-4711: month-end payroll close";
    let args = grant(&["--for", "2h", "--reason", reason]);
    let id = ok(&gh, &args.iter().map(String::as_str).collect::<Vec<_>>())
        .trim()
        .to_string();
    assert!(id.starts_with("g-"), "{id}");
    let seen = up.count();
    assert_eq!(status("GET", "/report").await, 200);
    assert_eq!(up.count(), seen + 1);
    let allowed = gh
        .expect_audit("access_allowed", |e| {
            e["user"] == "dave" && e["object"] == "app:payroll/report"
        })
        .await;
    assert_eq!(allowed["grant_id"], id.as_str(), "{allowed}");
    assert_eq!(allowed["grant_reason"], reason, "{allowed}");
    let created = gh
        .expect_audit("grant_created", |e| e["grant_id"] == id.as_str())
        .await;
    assert_eq!(created["reason"], reason);
    assert_eq!(created["object"], "app:payroll/*");
    // Only what was granted: another method, and a deny line of the policy, still refused.
    assert_eq!(status("POST", "/report").await, 403);
    assert_eq!(status("GET", "/secret/salaries").await, 403);
    let denied = gh
        .expect_audit("access_denied", |e| {
            e["object"] == "app:payroll/secret/salaries"
        })
        .await;
    assert!(
        denied["rule"].as_str().unwrap().contains("deny"),
        "{denied}"
    );

    // Listed, and named by `policy check`.
    let listed: Vec<Value> = ok(&gh, &["grant", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    for (k, v) in [
        ("id", id.as_str()),
        ("user", "dave"),
        ("object", "app:payroll/*"),
        ("action", "GET"),
        ("reason", reason),
    ] {
        assert_eq!(listed[0][k], v, "{k}: {listed:?}");
    }
    assert!(listed[0]["expires_at"].as_str().unwrap().ends_with('Z'));
    let check = ok(
        &gh,
        &["policy", "check", "dave", "app:payroll/report", "GET"],
    );
    assert!(
        check.starts_with("allow") && check.contains(&format!("grant: {id}")),
        "{check}"
    );
    let out = refused(
        &gh,
        &["policy", "check", "dave", "app:payroll/secret/x", "GET"],
    );
    assert!(
        out.starts_with("deny") && out.contains("app:payroll/secret/*, *, deny"),
        "{out}"
    );

    // Revoked: the very next request is refused, same session, same connection.
    let out = ok(&gh, &["grant", "revoke", &id]);
    assert!(out.contains(&format!("revoked {id}")), "{out}");
    assert_eq!(status("GET", "/report").await, 403);
    assert_eq!(up.count(), seen + 1, "nothing more reached the upstream");
    let denials = || {
        gh.count_audit("access_denied", |e| {
            e["object"] == "app:payroll/report" && e["action"] == "GET" && e["rule"].is_null()
        })
    };
    assert_eq!(denials(), 2, "before the grant and after its revocation");
    gh.expect_audit("grant_revoked", |e| {
        e["grant_id"] == id.as_str() && e["user"] == "dave"
    })
    .await;
    let out = refused(&gh, &["grant", "revoke", &id]);
    assert!(out.contains("no live grant"), "{out}");
    assert!(ok(&gh, &["grant", "list", "--json"]).is_empty());
    let verify = ok(&gh, &["audit", "verify"]);
    assert!(verify.contains("audit log ok"), "{verify}");
}

/// Runs the CLI as `nobody` (the binary and the config are world-readable).
fn as_nobody(gh: &Gatehouse, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            binary(),
        ])
        .arg("--config")
        .arg(gh.config_path())
        .args(args)
        .current_dir(gh.dir.path())
        .env("GATEHOUSE_SECRET_KEY", &gh.spec.secret_key)
        .stdin(Stdio::null())
        .output()
        .expect("running setpriv (util-linux)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_is_the_servers_user_alone() {
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;
    let up = Upstream::start().await;
    let gh = Gatehouse::start(spec("memory://".into(), &up)).await;
    let dir = gh.path("data/control");
    let sock = dir.join("gatehouse.sock");
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);
    // The test runs as root: the server's uid is 0, `nobody` is another uid.
    assert_eq!(
        std::fs::metadata(&sock).unwrap().uid(),
        0,
        "run the tests as root"
    );
    let add = [
        "grant",
        "add",
        "nobody",
        "app:payroll/*",
        "--for",
        "1h",
        "--reason",
        "mine",
    ];

    // As deployed: another user cannot even reach the socket.
    let out = tokio::task::block_in_place(|| as_nobody(&gh, &add));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("permission denied on the control socket"),
        "{}",
        text(&out)
    );

    // Opened up by mistake: the server still refuses the peer by its uid, and records it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [&add[..], &["grant", "list"], &["session", "revoke", "dave"]] {
        let out = tokio::task::block_in_place(|| as_nobody(&gh, args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("refused: the control socket serves only uid 0"),
            "{args:?}: {}",
            text(&out)
        );
    }
    gh.expect_audit("admin_action", |e| {
        e["actor"] == "uid:65534" && e["action"] == "control socket" && e["outcome"] == "failure"
    })
    .await;
    assert!(
        ok(&gh, &["grant", "list"]).is_empty(),
        "nothing was granted"
    );
    assert_eq!(gh.count_audit("grant_created", |_| true), 0);

    // Bounded: an oversized or malformed request gets an error line, the server goes on.
    let ask = |bytes: &[u8]| {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(QUICK)).unwrap();
        let _ = s.write_all(bytes);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    let big = format!(
        "{{\"op\":\"grant_list\",\"x\":\"{}\"}}\n",
        "a".repeat(20_000)
    );
    assert!(ask(big.as_bytes()).contains("longer than 16384 bytes"));
    assert!(ask(b"{\"op\":\"become_root\"}\n").contains("malformed request"));
    assert!(ask(b"{\"op\":\"grant_list\"}\n").contains("\"status\":\"grants\""));
    // The server's own user goes through.
    let id = ok(
        &gh,
        &[
            "grant",
            "add",
            "dave",
            "app:payroll/*",
            "--for",
            "1h",
            "--reason",
            "ok",
        ],
    );
    assert!(id.trim().starts_with("g-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_through_one_instance_takes_effect_on_another_and_so_does_its_revocation() {
    let redis = tokio::task::spawn_blocking(Redis::start).await.unwrap();
    let up = Upstream::start().await;
    let a = Gatehouse::start(spec(redis.url(), &up)).await;
    let b = Gatehouse::start(GatehouseSpec {
        users_file: a.path("users.toml").display().to_string(),
        secret_key: a.spec.secret_key.clone(),
        ..spec(redis.url(), &up)
    })
    .await;
    let dave = a.create_user("dave", &["contractors"]).await;
    let cookie = a.login(&host("payroll"), &dave).await;
    assert_eq!(
        get(&b, &cookie, "GET", "/report").await,
        403,
        "the session serves on b"
    );

    let id = ok(
        &a,
        &[
            "grant",
            "add",
            "dave",
            "app:payroll/*",
            "--for",
            "1h",
            "--reason",
            "INC-9",
        ],
    );
    let id = id.trim().to_string();
    // The store's channel carries it to b (no store round trip per request there).
    wait_status(&b, &cookie, "/report", 200, Duration::from_secs(2)).await;
    let allowed = b
        .expect_audit("access_allowed", |e| e["grant_id"] == id.as_str())
        .await;
    assert_eq!(allowed["grant_reason"], "INC-9");
    assert!(ok(&b, &["grant", "list"]).contains(&id), "b lists it too");

    ok(&a, &["grant", "revoke", &id]);
    wait_status(&b, &cookie, "/report", 403, Duration::from_secs(2)).await;
    assert_eq!(get(&a, &cookie, "GET", "/report").await, 403);
    b.expect_audit("access_denied", |e| e["object"] == "app:payroll/report")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_memory_the_cli_reaches_sessions_and_a_granted_websocket_ends_with_its_grant() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let gh = Gatehouse::start(spec("memory://".into(), &up)).await;
    let dave = gh.create_user("dave", &["contractors"]).await;
    let cookie = gh.login(&host("payroll"), &dave).await;
    let id = ok(
        &gh,
        &[
            "grant",
            "add",
            "dave",
            "app:payroll/*",
            "--for",
            "1h",
            "--reason",
            "INC-2",
        ],
    );
    let id = id.trim().to_string();

    // A WebSocket the grant alone allows, echoing.
    let mut c = h1_with(&gh, &host("payroll"), &cookie).await;
    let req = c.upgrade_request("/ws", &[]);
    let resp = within(QUICK, "upgrade", c.send_head(req)).await.unwrap();
    assert_eq!(resp.status(), 101, "{:?}", resp.headers());
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

    // The sessions of the memory:// server, through its control socket.
    let listed = ok(&gh, &["session", "list"]);
    assert!(
        listed.contains("dave ") && listed.contains("1 live session(s)"),
        "{listed}"
    );

    // Revoking the grant closes the WebSocket it allowed, on record.
    ok(&gh, &["grant", "revoke", &id]);
    let mut buf = [0u8; 64];
    let closed = within(QUICK, "websocket closed with its grant", async {
        loop {
            match ws.read(&mut buf).await {
                Ok(0) | Err(_) => break true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed);
    let ended = gh
        .expect_audit("grant_session_ended", |e| e["grant_id"] == id.as_str())
        .await;
    assert_eq!(
        (ended["user"].as_str(), ended["ended"].as_str()),
        (Some("dave"), Some("revoked"))
    );
    assert_eq!(ended["object"], "app:payroll/ws");

    // `user lock` ends the session at once too.
    let out = ok(&gh, &["user", "lock", "dave"]);
    assert!(out.contains("1 live session(s) revoked"), "{out}");
    assert_eq!(get(&gh, &cookie, "GET", "/report").await, 401);
    gh.expect_audit("session_revoked", |e| e["user"] == "dave")
        .await;
    let listed = ok(&gh, &["session", "list"]);
    assert!(listed.contains("0 live session(s)"), "{listed}");
}
