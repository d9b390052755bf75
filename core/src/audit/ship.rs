//! Shipping: every confirmed record also goes to syslog (`[audit] syslog`) and, with a
//! `redis://` store, to a capped Redis stream every instance appends to.
//!
//! Threats: a node lost with its disk taking its records with it; a SIEM outage that blocks
//! or slows access, grows memory, or loses or duplicates records. Mitigations: a shipper
//! reads the log's own files (tailing them on a wake-up after every write), so its backlog
//! is the log on disk, never memory, and the request path only wakes it; it remembers the
//! last record each sink holds (a cursor file for syslog; for Redis a key updated in the
//! same script as the stream, so a retried batch adds nothing twice) and resumes after it
//! when the sink is back; the backlog is a metric, and an outage raises one alert (recorded
//! as `audit_alert`) and is logged when it ends.

pub mod redis;
pub mod syslog;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::event::{AuditEvent, new_incident_id};
use super::writer::AuditLog;
use crate::alert::Alert;
pub use tail::ShipLine;
use tail::Tail;

/// Records sent per batch.
const BATCH: usize = 512;
/// First wait after a failed send, doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// After shipping a batch shorter than [`BATCH`], the wait before the log is read again: a
/// busy log then ships in a few large batches (one file read, one wake-up and one sink call
/// per linger) instead of one small batch per write, which cost every request a wake-up of
/// the shipper and a share of a Redis script call. Records reach the sink this much later.
const LINGER: Duration = Duration::from_millis(20);
/// Longest wait for a wake-up before the files are looked at again (a write by another
/// process sharing the log wakes nobody here).
const POLL: Duration = Duration::from_secs(1);

/// Why a sink could not take records.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("{sink}: {what}")]
    Io {
        sink: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("redis stream")]
    Redis(#[source] ::redis::RedisError),
    #[error("redis stream: operation timed out")]
    Timeout,
    #[error("redis stream: other instances kept taking the next entry id")]
    Contended,
    #[error("cannot connect to the store")]
    Store(#[source] crate::error::StoreError),
}

/// A destination of shipped records.
#[async_trait::async_trait]
pub trait Sink: Send {
    fn name(&self) -> &'static str;
    /// The last record of this log the sink holds (`None`: none yet).
    async fn resume_after(&mut self) -> Result<Option<u64>, ShipError>;
    /// Sends records in order; the number sent, and the error that stopped it early.
    async fn send(&mut self, batch: &[ShipLine]) -> (usize, Option<ShipError>);
    /// Records up to `seq` are sent (a sink whose cursor lives here stores it).
    async fn committed(&mut self, _seq: u64) {}
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: &'static str,
}

/// Shipping metrics, by sink.
#[derive(Debug, Clone, Default)]
pub struct ShipMetrics {
    pub shipped: Family<SinkLabels, Counter>,
    pub failures: Family<SinkLabels, Counter>,
    pub backlog: Family<SinkLabels, Gauge>,
}

impl ShipMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "audit_shipped_records",
            "Audit records delivered to a sink (syslog, redis)",
            self.shipped.clone(),
        );
        registry.register(
            "audit_ship_failures",
            "Failed attempts to deliver audit records to a sink",
            self.failures.clone(),
        );
        registry.register(
            "audit_ship_backlog",
            "Audit records written but not yet delivered to a sink",
            self.backlog.clone(),
        );
    }
}

/// Records an alert of the audit machinery (`audit_alert`, which raises it); when the log
/// cannot take the record, the alert is raised directly.
pub async fn raise_system(log: &AuditLog, kind: &str, detail: &str) {
    let id = new_incident_id();
    if let Err(e) = log
        .record(AuditEvent::AuditAlert {
            alert: kind.to_string(),
            detail: detail.to_string(),
            incident_id: id.clone(),
        })
        .await
    {
        log.alerter().raise(Alert::system(
            kind,
            id,
            &format!(
                "{detail} (not in the audit log: {})",
                crate::error::error_chain(&e)
            ),
        ));
    }
}

/// Progress of one shipper, for [`Shipper::caught_up`].
#[derive(Debug, Default)]
struct Progress {
    /// Next sequence number the sink does not hold yet.
    next: std::sync::atomic::AtomicU64,
}

/// A running shipper.
#[derive(Debug, Clone)]
pub struct Shipper {
    name: &'static str,
    progress: Arc<Progress>,
    log: AuditLog,
}

