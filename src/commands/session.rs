//! `gatehouse session list` / `session revoke USER` against the configured store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use gatehouse_core::audit::AuditEvent;
use gatehouse_core::secret::SecretKey;
use gatehouse_core::store;

use super::audit::{actor, open_log, runtime};
use super::{config_source, load_config};
use crate::cli::SessionCommand;

const IN_PROCESS: &str = "the store is memory://: sessions live only inside the running `gatehouse serve` process \
and cannot be listed or revoked from another process; configure `[store] url = \"redis://...\"` to manage them here";

fn ago(ms: u64, now: u64) -> String {
    format!("{}s ago", now.saturating_sub(ms) / 1000)
}

fn within(ms: u64, now: u64) -> String {
    format!("in {}s", ms.saturating_sub(now) / 1000)
}

pub fn run(explicit: Option<&Path>, cmd: SessionCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_source(explicit))?;
    // Records in the store are authenticated with a key derived from the secret key.
    let key = SecretKey::load(&config).context("loading the secret key")?;
    runtime()?.block_on(async {
        let store = store::open(&config.store, &key)
            .await
            .context("connecting to the store")?;
        if store.is_in_process() {
            println!("{IN_PROCESS}");
            return Ok(match cmd {
                SessionCommand::List => ExitCode::SUCCESS,
                SessionCommand::Revoke { .. } => ExitCode::FAILURE,
            });
        }
        match cmd {
            SessionCommand::List => {
                let list = store.list_sessions().await.context("listing sessions")?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                println!("{:<20} {:<14} {:<16} {:<12} {:<12} {:<14} ID", "USER", "METHOD", "CLIENT", "CREATED", "LAST SEEN", "EXPIRES");
                for s in &list {
                    println!(
                        "{:<20} {:<14} {:<16} {:<12} {:<12} {:<14} {}",
                        s.data.user,
                        s.data.method.as_str(),
                        s.data.client_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                        ago(s.created_ms, now),
                        ago(s.last_seen_ms, now),
                        within(s.expires_ms, now),
                        s.id_hash.get(..12).unwrap_or(&s.id_hash)
                    );
                }
                println!("{} live session(s)", list.len());
                Ok(ExitCode::SUCCESS)
            }
            SessionCommand::Revoke { user } => {
                let log = open_log(&config, &key)?;
                let count = store.revoke_user(&user).await.context("revoking sessions")?;
                log.record(AuditEvent::SessionRevoked { user: user.clone(), count, by: actor() })
                    .await
                    .context("writing the audit record of this action")?;
                println!("revoked {count} session(s) of {user}; live connections on every instance are being closed");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
