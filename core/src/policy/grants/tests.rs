use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::audit::{AccessContext, AuditKey, AuditLog};
use crate::identity::{AuthMethod, VerifiedIdentity};
use crate::policy::{LapseReason, PolicyHandle, Refusal};
use crate::secret::SecretKey;
use crate::store::{Grant, now_ms};
use crate::testutil::TempDir;

const POLICY: &str = "\
p, group:staff, app:wiki/*, GET|HEAD, allow
p, group:staff, app:wiki/admin/*, *, deny
p, group:sre, ssh:db-prod-1/deploy, ssh|sftp, allow
p, bob, app:payroll/secret/*, *, deny
p, group:hr, app:payroll/*, *, allow
p, group:hr, app:payroll/audit/*, *, deny
g, alice, group:staff
";

fn model() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/model.conf")
}

async fn handle(dir: &TempDir) -> PolicyHandle {
    let policy = dir.path().join("policy.csv");
    std::fs::write(&policy, POLICY).unwrap();
    PolicyHandle::load(&model(), &policy).await.unwrap()
}

fn grant(id: &str, user: &str, object: &str, action: &str, ttl_ms: i64) -> Grant {
    let now = now_ms();
    Grant {
        id: id.into(),
        user: user.into(),
        object: object.into(),
        action: action.into(),
        reason: format!("reason of {id}"),
        granted_by: "cli:root".into(),
        created_ms: now - 1000,
        expires_ms: now.saturating_add_signed(ttl_ms),
    }
}

fn grants() -> Vec<Grant> {
    const HOUR: i64 = 3_600_000;
    vec![
        grant("g-b1", "bob", "app:payroll/*", "GET", HOUR),
        grant("g-c1", "carol", "group:sre", "*", HOUR),
        grant("g-d1", "dave", "app:wiki/*", "*", HOUR),
        grant("g-e1", "erin", "group:hr", "*", HOUR),
        grant("g-b2", "bob", "app:hr/*", "*", -1),
        grant("g-a1", "alice", "app:wiki/admin/*", "*", HOUR),
        grant("g-f1", "frank", "ssh:db-prod-1/deploy", "ssh", HOUR),
        grant(
            "g-f2",
            "frank",
            "ssh:db-prod-1/deploy",
            "ssh|sftp",
            2 * HOUR,
        ),
    ]
}

#[tokio::test]
async fn grants_decide_with_the_policy_and_deny_still_wins() {
    let dir = TempDir::new("grants-table");
    let h = handle(&dir).await;
    h.set_grants(grants());
    // (user, groups, object, action, allowed, deciding rule fragment, grant)
    type Row<'a> = (
        &'a str,
        &'a [&'a str],
        &'a str,
        &'a str,
        bool,
        Option<&'a str>,
        Option<&'a str>,
    );
    let table: &[Row<'_>] = &[
        // An object grant is an allow line of its own, its actions included.
        (
            "bob",
            &[],
            "app:payroll/x",
            "GET",
            true,
            Some("grant g-b1: bob, app:payroll/*, GET"),
            Some("g-b1"),
        ),
        ("bob", &[], "app:payroll/x", "POST", false, None, None),
        // A deny line of the policy beats the grant.
        (
            "bob",
            &[],
            "app:payroll/secret/x",
            "GET",
            false,
            Some("p, bob, app:payroll/secret/*, *, deny"),
            None,
        ),
        // A group grant: the group's lines, named with the grant.
        (
            "carol",
            &[],
            "ssh:db-prod-1/deploy",
            "ssh",
            true,
            Some("p, group:sre, ssh:db-prod-1/deploy"),
            Some("g-c1"),
        ),
        (
            "carol",
            &[],
            "ssh:db-prod-1/deploy",
            "port-forward",
            false,
            None,
            None,
        ),
        // The granted group's deny lines apply too.
        (
            "erin",
            &[],
            "app:payroll/x",
            "PUT",
            true,
            Some("p, group:hr, app:payroll/*"),
            Some("g-e1"),
        ),
        (
            "erin",
            &[],
            "app:payroll/audit/x",
            "GET",
            false,
            Some("app:payroll/audit/*, *, deny"),
            None,
        ),
        // Deny lines of groups the user is not in do not apply.
        (
            "dave",
            &[],
            "app:wiki/admin/x",
            "POST",
            true,
            Some("grant g-d1"),
            Some("g-d1"),
        ),
        // The user's own groups' deny wins over a grant, also for the bare directory name.
        (
            "alice",
            &[],
            "app:wiki/admin/x",
            "GET",
            false,
            Some("app:wiki/admin/*, *, deny"),
            None,
        ),
        (
            "alice",
            &[],
            "app:wiki/admin",
            "GET",
            false,
            Some("app:wiki/admin/*, *, deny"),
            None,
        ),
        // Allowed by the policy alone: no grant named.
        (
            "alice",
            &[],
            "app:wiki/page",
            "GET",
            true,
            Some("p, group:staff, app:wiki/*"),
            None,
        ),
        (
            "zoe",
            &["staff"],
            "app:wiki/page",
            "HEAD",
            true,
            Some("p, group:staff"),
            None,
        ),
        // Expired: nothing.
        ("bob", &[], "app:hr/x", "GET", false, None, None),
        // Of two grants, the one that lasts longer.
        (
            "frank",
            &[],
            "ssh:db-prod-1/deploy",
            "ssh",
            true,
            Some("grant g-f2"),
            Some("g-f2"),
        ),
        (
            "frank",
            &[],
            "ssh:db-prod-1/deploy",
            "sftp",
            true,
            Some("grant g-f2"),
            Some("g-f2"),
        ),
        // Grants are per user.
        ("mallory", &[], "app:payroll/x", "GET", false, None, None),
    ];
    for (user, groups, object, action, allowed, rule, grant) in table {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let d = h.check(user, &groups, object, action);
        let row = format!("{user} {object} {action}: {d:?}");
        assert_eq!(d.allowed, *allowed, "{row}");
        match rule {
            Some(r) => assert!(d.rule.as_deref().is_some_and(|t| t.contains(r)), "{row}"),
            None => assert!(d.rule.is_none(), "{row}"),
        }
        assert_eq!(d.grant.as_ref().map(|g| g.id.as_str()), *grant, "{row}");
    }
}

fn identity(user: &str) -> VerifiedIdentity {
    VerifiedIdentity::new(
        user.into(),
        vec![],
        AuthMethod::PasswordTotp,
        SystemTime::now(),
    )
}

#[tokio::test]
async fn an_allowed_access_records_the_grant_and_its_reason() {
    let dir = TempDir::new("grants-audit");
    let h = handle(&dir).await;
    h.set_grants(grants());
    let log_dir = dir.path().join("audit");
    let log = AuditLog::open(&log_dir, AuditKey::new(&SecretKey::from_bytes([4; 32]))).unwrap();
    let p = h
        .authorize_audited(
            &identity("bob"),
            "app:payroll/x",
            "GET",
            AccessContext::default(),
            &log,
        )
        .await
        .unwrap();
    assert_eq!(p.grant().map(|g| g.id.as_str()), Some("g-b1"));
    let denied = h
        .authorize_audited(
            &identity("bob"),
            "app:payroll/secret/x",
            "GET",
            AccessContext::default(),
            &log,
        )
        .await;
    assert!(matches!(denied, Err(Refusal::Denied { .. })));
    let events: Vec<serde_json::Value> = crate::audit::tests::segment_files(&log_dir)
        .into_iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "access_allowed");
    assert_eq!(events[0]["grant_id"], "g-b1");
    assert_eq!(events[0]["grant_reason"], "reason of g-b1");
    assert_eq!(events[1]["event"], "access_denied");
    assert!(events[1].get("grant_id").is_none());
}

#[tokio::test]
async fn a_changed_copy_is_used_on_every_thread_at_once() {
    let dir = TempDir::new("grants-threads");
    let h = handle(&dir).await;
    let bob = |h: &PolicyHandle| h.check("bob", &[], "app:payroll/x", "GET").allowed;
    assert!(!bob(&h));
    let h = &h;
    let (decided, wait_decided) = std::sync::mpsc::channel::<bool>();
    let (changed, wait_changed) = std::sync::mpsc::channel::<()>();
    let (granted, revoked) = std::thread::scope(|s| {
        // Another thread decides before each change, so holds a copy of the old grants.
        let t = s.spawn(move || {
            decided.send(bob(h)).unwrap();
            wait_changed.recv().unwrap();
            let granted = bob(h);
            decided.send(granted).unwrap();
            wait_changed.recv().unwrap();
            bob(h)
        });
        assert!(!wait_decided.recv().unwrap());
        h.set_grants(grants());
        changed.send(()).unwrap();
        let granted = wait_decided.recv().unwrap();
        assert!(h.remove_grant("g-b1"));
        changed.send(()).unwrap();
        (granted, t.join().unwrap())
    });
    assert!(granted, "the other thread sees the new grant at once");
    assert!(!revoked, "and its removal at once");
    assert!(!bob(h));
    assert!(!h.remove_grant("g-b1"), "only once");
}

#[tokio::test]
async fn a_watch_ends_at_expiry_or_revocation_and_follows_a_grant_that_takes_over() {
    let dir = TempDir::new("grants-watch");
    let h = Arc::new(handle(&dir).await);
    let carol = identity("carol");
    let ms = 300;
    h.set_grants(vec![grant("g-c9", "carol", "group:sre", "*", ms)]);
    let p = h.authorize(&carol, "ssh:db-prod-1/deploy", "ssh").unwrap();
    let mut w = h.watch_grant(&carol, &p).expect("a grant-dependent permit");
    let started = std::time::Instant::now();
    let lapse = tokio::time::timeout(Duration::from_secs(3), w.lapsed())
        .await
        .unwrap();
    assert_eq!(lapse.reason, LapseReason::Expired);
    assert_eq!(lapse.grant.id, "g-c9");
    assert!(
        started.elapsed() < Duration::from_millis(ms as u64 + 500),
        "{:?}",
        started.elapsed()
    );
    assert!(lapse.notice().contains("g-c9 expired"));

    // Revoked: ends at the change, long before the expiry.
    h.set_grants(vec![grant("g-c8", "carol", "group:sre", "*", 3_600_000)]);
    let p = h.authorize(&carol, "ssh:db-prod-1/deploy", "ssh").unwrap();
    let mut w = h.watch_grant(&carol, &p).unwrap();
    let waiting = tokio::spawn(async move { w.lapsed().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    h.remove_grant("g-c8");
    let lapse = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lapse.reason, LapseReason::Revoked);

    // Another grant takes over: the session goes on, and ends with the second one.
    h.set_grants(vec![
        grant("g-c7", "carol", "group:sre", "*", 200),
        grant("g-c6", "carol", "ssh:db-prod-1/deploy", "ssh", 3_600_000),
    ]);
    let p = h.authorize(&carol, "ssh:db-prod-1/deploy", "ssh").unwrap();
    assert_eq!(
        p.grant().unwrap().id,
        "g-c7",
        "the policy's own line through the group first"
    );
    let mut w = h.watch_grant(&carol, &p).unwrap();
    let waiting = tokio::spawn(async move {
        let l = w.lapsed().await;
        (l, w.grant().id.clone())
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!waiting.is_finished(), "g-c6 still allows it");
    h.set_grants(vec![]);
    let (lapse, _) = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lapse.grant.id, "g-c6");
    assert_eq!(lapse.reason, LapseReason::Revoked);

    // A permit of the policy alone has nothing to watch.
    let alice = identity("alice");
    let p = h.authorize(&alice, "app:wiki/page", "GET").unwrap();
    assert!(p.grant().is_none());
    assert!(h.watch_grant(&alice, &p).is_none());
}
