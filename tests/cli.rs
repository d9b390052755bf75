//! The user, policy, audit and session commands, run as the real binary against a temp config
//! (and, for sessions, a real redis-server).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use gatehouse_core::identity::AuthMethod;
use gatehouse_core::store::{RevocationEvent, SessionData};

use crate::support::gatehouse::run_cli;
use crate::support::{Redis, TestDir, repo_root};

const PW: &str = "correct-Horse-7-battery";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeYz/7qFp5L7tsziy3gAQT/T5CI3erKWolp9s4IYk+O alice@laptop";

struct Env {
    dir: PathBuf,
    _tmp: TestDir,
}

impl Env {
    fn new(tag: &str, store_url: &str) -> Env {
        let tmp = TestDir::new(&format!("cli-{tag}"));
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        let root = repo_root().join("policies");
        for f in ["model.conf", "policy.csv"] {
            std::fs::copy(root.join(f), dir.join("policies").join(f)).unwrap();
        }
        std::fs::write(
            dir.join("gatehouse.toml"),
            format!("data_dir = \"data\"\n[store]\nurl = \"{store_url}\"\n[identity]\nusers_file = \"users.toml\"\n[audit]\ndir = \"data/audit\"\n"),
        )
        .unwrap();
        std::fs::write(dir.join("alice.pub"), format!("# alice's laptop\n{KEY}\n")).unwrap();
        Env { dir, _tmp: tmp }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_in(&self.dir, args, stdin)
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        ok_in(&self.dir, args, stdin)
    }

    fn add(&self, name: &str, groups: &str) -> String {
        self.ok(
            &["user", "add", name, "--groups", groups, "--password-stdin"],
            Some(&format!("{PW}\n")),
        )
    }
}

/// Runs the binary with the config in `dir`.
fn run_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run_cli(dir, Some(&dir.join("gatehouse.toml")), args, stdin)
}

fn ok_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = run_in(dir, args, stdin);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

use crate::support::process::output_text as text;

