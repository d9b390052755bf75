use super::*;
use crate::audit::testkit::Backfill;
use crate::audit::tests::key;
use crate::audit::{AccessContext, AuditEvent, Outcome};

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY: u64 = 86_400_000;

fn build(dir: &Path) {
    let mut b = Backfill::new(dir, &key()).unwrap();
    for day in 0..5u64 {
        for i in 0..10u64 {
            let ms = T0 + day * DAY + i * 60_000;
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            let ev = if i == 9 {
                AuditEvent::AccessDenied {
                    user: user.into(),
                    object: "app:wiki/admin/x".into(),
                    action: "GET".into(),
                    rule: None,
                    incident_id: format!("inc-{day}"),
                    context: AccessContext {
                        client_addr: Some("192.0.2.7".parse().unwrap()),
                        ..AccessContext::default()
                    },
                }
            } else if i == 5 {
                AuditEvent::AdminAction {
                    actor: "cli:root".into(),
                    action: "user_add".into(),
                    subject: "carol".into(),
                    outcome: Outcome::Success,
                }
            } else {
                AuditEvent::AccessAllowed {
                    user: user.into(),
                    object: if i % 3 == 0 {
                        "ssh:db-prod-1/deploy".into()
                    } else {
                        "app:wiki/page".into()
                    },
                    action: "GET".into(),
                    rule: "r".into(),
                    grant_id: None,
                    grant_reason: None,
                    context: AccessContext::default(),
                }
            };
            b.push(ms, &ev).unwrap();
        }
    }
    b.finish().unwrap();
}

fn seqs(dir: &Path, q: &Query) -> Vec<u64> {
    search_all(dir, q).unwrap().iter().map(|r| r.seq).collect()
}

#[test]
fn filters_combine_and_results_come_oldest_first() {
    let dir = crate::testutil::TempDir::new("search");
    build(dir.path());
    let all = seqs(dir.path(), &Query::default());
    assert_eq!(all, (0..50).collect::<Vec<u64>>());
    let q = |f: fn(&mut Query)| {
        let mut q = Query::default();
        f(&mut q);
        seqs(dir.path(), &q)
    };
    // Table: query -> expected sequence numbers.
    let cases: Vec<(Vec<u64>, Vec<u64>)> = vec![
        (
            q(|q| q.user = Some("alice".into())),
            (0..50).filter(|s| s % 10 % 2 == 0).collect(),
        ),
        (
            q(|q| q.user = Some("cli:root".into())),
            (0..5).map(|d| d * 10 + 5).collect(),
        ),
        (
            q(|q| q.event = Some("access_denied".into())),
            (0..5).map(|d| d * 10 + 9).collect(),
        ),
        (
            q(|q| q.decision = Some(Decision::Deny)),
            (0..5).map(|d| d * 10 + 9).collect(),
        ),
        (q(|q| q.incident_id = Some("inc-3".into())), vec![39]),
        (
            q(|q| q.client = Some("192.0.2.7".into())),
            (0..5).map(|d| d * 10 + 9).collect(),
        ),
        (
            q(|q| q.target = Some("db-prod-1".into())),
            (0..50).filter(|s| [0, 3, 6].contains(&(s % 10))).collect(),
        ),
        (q(|q| q.target = Some("db-prod".into())), vec![]),
        (
            q(|q| q.app = Some("wiki".into())),
            (0..50)
                .filter(|s| ![0, 3, 5, 6].contains(&(s % 10)))
                .collect(),
        ),
        (
            q(|q| {
                q.since_ms = Some(T0 + DAY + 3 * 60_000);
                q.until_ms = Some(T0 + 2 * DAY + 60_000)
            }),
            (13..=21).collect(),
        ),
        (
            q(|q| {
                q.user = Some("bob".into());
                q.event = Some("access_denied".into());
                q.since_ms = Some(T0 + 3 * DAY)
            }),
            vec![39, 49],
        ),
        (q(|q| q.newest = Some(3)), vec![47, 48, 49]),
        (q(|q| q.user = Some("nobody".into())), vec![]),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn a_time_range_skips_whole_segments() {
    let dir = crate::testutil::TempDir::new("search");
    build(dir.path());
    let q = Query {
        since_ms: Some(T0 + 3 * DAY),
        ..Query::default()
    };
    let stats = search(dir.path(), &q, |_| ControlFlow::Continue(())).unwrap();
    assert_eq!((stats.segments_read, stats.segments_skipped), (2, 3));
    assert_eq!(stats.matched, 20);
    // Stopping early stops reading.
    let mut n = 0;
    search(dir.path(), &Query::default(), |_| {
        n += 1;
        if n == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn times_are_rfc3339_or_durations_back_from_now() {
    let now = T0 + 10 * DAY;
    for (text, want) in [
        ("2026-01-01T00:00:00Z", Ok(T0)),
        ("2026-01-01T00:00:00.250Z", Ok(T0 + 250)),
        ("2026-01-01T02:00:00+02:00", Ok(T0)),
        ("2025-12-31T22:30:00-01:30", Ok(T0)),
        ("2026-01-01", Ok(T0)),
        ("24h", Ok(now - DAY)),
        ("90d", Ok(now - 90 * DAY)),
        ("15m", Ok(now - 15 * 60_000)),
    ] {
        assert_eq!(parse_when(text, now), want, "{text}");
    }
    for bad in ["yesterday", "2026-13-01T00:00:00Z", "", "12"] {
        assert!(parse_when(bad, now).is_err(), "{bad}");
    }
}
