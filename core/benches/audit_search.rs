//! Audit search over a year of records: builds 365 daily segments
//! (`GATEHOUSE_BENCH_PER_DAY` records a day, default 10,000: 3.65 million records) in a temp
//! directory, then times the searches `gatehouse audit search` runs: everything of one
//! user over the year, one incident id, denies of the last 24 hours, a week of one app.
//! Each search runs three times (the first with the files just written, so all in the page
//! cache, as on a server that reads its recent log); the median is printed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ops::ControlFlow;
use std::time::Instant;

use gatehouse_core::audit::search::{Query, search};
use gatehouse_core::audit::testkit::Backfill;
use gatehouse_core::audit::{AccessContext, AuditEvent, AuditKey, Decision};
use gatehouse_core::secret::SecretKey;

const DAY: u64 = 86_400_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let per_day: u64 = std::env::var("GATEHOUSE_BENCH_PER_DAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("gatehouse-audit-bench-{}", std::process::id()));
    let key = AuditKey::new(&SecretKey::from_bytes([9; 32]));
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let start = now - 365 * DAY;
    let t = Instant::now();
    let mut b = Backfill::new(&dir, &key).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut incident = String::new();
    for day in 0..365 {
        for i in 0..per_day {
            let ms = start + day * DAY + i * (DAY / per_day);
            let user = format!("user{}", rng.next() % 2000);
            let app = format!("app{}", rng.next() % 200);
            let r = rng.next() % 50;
            let ev = if r == 0 {
                let id = format!("inc-{:032x}", rng.next());
                if day == 180 && incident.is_empty() {
                    incident.clone_from(&id);
                }
                AuditEvent::AccessDenied {
                    user,
                    object: format!("{app}/admin/x").replacen("app", "app:app", 1),
                    action: "GET".into(),
                    rule: Some("p, group:staff, app:*/admin/*, *, deny".into()),
                    incident_id: id,
                    context: AccessContext {
                        client_addr: Some("192.0.2.7".parse().unwrap()),
                        session: Some("ab".repeat(32)),
                        request_id: Some(format!("{:x}-{i}", rng.next())),
                    },
                }
            } else {
                AuditEvent::AccessAllowed {
                    user,
                    object: format!("app:{app}/page/{}", rng.next() % 1000),
                    action: "GET".into(),
                    rule: "p, group:staff, app:*, GET, allow".into(),
                    grant_id: None,
                    grant_reason: None,
                    context: AccessContext {
                        client_addr: Some("192.0.2.7".parse().unwrap()),
                        session: Some("ab".repeat(32)),
                        request_id: Some(format!("{:x}-{i}", rng.next())),
                    },
                }
            };
            b.push(ms, &ev).unwrap();
        }
    }
    let n = b.finish().unwrap();
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "built {n} records in 365 segments ({:.1} GiB) in {:.1?}",
        bytes as f64 / f64::from(1u32 << 30),
        t.elapsed()
    );
    let queries: Vec<(&str, Query)> = vec![
        (
            "--user user42 (whole year)",
            Query {
                user: Some("user42".into()),
                ..Query::default()
            },
        ),
        (
            "--incident-id (whole year)",
            Query {
                incident_id: Some(incident.clone()),
                ..Query::default()
            },
        ),
        (
            "--event access_denied --since 24h",
            Query {
                event: Some("access_denied".into()),
                since_ms: Some(now - DAY),
                ..Query::default()
            },
        ),
        (
            "--app app7 --decision deny --since 7d",
            Query {
                app: Some("app7".into()),
                decision: Some(Decision::Deny),
                since_ms: Some(now - 7 * DAY),
                ..Query::default()
            },
        ),
        (
            "--user user42 --since 30d",
            Query {
                user: Some("user42".into()),
                since_ms: Some(now - 30 * DAY),
                ..Query::default()
            },
        ),
    ];
    for (name, q) in queries {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let mut c = 0u64;
            search(&dir, &q, |_| {
                c += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
            times.push(t.elapsed());
            found = c;
        }
        times.sort();
        println!(
            "{name:<40} {found:>8} found  median {:>8.1?}  (runs {:?})",
            times[1], times
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
