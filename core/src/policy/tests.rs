use std::path::{Path, PathBuf};

use super::*;
use crate::testutil::{Rng, TempDir};

fn shipped() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("policies");
    (root.join("model.conf"), root.join("policy.csv"))
}

#[tokio::test]
async fn shipped_policy_table() {
    let (model, policy) = shipped();
    let h = PolicyHandle::load(&model, &policy).await.unwrap();
    let reference = CasbinReference::load(&model, &policy).await.unwrap();
    // (user, groups, object, action, allowed, deciding rule fragment)
    type Row<'a> = (
        &'a str,
        &'a [&'a str],
        &'a str,
        &'a str,
        bool,
        Option<&'a str>,
    );
    let table: &[Row<'_>] = &[
        (
            "alice",
            &[],
            "app:wiki/page",
            "GET",
            true,
            Some("app:wiki/*, GET|HEAD, allow"),
        ),
        ("alice", &[], "app:wiki/", "HEAD", true, Some("app:wiki/*")),
        ("alice", &[], "app:wiki", "GET", false, None),
        ("alice", &[], "app:wiki/page", "POST", false, None),
        (
            "alice",
            &[],
            "app:wiki/admin/users",
            "GET",
            false,
            Some("app:wiki/admin/*, *, deny"),
        ),
        ("alice", &[], "app:wikipedia/x", "GET", false, None),
        (
            "bob",
            &[],
            "ssh:db-prod-1/deploy",
            "ssh",
            true,
            Some("ssh|sftp, allow"),
        ),
        ("bob", &[], "ssh:db-prod-1/deploy", "sftp", true, None),
        (
            "bob",
            &[],
            "ssh:db-prod-1/deploy",
            "port-forward",
            false,
            Some("port-forward, deny"),
        ),
        ("bob", &[], "ssh:db-prod-1/root", "ssh", false, None),
        ("bob", &[], "app:wiki/page", "GET", true, None), // sre inherits staff via g
        (
            "bob",
            &[],
            "app:wiki/private/x",
            "GET",
            false,
            Some("p, bob, app:wiki/private/*, *, deny"),
        ),
        (
            "carol",
            &[],
            "gatehouse:review",
            "GET",
            true,
            Some("gatehouse:review, *, allow"),
        ),
        ("carol", &[], "gatehouse:review/x", "GET", false, None),
        ("dave", &[], "app:wiki/page", "GET", false, None),
        // Groups from the identity (users.toml / SSO) count like `g` lines.
        ("dave", &["staff"], "app:wiki/page", "GET", true, None),
        (
            "dave",
            &["wiki-admins"],
            "app:wiki/admin/x",
            "POST",
            true,
            Some("wiki-admins"),
        ),
        (
            "dave",
            &["wiki-admins", "staff"],
            "app:wiki/admin/x",
            "POST",
            false,
            Some("deny"),
        ),
        ("alice", &[], "app:wiki/page", "get", false, None),
    ];
    for (user, groups, obj, act, allowed, rule) in table {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let d = h.check(user, &groups, obj, act);
        assert_eq!(d.allowed, *allowed, "{user} {groups:?} {obj} {act}: {d:?}");
        match rule {
            Some(frag) => assert!(
                d.rule.as_deref().is_some_and(|r| r.contains(frag)),
                "{user} {obj} {act}: {d:?}"
            ),
            None if !allowed => assert!(
                d.rule.is_none() || d.rule.as_deref().is_some_and(|r| r.ends_with("deny")),
                "{d:?}"
            ),
            None => {}
        }
        if groups.is_empty() {
            assert_eq!(
                reference.enforce(user, obj, act).unwrap(),
                *allowed,
                "casbin disagrees on {user} {obj} {act}"
            );
        }
    }
}

