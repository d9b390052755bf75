//! Policy reload: on SIGHUP (through [`PolicyReloader::reload`]) and when the model or policy
//! file changes (polled).
//!
//! Threat: a broken or half-written policy file opening (or closing) everything; a policy
//! change nobody can account for. Mitigation: the new files are parsed, validated by casbin
//! and probed before anything changes; a broken file is logged with its error (file and
//! line), audited as a failed reload, and the running policy stays; a good one is audited
//! first and only then installed (if the audit cannot be written, the running policy stays).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use gatehouse_core::audit::{AuditEvent, AuditLog};
use gatehouse_core::policy::{PolicyHandle, load_index};
use tokio_util::sync::CancellationToken;

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
        }
    }

    /// Loads the files again; installs them only when valid and audited. Returns the number
    /// of rules in force. The files are read and indexed on a blocking thread: requests are
    /// decided with the running policy meanwhile.
    pub async fn reload(&self) -> Result<usize, ReloadError> {
        let _one = self.running.lock().await;
        let [model, file] = &self.files;
        tracing::info!(policy = %file.display(), "policy reload started; the running policy serves meanwhile");
        match load_index(model, file).await {
            Ok(index) => {
                let rules = index.len();
                self.audit
                    .record(AuditEvent::PolicyReload {
                        ok: true,
                        rules,
                        error: None,
                    })
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %crate::services::describe(&e), "policy reload not audited; running policy kept");
                        ReloadError::Audit(e)
                    })?;
                let n = self.policy.replace(index);
                tracing::info!(rules = n, "policy reloaded");
                Ok(n)
            }
            Err(e) => {
                let text = crate::services::describe(&e);
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
                    tracing::error!(error = %crate::services::describe(&ae), "failed policy reload could not be audited");
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
