//! Security alerts: a log line always, and a JSON POST to `[alerts] webhook_url` when set.
//!
//! Raised for every audit record that carries an incident id (denied access, lockouts,
//! pinned host-key mismatches) and by the audit machinery itself (a log that fails
//! verification at start-up, retention and shipping failures).
//!
//! Threat: an alert channel that slows or blocks access when the receiver is down, or loses
//! alerts silently. Mitigation: [`Alerter::raise`] never waits (a bounded queue; when it is
//! full the webhook copy is dropped and counted, the log line and the audit record stay);
//! delivery runs in its own task with a per-call deadline, retries with exponential backoff
//! and sends the incident id as `Idempotency-Key`, so a receiver that saw a retried alert
//! can drop the copy.

use std::collections::VecDeque;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::outbound::{HttpClient, OutboundRequest};

/// Alerts waiting for the delivery task. Full: the webhook copy of a new alert is dropped
/// (counted in `gatehouse_alerts_dropped_total`); its log line and audit record remain.
pub const ALERT_QUEUE: usize = 1024;
/// Alerts being delivered or waiting for a retry at once; beyond it, new ones wait in the
/// queue.
const IN_FLIGHT: usize = 256;
/// Deadline of one webhook call.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay; doubled on every failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Attempts before an alert's webhook copy is given up (about a quarter of an hour).
const ATTEMPTS: u32 = 20;

/// One alert: the JSON posted to the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub incident_id: String,
    /// The audit event kind (`access_denied`, `lockout`, ...) or the audit machinery's
    /// alert (`audit_cut_tail`, `audit_verify_failed`, `audit_retention_failed`,
    /// `audit_shipping_failed`).
    pub kind: String,
    pub user: Option<String>,
    /// The client's address, when known.
    pub client: Option<String>,
    /// RFC 3339.
    pub time: String,
    /// Sequence number of the audit record, when there is one.
    pub seq: Option<u64>,
    /// The audit event, or a description.
    pub detail: serde_json::Value,
}

impl Alert {
    /// An alert of the audit machinery (no user, no client).
    pub fn system(kind: &str, incident_id: String, detail: &str) -> Alert {
        Alert {
            incident_id,
            kind: kind.to_string(),
            user: None,
            client: None,
            time: now_rfc3339(),
            seq: None,
            detail: serde_json::Value::String(detail.to_string()),
        }
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    crate::audit::timestamp_of(crate::store::now_ms())
}

/// Counters of the alert path (registered on the admin listener's `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct AlertMetrics {
    pub raised: Counter,
    pub delivered: Counter,
    pub retries: Counter,
    pub given_up: Counter,
    pub dropped: Counter,
    pub pending: Gauge,
}

impl AlertMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "alerts_raised",
            "Security alerts raised",
            self.raised.clone(),
        );
        registry.register(
            "alerts_delivered",
            "Alerts the webhook accepted (2xx)",
            self.delivered.clone(),
        );
        registry.register(
            "alerts_retries",
            "Failed webhook calls that were retried",
            self.retries.clone(),
        );
        registry.register(
            "alerts_given_up",
            "Alerts whose webhook copy was given up after every retry",
            self.given_up.clone(),
        );
        registry.register(
            "alerts_dropped",
            "Alerts whose webhook copy was dropped because the queue was full",
            self.dropped.clone(),
        );
        registry.register(
            "alerts_pending",
            "Alerts waiting for webhook delivery",
            self.pending.clone(),
        );
    }
}

/// Raises alerts; cheap to clone.
#[derive(Debug, Clone)]
pub struct Alerter {
    tx: Option<mpsc::Sender<Alert>>,
    metrics: AlertMetrics,
}

impl Default for Alerter {
    fn default() -> Self {
        Alerter::log_only()
    }
}

impl Alerter {
    /// Alerts go to the log only.
    pub fn log_only() -> Alerter {
        Alerter {
            tx: None,
            metrics: AlertMetrics::default(),
        }
    }

    /// Alerts also go to `url`; the delivery task runs on the current runtime until every
    /// `Alerter` is dropped and the queue is empty.
    pub fn start(url: url::Url, client: HttpClient) -> Alerter {
        let (tx, rx) = mpsc::channel(ALERT_QUEUE);
        let metrics = AlertMetrics::default();
        tokio::spawn(deliver(rx, url, client, metrics.clone()));
        Alerter {
            tx: Some(tx),
            metrics,
        }
    }