#[test]
fn user_add_list_lock_totp_reset() {
    let env = Env::new("user", "memory://");
    let out = env.ok(
        &[
            "user",
            "add",
            "alice",
            "--groups",
            "staff,sre",
            "--ssh-key",
            "alice.pub",
            "--password-stdin",
        ],
        Some(&format!("{PW}\n")),
    );
    assert!(
        out.contains("otpauth://totp/Gatehouse:alice?secret="),
        "{out}"
    );
    assert!(out.contains("issuer=Gatehouse"));
    assert!(out.contains('█'), "the QR code is printed");
    let users = std::fs::read_to_string(env.dir.join("users.toml")).unwrap();
    assert!(users.contains("$argon2id$") && !users.contains(PW));
    assert!(users.contains("alice@laptop"));
    let uri_secret = out
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!users.contains(uri_secret), "totp secret encrypted at rest");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(env.dir.join("users.toml"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(env.dir.join("data/secret.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    // Refusals: weak password, duplicate, bad name, bad key — each says why, exit 1.
    let weak = env.run(
        &["user", "add", "bob", "--password-stdin"],
        Some("password1234\n"),
    );
    assert!(
        !weak.status.success() && text(&weak).contains("common passwords"),
        "{}",
        text(&weak)
    );
    let dup = env.run(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    assert!(!dup.status.success() && text(&dup).contains("already exists"));
    let bad = env.run(
        &["user", "add", "eve:root", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    assert!(!bad.status.success() && text(&bad).contains("invalid user name"));
    std::fs::write(env.dir.join("bad.pub"), "ssh-dss AAAA\n").unwrap();
    let badkey = env.run(
        &[
            "user",
            "add",
            "bob",
            "--ssh-key",
            "bad.pub",
            "--password-stdin",
        ],
        Some(&format!("{PW}\n")),
    );
    assert!(!badkey.status.success() && text(&badkey).contains("invalid ssh public key"));

    let list = env.ok(&["user", "list"], None);
    let line = list.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(line.contains("staff,sre") && line.contains("no"), "{list}");
    assert!(!list.contains("bob"));

    env.ok(&["user", "lock", "alice"], None);
    let list = env.ok(&["user", "list"], None);
    assert!(
        list.lines()
            .find(|l| l.starts_with("alice"))
            .unwrap()
            .contains("yes"),
        "{list}"
    );
    assert!(!env.run(&["user", "lock", "nobody"], None).status.success());

    let reset = env.ok(&["user", "totp-reset", "alice"], None);
    assert!(reset.contains("otpauth://totp/Gatehouse:alice?secret="));
    assert!(!reset.contains(uri_secret), "a new secret");
}

#[test]
fn policy_check_explains_and_sets_exit_code() {
    let env = Env::new("policy", "memory://");
    env.add("dave", "staff");
    let allow = env.run(&["policy", "check", "dave", "app:wiki/home", "GET"], None);
    assert_eq!(allow.status.code(), Some(0));
    let t = text(&allow);
    assert!(
        t.starts_with("allow\n")
            && t.contains("p, group:staff, app:wiki/*, GET|HEAD, allow")
            && t.contains("policy.csv:2"),
        "{t}"
    );
    let deny = env.run(
        &["policy", "check", "dave", "app:wiki/admin/users", "GET"],
        None,
    );
    assert_eq!(deny.status.code(), Some(1));
    assert!(
        text(&deny).starts_with("deny\n") && text(&deny).contains("app:wiki/admin/*, *, deny"),
        "{}",
        text(&deny)
    );
    let none = env.run(&["policy", "check", "zed", "app:wiki/home", "GET"], None);
    assert_eq!(none.status.code(), Some(1));
    assert!(text(&none).contains("default deny"));
    // `g` lines of the policy count too.
    assert_eq!(
        env.run(
            &["policy", "check", "bob", "ssh:db-prod-1/deploy", "sftp"],
            None
        )
        .status
        .code(),
        Some(0)
    );
    // A broken policy file is an error naming file and line.
    std::fs::write(
        env.dir.join("policies/policy.csv"),
        "p, group:staff, app:wiki/*, GET\n",
    )
    .unwrap();
    let broken = env.run(&["policy", "check", "dave", "app:wiki/home", "GET"], None);
    assert!(
        !broken.status.success() && text(&broken).contains("policy.csv:1:"),
        "{}",
        text(&broken)
    );
}

#[test]
fn audit_verify_finds_tampering() {
    let env = Env::new("audit", "memory://");
    env.add("alice", "staff");
    env.ok(&["user", "lock", "alice"], None);
    let ok = env.ok(&["audit", "verify"], None);
    assert!(ok.contains("audit log ok: 2 record(s)"), "{ok}");
    let seg = std::fs::read_dir(env.dir.join("data/audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let log = std::fs::read_to_string(&seg).unwrap();
    assert!(log.contains("\"action\":\"user add\"") && log.contains("\"action\":\"user lock\""));
    std::fs::write(&seg, log.replace("user lock", "user look")).unwrap();
    let bad = env.run(&["audit", "verify"], None);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).contains("TAMPERED") && text(&bad).contains(":2:"),
        "{}",
        text(&bad)
    );
}

#[test]
fn session_commands_with_memory_store_explain() {
    let env = Env::new("mem", "memory://");
    let list = env.run(&["session", "list"], None);
    assert_eq!(list.status.code(), Some(0));
    assert!(text(&list).contains("live only inside the running"));
    let revoke = env.run(&["session", "revoke", "alice"], None);
    assert_eq!(revoke.status.code(), Some(1));
    assert!(text(&revoke).contains("live only inside the running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_list_and_revoke_with_redis() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let env = Env::new("redis", &url);
    let config = gatehouse_core::Config::load(&env.dir.join("gatehouse.toml")).unwrap();
    // The key file the CLI reads too (created here first): records in Redis carry its MAC.
    let key =
        gatehouse_core::secret::SecretKey::load_or_create_file(&config.identity.secret_key_file)
            .unwrap();
    let store = gatehouse_core::store::open(&config.store, &key)
        .await
        .unwrap();
    let mut events = store.subscribe_revocations().await.unwrap();
    let data = |user: &str| SessionData {
        user: user.into(),
        groups: vec!["staff".into()],
        method: AuthMethod::PasswordTotp,
        auth_time: 0,
        client_addr: Some("192.0.2.1".parse().unwrap()),
        login_id: None,
        sso_logout: None,
    };
    let ttl = Duration::from_secs(3600);
    let a1 = store
        .create_session(data("alice"), ttl, Duration::from_secs(600))
        .await
        .unwrap();
    let _a2 = store
        .create_session(data("alice"), ttl, Duration::from_secs(600))
        .await
        .unwrap();
    let b = store
        .create_session(data("bob"), ttl, Duration::from_secs(600))
        .await
        .unwrap();

    let list = tokio::task::spawn_blocking({
        let dir = env.dir.clone();
        move || ok_in(&dir, &["session", "list"], None)
    })
    .await
    .unwrap();
    assert_eq!(
        list.lines().filter(|l| l.starts_with("alice ")).count(),
        2,
        "{list}"
    );
    assert!(
        list.contains("3 live session(s)") && list.contains("192.0.2.1"),
        "{list}"
    );
    assert!(
        !list.contains(a1.expose()),
        "raw session ids are never shown"
    );

    let revoke = tokio::task::spawn_blocking({
        let dir = env.dir.clone();
        move || ok_in(&dir, &["session", "revoke", "alice"], None)
    })
    .await
    .unwrap();
    assert!(revoke.contains("revoked 2 session(s) of alice"), "{revoke}");
    assert!(store.touch_session(a1.expose()).await.unwrap().is_none());
    assert!(store.touch_session(b.expose()).await.unwrap().is_some());
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        RevocationEvent::User {
            user: "alice".into()
        }
    );
    let log = env.ok(&["audit", "verify"], None);
    assert!(log.contains("audit log ok: 1 record(s)"), "{log}");
}
