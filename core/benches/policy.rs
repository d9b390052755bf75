//! Policy decision cost at 1,000 and 10,000 rules: criterion's mean per decision, plus a
//! p99 over 200,000 individually timed decisions (the target is <= 2 µs p99 at 10k rules).
//! And the request path's own call, `PolicyHandle::check` at 10,000 rules, without grants,
//! with 1,000 grants of other users, and for users who hold grants (what grants cost).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::Criterion;
use gatehouse_core::policy::{PolicyHandle, PolicyIndex, parse};
use gatehouse_core::store::Grant;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A policy shaped like a large company's: `rules / 20` groups with 20 rules each over 200
/// apps and 50 SSH targets, one in eight rules a deny, and 2,000 users in three groups each.
fn policy_text(rules: usize) -> String {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let groups = (rules / 20).max(1) as u64;
    let mut s = String::new();
    for i in 0..rules {
        let g = i as u64 % groups;
        let line = match rng.below(8) {
            0 => format!("p, group:g{g}, app:app{}/admin/*, *, deny", rng.below(200)),
            1 | 2 => format!(
                "p, group:g{g}, ssh:host{}/deploy, ssh|sftp, allow",
                rng.below(50)
            ),
            3 => format!(
                "p, group:g{g}, app:app{}/api/v{}/*, GET|POST|PUT, allow",
                rng.below(200),
                rng.below(3)
            ),
            _ => format!(
                "p, group:g{g}, app:app{}/*, GET|HEAD, allow",
                rng.below(200)
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    for u in 0..2000 {
        for _ in 0..3 {
            s.push_str(&format!("g, user{u}, group:g{}\n", rng.below(groups)));
        }
    }
    s
}

fn requests() -> Vec<(String, String, &'static str)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..4096)
        .map(|_| {
            let user = format!("user{}", rng.below(2000));
            let (obj, act) = match rng.below(4) {
                0 => (format!("ssh:host{}/deploy", rng.below(50)), "ssh"),
                1 => (
                    format!("app:app{}/admin/settings/users", rng.below(200)),
                    "GET",
                ),
                2 => (
                    format!("app:app{}/api/v1/items/42?x", rng.below(200)),
                    "POST",
                ),
                _ => (
                    format!(
                        "app:app{}/dashboards/service-overview/panel/7",
                        rng.below(200)
                    ),
                    "GET",
                ),
            };
            (user, obj, act)
        })
        .collect()
}

fn build(rules: usize) -> PolicyIndex {
    PolicyIndex::build(parse(&policy_text(rules), Path::new("bench.csv")).unwrap())
}

fn p99_report() {
    let reqs = requests();
    for rules in [1_000, 10_000] {
        let index = build(rules);
        let mut samples = Vec::with_capacity(200_000);
        let mut allowed = 0usize;
        for i in 0..200_000 {
            let (u, o, a) = &reqs[i % reqs.len()];
            let t = Instant::now();
            let d = index.decide([u.as_str()], o, a);
            samples.push(t.elapsed().as_nanos() as u64);
            allowed += usize::from(black_box(d).allowed);
        }
        samples.sort_unstable();
        let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "policy decide, {rules} rules: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns ({allowed} of 200000 allowed)",
            p(0.50),
            p(0.99),
            p(0.999),
            samples[samples.len() - 1]
        );
    }
}

fn benches(c: &mut Criterion) {
    let reqs = requests();
    let mut group = c.benchmark_group("policy_decide");
    for rules in [1_000, 10_000] {
        let index = build(rules);
        let mut i = 0usize;
        group.bench_function(format!("{rules}_rules"), |b| {
            b.iter(|| {
                let (u, o, a) = &reqs[i % reqs.len()];
                i += 1;
                black_box(index.decide([u.as_str()], o, a))
            })
        });
    }
    group.finish();
}

/// A handle on the 10,000-rule policy (files in a temp dir, loaded as `serve` loads them).
fn handle() -> PolicyHandle {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.csv");
    std::fs::write(&policy, policy_text(10_000)).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/model.conf");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let h = rt.block_on(PolicyHandle::load(&model, &policy)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    h
}

/// `n` grants (a group or an app each) for users `first..first + n`, live for an hour.
fn grants(first: usize, n: usize) -> Vec<Grant> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    (0..n)
        .map(|i| Grant {
            id: format!("g-{i:x}"),
            user: format!("user{}", first + i % 2000),
            object: if i % 2 == 0 {
                format!("group:g{}", i % 500)
            } else {
                format!("app:app{}/*", i % 200)
            },
            action: "*".into(),
            reason: "bench".into(),
            granted_by: "bench".into(),
            created_ms: now,
            expires_ms: now + 3_600_000,
        })
        .collect()
}

fn handle_benches(c: &mut Criterion) {
    let reqs = requests();
    let h = handle();
    let mut group = c.benchmark_group("policy_check_10000_rules");
    let mut run = |name: &str, h: &PolicyHandle| {
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                let (u, o, a) = &reqs[i % reqs.len()];
                i += 1;
                black_box(h.check(u, &[], o, a))
            })
        });
    };
    run("no_grants", &h);
    // Users 2000.. are not the requests' users: every request misses the grants.
    h.set_grants(grants(2000, 1000));
    run("1000_grants_of_others", &h);
    // Every requesting user holds one or two grants (one of them a group).
    h.set_grants(grants(0, 3000));
    run("requesters_hold_grants", &h);
    group.finish();
}

fn main() {
    p99_report();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    handle_benches(&mut c);
    c.final_summary();
}
