//! Records leaving the machine: syslog receives every record once (also after an outage);
//! two instances share the Redis stream, and when one instance's disk fills up the stream
//! still holds every record it confirmed; a denied request's incident id reaches the alert
//! webhook, retried after it was down, without slowing access while it is down.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gatehouse_core::audit::ship::redis::read_stream;

use crate::support::client::plain_get;
use crate::support::{
    AppSpec, Gatehouse, GatehouseSpec, Redis, TEST_GROUP, TestDir, Upstream, Webhook, host,
};

/// The stored record lines of `gh`'s log, by seq.
fn local(gh: &Gatehouse) -> BTreeMap<u64, String> {
    let dir = gh.dir.join(&gh.spec.audit_dir);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut out = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        // Complete lines only: a write cut short by a full disk leaves a torn last line.
        let complete = text.rfind('\n').map_or(0, |p| p + 1);
        for l in text[..complete].lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            out.insert(v["seq"].as_u64().unwrap(), l.to_string());
        }
    }
    out
}

/// Reads syslog datagrams until every record of the local log arrived (deadline).
async fn drain_syslog(
    sock: &tokio::net::UnixDatagram,
    gh: &Gatehouse,
    got: &mut BTreeMap<u64, (usize, String)>,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 70_000];
    loop {
        let want = local(gh);
        if want.keys().all(|s| got.contains_key(s)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "syslog got {} of {} records",
            got.len(),
            want.len()
        );
        let Ok(n) = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await
        else {
            continue;
        };
        let msg = String::from_utf8(buf[..n.unwrap()].to_vec()).unwrap();
        // RFC 5424: <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG
        let parts: Vec<&str> = msg.splitn(8, ' ').collect();
        assert!(
            parts[0].starts_with('<') && parts[0].ends_with(">1"),
            "{msg}"
        );
        assert_eq!(parts[3], "gatehouse", "{msg}");
        let rec: serde_json::Value = serde_json::from_str(parts[7]).unwrap();
        assert_eq!(parts[1], rec["ts"].as_str().unwrap());
        let e = got
            .entry(rec["seq"].as_u64().unwrap())
            .or_insert((0, String::new()));
        e.0 += 1;
        e.1 = parts[7].to_string();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_receives_every_record_once_also_after_an_outage() {
    let up = Upstream::start().await;
    let sock_dir = TestDir::new("syslog");
    let path = sock_dir.join("log.sock");
    let mut sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let spec = GatehouseSpec {
        audit_extra: format!("syslog = \"unix://{}\"\n", path.display()),
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let gh = Gatehouse::start_signed_in(spec).await;
    let mut c = gh.h1(&host("echo")).await;
    for _ in 0..30 {
        assert_eq!(c.get("/").await.status, 200);
    }
    let mut got = BTreeMap::new();
    drain_syslog(&sock, &gh, &mut got).await;
    // The daemon goes away; requests go on at full speed; it comes back and catches up.
    drop(sock);
    std::fs::remove_file(&path).unwrap();
    let t = Instant::now();
    for _ in 0..30 {
        assert_eq!(c.get("/").await.status, 200);
    }
    eprintln!("30 requests while syslog was down: {:?}", t.elapsed());
    sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    drain_syslog(&sock, &gh, &mut got).await;
    let want = local(&gh);
    for (seq, line) in &want {
        let (n, msg) = &got[seq];
        assert_eq!(*n, 1, "record {seq} arrived {n} times");
        assert_eq!(msg, line, "record {seq} differs");
    }
    assert!(
        want.values().any(|l| l.contains("audit_shipping_failed")),
        "the outage is on record"
    );
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: std::path::PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .expect("mount (the tests run as root)");
        assert!(st.success(), "mount -t tmpfs failed (the tests need root)");
        Tmpfs(at)
    }

    /// Fills the file system: every later write fails with ENOSPC.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&[0u8]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_stream_keeps_what_an_instance_confirmed_when_its_disk_fills() {
    let up = Upstream::start().await;
    let redis = Redis::start();
    let disk_dir = TestDir::new("disk");
    let disk = Tmpfs::mount(disk_dir.join("mnt"), "2m");
    let base = GatehouseSpec {
        store_url: redis.url(),
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let a = Gatehouse::start_signed_in(GatehouseSpec {
        audit_dir: disk.0.join("audit").display().to_string(),
        ..base.clone()
    })
    .await;
    // B shares the store (and its TOTP replay cache): its user is another one.
    let b = Gatehouse::start(base).await;
    let user_b = b.create_user("tester2", &[TEST_GROUP]).await;
    let cookie = b.login(&host("echo"), &user_b).await;
    b.use_cookie(Some(cookie));
    let (mut ca, mut cb) = (a.h1(&host("echo")).await, b.h1(&host("echo")).await);
    let mut ok_a = 0;
    for _ in 0..20 {
        assert_eq!(ca.get("/").await.status, 200);
        ok_a += 1;
        assert_eq!(cb.get("/").await.status, 200);
    }
    let url = url::Url::parse(&redis.url()).unwrap();
    let instance = |gh: &Gatehouse| {
        std::fs::read_to_string(gh.dir.join(&gh.spec.audit_dir).join("instance-id"))
            .unwrap()
            .trim()
            .to_string()
    };
    let (ia, ib) = (instance(&a), instance(&b));
    // A's disk fills up: A refuses requests (no record, no access); B goes on.
    disk.fill();
    // Records still fit in the last page of the segment until it is full.
    let mut refused = 0;
    for _ in 0..200 {
        let mut c = a.h1(&host("echo")).await;
        match tokio::time::timeout(Duration::from_secs(15), c.get("/")).await {
            Ok(r) if r.status == 200 => ok_a += 1,
            _ => refused += 1,
        }
        if refused >= 3 {
            break;
        }
    }
    assert!(refused > 0, "a full audit disk must refuse access");
    assert_eq!(cb.get("/").await.status, 200);
    // Every record A confirmed is in the stream, unchanged, even once A and its disk are gone.
    let a_local = local(&a);
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let entries = read_stream(&url).await.unwrap();
        let held: BTreeMap<u64, String> = entries
            .iter()
            .filter(|e| e.instance == ia)
            .map(|e| (e.seq, e.record.clone()))
            .collect();
        if a_local.iter().all(|(s, l)| held.get(s) == Some(l)) {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds {} of A's {} records",
            held.len(),
            a_local.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(a);
    drop(disk);
    let allowed_a = entries
        .iter()
        .filter(|e| {
            e.instance == ia
                && e.record.contains("\"event\":\"access_allowed\"")
                && e.record.contains("\"app:echo/")
        })
        .count();
    assert!(
        allowed_a >= ok_a,
        "{allowed_a} allowed records of A in the stream for {ok_a} answered requests"
    );
    assert!(entries.iter().any(|e| e.instance == ib), "B ships too");
    // B's copy in the stream matches its log.
    let v = tokio::task::block_in_place(|| b.cli(&["audit", "verify", "--stream"], None));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        v.status.success() && text.contains("audit stream ok"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_alerts_the_webhook_retried_after_it_was_down_without_slowing_access() {
    let up = Upstream::start().await;
    let mut hook = Webhook::start().await;
    hook.stop().await;
    let spec = GatehouseSpec {
        extra_toml: format!("\n[alerts]\nwebhook_url = \"{}\"\n", hook.url()),
        policy_csv: Some("p, group:testers, app:echo/*, *, allow\np, group:testers, app:echo/denied/*, *, deny\n".into()),
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let gh = Gatehouse::start_signed_in(spec).await;
    let mut c = gh.h1(&host("echo")).await;
    // While the webhook is down: allowed and denied requests, timed.
    let mut down = Vec::new();
    let mut incidents = Vec::new();
    for i in 0..40 {
        let t = Instant::now();
        let r = c.get(if i % 4 == 0 { "/denied/x" } else { "/" }).await;
        down.push(t.elapsed());
        if i % 4 == 0 {
            assert_eq!(r.status, 403);
            let page = r.text();
            let id = page
                .split("class=\"incident\">")
                .nth(1)
                .and_then(|s| s.split('<').next())
                .unwrap()
                .to_string();
            assert!(id.starts_with("inc-"), "{page}");
            incidents.push(id);
        } else {
            assert_eq!(r.status, 200);
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    hook.resume().await;
    for id in &incidents {
        let call = hook
            .wait_for(id, Duration::from_secs(30), |c| {
                c.body["incident_id"] == id.as_str()
            })
            .await;
        assert_eq!(call.idempotency_key.as_deref(), Some(id.as_str()));
        assert_eq!(call.body["kind"], "access_denied");
        assert_eq!(call.body["user"], "tester");
        assert_eq!(call.body["client"], "127.0.0.1");
        assert!(call.body["time"].as_str().unwrap().ends_with('Z'));
        // The same incident id is in the audit record.
        let rec = gh
            .expect_audit("access_denied", |e| e["incident_id"] == id.as_str())
            .await;
        assert_eq!(rec["object"], "app:echo/denied/x");
    }
    // The same requests with the webhook up.
    let mut up_times = Vec::new();
    for i in 0..40 {
        let t = Instant::now();
        let _ = c.get(if i % 4 == 0 { "/denied/x" } else { "/" }).await;
        up_times.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (md, mu) = (median(&mut down), median(&mut up_times));
    let max_down = *down.iter().max().unwrap();
    eprintln!(
        "request latency with the webhook down: median {md:?}, max {max_down:?}; up: median {mu:?}"
    );
    assert!(
        md < mu * 3 + Duration::from_millis(20),
        "down {md:?} vs up {mu:?}"
    );
    assert!(
        max_down < Duration::from_secs(1),
        "a request took {max_down:?} while the webhook was down"
    );
    // The failed calls were retried (counted on the admin listener).
    let metrics = plain_get(gh.admin, "127.0.0.1", "/metrics").await.text();
    let retries: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_alerts_retries_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no retry counter in\n{metrics}"));
    assert!(retries >= 1.0, "{metrics}");
}
