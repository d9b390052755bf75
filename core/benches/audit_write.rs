//! The per-request audit write path: 64 tasks on 2 worker threads each record 2,000
//! `access_allowed` events (group commit), timed one by one; prints records/s and the p50 /
//! p99 time of `record`. Runs the plain log and the signed one (checkpoints, head file,
//! alert scan), which differ only in work done off the request path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::audit::{
    AccessContext, AuditEvent, AuditKey, AuditLog, AuditOptions, AuditSigner,
};
use gatehouse_core::secret::SecretKey;

const TASKS: usize = 64;
const PER_TASK: usize = 2000;

fn event(i: usize) -> AuditEvent {
    AuditEvent::AccessAllowed {
        user: "alice".into(),
        object: format!("app:wiki/page/{i}"),
        action: "GET".into(),
        rule: "p, group:staff, app:wiki/*, GET, allow".into(),
        grant_id: None,
        grant_reason: None,
        context: AccessContext {
            client_addr: Some("192.0.2.7".parse().unwrap()),
            session: Some("ab".repeat(32)),
            request_id: Some(format!("0badf00d-{i}")),
        },
    }
}

fn run(name: &str, open: impl FnOnce(&std::path::Path) -> AuditLog) {
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-audit-write-{}-{name}",
        std::process::id()
    ));
    let log = open(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let mut lat: Vec<Duration> = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut v = Vec::with_capacity(PER_TASK);
                for i in 0..PER_TASK {
                    let e = event(t * PER_TASK + i);
                    let s = Instant::now();
                    log.record(e).await.unwrap();
                    v.push(s.elapsed());
                }
                v
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let took = start.elapsed();
    lat.sort();
    let n = lat.len();
    println!(
        "{name:<8} {n} records in {took:.2?}: {:>8.0} records/s, record() p50 {:?} p99 {:?}",
        n as f64 / took.as_secs_f64(),
        lat[n / 2],
        lat[n * 99 / 100]
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("head"));
}

fn main() {
    let key = AuditKey::new(&SecretKey::from_bytes([3; 32]));
    for round in 0..3 {
        println!("round {round}");
        run("plain", |d| AuditLog::open(d, key.clone()).unwrap());
        run("signed", |d| {
            let opts = AuditOptions {
                signer: Some(Arc::new(AuditSigner::generate().unwrap())),
                head_file: Some(d.with_extension("head")),
                ..AuditOptions::default()
            };
            AuditLog::open_with(d, key.clone(), opts).unwrap()
        });
    }
}
