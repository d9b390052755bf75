//! Large policies in the running binary: a reload of 20,000 and then 100,000 lines happens
//! beside the traffic. Requests keep being answered with the policy in force while the new
//! one loads (the answer flips only once it is installed), and the admin `/healthz` and the
//! SSH bastion's banner keep answering; their latencies during each reload are printed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{
    AppSpec, Gatehouse, GatehouseSpec, QUICK, TEST_GROUP, Upstream, host, within,
};

/// How long a reload (with the requests around it) may take before the test fails.
const RELOAD_DEADLINE: Duration = Duration::from_secs(120);
const STARTED: &str = "policy reload started";

/// `lines` lines of unrelated rules (four kinds, as a large company's policy), then the
/// tester's rules: everything on `echo`, and `/marker` denied when `deny_marker`.
fn big_policy(lines: usize, deny_marker: bool) -> String {
    let mut s = String::with_capacity(lines * 56);
    for i in 0..lines {
        let (b, g, app) = (i / 4, i / 4 % 500, i / 4 % 50);
        s.push_str(&match i % 4 {
            0 => format!("p, group:team{g}, app:app{app}/b{b}/*, GET|HEAD, allow\n"),
            1 => format!("p, user{b}, ssh:host{app}/deploy, ssh|sftp, allow\n"),
            2 => format!("p, group:team{g}, app:app{app}/b{b}/secret/*, *, deny\n"),
            _ => format!("g, user{b}, group:team{g}\n"),
        });
    }
    s.push_str(&format!("p, group:{TEST_GROUP}, app:echo/*, *, allow\n"));
    if deny_marker {
        s.push_str(&format!(
            "p, group:{TEST_GROUP}, app:echo/marker, *, deny\n"
        ));
    }
    s
}

/// Latencies of one kind of probe.
#[derive(Default)]
struct Lat(Vec<Duration>);

impl Lat {
    fn summary(&mut self) -> String {
        self.0.sort();
        let n = self.0.len();
        if n == 0 {
            return "none".into();
        }
        let at = |q: f64| self.0[((n as f64 * q) as usize).min(n - 1)];
        format!(
            "n={n} p50={:?} p99={:?} max={:?}",
            at(0.5),
            at(0.99),
            self.0[n - 1]
        )
    }
}

async fn healthz(admin: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200"), "{out:?}");
    t.elapsed()
}

async fn banner(bastion: SocketAddr) -> Duration {
    let t = Instant::now();
    let s = TcpStream::connect(bastion).await.unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.unwrap();
    assert!(line.starts_with("SSH-2.0-"), "{line:?}");
    t.elapsed()
}

/// Probes `f` in a loop until `stop`, each within [`QUICK`].
fn probe<F, Fut>(stop: Arc<AtomicBool>, what: &'static str, f: F) -> tokio::task::JoinHandle<Lat>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Duration> + Send,
{
    tokio::spawn(async move {
        let mut lat = Lat::default();
        while !stop.load(Ordering::Acquire) {
            lat.0.push(within(QUICK, what, f()).await);
        }
        lat
    })
}

fn started_count(gh: &Gatehouse) -> usize {
    gh.stderr().lines().filter(|l| l.contains(STARTED)).count()
}

/// Installs `text` as the policy (atomically: the file watcher never sees half a file),
/// signals a reload, and probes while it loads. Returns how many requests were answered with
/// the old decision after the reload had started.
async fn reload_under_traffic(gh: &Gatehouse, text: String, old: u16, new: u16) -> usize {
    let lines = text.lines().count();
    let before = started_count(gh);
    let tmp = gh.path("policies/policy.csv.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, gh.path("policies/policy.csv")).unwrap();
    let mut c = gh.h1(&host("echo")).await;
    let r = within(QUICK, "marker before the reload", c.get("/marker")).await;
    assert_eq!(r.status, old, "{}", r.text());
    gh.signal("HUP");
    let t0 = Instant::now();
    // The readiness signal: the reloader's log line (polled finely; no sleep as sync).
    while started_count(gh) <= before {
        assert!(t0.elapsed() < QUICK, "no `{STARTED}` line after SIGHUP");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let admin = gh.admin;
    let health = probe(stop.clone(), "healthz during a reload", move || {
        healthz(admin)
    });
    let ssh = gh.bastion_addr().map(|b| {
        probe(stop.clone(), "ssh banner during a reload", move || {
            banner(b)
        })
    });
    let (mut requests, mut during) = (Lat::default(), 0);
    loop {
        assert!(
            t0.elapsed() < RELOAD_DEADLINE,
            "the new policy was not in force within {RELOAD_DEADLINE:?}"
        );
        let t = Instant::now();
        let r = within(QUICK, "a request during the reload", c.get("/marker")).await;
        requests.0.push(t.elapsed());
        if r.status == new {
            break;
        }
        assert_eq!(r.status, old, "{}", r.text());
        during += 1;
    }
    let installed = t0.elapsed();
    stop.store(true, Ordering::Release);
    let mut health = health.await.unwrap();
    let mut ssh = match ssh {
        Some(t) => t.await.unwrap(),
        None => Lat::default(),
    };
    eprintln!(
        "{lines}-line policy reload: in force {installed:?} after SIGHUP; requests {} \
         ({during} answered by the old policy meanwhile); /healthz {}; ssh banner {}",
        requests.summary(),
        health.summary(),
        ssh.summary()
    );
    during
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_while_a_large_policy_reloads() {
    let echo = Upstream::start().await;
    let spec = GatehouseSpec {
        bastion: true,
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &echo.url()));
    let gh = Gatehouse::start_signed_in(spec).await;
    assert!(gh.bastion_addr().is_some(), "the bastion is on");
    // 20,000 lines: the marker becomes denied.
    reload_under_traffic(&gh, big_policy(20_000, true), 200, 403).await;
    // 100,000 lines: allowed again; requests answered by the old policy while it loads.
    let during = reload_under_traffic(&gh, big_policy(100_000, false), 403, 200).await;
    assert!(
        during > 0,
        "no request was answered while the 100,000-line policy loaded"
    );
    let reloads = gh
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "policy_reload" && e["ok"] == true)
        .filter_map(|e| e["rules"].as_u64())
        .collect::<Vec<_>>();
    assert!(
        reloads.contains(&(75_000 + 1)),
        "the 100,000-line reload is audited with its rule count: {reloads:?}"
    );
}
