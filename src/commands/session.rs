//! `gatehouse session list` / `session revoke USER`: with `redis://` against the store, with
//! `memory://` through the running server's control socket (its sessions live inside it).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use gatehouse_core::audit::{AuditEvent, AuditLog};
use gatehouse_core::control::{Request, Response};
use gatehouse_core::store::Session;

use super::audit::{actor, open_log, runtime};
use super::grant::{Reach, reach};
use super::{config_source, load_config};
use crate::cli::SessionCommand;
use crate::control::client;

fn ago(ms: u64, now: u64) -> String {
    format!("{}s ago", now.saturating_sub(ms) / 1000)
}

fn within(ms: u64, now: u64) -> String {
    format!("in {}s", ms.saturating_sub(now) / 1000)
}

fn print(list: &[Session]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    println!(
        "{:<20} {:<14} {:<16} {:<12} {:<12} {:<14} ID",
        "USER", "METHOD", "CLIENT", "CREATED", "LAST SEEN", "EXPIRES"
    );
    for s in list {
        println!(
            "{:<20} {:<14} {:<16} {:<12} {:<12} {:<14} {}",
            s.data.user,
            s.data.method.as_str(),
            s.data
                .client_addr
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            ago(s.created_ms, now),
            ago(s.last_seen_ms, now),
            within(s.expires_ms, now),
            s.id_hash.get(..12).unwrap_or(&s.id_hash)
        );
    }
    println!("{} live session(s)", list.len());
}

pub fn run(explicit: Option<&Path>, cmd: SessionCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_source(explicit))?;
    runtime()?.block_on(async {
        let reach = reach(&config).await?;
        match cmd {
            SessionCommand::List => {
                let list = match reach {
                    Reach::Store(store, _) => {
                        store.list_sessions().await.context("listing sessions")?
                    }
                    Reach::Server => {
                        match client::call(&config.data_dir, &Request::SessionList {}).await? {
                            None => {
                                eprintln!("{}", client::NO_SERVER);
                                Vec::new()
                            }
                            Some(resp) => match client::ok(resp)? {
                                Response::Sessions { sessions } => sessions,
                                other => bail!("unexpected answer from the server: {other:?}"),
                            },
                        }
                    }
                };
                print(&list);
                Ok(ExitCode::SUCCESS)
            }
            SessionCommand::Revoke { user } => {
                let Some(count) = revoke(&config, reach, &user, None).await? else {
                    bail!("{}; nothing to revoke", client::NO_SERVER);
                };
                println!(
                    "revoked {count} session(s) of {user}; live connections on every instance are being closed"
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Ends every session of `user` (recorded as `session_revoked`, in `log` when given, else
/// in a log opened here); how many there were, or `None` when the store is in-process and
/// no server runs (then there are none).
pub async fn revoke(
    config: &gatehouse_core::Config,
    reach: Reach,
    user: &str,
    log: Option<&AuditLog>,
) -> anyhow::Result<Option<u64>> {
    match reach {
        Reach::Store(store, key) => {
            let opened;
            let log = match log {
                Some(l) => l,
                None => {
                    opened = open_log(config, &key)?;
                    &opened
                }
            };
            let count = store.revoke_user(user).await.context("revoking sessions")?;
            log.record(AuditEvent::SessionRevoked {
                user: user.to_string(),
                count,
                by: actor(),
            })
            .await
            .context("writing the audit record of this action")?;
            Ok(Some(count))
        }
        Reach::Server => {
            let req = Request::SessionRevoke {
                user: user.to_string(),
                by: actor(),
            };
            match client::call(&config.data_dir, &req).await? {
                None => Ok(None),
                Some(resp) => match client::ok(resp)? {
                    Response::Revoked { count } => Ok(Some(count)),
                    other => bail!("unexpected answer from the server: {other:?}"),
                },
            }
        }
    }
}