impl Shipper {
    /// Starts shipping `log` to `sink` on the current runtime. Records written before the
    /// sink was first used (no cursor) are not sent: it starts at `start`.
    pub fn spawn<S: Sink + 'static>(
        log: &AuditLog,
        sink: S,
        start: u64,
        metrics: ShipMetrics,
    ) -> Shipper {
        let progress = Arc::new(Progress::default());
        let shipper = Shipper {
            name: sink.name(),
            progress: progress.clone(),
            log: log.clone(),
        };
        tokio::spawn(run(log.clone(), sink, start, metrics, progress));
        shipper
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the sink holds every record written so far.
    pub fn caught_up(&self) -> bool {
        self.progress
            .next
            .load(std::sync::atomic::Ordering::Acquire)
            >= self.log.written()
    }

    /// Waits (up to `limit`) for the sink to hold every record written so far: at
    /// shutdown, after the last records.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.caught_up() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// State of a sink's connection, for alerting once per outage.
struct Health {
    down_since: Option<tokio::time::Instant>,
    retry: Duration,
}

async fn run<S: Sink>(
    log: AuditLog,
    mut sink: S,
    start: u64,
    metrics: ShipMetrics,
    progress: Arc<Progress>,
) {
    let labels = SinkLabels { sink: sink.name() };
    let wake = log.watch();
    let mut tail = Some(Tail::new(log.dir()));
    let mut resumed = false;
    let mut health = Health {
        down_since: None,
        retry: RETRY_FIRST,
    };
    loop {
        if !resumed {
            match sink.resume_after().await {
                Ok(after) => {
                    let next =
                        after.map_or_else(|| first_start(&log, labels.sink, start), |s| s + 1);
                    if let Some(t) = tail.as_mut() {
                        t.seek(next);
                    }
                    progress
                        .next
                        .store(next, std::sync::atomic::Ordering::Release);
                    resumed = true;
                }
                Err(e) => {
                    failed(&log, &metrics, &labels, &mut health, &e).await;
                    continue;
                }
            }
        }
        let Some(mut t) = tail.take() else { return };
        let read = tokio::task::spawn_blocking(move || {
            let r = t.read(BATCH);
            (t, r)
        })
        .await;
        let (t, read) = match read {
            Ok(v) => v,
            Err(_) => return,
        };
        tail = Some(t);
        let next = progress.next.load(std::sync::atomic::Ordering::Acquire);
        metrics
            .backlog
            .get_or_create(&labels)
            .set(i64::try_from(log.written().saturating_sub(next)).unwrap_or(i64::MAX));
        let batch = match read {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(sink = labels.sink, error = %e, "audit shipping: cannot read the log");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if let Some(gap) = &batch.gap {
            raise_system(
                &log,
                "audit_shipping_gap",
                &format!("{}: records {}..{} are not in the local log any more (removed before they were shipped)", labels.sink, gap.0, gap.1),
            )
            .await;
        }
        if batch.lines.is_empty() {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        let (sent, err) = sink.send(&batch.lines).await;
        if sent > 0
            && let Some(last) = batch.lines.get(sent - 1)
        {
            sink.committed(last.seq).await;
            progress
                .next
                .store(last.seq + 1, std::sync::atomic::Ordering::Release);
            metrics.shipped.get_or_create(&labels).inc_by(sent as u64);
        }
        if err.is_none()
            && sent < batch.lines.len()
            && let Some(t) = tail.as_mut()
        {
            // The sink took part of the batch: the rest is read again, never skipped.
            t.seek(progress.next.load(std::sync::atomic::Ordering::Acquire));
        }
        match err {
            None => {
                if let Some(since) = health.down_since.take() {
                    tracing::info!(sink = labels.sink, down_for = ?since.elapsed(), "audit shipping resumed; caught up from the log");
                }
                health.retry = RETRY_FIRST;
                if batch.lines.len() < BATCH {
                    tokio::time::sleep(LINGER).await;
                }
            }
            Some(e) => {
                let next = progress.next.load(std::sync::atomic::Ordering::Acquire);
                if let Some(t) = tail.as_mut() {
                    t.seek(next);
                }
                // Ask the sink where it is again (a reconnect may find it further).
                resumed = false;
                failed(&log, &metrics, &labels, &mut health, &e).await;
            }
        }
    }
}

/// Where a sink that holds nothing of this log starts: where it was first configured (kept
/// in `.ship-SINK.start` in the log directory, so restarts before the sink ever answered do
/// not skip the records written meanwhile).
fn first_start(log: &AuditLog, sink: &str, start: u64) -> u64 {
    let path = log.dir().join(format!(".ship-{sink}.start"));
    if let Some(s) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return s;
    }
    if let Err(e) = std::fs::write(&path, format!("{start}\n")) {
        tracing::warn!(sink, error = %e, "audit shipping: cannot note where this sink starts");
    }
    start
}

/// Counts a failure, alerts once per outage, and waits before the next attempt.
async fn failed(
    log: &AuditLog,
    metrics: &ShipMetrics,
    labels: &SinkLabels,
    health: &mut Health,
    e: &ShipError,
) {
    metrics.failures.get_or_create(labels).inc();
    let why = crate::error::error_chain(e);
    if health.down_since.is_none() {
        health.down_since = Some(tokio::time::Instant::now());
        tracing::error!(sink = labels.sink, error = %why, "audit shipping failed; records wait in the log and are sent when the sink is back");
        raise_system(
            log,
            "audit_shipping_failed",
            &format!("shipping audit records to {} failed: {why}", labels.sink),
        )
        .await;
    } else {
        tracing::debug!(sink = labels.sink, error = %why, "audit shipping still failing");
    }
    tokio::time::sleep(health.retry).await;
    health.retry = (health.retry * 2).min(RETRY_MAX);
}
