//! The audit log under a running server: kill -9 during heavy writes leaves a clean prefix
//! (a torn line is a crash, not tampering); a restart on a log whose tail was cut is refused
//! with an alert; retention at start-up removes old segments (and old recordings) and the
//! rest still verifies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_core::audit::testkit::Backfill;
use gatehouse_core::audit::{AuditKey, AuditSigner};
use gatehouse_core::secret::SecretKey;

use crate::audit::{day_events, lines, now_ms, write_lines};
use crate::support::client::empty;
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, TestDir, Upstream, Webhook, host};

const DAY: u64 = 86_400_000;

fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn segments(gh: &Gatehouse) -> Vec<std::path::PathBuf> {
    let dir = gh.dir.join(&gh.spec.audit_dir);
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_heavy_writes_leaves_a_clean_prefix() {
    let up = Upstream::start().await;
    let spec = GatehouseSpec::default().with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let mut gh = Gatehouse::start_signed_in(spec).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = gh.h1(&host("echo")).await;
        let (stop, ok) = (stop.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // The process is killed under these requests: a failure ends the loop.
                let req = c.request("GET", "/", &[], empty());
                let r = tokio::time::timeout(Duration::from_secs(2), c.send_head(req)).await;
                let Ok(Ok(resp)) = r else { return };
                let status = resp.status();
                if http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .is_err()
                {
                    return;
                }
                if status != 200 {
                    return;
                }
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let the writers run, then kill the process in the middle of them.
    while ok.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gh.signal("KILL");
    tokio::task::block_in_place(|| gh.wait_exit(Duration::from_secs(10))).expect("killed");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let confirmed = ok.load(Ordering::Relaxed);
    let verify = tokio::task::block_in_place(|| gh.cli(&["audit", "verify"], None));
    assert!(verify.status.success(), "{}", out_text(&verify));
    // Every request answered 200 had its record written: nothing confirmed was lost.
    let allowed = gh.count_audit("access_allowed", |e| e["user"] == "tester");
    assert!(
        allowed as u64 >= confirmed,
        "{allowed} records for {confirmed} answered requests"
    );
    eprintln!(
        "kill -9 after {confirmed} answered requests: {allowed} access records, log verifies"
    );
    // A kill inside a write(2) leaves a torn last line: reported as a crash, not tampering.
    let newest = segments(&gh).pop().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":999999,\"ts\":\"2026-01-0").unwrap();
    drop(f);
    let torn = tokio::task::block_in_place(|| gh.cli(&["audit", "verify"], None));
    assert!(torn.status.success(), "{}", out_text(&torn));
    assert!(
        out_text(&torn).contains("crash:") && out_text(&torn).contains("not tampering"),
        "{}",
        out_text(&torn)
    );
    // The next start removes the torn line and continues the chain.
    tokio::task::block_in_place(|| gh.restart_blocking());
    gh.signal("TERM");
    tokio::task::block_in_place(|| gh.wait_exit(Duration::from_secs(20))).expect("stopped");
    let after = tokio::task::block_in_place(|| gh.cli(&["audit", "verify"], None));
    assert!(
        after.status.success() && !out_text(&after).contains("crash:"),
        "{}",
        out_text(&after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_cut_tail_is_refused_with_an_alert() {
    let up = Upstream::start().await;
    let hook = Webhook::start().await;
    let spec = GatehouseSpec {
        extra_toml: format!("\n[alerts]\nwebhook_url = \"{}\"\n", hook.url()),
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let mut gh = Gatehouse::start_signed_in(spec).await;
    let mut c = gh.h1(&host("echo")).await;
    for _ in 0..5 {
        assert_eq!(c.get("/").await.status, 200);
    }
    gh.signal("TERM");
    tokio::task::block_in_place(|| gh.wait_exit(Duration::from_secs(20))).expect("stopped");
    let newest = segments(&gh).pop().unwrap();
    let mut l = lines(&newest);
    let kept = l.len() - 3;
    l.truncate(kept);
    write_lines(&newest, &l);
    let (code, _out, err) =
        tokio::task::block_in_place(|| gh.serve_expecting_refusal(Duration::from_secs(60)));
    assert_ne!(code, Some(0));
    assert!(
        err.contains("cut tail") && err.contains("refusing to chain onto it"),
        "{err}"
    );
    assert!(err.contains("the log ends at record"), "{err}");
    let call = hook
        .wait_for("audit_cut_tail", Duration::from_secs(20), |c| {
            c.body["kind"] == "audit_cut_tail"
        })
        .await;
    assert_eq!(
        call.idempotency_key.as_deref(),
        call.body["incident_id"].as_str()
    );
    assert_eq!(
        lines(&newest).len(),
        kept,
        "nothing was chained onto the cut log"
    );
    let v = tokio::task::block_in_place(|| gh.cli(&["audit", "verify"], None));
    assert_eq!(v.status.code(), Some(1));
    assert!(
        out_text(&v).contains("cut from the end"),
        "{}",
        out_text(&v)
    );
}

fn age(path: &std::path::Path, days: u64) {
    let t = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_at_start_keeps_the_rest_verifiable_and_prunes_old_recordings() {
    let up = Upstream::start().await;
    let spec = GatehouseSpec::default().with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    // The log and the keys are prepared before the server first starts: five segments, three
    // of them older than the default 380 days.
    let pre = TestDir::new("retention");
    let audit_dir = pre.join("audit");
    let key_file = pre.join("audit-signing.key");
    let signer = Arc::new(AuditSigner::load_or_create(&key_file).unwrap());
    let secret = SecretKey::from_base64(&spec.secret_key).unwrap();
    let mut b = Backfill::new(&audit_dir, &AuditKey::new(&secret)).unwrap();
    b.sign_with(signer);
    let now = now_ms();
    for (n, day) in [400u64, 390, 385, 300, 2].into_iter().enumerate() {
        for (i, ev) in day_events(n as u64).iter().enumerate().take(5) {
            b.push(now - day * DAY + i as u64, ev).unwrap();
        }
    }
    b.finish().unwrap();
    let rec_dir = pre.join("recordings");
    std::fs::create_dir_all(&rec_dir).unwrap();
    for (f, days) in [("old.cast", 400), ("new.cast", 1)] {
        std::fs::write(rec_dir.join(f), "x").unwrap();
        age(&rec_dir.join(f), days);
    }
    let spec = GatehouseSpec {
        audit_dir: audit_dir.display().to_string(),
        audit_extra: format!("signing_key_file = \"{}\"\n", key_file.display()),
        recording_dir: rec_dir.display().to_string(),
        ..spec
    };
    let gh = Gatehouse::start_signed_in(spec).await;
    let removed = gh.expect_audit("audit_retention", |_| true).await;
    assert_eq!(removed["removed"].as_array().unwrap().len(), 3, "{removed}");
    assert_eq!(removed["through_seq"], 14);
    let pruned = gh
        .expect_audit("admin_action", |e| e["action"] == "recording retention")
        .await;
    assert!(
        pruned["subject"].as_str().unwrap().contains("old"),
        "{pruned}"
    );
    assert!(!rec_dir.join("old.cast").exists() && rec_dir.join("new.cast").exists());
    let v = tokio::task::block_in_place(|| gh.cli(&["audit", "verify"], None));
    assert!(v.status.success(), "{}", out_text(&v));
    assert!(
        out_text(&v).contains("retention: records up to 14 were removed by retention"),
        "{}",
        out_text(&v)
    );
    let found = tokio::task::block_in_place(|| {
        gh.cli(
            &["audit", "search", "--event", "audit_retention", "--json"],
            None,
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).lines().count(),
        1,
        "{}",
        out_text(&found)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_fails_verification_at_start_up_raises_an_alert() {
    let up = Upstream::start().await;
    let hook = Webhook::start().await;
    let spec = GatehouseSpec {
        extra_toml: format!("\n[alerts]\nwebhook_url = \"{}\"\n", hook.url()),
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let mut gh = Gatehouse::start_signed_in(spec).await;
    let mut c = gh.h1(&host("echo")).await;
    for _ in 0..3 {
        assert_eq!(c.get("/").await.status, 200);
    }
    gh.signal("TERM");
    tokio::task::block_in_place(|| gh.wait_exit(Duration::from_secs(20))).expect("stopped");
    // An old record is changed (not the tail: the server can chain on, and says so).
    let seg = segments(&gh).pop().unwrap();
    let mut l = lines(&seg);
    l[1] = l[1].replacen("\"user\":\"", "\"user\":\"x", 1);
    write_lines(&seg, &l);
    tokio::task::block_in_place(|| gh.restart_blocking());
    let call = hook
        .wait_for("audit_verify_failed", Duration::from_secs(20), |c| {
            c.body["kind"] == "audit_verify_failed"
        })
        .await;
    let id = call.body["incident_id"].as_str().unwrap().to_string();
    assert!(
        call.body["detail"]
            .to_string()
            .contains("record 1 was changed"),
        "{:?}",
        call.body
    );
    let rec = gh
        .expect_audit("audit_alert", |e| e["incident_id"] == id.as_str())
        .await;
    assert_eq!(rec["alert"], "audit_verify_failed");
}
