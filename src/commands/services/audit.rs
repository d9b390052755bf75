//! The audit log as `serve` runs it: alerts (webhook), the signed log (refused, with an
//! alert, when its tail was cut), shipping to syslog and the Redis stream, retention of the
//! log and of recordings at start-up and daily, and a verification of the whole log at
//! start-up whose failure is alerted.

use std::time::Duration;

use anyhow::Context;
use gatehouse_core::alert::{Alert, Alerter};
use gatehouse_core::audit::ship::redis::{RedisSink, instance_id};
use gatehouse_core::audit::ship::syslog::SyslogSink;
use gatehouse_core::audit::ship::{Shipper, raise_system};
use gatehouse_core::audit::{
    AuditEvent, AuditKey, AuditLog, Outcome, VerifyOptions, new_incident_id, retention, verify_log,
};
use gatehouse_core::config::StoreConfig;
use gatehouse_core::outbound::HttpClient;
use gatehouse_core::secret::SecretKey;
use gatehouse_core::{AuditError, Config};

/// How long a refusing start waits for its alert to reach the webhook before exiting.
const REFUSAL_ALERT_WAIT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the sinks and the webhook to take the last records.
const DRAIN: Duration = Duration::from_secs(3);
/// Retention runs at start-up and then this often.
const RETENTION_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The audit side of a running server.
#[derive(Debug, Clone)]
pub struct AuditServices {
    pub log: AuditLog,
    pub shippers: Vec<Shipper>,
    pub alerter: Alerter,
}

fn alerter(config: &Config) -> anyhow::Result<Alerter> {
    Ok(match &config.alerts.webhook_url {
        Some(url) => {
            let client = HttpClient::new(config.alerts.ca_file.as_deref())
                .context("setting up the alert webhook client ([alerts] ca_file)")?;
            Alerter::start(url.clone(), client)
        }
        None => Alerter::log_only(),
    })
}

/// Opens the log (or refuses, alerting), starts shipping, runs retention once and schedules
/// it, and verifies the whole log in the background.
pub async fn start(config: &Config, key: &SecretKey) -> anyhow::Result<AuditServices> {
    let alerter = alerter(config)?;
    let mut opts = crate::commands::audit::audit_options(config)?;
    opts.alerter = alerter.clone();
    let log = match AuditLog::open_with(&config.audit.dir, AuditKey::new(key), opts) {
        Ok(log) => log,
        Err(e) => {
            let kind = match &e {
                AuditError::CutTail { .. } => Some("audit_cut_tail"),
                AuditError::Tampered { .. } | AuditError::Broken { .. } => {
                    Some("audit_verify_failed")
                }
                _ => None,
            };
            if let Some(kind) = kind {
                alerter.raise(Alert::system(
                    kind,
                    new_incident_id(),
                    &format!("the server refused to start: {e}"),
                ));
                alerter.drain(REFUSAL_ALERT_WAIT).await;
            }
            return Err(e).with_context(|| {
                format!("opening the audit log in {}", config.audit.dir.display())
            });
        }
    };
    let start = log.written();
    let mut shippers = Vec::new();
    if let Some(target) = &config.audit.syslog {
        let sink = SyslogSink::new(target.clone(), &config.audit.dir);
        shippers.push(Shipper::spawn(
            &log,
            sink,
            start,
            log.ship_metrics().clone(),
        ));
    }
    if let StoreConfig::Redis(url) = &config.store {
        let id = instance_id(&config.audit.dir).with_context(|| {
            format!("creating the instance id in {}", config.audit.dir.display())
        })?;
        let sink = RedisSink::new(url, id, config.audit.stream_max_len)
            .context("setting up the Redis audit stream")?;
        shippers.push(Shipper::spawn(
            &log,
            sink,
            start,
            log.ship_metrics().clone(),
        ));
    }
    retain(config, &log).await;
    let (c, l) = (config.clone(), log.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RETENTION_EVERY).await;
            retain(&c, &l).await;
        }
    });
    tokio::spawn(verify_in_background(
        config.clone(),
        log.clone(),
        key.clone(),
    ));
    Ok(AuditServices {
        log,
        shippers,
        alerter,
    })
}

/// Audit and recording retention; failures are recorded and alerted, never fatal.
async fn retain(config: &Config, log: &AuditLog) {
    // Errors are recorded and alerted by `apply`.
    let _ = retention::apply(log, config.audit.retention_days).await;
    let (dir, days) = (
        config.recording.dir.clone(),
        config.recording.retention_days,
    );
    let pruned = tokio::task::spawn_blocking(move || {
        gatehouse_core::recording_retention::prune(&dir, days, std::time::SystemTime::now())
    })
    .await;
    match pruned {
        Ok(Ok(r)) if r.removed.is_empty() => {}
        Ok(Ok(r)) => {
            let mut subject = format!(
                "removed {} recording(s) ({} bytes) older than {days} days:",
                r.removed.len(),
                r.bytes
            );
            for id in r.removed.iter().take(50) {
                subject.push(' ');
                subject.push_str(id);
            }
            if let Err(e) = log
                .record(AuditEvent::AdminAction {
                    actor: "gatehouse".into(),
                    action: "recording retention".into(),
                    subject,
                    outcome: Outcome::Success,
                })
                .await
            {
                tracing::error!(error = %e, "recording retention: the removal could not be recorded");
            }
        }
        Ok(Err(e)) => {
            raise_system(
                log,
                "recording_retention_failed",
                &format!(
                    "recording retention in {} failed: {e}",
                    config.recording.dir.display()
                ),
            )
            .await;
        }
        Err(_) => {}
    }
}

/// Verifies the whole log once (MAC, chain, checkpoints, the signed head); a failure is an
/// alert (`audit_verify_failed`), recorded in the log.
async fn verify_in_background(config: Config, log: AuditLog, key: SecretKey) {
    let dir = config.audit.dir.clone();
    let head = config.audit.head_file.clone();
    let public = log.signer().map(|s| s.public_key().clone());
    let result = tokio::task::spawn_blocking(move || {
        let mac = AuditKey::new(&key);
        verify_log(
            &dir,
            VerifyOptions {
                mac: Some(&mac),
                public_key: public.as_ref(),
                head_file: Some(&head),
            },
        )
    })
    .await;
    match result {
        Ok(Ok(r)) => tracing::info!(
            records = r.records,
            segments = r.segments,
            "audit log verified at start-up"
        ),
        Ok(Err(e)) => {
            raise_system(
                &log,
                "audit_verify_failed",
                &format!("the audit log does not verify: {e}"),
            )
            .await;
        }
        Err(_) => {}
    }
}

impl AuditServices {
    /// At shutdown: the last records to the sinks, a final checkpoint, pending alerts.
    pub async fn close(&self) {
        for s in &self.shippers {
            if !s.drain(DRAIN).await {
                tracing::warn!(
                    sink = s.name(),
                    "shutdown: the sink did not take every record in time; it resumes at the next start"
                );
            }
        }
        self.log.close();
        self.alerter.drain(DRAIN).await;
    }
}
