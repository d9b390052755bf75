//! Prometheus metrics of the gateway, served on the admin listener.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

type HistogramFamily = Family<AppLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    /// Tells this instance's series apart in the per-thread cache.
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub open_connections: Gauge,
    pub tls_handshake_failures: Counter,
    /// End of validity (unix seconds) of the certificate being served.
    pub tls_certificate_expiry: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let open_connections = Gauge::default();
        let tls_handshake_failures = Counter::default();
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
        }
    }
}

/// One (metrics, app, status) series a thread counted recently, with its handles.
struct Series {
    metrics: u64,
    /// Held, so its address cannot name another app while cached.
    app: Arc<str>,
    status: u16,
    count: Counter,
    duration: Histogram,
}

/// Series a thread keeps handles for.
const SERIES_PER_THREAD: usize = 16;

thread_local! {
    /// Per thread, the series counted last: a request then costs an atomic add and an
    /// observe, not two family lookups (each a shared lock, a label hash and two
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
}
