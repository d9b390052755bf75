//! Prometheus metrics of the gateway, served on the admin listener.

use std::sync::Arc;
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
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub open_connections: Gauge,
    pub tls_handshake_failures: Counter,
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
        Metrics {
            registry,
            requests,
            durations,
            upstream_errors,
            open_connections,
            tls_handshake_failures,
        }
    }
}

impl Metrics {
    pub fn request(&self, app: &Arc<str>, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                app: app.clone(),
                status,
            })
            .inc();
        self.durations
            .get_or_create(&AppLabels { app: app.clone() })
            .observe(elapsed.as_secs_f64());
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
        m.upstream_error(&app, "connect");
        m.open_connections.inc();
        m.tls_handshake_failures.inc();
        let text = m.encode();
        for needle in [
            "gatehouse_http_requests_total{app=\"demo\",status=\"200\"} 1",
            "gatehouse_http_request_duration_seconds_count{app=\"demo\"} 1",
            "gatehouse_upstream_errors_total{app=\"demo\",kind=\"connect\"} 1",
            "gatehouse_open_connections 1",
            "gatehouse_tls_handshake_failures_total 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
