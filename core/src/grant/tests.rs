use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::audit::{AuditKey, AuditLog};
use crate::error::GrantError;
use crate::policy::PolicyHandle;
use crate::secret::SecretKey;
use crate::store::MemoryStore;
use crate::testutil::TempDir;

const DAY: Duration = Duration::from_secs(24 * 3600);
const MAX: Duration = Duration::from_secs(7 * 24 * 3600);

fn asked(user: &str, object: &str, action: Option<&str>, dur: Duration, reason: &str) -> NewGrant {
    NewGrant {
        user: user.into(),
        object: object.into(),
        action: action.map(str::to_string),
        duration: dur,
        reason: reason.into(),
        granted_by: "cli:root".into(),
    }
}

#[test]
fn what_a_grant_may_ask_for() {
    let r = "INC-42 payroll close";
    // (user, object, action, duration, reason, Ok(stored action) or the error's text)
    type Row<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Duration,
        &'a str,
        Result<&'a str, &'a str>,
    );
    let table: &[Row<'_>] = &[
        ("alice", "app:wiki/*", None, DAY, r, Ok("*")),
        (
            "alice",
            "app:wiki/admin/users",
            Some("GET|HEAD"),
            DAY,
            r,
            Ok("GET|HEAD"),
        ),
        (
            "alice",
            "ssh:db-prod-1/deploy",
            Some("ssh|sftp"),
            MAX,
            r,
            Ok("ssh|sftp"),
        ),
        (
            "alice",
            "ssh:db-prod-1/*",
            Some("port-forward"),
            DAY,
            r,
            Ok("port-forward"),
        ),
        ("alice", "group:sre", None, DAY, r, Ok("*")),
        ("alice", "group:sre", Some("*"), DAY, r, Ok("*")),
        ("alice", "gatehouse:review", None, DAY, r, Ok("*")),
        (
            "jane.doe+ops@example.com",
            "app:wiki/*",
            None,
            DAY,
            r,
            Ok("*"),
        ),
        // The reason is required, one line of text, bounded.
        ("alice", "app:wiki/*", None, DAY, "", Err("needs a reason")),
        (
            "alice",
            "app:wiki/*",
            None,
            DAY,
            "   ",
            Err("needs a reason"),
        ),
        (
            "alice",
            "app:wiki/*",
            None,
            DAY,
            "ok\nforged line",
            Err("control characters"),
        ),
        (
            "alice",
            "app:wiki/*",
            None,
            DAY,
            "\u{1b}[31mred",
            Err("control characters"),
        ),
        (
            "alice",
            "app:wiki/*",
            None,
            DAY,
            &"x".repeat(1001),
            Err("too long"),
        ),
        // Bounded in time.
        (
            "alice",
            "app:wiki/*",
            None,
            MAX + Duration::from_secs(1),
            r,
            Err("longer than the allowed maximum of 7days"),
        ),
        (
            "alice",
            "app:wiki/*",
            None,
            Duration::ZERO,
            r,
            Err("positive duration"),
        ),
        // One app or target, never a whole door.
        ("alice", "*", None, DAY, r, Err("invalid grant object")),
        (
            "alice",
            "app:*",
            None,
            DAY,
            r,
            Err("name one app or target"),
        ),
        (
            "alice",
            "ssh:*",
            None,
            DAY,
            r,
            Err("name one app or target"),
        ),
        (
            "alice",
            "app:wiki",
            None,
            DAY,
            r,
            Err("name one app or target"),
        ),
        (
            "alice",
            "app:/x",
            None,
            DAY,
            r,
            Err("name one app or target"),
        ),
        (
            "alice",
            "gatehouse:*",
            None,
            DAY,
            r,
            Err("invalid grant object"),
        ),
        (
            "alice",
            "db:prod/x",
            None,
            DAY,
            r,
            Err("invalid grant object"),
        ),
        (
            "alice",
            "app:wi*ki/x",
            None,
            DAY,
            r,
            Err("`*` only as the last"),
        ),
        (
            "alice",
            "app:wiki/a b",
            None,
            DAY,
            r,
            Err("printable ASCII"),
        ),
        (
            "alice",
            "app:wiki/a,b",
            None,
            DAY,
            r,
            Err("printable ASCII"),
        ),
        ("alice", "group:", None, DAY, r, Err("a group name")),
        ("alice", "group:Ops Team", None, DAY, r, Err("a group name")),
        (
            "alice",
            "group:sre",
            Some("ssh"),
            DAY,
            r,
            Err("takes no --action"),
        ),
        (
            "alice",
            "app:wiki/*",
            Some("GET|"),
            DAY,
            r,
            Err("invalid action"),
        ),
        (
            "alice",
            "app:wiki/*",
            Some("GET;rm"),
            DAY,
            r,
            Err("invalid action"),
        ),
        ("", "app:wiki/*", None, DAY, r, Err("invalid user")),
        ("Alice", "app:wiki/*", None, DAY, r, Err("invalid user")),
        ("al ice", "app:wiki/*", None, DAY, r, Err("invalid user")),
    ];
    for (user, object, action, dur, reason, want) in table {
        let got = asked(user, object, *action, *dur, reason).validate(MAX, 1_000);
        match (want, got) {
            (Ok(action), Ok(g)) => {
                assert_eq!(g.action, *action, "{user} {object}");
                assert_eq!(g.expires_ms, 1_000 + dur.as_millis() as u64);
                assert_eq!(g.reason, reason.trim());
                assert!(crate::store::Grant::is_id(&g.id));
            }
            (Err(text), Err(e)) => {
                assert!(
                    e.to_string().contains(text),
                    "{user} {object} {reason:?}: {e}"
                )
            }
            (want, got) => {
                panic!("{user} {object} {action:?} {reason:?}: want {want:?}, got {got:?}")
            }
        }
    }
}

