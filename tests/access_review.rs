//! `gatehouse access-review` on a fixture with known use: users made with the CLI (and an
//! SSO user seen), an audit log written with chosen dates (accesses, sign-ins, grants made,
//! used, revoked and expired), a live grant through the running server; both outputs
//! asserted: used, never used, unused in the window, never signed in, lines that reach
//! nobody.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use gatehouse_core::audit::testkit::Backfill;
use gatehouse_core::audit::{AccessContext, AuditEvent, AuditKey, timestamp_of};
use gatehouse_core::secret::SecretKey;
use serde_json::Value;

use crate::support::identity::unix_now;
use crate::support::{Gatehouse, GatehouseSpec, TestDir};

const DAY: u64 = 24 * 3600 * 1000;

const POLICY: &str = "\
p, group:staff, app:wiki/*, GET|HEAD, allow
p, group:staff, app:wiki/admin/*, *, deny
p, bob, app:payroll/*, *, allow
p, group:ghost, app:old/*, *, allow
p, group:sre, ssh:db-prod-1/deploy, ssh, allow
";
const WIKI: &str = "p, group:staff, app:wiki/*, GET|HEAD, allow";
const PAYROLL: &str = "p, bob, app:payroll/*, *, allow";

fn allowed(user: &str, rule: &str, grant: Option<&str>) -> AuditEvent {
    AuditEvent::AccessAllowed {
        user: user.into(),
        object: "app:x/y".into(),
        action: "GET".into(),
        rule: rule.into(),
        grant_id: grant.map(str::to_string),
        grant_reason: grant.map(|_| "fixture".to_string()),
        context: AccessContext::default(),
    }
}

fn login(user: &str) -> AuditEvent {
    AuditEvent::LoginSuccess {
        user: user.into(),
        method: "password+totp".into(),
        client_addr: None,
    }
}

fn created(id: &str, user: &str, object: &str, expires: u64) -> AuditEvent {
    AuditEvent::GrantCreated {
        grant_id: id.into(),
        user: user.into(),
        object: object.into(),
        action: "*".into(),
        reason: format!("fixture {id}"),
        expires_at: timestamp_of(expires),
        by: "cli:root".into(),
    }
}

/// The log of the last 200 days, written before the server opens it.
fn backfill(dir: &std::path::Path, secret_b64: &str, now: u64) {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret_b64)
        .unwrap();
    let key = AuditKey::new(&SecretKey::from_bytes(raw.try_into().unwrap()));
    let mut log = Backfill::new(dir, &key).unwrap();
    let revoked = AuditEvent::GrantRevoked {
        grant_id: "g-bb".into(),
        user: "bob".into(),
        object: "group:sre".into(),
        by: "cli:root".into(),
    };
    let events = [
        (now - 200 * DAY, login("bob")),
        (now - 200 * DAY, allowed("bob", PAYROLL, None)),
        (
            now - 30 * DAY,
            created("g-aa", "carol", "app:payroll/*", now - 29 * DAY),
        ),
        (
            now - 29 * DAY - 60_000,
            allowed("carol", "grant g-aa", Some("g-aa")),
        ),
        (
            now - 20 * DAY,
            created("g-bb", "bob", "group:sre", now + 10 * DAY),
        ),
        (now - 19 * DAY, revoked),
        (now - 10 * DAY, login("alice")),
        (now - 5 * DAY, allowed("alice", WIKI, None)),
    ];
    for (t, e) in &events {
        log.push(*t, e).unwrap();
    }
    log.finish().unwrap();
}

fn row<'a>(rows: &'a [Value], kind: &str, user: Option<&str>, via: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["kind"] == kind && r["via"] == via && user.is_none_or(|u| r["user"] == u))
        .unwrap_or_else(|| panic!("no {kind} row {user:?} via {via}: {rows:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_says_what_was_used_and_what_was_not() {
    let now = unix_now() * 1000;
    let log_dir = TestDir::new("review-log");
    let spec = GatehouseSpec {
        policy_csv: Some(POLICY.into()),
        audit_dir: log_dir.join("audit").display().to_string(),
        ..GatehouseSpec::default()
    };
    backfill(&log_dir.join("audit"), &spec.secret_key, now);
    let gh = Gatehouse::start(spec).await;
    for (name, groups) in [
        ("alice", &["staff"][..]),
        ("bob", &[][..]),
        ("carol", &["staff"][..]),
    ] {
        gh.create_user(name, groups).await;
    }
    let last_login = (now - 2 * DAY) / 1000;
    gh.dir.write(
        "data/sso-users.toml",
        format!(
            "[[users]]\nname = \"dave\"\nprovider = \"corp\"\nissuer = \"https://idp.example\"\n\
             subject = \"s-1\"\ngroups = [\"sre\"]\nfirst_seen = {last_login}\nlast_login = {last_login}\n"
        ),
    );
    let live = gh.cli(
        &[
            "grant",
            "add",
            "alice",
            "app:hr/*",
            "--for",
            "2h",
            "--reason",
            "INC-5 staffing",
        ],
        None,
    );
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );
    let live = String::from_utf8(live.stdout).unwrap().trim().to_string();

    let out = gh.cli(&["access-review", "--since", "90d", "--json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let date = |days: u64| timestamp_of(now - days * DAY)[..10].to_string();
    let last = |r: &Value| r["last_used"].as_str().map(|t| t[..10].to_string());
    for r in &rows {
        for k in ["user", "object", "action", "via", "last_used"] {
            assert!(r.get(k).is_some(), "every row has `{k}`: {r}");
        }
    }
    // Used in the window.
    let r = row(&rows, "policy", Some("alice"), "group:staff");
    assert_eq!(
        (last(r), &r["unused_in_window"]),
        (Some(date(5)), &Value::Bool(false))
    );
    assert_eq!(
        (r["object"].as_str(), r["action"].as_str()),
        (Some("app:wiki/*"), Some("GET|HEAD"))
    );
    // Used, but before the window: a candidate for removal.
    let r = row(&rows, "policy", Some("bob"), "policy.csv:3");
    assert_eq!(
        (last(r), &r["unused_in_window"]),
        (Some(date(200)), &Value::Bool(true))
    );
    // Never used.
    let r = row(&rows, "policy", Some("carol"), "group:staff");
    assert_eq!(
        (&r["last_used"], &r["unused_in_window"]),
        (&Value::Null, &Value::Bool(true))
    );
    let r = row(&rows, "policy", Some("dave"), "group:sre");
    assert_eq!(r["last_used"], Value::Null);
    // Grants: used (expired since), never used (revoked), never used (live).
    let r = row(&rows, "grant", Some("carol"), "g-aa");
    assert_eq!(
        (last(r), r["status"].as_str()),
        (Some(date(29)), Some("expired"))
    );
    let r = row(&rows, "grant", Some("bob"), "g-bb");
    assert_eq!(
        (&r["last_used"], r["status"].as_str()),
        (&Value::Null, Some("revoked"))
    );
    let r = row(&rows, "grant", Some("alice"), &live);
    assert_eq!(
        (&r["last_used"], r["status"].as_str()),
        (&Value::Null, Some("live"))
    );
    assert_eq!(r["reason"], "INC-5 staffing");
    // Users: signed in, never signed in, an SSO user seen.
    assert_eq!(
        last(row(&rows, "user", Some("alice"), "local")),
        Some(date(10))
    );
    assert_eq!(
        row(&rows, "user", Some("carol"), "local")["last_used"],
        Value::Null
    );
    assert_eq!(
        last(row(&rows, "user", Some("dave"), "sso:corp")),
        Some(date(2))
    );
    // The line nobody reaches, and only it.
    let nobody: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "unmatched").collect();
    assert_eq!(nobody.len(), 1, "{nobody:#?}");
    assert_eq!(nobody[0]["via"], "policy.csv:4");
    assert_eq!(nobody[0]["user"], Value::Null);

    let out = gh.cli(&["access-review"], None);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    eprintln!("{table}");
    for want in [
        "alice (local; last sign-in ".to_string(),
        "carol (local; never signed in)".to_string(),
        "dave (sso:corp; last sign-in ".to_string(),
        "Grants: 3 (1 used, 2 never used)".to_string(),
        "Local users never signed in: carol".to_string(),
        "SSO users seen: dave (sso:corp".to_string(),
        "policy.csv:4       p, group:ghost, app:old/*, *, allow".to_string(),
        format!(
            "g-aa               carol            app:payroll/*                expired  expires {}",
            date(29)
        ),
    ] {
        assert!(table.contains(&want), "missing {want:?} in:\n{table}");
    }
    let section = |title: &str| -> String {
        let start = table
            .find(title)
            .unwrap_or_else(|| panic!("no {title:?}:\n{table}"));
        let rest = &table[start + title.len()..];
        rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string()
    };
    let unused = section("Unused in the window (candidates for removal):");
    for (line, want) in [
        ("bob              app:payroll/*", true),
        ("carol            app:wiki/*", true),
        (
            &format!(
                "alice            app:hr/*                         *              grant {live}"
            )[..],
            true,
        ),
        ("alice            app:wiki/*", false),
        ("g-aa", false),
        ("g-bb", false),
    ] {
        assert_eq!(
            unused.contains(line),
            want,
            "{line:?} in the unused section:\n{unused}"
        );
    }
    // The review is itself on record.
    gh.expect_audit("admin_action", |e| e["action"] == "access-review")
        .await;
}