    pub fn metrics(&self) -> &AlertMetrics {
        &self.metrics
    }

    /// Waits (up to `limit`) until no alert waits for the webhook: before exiting.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.metrics.pending.get() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Logs the alert and queues it for the webhook. Never waits.
    pub fn raise(&self, alert: Alert) {
        tracing::warn!(
            alert = true,
            incident_id = %alert.incident_id,
            kind = %alert.kind,
            user = alert.user.as_deref().unwrap_or("-"),
            client.addr = alert.client.as_deref().unwrap_or("-"),
            seq = alert.seq,
            "security alert"
        );
        self.metrics.raised.inc();
        if let Some(tx) = &self.tx {
            match tx.try_send(alert) {
                Ok(()) => {
                    self.metrics.pending.inc();
                }
                Err(e) => {
                    self.metrics.dropped.inc();
                    let id = match &e {
                        mpsc::error::TrySendError::Full(a)
                        | mpsc::error::TrySendError::Closed(a) => a.incident_id.clone(),
                    };
                    tracing::error!(incident_id = %id, "alert queue full: the webhook will not get this alert (it is in the log and the audit record)");
                }
            }
        }
    }
}

struct Pending {
    incident_id: String,
    body: Vec<u8>,
    attempt: u32,
    due: Instant,
}

fn backoff(attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    RETRY_FIRST.saturating_mul(factor).min(RETRY_MAX)
}

/// The delivery task.
async fn deliver(
    mut rx: mpsc::Receiver<Alert>,
    url: url::Url,
    client: HttpClient,
    metrics: AlertMetrics,
) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    loop {
        if !open && pending.is_empty() {
            return;
        }
        let next_due = pending.iter().map(|p| p.due).min();
        tokio::select! {
            a = rx.recv(), if open && pending.len() < IN_FLIGHT => match a {
                Some(alert) => {
                    let body = serde_json::to_vec(&alert).unwrap_or_default();
                    pending.push_back(Pending {
                        incident_id: alert.incident_id,
                        body,
                        attempt: 0,
                        due: Instant::now(),
                    });
                    // Take whatever else is queued without waiting.
                    while pending.len() < IN_FLIGHT {
                        let Ok(alert) = rx.try_recv() else { break };
                        let body = serde_json::to_vec(&alert).unwrap_or_default();
                        pending.push_back(Pending { incident_id: alert.incident_id, body, attempt: 0, due: Instant::now() });
                    }
                }
                None => open = false,
            },
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
        }
        let now = Instant::now();
        let (due, later): (Vec<Pending>, Vec<Pending>) =
            pending.drain(..).partition(|p| p.due <= now);
        pending.extend(later);
        let mut calls = tokio::task::JoinSet::new();
        for p in due {
            let client = client.clone();
            let url = url.clone();
            calls.spawn(async move {
                let mut req = OutboundRequest::post_json(url, p.body.clone(), WEBHOOK_TIMEOUT);
                if let Ok(v) = http::HeaderValue::from_str(&p.incident_id) {
                    req.headers.insert("idempotency-key", v);
                }
                let r = client.send(req).await;
                (p, r)
            });
        }
        while let Some(joined) = calls.join_next().await {
            let Ok((mut p, r)) = joined else { continue };
            let failure = match r {
                Ok(resp) if resp.status.is_success() => None,
                Ok(resp) => Some(format!("status {}", resp.status.as_u16())),
                Err(e) => Some(crate::error::error_chain(&e)),
            };
            match failure {
                None => {
                    metrics.delivered.inc();
                    metrics.pending.dec();
                }
                Some(why) => {
                    p.attempt += 1;
                    if p.attempt >= ATTEMPTS {
                        metrics.given_up.inc();
                        metrics.pending.dec();
                        tracing::error!(incident_id = %p.incident_id, error = %why, "alert webhook: giving up after {ATTEMPTS} attempts (the alert is in the log and the audit record)");
                    } else {
                        metrics.retries.inc();
                        tracing::warn!(incident_id = %p.incident_id, error = %why, attempt = p.attempt, "alert webhook call failed; retrying");
                        p.due = Instant::now() + backoff(p.attempt);
                        pending.push_back(p);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
