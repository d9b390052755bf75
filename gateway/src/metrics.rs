//! Prometheus metrics of the gateway, served on the admin listener.
//!
//! The per-request series (requests by app and status, durations by app) are
//! [`sharded`] values reached through a per-thread cache of handles: a request takes no lock
//! and writes no cache line another worker writes. The rest are prometheus_client's own.

mod sharded;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use gatehouse_core::preauth::PreauthMetrics;
#[cfg(test)]
use gatehouse_core::preauth::ReasonLabels;

use sharded::{ShardedCounter, ShardedHistogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub app: Arc<str>,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub app: Arc<str>,
    pub kind: &'static str,
}

type HistogramFamily = Family<AppLabels, ShardedHistogram, fn() -> ShardedHistogram>;

fn duration_histogram() -> ShardedHistogram {
    // 1 ms .. ~33 s.
    ShardedHistogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    /// Tells this instance's series apart in the per-thread cache.
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, ShardedCounter>,
    durations: HistogramFamily,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub open_connections: Gauge,
    pub tls_handshake_failures: Counter,
    /// End of validity (unix seconds) of the certificate being served.
    pub tls_certificate_expiry: Gauge,
    /// HTTPS connections holding a pre-authentication slot, and those refused at accept (see
    /// `gatehouse_core::preauth`).
    pub preauth: PreauthMetrics,
    /// Idle HTTP/1 connections parked without hyper (see `serve::connection`).
    pub parked_connections: Gauge,
    /// The bastion's: SSH connections not yet authenticated, and those refused at accept.
    pub ssh_preauth: PreauthMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, ShardedCounter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let open_connections = Gauge::default();
        let tls_handshake_failures = Counter::default();
        let preauth = PreauthMetrics::default();
        let parked_connections = Gauge::default();
        let ssh_preauth = PreauthMetrics::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by app and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by app",
            durations.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures, by app and kind",
            upstream_errors.clone(),
        );
        registry.register(
            "open_connections",
            "Open client connections",
            open_connections.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Failed or timed-out TLS handshakes",
            tls_handshake_failures.clone(),
        );
        let tls_certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_seconds",
            "End of validity of the served TLS certificate, unix seconds",
            tls_certificate_expiry.clone(),
        );
        registry.register(
            "preauth_connections",
            "Connections that have not yet brought a first request",
            preauth.connections.clone(),
        );
        registry.register(
            "parked_connections",
            "Idle keep-alive connections parked without their HTTP state",
            parked_connections.clone(),
        );
        registry.register(
            "preauth_refused",
            "Connections refused at accept: a pre-authentication limit was full, by reason",
            preauth.refused.clone(),
        );
        registry.register(
            "ssh_preauth_connections",
            "SSH connections that have not yet authenticated",
            ssh_preauth.connections.clone(),
        );
        registry.register(
            "ssh_preauth_refused",
            "SSH connections refused at accept: a pre-authentication limit was full, by reason",
            ssh_preauth.refused.clone(),
        );
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            durations,
            upstream_errors,
            open_connections,
            tls_handshake_failures,
            tls_certificate_expiry,
            preauth,
            parked_connections,
            ssh_preauth,
        }
    }
}

/// One (metrics, app, status) series a thread counted recently, with its handles.
struct Series {
    metrics: u64,
    /// Held, so its address cannot name another app while cached.
    app: Arc<str>,
    status: u16,
    count: ShardedCounter,
    duration: ShardedHistogram,
}

/// Series a thread keeps handles for.
const SERIES_PER_THREAD: usize = 16;

thread_local! {
    /// Per thread, the series counted last: a request then costs a few atomic adds to this
    /// thread's shards, not two family lookups (each a shared lock, a label hash and two
    /// reference-count round trips on the app name, all on cache lines every worker writes).
    static SERIES: RefCell<Vec<Series>> = const { RefCell::new(Vec::new()) };
}

