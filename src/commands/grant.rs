//! `gatehouse grant add|list|revoke`: just-in-time grants. With `redis://` through the store
//! (every instance follows it); with `memory://` through the running server's control
//! socket (the grants live inside it), so either way a grant is in force when the command
//! returns (on other Redis instances, as soon as the store's channel reaches them).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use gatehouse_core::Config;
use gatehouse_core::audit::timestamp_of;
use gatehouse_core::config::StoreConfig;
use gatehouse_core::control::{Request, Response};
use gatehouse_core::grant::{self, NewGrant};
use gatehouse_core::identity::Users;
use gatehouse_core::identity::oidc::SsoUsers;
use gatehouse_core::secret::SecretKey;
use gatehouse_core::store::{self, Grant, Store};
use serde::Serialize;

use super::audit::{actor, open_log, runtime};
use super::{config_source, load_config};
use crate::cli::GrantCommand;
use crate::control::client;

/// Where this command acts: the shared store, or the running server.
pub enum Reach {
    Store(Arc<dyn Store>, SecretKey),
    Server,
}

/// Opens the shared store; an in-process one (`memory://`) means "through the running
/// server's control socket" (no secret needed then: the socket is the server's user's).
pub async fn reach(config: &Config) -> anyhow::Result<Reach> {
    if matches!(config.store, StoreConfig::Memory) {
        return Ok(Reach::Server);
    }
    let key = SecretKey::load(config).context("loading the secret key")?;
    let store = store::open(&config.store, &key)
        .await
        .context("connecting to the store")?;
    Ok(Reach::Store(store, key))
}

/// The live grants of the store or of the running server; `None` when a `memory://` server
/// is not running (it would hold them).
pub async fn live_grants(config: &Config) -> anyhow::Result<Option<Vec<Grant>>> {
    match reach(config).await? {
        Reach::Store(store, _) => Ok(Some(store.list_grants().await.context("listing grants")?)),
        Reach::Server => match client::call(&config.data_dir, &Request::GrantList {}).await? {
            None => Ok(None),
            Some(resp) => match client::ok(resp)? {
                Response::Grants { grants } => Ok(Some(grants)),
                other => bail!("unexpected answer from the server: {other:?}"),
            },
        },
    }
}

/// A grant as `grant list --json` prints it.
#[derive(Serialize)]
struct GrantLine<'a> {
    id: &'a str,
    user: &'a str,
    object: &'a str,
    action: &'a str,
    reason: &'a str,
    expires_at: String,
    granted_by: &'a str,
    created_at: String,
}

impl<'a> From<&'a Grant> for GrantLine<'a> {
    fn from(g: &'a Grant) -> Self {
        GrantLine {
            id: &g.id,
            user: &g.user,
            object: &g.object,
            action: &g.action,
            reason: &g.reason,
            expires_at: timestamp_of(g.expires_ms),
            granted_by: &g.granted_by,
            created_at: timestamp_of(g.created_ms),
        }
    }
}

pub fn run(explicit: Option<&Path>, cmd: GrantCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_source(explicit))?;
    runtime()?.block_on(async {
        match cmd {
            GrantCommand::Add {
                user,
                object,
                action,
                duration,
                reason,
            } => add(&config, user, object, action, &duration, reason).await,
            GrantCommand::List { json } => list(&config, json).await,
            GrantCommand::Revoke { id } => revoke(&config, &id).await,
        }
    })
}

async fn add(
    config: &Config,
    user: String,
    object: String,
    action: Option<String>,
    duration: &str,
    reason: String,
) -> anyhow::Result<ExitCode> {
    let duration = humantime_duration(duration)?;
    let asked = NewGrant {
        user,
        object,
        action,
        duration,
        reason,
        granted_by: actor(),
    };
    // Refused here already (the server checks again): a clear error, nothing sent.
    asked.validate(config.grants.max_duration, 0)?;
    warn_unknown_user(config, &asked.user);
    let grant = match reach(config).await? {
        Reach::Store(store, key) => {
            let log = open_log(config, &key)?;
            grant::add(store.as_ref(), &log, config.grants.max_duration, &asked).await?
        }
        Reach::Server => {
            let req = Request::GrantAdd {
                user: asked.user.clone(),
                object: asked.object.clone(),
                action: asked.action.clone(),
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                reason: asked.reason.clone(),
                by: asked.granted_by.clone(),
            };
            match call(config, &req).await? {
                Response::Grant { grant } => grant,
                other => bail!("unexpected answer from the server: {other:?}"),
            }
        }
    };
    println!("{}", grant.id);
    eprintln!(
        "granted {} {} ({}) until {}: {}",
        grant.user,
        grant.object,
        grant.action,
        timestamp_of(grant.expires_ms),
        grant.reason
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let Some(grants) = live_grants(config).await? else {
        eprintln!("{}", client::NO_SERVER);
        return Ok(ExitCode::SUCCESS);
    };
    if json {
        for g in &grants {
            println!("{}", serde_json::to_string(&GrantLine::from(g))?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if grants.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<18} {:<16} {:<28} {:<12} {:<24} REASON",
        "ID", "USER", "OBJECT", "ACTION", "EXPIRES"
    );
    for g in &grants {
        println!(
            "{:<18} {:<16} {:<28} {:<12} {:<24} {} (by {})",
            g.id,
            g.user,
            g.object,
            g.action,
            timestamp_of(g.expires_ms),
            g.reason,
            g.granted_by
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(config: &Config, id: &str) -> anyhow::Result<ExitCode> {
    let grant = match reach(config).await? {
        Reach::Store(store, key) => {
            let log = open_log(config, &key)?;
            grant::revoke(store.as_ref(), &log, id, &actor()).await?
        }
        Reach::Server => {
            let req = Request::GrantRevoke {
                id: id.to_string(),
                by: actor(),
            };
            match call(config, &req).await? {
                Response::Grant { grant } => grant,
                other => bail!("unexpected answer from the server: {other:?}"),
            }
        }
    };
    println!(
        "revoked {}: {} {} ({}); what only it allowed is being closed",
        grant.id, grant.user, grant.object, grant.action
    );
    Ok(ExitCode::SUCCESS)
}

/// The running server's answer (its error as an error); no server is an error here.
async fn call(config: &Config, req: &Request) -> anyhow::Result<Response> {
    match client::call(&config.data_dir, req).await? {
        Some(resp) => client::ok(resp),
        None => bail!(
            "{}; start it first (or use a redis:// store)",
            client::NO_SERVER
        ),
    }
}

fn humantime_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    humantime::parse_duration(text.trim()).map_err(|_| {
        anyhow::anyhow!("`--for {text}` is not a duration; write e.g. `4h`, `90m` or `2d`")
    })
}

/// A grant for a name no user has (yet) is allowed (an SSO user not seen yet), but said.
fn warn_unknown_user(config: &Config, user: &str) {
    let local = Users::load(&config.identity.users_file)
        .ok()
        .is_some_and(|u| u.get(user).is_some());
    let sso = SsoUsers::load(&SsoUsers::path_in(&config.data_dir))
        .ok()
        .is_some_and(|u| u.get(user).is_some());
    if !local && !sso {
        eprintln!(
            "note: `{user}` is not a local user nor an SSO user seen so far; the grant applies if such a user signs in"
        );
    }
}
