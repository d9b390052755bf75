//! Policy reload: on SIGHUP (through [`PolicyReloader::reload`]) and when the model or policy
//! file changes (polled).
//!
//! Threat: a broken or half-written policy file opening (or closing) everything; a policy
//! change nobody can account for. Mitigation: the new files are parsed, validated by casbin
//! and probed before anything changes; a broken file is logged with its error (file and
//! line), audited as a failed reload, and the running policy stays; a good one is audited
//! first and only then installed (if the audit cannot be written, the running policy stays).
//! Lines that can never match or that reach everything are logged as warnings (see
//! `gatehouse_core::policy::lint`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use gatehouse_core::audit::{AuditEvent, AuditLog};
use gatehouse_core::policy::{
    PolicyHandle, PolicyIndex, PolicyScope, PolicyWarning, lint, load_index_blocking,
};
use tokio_util::sync::CancellationToken;

/// Warnings logged one by one after a load; the rest are counted (check-config lists all).
const LOGGED_WARNINGS: usize = 20;

/// Logs a policy's warnings (the first [`LOGGED_WARNINGS`], then how many more).
pub fn log_warnings(file: &Path, warnings: &[PolicyWarning]) {
    for w in warnings.iter().take(LOGGED_WARNINGS) {
        match w.line {
            Some(line) => {
                tracing::warn!(policy = %file.display(), line, "policy warning: {}", w.message)
            }
            None => tracing::warn!(policy = %file.display(), "policy warning: {}", w.message),
        }
    }
    if let Some(more) = warnings
        .len()
        .checked_sub(LOGGED_WARNINGS)
        .filter(|n| *n > 0)
    {
        tracing::warn!(policy = %file.display(), more, "more policy warnings: run `gatehouse check-config` to list them all");
    }
}

/// How often the files are checked for changes.
pub const POLICY_POLL_INTERVAL: Duration = Duration::from_secs(2);

type Stamp = Option<(SystemTime, u64)>;

/// Reloads the running policy; cheap to clone.
#[derive(Debug, Clone)]
pub struct PolicyReloader {
    policy: Arc<PolicyHandle>,
    audit: AuditLog,
    files: [PathBuf; 2],
    seen: Arc<Mutex<[Stamp; 2]>>,
    /// One reload at a time (SIGHUP and the watcher): a slower, older load never installs
    /// over a newer one.
    running: Arc<tokio::sync::Mutex<()>>,
    /// What warnings are checked against; `None`: no warnings (the quick-start).
    scope: Option<Arc<PolicyScope>>,
}

/// Why a reload did not install a new policy.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("policy refused; the running policy stays")]
    Policy(#[source] gatehouse_core::PolicyError),
    #[error("policy reload could not be audited; the running policy stays")]
    Audit(#[source] gatehouse_core::AuditError),
}

fn stamp(p: &PathBuf) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl PolicyReloader {
    pub fn new(policy: Arc<PolicyHandle>, audit: AuditLog) -> PolicyReloader {
        let (model, file) = policy.files();
        let files = [model.to_path_buf(), file.to_path_buf()];
        let seen = [stamp(&files[0]), stamp(&files[1])];
        PolicyReloader {
            policy,
            audit,
            files,
            seen: Arc::new(Mutex::new(seen)),
            running: Arc::new(tokio::sync::Mutex::new(())),
            scope: None,
        }
    }

    /// Warns about lines that cannot match the configured apps and targets at each reload.
    pub fn with_scope(mut self, scope: PolicyScope) -> PolicyReloader {
        self.scope = Some(Arc::new(scope));
        self
    }

    /// Loads and lints on a blocking thread.
    async fn load(&self) -> Result<(PolicyIndex, Vec<PolicyWarning>), gatehouse_core::PolicyError> {
        let [model, file] = self.files.clone();
        let scope = self.scope.clone();
        let interrupted = file.clone();
        tokio::task::spawn_blocking(move || {
            let index = load_index_blocking(&model, &file)?;
            let warnings = scope.map(|s| lint(&index, &s)).unwrap_or_default();
            Ok((index, warnings))
        })
        .await
        .map_err(|_| gatehouse_core::PolicyError::Interrupted { path: interrupted })?
    }

    /// Loads the files again; installs them only when valid and audited. Returns the number
    /// of rules in force. The files are read and indexed on a blocking thread: requests are
    /// decided with the running policy meanwhile.
    pub async fn reload(&self) -> Result<usize, ReloadError> {
        let _one = self.running.lock().await;
        let file = &self.files[1];
        tracing::info!(policy = %file.display(), "policy reload started; the running policy serves meanwhile");
        match self.load().await {
            Ok((index, warnings)) => {
                log_warnings(file, &warnings);
                let rules = index.len();
                self.audit
                    .record(AuditEvent::PolicyReload {
                        ok: true,
                        rules,
                        error: None,
                    })
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %gatehouse_core::error_chain(&e), "policy reload not audited; running policy kept");
                        ReloadError::Audit(e)
                    })?;
                let n = self.policy.replace(index);
                tracing::info!(rules = n, "policy reloaded");
                Ok(n)
            }
            Err(e) => {
                let text = gatehouse_core::error_chain(&e);
                tracing::error!(error = %text, "policy reload refused; the running policy stays");
                if let Err(ae) = self
                    .audit
                    .record(AuditEvent::PolicyReload {
                        ok: false,
                        rules: self.policy.current().len(),
                        error: Some(text),
                    })
                    .await
                {
                    tracing::error!(error = %gatehouse_core::error_chain(&ae), "failed policy reload could not be audited");
                }
                Err(ReloadError::Policy(e))
            }
        }
    }

    /// True when a file changed since the last look (and remembers the new state). The files
    /// are looked at on a blocking thread (a slow disk never stalls the runtime).
    async fn changed(&self) -> bool {
        let files = self.files.clone();
        let Ok(now) =
            tokio::task::spawn_blocking(move || [stamp(&files[0]), stamp(&files[1])]).await
        else {
            return false;
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == now {
            false
        } else {
            *seen = now;
            true
        }
    }

    /// Polls the files every [`POLICY_POLL_INTERVAL`] until `stop`; reloads on change.
    pub(crate) async fn watch(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(POLICY_POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.changed().await {
                let _ = self.reload().await;
            }
        }
    }
}