struct Env {
    _dir: TempDir,
    store: Arc<MemoryStore>,
    log: AuditLog,
    log_dir: std::path::PathBuf,
    policy: Arc<PolicyHandle>,
}

async fn env(tag: &str) -> Env {
    let dir = TempDir::new(tag);
    let policy = dir.path().join("policy.csv");
    std::fs::write(&policy, "p, group:sre, ssh:db-prod-1/deploy, ssh, allow\n").unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/model.conf");
    let log_dir = dir.path().join("audit");
    Env {
        store: Arc::new(MemoryStore::new()),
        log: AuditLog::open(&log_dir, AuditKey::new(&SecretKey::from_bytes([7; 32]))).unwrap(),
        log_dir,
        policy: Arc::new(PolicyHandle::load(&model, &policy).await.unwrap()),
        _dir: dir,
    }
}

fn events(dir: &std::path::Path) -> Vec<serde_json::Value> {
    crate::audit::tests::segment_files(dir)
        .into_iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_revoke_are_recorded_and_reach_the_copy() {
    let e = env("grant-flow").await;
    let stop = CancellationToken::new();
    let sync = GrantSync::start(
        e.store.clone(),
        e.policy.clone(),
        e.log.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    let dave = |p: &PolicyHandle| p.check("dave", &[], "ssh:db-prod-1/deploy", "ssh");
    assert!(!dave(&e.policy).allowed);
    let g = add(
        e.store.as_ref(),
        &e.log,
        MAX,
        &asked(
            "dave",
            "group:sre",
            None,
            DAY,
            "INC-7 disk full on db-prod-1",
        ),
    )
    .await
    .unwrap();
    sync.refresh().await.unwrap();
    let d = dave(&e.policy);
    assert!(d.allowed);
    assert_eq!(d.grant.unwrap().id, g.id);
    // A refused request records nothing and grants nothing.
    let refused = add(
        e.store.as_ref(),
        &e.log,
        MAX,
        &asked("dave", "group:sre", None, DAY, ""),
    )
    .await;
    assert!(matches!(refused, Err(GrantError::EmptyReason)));
    assert_eq!(e.store.list_grants().await.unwrap().len(), 1);

    let r = revoke(e.store.as_ref(), &e.log, &g.id, "cli:root")
        .await
        .unwrap();
    assert_eq!(r.id, g.id);
    // The copy drops it without being asked (the channel), within the event's latency.
    let start = std::time::Instant::now();
    while dave(&e.policy).allowed {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "revocation never reached the copy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(
        revoke(e.store.as_ref(), &e.log, &g.id, "cli:root").await,
        Err(GrantError::NotFound(_))
    ));
    let ev = events(&e.log_dir);
    let kinds: Vec<&str> = ev.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["grant_created", "grant_revoked"], "{ev:?}");
    assert_eq!(ev[0]["grant_id"], g.id.as_str());
    assert_eq!(ev[0]["reason"], "INC-7 disk full on db-prod-1");
    assert_eq!(ev[0]["user"], "dave");
    assert_eq!(ev[0]["by"], "cli:root");
    assert_eq!(ev[1]["by"], "cli:root");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_recorded_and_ends_the_grant_without_any_event() {
    let e = env("grant-expiry").await;
    let stop = CancellationToken::new();
    let mut g = asked("dave", "group:sre", None, DAY, "short job")
        .validate(MAX, crate::store::now_ms())
        .unwrap();
    g.expires_ms = crate::store::now_ms() + 400;
    e.store.put_grant(&g).await.unwrap();
    let _sync = GrantSync::start(
        e.store.clone(),
        e.policy.clone(),
        e.log.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    assert!(
        e.policy
            .check("dave", &[], "ssh:db-prod-1/deploy", "ssh")
            .allowed
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    // Refused from the expiry on, whether or not the copy was refreshed yet.
    assert!(
        !e.policy
            .check("dave", &[], "ssh:db-prod-1/deploy", "ssh")
            .allowed
    );
    let start = std::time::Instant::now();
    loop {
        let ev = events(&e.log_dir);
        if ev
            .iter()
            .any(|v| v["event"] == "grant_expired" && v["grant_id"] == g.id.as_str())
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no grant_expired: {ev:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(e.policy.grants().is_empty());
    stop.cancel();
}

#[tokio::test]
async fn nothing_is_granted_without_its_audit_record() {
    let e = env("grant-noaudit").await;
    std::fs::remove_dir_all(&e.log_dir).unwrap();
    std::fs::write(&e.log_dir, "not a directory").unwrap();
    let r = add(
        e.store.as_ref(),
        &e.log,
        MAX,
        &asked("dave", "group:sre", None, DAY, "x"),
    )
    .await;
    assert!(matches!(r, Err(GrantError::Audit(_))), "{r:?}");
    assert!(e.store.list_grants().await.unwrap().is_empty());
    std::fs::remove_file(&e.log_dir).unwrap();
}
