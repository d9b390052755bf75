use super::*;
use crate::audit::testkit::Backfill;
use crate::audit::{AccessContext, AuditEvent, AuditKey, timestamp_of};
use crate::policy::{PolicyIndex, parse};
use crate::secret::SecretKey;
use crate::testutil::TempDir;

const DAY: u64 = 24 * 3600 * 1000;
const NOW: u64 = 1_780_000_000_000;

const POLICY: &str = "\
p, group:staff, app:wiki/*, GET|HEAD, allow
p, group:staff, app:wiki/admin/*, *, deny
p, bob, app:payroll/*, *, allow
p, group:ghost, app:old/*, *, allow
p, group:sre, ssh:db-prod-1/deploy, ssh, allow
g, alice, group:staff
";

fn allowed(user: &str, rule: &str, grant: Option<&str>) -> AuditEvent {
    AuditEvent::AccessAllowed {
        user: user.into(),
        object: "app:x/y".into(),
        action: "GET".into(),
        rule: rule.into(),
        grant_id: grant.map(str::to_string),
        grant_reason: grant.map(|_| "why".to_string()),
        context: AccessContext::default(),
    }
}

fn created(id: &str, user: &str, object: &str, at: u64, until: u64) -> (u64, AuditEvent) {
    (
        at,
        AuditEvent::GrantCreated {
            grant_id: id.into(),
            user: user.into(),
            object: object.into(),
            action: "*".into(),
            reason: format!("reason {id}"),
            expires_at: timestamp_of(until),
            by: "cli:root".into(),
        },
    )
}

fn person(name: &str, groups: &[&str]) -> Person {
    Person {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        origin: Origin::Local,
    }
}

#[test]
fn rows_say_what_each_user_reaches_and_what_was_used() {
    let dir = TempDir::new("review");
    let key = AuditKey::new(&SecretKey::from_bytes([9; 32]));
    let mut log = Backfill::new(dir.path(), &key).unwrap();
    let login = |user: &str| AuditEvent::LoginSuccess {
        user: user.into(),
        method: "password+totp".into(),
        client_addr: None,
    };
    let wiki = "p, group:staff, app:wiki/*, GET|HEAD, allow";
    let payroll = "p, bob, app:payroll/*, *, allow";
    let mut events = vec![
        (NOW - 200 * DAY, login("bob")),
        (NOW - 200 * DAY, allowed("bob", payroll, None)),
        created(
            "g-aa",
            "carol",
            "app:payroll/*",
            NOW - 30 * DAY,
            NOW - 29 * DAY,
        ),
        (
            NOW - 29 * DAY - 1000,
            allowed("carol", "grant g-aa: ...", Some("g-aa")),
        ),
        created("g-bb", "bob", "group:sre", NOW - 20 * DAY, NOW + 10 * DAY),
        (
            NOW - 19 * DAY,
            AuditEvent::GrantRevoked {
                grant_id: "g-bb".into(),
                user: "bob".into(),
                object: "group:sre".into(),
                by: "cli:root".into(),
            },
        ),
        (NOW - 10 * DAY, login("alice")),
        (NOW - 5 * DAY, allowed("alice", wiki, None)),
        // Someone else's use of alice's line is not alice's.
        (NOW - 4 * DAY, allowed("zed", wiki, None)),
    ];
    events.sort_by_key(|(t, _)| *t);
    for (t, e) in &events {
        log.push(*t, e).unwrap();
    }
    log.finish().unwrap();

    let index = PolicyIndex::build(parse(POLICY, std::path::Path::new("policy.csv")).unwrap());
    let live = Grant {
        id: "g-cc".into(),
        user: "alice".into(),
        object: "ssh:db-prod-1/deploy".into(),
        action: "ssh".into(),
        reason: "INC-9".into(),
        granted_by: "cli:root".into(),
        created_ms: NOW - DAY,
        expires_ms: NOW + DAY,
    };
    let mut dave = person("dave", &["sre"]);
    dave.origin = Origin::Sso {
        provider: "corp".into(),
        last_login_ms: NOW - 2 * DAY,
    };
    let input = Input {
        index: &index,
        policy_name: "policy.csv",
        people: vec![
            person("bob", &[]),
            person("carol", &["staff"]),
            person("alice", &[]),
            dave,
        ],
        live_grants: vec![live],
        audit_dir: dir.path(),
        since_ms: NOW - 90 * DAY,
    };
    let rows = review(&input, NOW).unwrap();
    let show: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{:?} {} {} {} {} {} {}",
                r.kind,
                r.user.as_deref().unwrap_or("-"),
                r.object.as_deref().unwrap_or("-"),
                r.via,
                r.last_used
                    .as_deref()
                    .map_or("never".to_string(), |t| t[..10].to_string()),
                if r.unused_in_window { "UNUSED" } else { "used" },
                r.status.as_deref().unwrap_or("")
            )
        })
        .collect();
    let day = |n: u64| timestamp_of(NOW - n * DAY)[..10].to_string();
    let want = vec![
        // alice: in staff through a `g` line; her line used 5 days ago; a live grant unused.
        format!("User alice - local {} used ", day(10)),
        format!("Policy alice app:wiki/* group:staff {} used ", day(5)),
        "Grant alice ssh:db-prod-1/deploy g-cc never UNUSED live".to_string(),
        // bob: his own line, last used before the window; a revoked grant never used.
        format!("User bob - local {} UNUSED ", day(200)),
        format!("Policy bob app:payroll/* policy.csv:3 {} UNUSED ", day(200)),
        "Grant bob group:sre g-bb never UNUSED revoked".to_string(),
        // carol: never signed in, staff's line never used; an expired grant that was used.
        "User carol - local never UNUSED ".to_string(),
        "Policy carol app:wiki/* group:staff never UNUSED ".to_string(),
        format!("Grant carol app:payroll/* g-aa {} used expired", day(29)),
        // dave: an SSO user seen two days ago, in sre by the provider's groups.
        format!("User dave - sso:corp {} used ", day(2)),
        "Policy dave ssh:db-prod-1/deploy group:sre never UNUSED ".to_string(),
        // Nobody is in group:ghost.
        "Unmatched - app:old/* policy.csv:4 never UNUSED ".to_string(),
    ];
    assert_eq!(show, want, "{rows:#?}");
    // The staff deny line reaches alice and carol: it is not "unmatched", and not a row.
    assert!(!rows.iter().any(|r| r.line == Some(2)));
    let json = serde_json::to_value(&rows[2]).unwrap();
    assert_eq!(json["user"], "alice");
    assert_eq!(json["via"], "g-cc");
    assert_eq!(json["last_used"], serde_json::Value::Null);
    assert_eq!(json["reason"], "INC-9");
    assert_eq!(json["kind"], "grant");
}
