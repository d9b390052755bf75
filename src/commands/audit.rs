//! `gatehouse audit verify`, and the admin-action record shared by the other commands.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use gatehouse_core::audit::{AuditEvent, AuditKey, AuditLog, Outcome, verify};
use gatehouse_core::secret::SecretKey;
use gatehouse_core::{AuditError, Config};

use super::{config_source, load_config};
use crate::cli::AuditCommand;

pub fn run(explicit: Option<&Path>, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_source(explicit))?;
    match cmd {
        AuditCommand::Verify => {
            let key = SecretKey::load(&config).context("loading the secret key (audit MAC)")?;
            match verify(&config.audit.dir, &AuditKey::new(&key)) {
                Ok(r) => {
                    println!(
                        "audit log ok: {} record(s) in {} segment(s) under {}{}",
                        r.records,
                        r.segments,
                        config.audit.dir.display(),
                        r.head.map(|h| format!(", head {h}")).unwrap_or_default()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ AuditError::Tampered { .. }) => {
                    println!("audit log TAMPERED: {e}");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    Err(e).with_context(|| format!("verifying {}", config.audit.dir.display()))
                }
            }
        }
    }
}

/// The operator running the CLI, for admin-action records.
pub fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// Opens the audit log of `config` (before an admin action: no log, no action).
pub fn open_log(config: &Config, key: &SecretKey) -> anyhow::Result<AuditLog> {
    AuditLog::open(&config.audit.dir, AuditKey::new(key))
        .with_context(|| format!("opening the audit log in {}", config.audit.dir.display()))
}

/// Records an administrative action.
pub async fn record_admin(
    log: &AuditLog,
    action: &str,
    subject: &str,
    outcome: Outcome,
) -> anyhow::Result<()> {
    log.record(AuditEvent::AdminAction {
        actor: actor(),
        action: action.into(),
        subject: subject.into(),
        outcome,
    })
    .await
    .context("writing the audit record of this action")?;
    Ok(())
}

/// A small runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