impl Metrics {
    /// The gateway's metrics plus the audit log's (shipping backlog and failures, alerts).
    pub fn with_audit(audit: &gatehouse_core::audit::AuditLog) -> Metrics {
        let mut m = Metrics::default();
        audit.register_metrics(&mut m.registry);
        m
    }

    pub fn request(&self, app: &Arc<str>, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        SERIES.with_borrow_mut(|cache| {
            if let Some(s) = cache
                .iter()
                .find(|s| s.metrics == self.id && s.status == status && Arc::ptr_eq(&s.app, app))
            {
                s.count.inc();
                s.duration.observe(secs);
                return;
            }
            let count = self
                .requests
                .get_or_create(&RequestLabels {
                    app: app.clone(),
                    status,
                })
                .clone();
            let duration = self
                .durations
                .get_or_create(&AppLabels { app: app.clone() })
                .clone();
            count.inc();
            duration.observe(secs);
            if cache.len() >= SERIES_PER_THREAD {
                cache.remove(0);
            }
            cache.push(Series {
                metrics: self.id,
                app: app.clone(),
                status,
                count,
                duration,
            });
        });
    }

    pub fn upstream_error(&self, app: &Arc<str>, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                app: app.clone(),
                kind,
            })
            .inc();
    }

    /// The text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;

    #[test]
    fn names_as_documented() {
        let m = Metrics::default();
        let app: Arc<str> = Arc::from("demo");
        m.request(&app, 200, Duration::from_millis(3));
        // Counted again through this thread's cached handles.
        m.request(&app, 200, Duration::from_millis(5));
        m.request(&app, 404, Duration::from_millis(1));
        // Another instance, same app name: its own series.
        let other = Metrics::default();
        other.request(&app, 200, Duration::from_millis(1));
        assert!(
            other
                .encode()
                .contains("gatehouse_http_requests_total{app=\"demo\",status=\"200\"} 1")
        );
        m.upstream_error(&app, "connect");
        m.open_connections.inc();
        m.tls_handshake_failures.inc();
        let text = m.encode();
        for needle in [
            "gatehouse_http_requests_total{app=\"demo\",status=\"200\"} 2",
            "gatehouse_http_requests_total{app=\"demo\",status=\"404\"} 1",
            "gatehouse_http_request_duration_seconds_count{app=\"demo\"} 3",
            "gatehouse_upstream_errors_total{app=\"demo\",kind=\"connect\"} 1",
            "gatehouse_open_connections 1",
            "gatehouse_tls_handshake_failures_total 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    /// The registry these metrics had with prometheus_client's own counter and histogram:
    /// the exposition must stay byte for byte the same.
    struct Stock {
        registry: Registry,
        requests: Family<RequestLabels, Counter>,
        durations: Family<AppLabels, Histogram, fn() -> Histogram>,
        upstream_errors: Family<UpstreamErrorLabels, Counter>,
        open_connections: Gauge,
        tls_handshake_failures: Counter,
        tls_certificate_expiry: Gauge,
        preauth_connections: Gauge,
        parked_connections: Gauge,
        preauth_refused: Family<ReasonLabels, Counter>,
        ssh_preauth_connections: Gauge,
        ssh_preauth_refused: Family<ReasonLabels, Counter>,
    }

    fn stock() -> Stock {
        fn hist() -> Histogram {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        }
        let mut registry = Registry::with_prefix("gatehouse");
        let s = Stock {
            requests: Family::default(),
            durations: Family::new_with_constructor(hist),
            upstream_errors: Family::default(),
            open_connections: Gauge::default(),
            tls_handshake_failures: Counter::default(),
            tls_certificate_expiry: Gauge::default(),
            preauth_connections: Gauge::default(),
            parked_connections: Gauge::default(),
            preauth_refused: Family::default(),
            ssh_preauth_connections: Gauge::default(),
            ssh_preauth_refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by app and status",
            s.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by app",
            s.durations.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures, by app and kind",
            s.upstream_errors.clone(),
        );
        registry.register(
            "open_connections",
            "Open client connections",
            s.open_connections.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Failed or timed-out TLS handshakes",
            s.tls_handshake_failures.clone(),
        );
        registry.register(
            "tls_certificate_expiry_seconds",
            "End of validity of the served TLS certificate, unix seconds",
            s.tls_certificate_expiry.clone(),
        );
        registry.register(
            "preauth_connections",
            "Connections that have not yet brought a first request",
            s.preauth_connections.clone(),
        );
        registry.register(
            "parked_connections",
            "Idle keep-alive connections parked without their HTTP state",
            s.parked_connections.clone(),
        );
        registry.register(
            "preauth_refused",
            "Connections refused at accept: a pre-authentication limit was full, by reason",
            s.preauth_refused.clone(),
        );
        registry.register(
            "ssh_preauth_connections",
            "SSH connections that have not yet authenticated",
            s.ssh_preauth_connections.clone(),
        );
        registry.register(
            "ssh_preauth_refused",
            "SSH connections refused at accept: a pre-authentication limit was full, by reason",
            s.ssh_preauth_refused.clone(),
        );
        Stock { registry, ..s }
    }

    #[test]
    fn exposition_is_unchanged_and_counts_are_exact_under_concurrency() {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 5_000;
        let m = Metrics::default();
        let reference = stock();
        let apps: [Arc<str>; 2] = [Arc::from("wiki"), Arc::from("grafana")];
        // Durations that are exact binary fractions of a second (and whole nanoseconds):
        // their sum does not depend on the order of the additions (shards add up in another
        // order than one mutex does).
        let durations = [
            Duration::from_nanos(1_953_125), // 2^-9 s
            Duration::from_micros(15_625),   // 2^-6 s
            Duration::from_millis(250),
            Duration::from_secs(2),
            Duration::from_secs(64),
        ];
        let statuses = [200u16, 403, 502];
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (m, reference, apps) = (&m, &reference, &apps);
                s.spawn(move || {
                    for i in 0..PER_THREAD {
                        let app = &apps[(t + i) % 2];
                        let status = statuses[i % 3];
                        let d = durations[(i / 3) % durations.len()];
                        m.request(app, status, d);
                        reference
                            .requests
                            .get_or_create(&RequestLabels {
                                app: app.clone(),
                                status,
                            })
                            .inc();
                        reference
                            .durations
                            .get_or_create(&AppLabels { app: app.clone() })
                            .observe(d.as_secs_f64());
                    }
                });
            }
        });
        m.upstream_error(&apps[0], "connect");
        reference
            .upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                app: apps[0].clone(),
                kind: "connect",
            })
            .inc();
        m.open_connections.inc();
        reference.open_connections.inc();
        m.tls_handshake_failures.inc();
        reference.tls_handshake_failures.inc();
        m.tls_certificate_expiry.set(1_900_000_000);
        reference.tls_certificate_expiry.set(1_900_000_000);
        m.preauth.connections.inc();
        reference.preauth_connections.inc();
        m.ssh_preauth.connections.inc();
        reference.ssh_preauth_connections.inc();
        m.parked_connections.inc();
        reference.parked_connections.inc();
        m.preauth
            .refused
            .get_or_create(&ReasonLabels {
                reason: "per_source",
            })
            .inc();
        reference
            .preauth_refused
            .get_or_create(&ReasonLabels {
                reason: "per_source",
            })
            .inc();

        let mut want = String::new();
        prometheus_client::encoding::text::encode(&mut want, &reference.registry).unwrap();
        let got = m.encode();
        // Series order within a family follows a hash map: compare the lines as sets, and
        // the order of the families (their `# TYPE` lines) exactly.
        let sorted = |t: &str| {
            let mut v: Vec<String> = t.lines().map(str::to_string).collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&got), sorted(&want), "got:\n{got}\nwant:\n{want}");
        let types = |t: &str| {
            t.lines()
                .filter(|l| l.starts_with("# TYPE"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(types(&got), types(&want));
        let total: u64 = got
            .lines()
            .filter(|l| l.starts_with("gatehouse_http_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(total, (THREADS * PER_THREAD) as u64, "{got}");
    }
}