#[tokio::test]
async fn broken_files_name_file_and_line_and_reload_keeps_policy() {
    let (model, shipped_policy) = shipped();
    let dir = TempDir::new("policy");
    let policy = dir.path().join("policy.csv");
    std::fs::copy(&shipped_policy, &policy).unwrap();
    let h = PolicyHandle::load(&model, &policy).await.unwrap();
    let before = h.current().len();
    let cases = [
        ("p, group:staff, app:wiki/*, GET|HEAD\n", 1, "5 fields"),
        ("# c\np, group:staff, app:wiki/*, GET, maybe\n", 2, "effect"),
        ("p, group:staff, app:*/admin, GET, allow\n", 1, "object"),
        ("p, group:staff, app:x, GET|, allow\n", 1, "action"),
        ("x, a, b\n", 1, "unknown line type"),
        ("g, alice\n", 1, "3 fields"),
        ("p, \"quoted\", app:x, GET, allow\n", 1, "subject"),
    ];
    for (text, line, what) in cases {
        std::fs::write(&policy, text).unwrap();
        let err = h.reload().await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("policy.csv:{line}:")), "{msg}");
        assert!(msg.contains(what), "{msg}");
        assert_eq!(h.current().len(), before, "the running policy stays");
        assert!(PolicyHandle::load(&model, &policy).await.is_err());
    }
    std::fs::write(&policy, "p, group:x, app:y/*, GET, allow\n").unwrap();
    assert_eq!(h.reload().await.unwrap(), 1);
    // A model that decides differently from the index is refused.
    let bad_model = dir.path().join("model.conf");
    std::fs::write(
        &bad_model,
        std::fs::read_to_string(&model)
            .unwrap()
            .replace("keyMatch(r.obj, p.obj)", "r.obj == p.obj"),
    )
    .unwrap();
    let err = PolicyHandle::load(&bad_model, &policy).await.unwrap_err();
    assert!(
        matches!(err, crate::error::PolicyError::ModelMismatch { .. }),
        "{err}"
    );
    std::fs::write(&bad_model, "[request_definition]\nr = sub\n").unwrap();
    assert!(PolicyHandle::load(&bad_model, &policy).await.is_err());
    assert!(
        PolicyHandle::load(&model, &dir.path().join("missing.csv"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn authorize_mints_permit_or_denied() {
    use crate::identity::{AuthMethod, VerifiedIdentity};
    let (model, policy) = shipped();
    let h = PolicyHandle::load(&model, &policy).await.unwrap();
    let id = VerifiedIdentity::new(
        "alice".into(),
        vec![],
        AuthMethod::PasswordTotp,
        std::time::SystemTime::now(),
    );
    let p = h.authorize(&id, "app:wiki/home", "GET").unwrap();
    assert_eq!(
        (p.subject(), p.object(), p.action()),
        ("alice", "app:wiki/home", "GET")
    );
    assert!(p.rule().contains("allow"));
    let d = h.authorize(&id, "app:wiki/admin/x", "GET").unwrap_err();
    assert!(d.rule.unwrap().contains("deny"));
    assert!(
        h.authorize(&id, "app:nothing", "GET")
            .unwrap_err()
            .rule
            .is_none()
    );
}

fn random_policy(rng: &mut Rng, rules: usize) -> String {
    let subjects = ["alice", "bob", "group:a", "group:b", "group:c", "group:d"];
    let objects = [
        "app:w/",
        "app:w/a",
        "app:w/a/",
        "app:w/a/b",
        "app:w/ab",
        "app:x",
        "app:x/",
        "ssh:t/l",
        "ssh:t/",
        "app:",
        "",
    ];
    let actions = [
        "*", "GET", "HEAD", "GET|HEAD", "POST|GET", "ssh", "ssh|sftp",
    ];
    let mut s = String::from("# random\n");
    for _ in 0..rules {
        let obj = rng.pick(&objects);
        let star = if obj.is_empty() || rng.next().is_multiple_of(2) {
            "*"
        } else {
            ""
        };
        let eft = if rng.next().is_multiple_of(4) {
            "deny"
        } else {
            "allow"
        };
        s.push_str(&format!(
            "p, {}, {obj}{star}, {}, {eft}\n",
            rng.pick(&subjects),
            rng.pick(&actions)
        ));
    }
    let groups = ["group:a", "group:b", "group:c", "group:d"];
    for _ in 0..(rules / 3) {
        let member = if rng.next().is_multiple_of(2) {
            *rng.pick(&["alice", "bob", "carol"])
        } else {
            *rng.pick(&groups)
        };
        s.push_str(&format!("g, {member}, {}\n", rng.pick(&groups)));
    }
    s
}

#[tokio::test]
async fn differential_index_agrees_with_casbin() {
    let (model, _) = shipped();
    let dir = TempDir::new("diff");
    let policy = dir.path().join("policy.csv");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let req_subjects = ["alice", "bob", "carol", "group:a", "group:c", "nobody"];
    let req_objects = [
        "app:w/",
        "app:w/a",
        "app:w/a/",
        "app:w/a/b",
        "app:w/a/b/c",
        "app:w/ab",
        "app:w",
        "app:x",
        "app:x/y",
        "ssh:t/l",
        "ssh:t/lx",
        "ssh:t",
        "",
        "zzz",
    ];
    let req_actions = ["GET", "HEAD", "POST", "ssh", "sftp", "port-forward", "*"];
    let mut checked = 0;
    let mut allowed = 0;
    for round in 0..40 {
        std::fs::write(&policy, random_policy(&mut rng, 5 + round % 25)).unwrap();
        let text = std::fs::read_to_string(&policy).unwrap();
        let index = PolicyIndex::build(parse(&text, &policy).unwrap());
        let reference = CasbinReference::load(&model, &policy).await.unwrap();
        for _ in 0..100 {
            let (s, o, a) = (
                *rng.pick(&req_subjects),
                *rng.pick(&req_objects),
                *rng.pick(&req_actions),
            );
            let ours = index.decide([s], o, a).allowed;
            let theirs = reference.enforce(s, o, a).unwrap();
            assert_eq!(ours, theirs, "round {round}: {s} {o} {a}\n{text}");
            checked += 1;
            allowed += usize::from(ours);
        }
    }
    assert_eq!(checked, 4000);
    assert!(
        allowed > 400 && allowed < 3600,
        "both outcomes exercised: {allowed} allowed"
    );
}

#[tokio::test]
async fn audited_authorization_records_allow_and_deny() {
    use crate::audit::{AuditKey, AuditLog, verify};
    use crate::identity::{AuthMethod, VerifiedIdentity};
    use crate::secret::SecretKey;
    let (model, policy) = shipped();
    let h = PolicyHandle::load(&model, &policy).await.unwrap();
    let dir = TempDir::new("authz-audit");
    let key = AuditKey::new(&SecretKey::from_bytes([4; 32]));
    let log = AuditLog::open(dir.path(), key.clone()).unwrap();
    let id = VerifiedIdentity::new(
        "alice".into(),
        vec![],
        AuthMethod::PasswordTotp,
        std::time::SystemTime::now(),
    );
    assert!(
        h.authorize_audited(&id, "app:wiki/home", "GET", AccessContext::default(), &log)
            .await
            .is_ok()
    );
    let refusal = h
        .authorize_audited(
            &id,
            "app:wiki/admin/x",
            "GET",
            AccessContext::default(),
            &log,
        )
        .await
        .unwrap_err();
    let Refusal::Denied {
        denied,
        incident_id,
    } = refusal
    else {
        panic!("expected a deny")
    };
    assert!(denied.rule.unwrap().contains("deny"));
    let text: String = crate::audit::tests::segment_files(dir.path())
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(text.contains("\"event\":\"access_allowed\""));
    assert!(text.contains("\"event\":\"access_denied\"") && text.contains(&incident_id));
    assert_eq!(verify(dir.path(), &key).unwrap().records, 2);
    // No audit, no access.
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path(), "x").unwrap();
    let r = h
        .authorize_audited(&id, "app:wiki/home", "GET", AccessContext::default(), &log)
        .await;
    assert!(matches!(r, Err(Refusal::Audit(_))), "{r:?}");
    std::fs::remove_file(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
}

#[tokio::test]
async fn deny_on_a_directory_also_covers_its_bare_name() {
    let tmp = TempDir::new("policy-dirform");
    let dir = tmp.path().to_path_buf();
    let model = dir.join("model.conf");
    let policy = dir.join("policy.csv");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/model.conf"),
        &model,
    )
    .unwrap();
    std::fs::write(
        &policy,
        "p, group:staff, app:wiki/*, GET|HEAD, allow\n\
         p, group:staff, app:wiki/admin/*, *, deny\n\
         p, alice, app:docs/page.html, GET, allow\n",
    )
    .unwrap();
    let h = PolicyHandle::load(&model, &policy).await.unwrap();
    let staff = vec!["staff".to_string()];
    let cases = [
        ("app:wiki/admin", false),
        ("app:wiki/admin/", false),
        ("app:wiki/admin/x", false),
        ("app:wiki/administrator", true),
        ("app:wiki/page", true),
    ];
    for (object, allowed) in cases {
        assert_eq!(
            h.check("alice", &staff, object, "GET").allowed,
            allowed,
            "{object}"
        );
    }
    let d = h.check("alice", &staff, "app:wiki/admin", "GET");
    assert!(d.rule.unwrap().contains("app:wiki/admin/*"));
    // An exact allow without a wildcard is not turned into a deny by the directory form.
    assert!(h.check("alice", &[], "app:docs/page.html", "GET").allowed);
}

#[tokio::test]
async fn decisions_follow_a_replaced_policy_on_every_thread() {
    let (model, _) = shipped();
    let dir = TempDir::new("policy-threads");
    let policy = dir.path().join("policy.csv");
    std::fs::write(&policy, "p, alice, app:wiki/*, GET, allow\n").unwrap();
    let h = PolicyHandle::load(&model, &policy).await.unwrap();
    std::fs::write(&policy, "p, bob, app:wiki/*, GET, allow\n").unwrap();
    let next = load_index(&model, &policy).await.unwrap();
    let alice = |h: &PolicyHandle| h.check("alice", &[], "app:wiki/page", "GET").allowed;
    assert!(alice(&h));
    let h = &h;
    let (decided, wait_decided) = std::sync::mpsc::channel::<bool>();
    let (replaced, wait_replaced) = std::sync::mpsc::channel::<()>();
    let (before, after) = std::thread::scope(|s| {
        // A thread that decided before the change, so holds a copy of the old policy.
        let t = s.spawn(move || {
            decided.send(alice(h)).unwrap();
            wait_replaced.recv().unwrap();
            alice(h)
        });
        let before = wait_decided.recv().unwrap();
        h.replace(next);
        replaced.send(()).unwrap();
        (before, t.join().unwrap())
    });
    assert!(before, "allowed under the first policy");
    assert!(!after, "the other thread decides with the new policy");
    assert!(!alice(h), "and so does this one");
    assert!(h.check("bob", &[], "app:wiki/page", "GET").allowed);
}
