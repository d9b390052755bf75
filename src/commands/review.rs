//! `gatehouse access-review [--since 90d] [--json]`: who can reach what (by policy line,
//! group and grant), whether and when each was last used, the grants of the window used and
//! never used, access unused in the window (candidates for removal), local users who never
//! signed in, the SSO users seen, and the policy lines that reach nobody. The rows are
//! core's (`gatehouse_core::review`); this prints them for a person, or as JSON lines.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use gatehouse_core::Config;
use gatehouse_core::audit::Outcome;
use gatehouse_core::identity::Users;
use gatehouse_core::identity::oidc::SsoUsers;
use gatehouse_core::policy::load_index_blocking;
use gatehouse_core::review::{self, Input, Kind, Origin, Person, Row};
use gatehouse_core::secret::SecretKey;

use super::audit::{open_log, record_admin, runtime};
use super::{config_source, load_config};
use crate::cli::AccessReview;
use crate::control::client;

pub fn run(explicit: Option<&Path>, args: AccessReview) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_source(explicit))?;
    let now = now_ms();
    let since = gatehouse_core::audit::search::parse_when(&args.since, now)
        .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let index = load_index_blocking(&config.policy.model, &config.policy.policy)
        .with_context(|| format!("loading the policy {}", config.policy.policy.display()))?;
    let rt = runtime()?;
    let live = rt.block_on(super::grant::live_grants(&config))?;
    if live.is_none() {
        eprintln!("note: {} (no live grants read)", client::NO_SERVER);
    }
    let policy_name = config
        .policy
        .policy
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".into());
    let input = Input {
        index: &index,
        policy_name: &policy_name,
        people: people(&config)?,
        live_grants: live.unwrap_or_default(),
        audit_dir: &config.audit.dir,
        since_ms: since,
    };
    let rows = review::review(&input, now)
        .with_context(|| format!("reading the audit log in {}", config.audit.dir.display()))?;
    // A review is itself on record (auditors ask when the last one was done).
    let key = SecretKey::load(&config).context("loading the secret key")?;
    let log = open_log(&config, &key)?;
    rt.block_on(record_admin(
        &log,
        "access-review",
        &args.since,
        Outcome::Success,
    ))?;
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print_table(&rows, since);
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Local users and the SSO users seen so far.
fn people(config: &Config) -> anyhow::Result<Vec<Person>> {
    let users = Users::load(&config.identity.users_file).with_context(|| {
        format!(
            "loading the users file {}",
            config.identity.users_file.display()
        )
    })?;
    let mut out: Vec<Person> = users
        .list()
        .into_iter()
        .map(|u| Person {
            name: u.name,
            groups: u.groups,
            origin: Origin::Local,
        })
        .collect();
    let sso = SsoUsers::load(&SsoUsers::path_in(&config.data_dir))?;
    out.extend(sso.list().into_iter().map(|u| Person {
        name: u.name,
        groups: u.groups,
        origin: Origin::Sso {
            provider: u.provider,
            last_login_ms: u.last_login.saturating_mul(1000),
        },
    }));
    Ok(out)
}

/// `2026-03-01T12:00:00.000Z` as `2026-03-01 12:00`; never as `never`.
fn when(t: &Option<String>) -> String {
    match t {
        Some(t) => format!(
            "{} {}",
            t.get(..10).unwrap_or(t),
            t.get(11..16).unwrap_or("")
        ),
        None => "never".into(),
    }
}

fn via(r: &Row) -> String {
    match (r.kind, r.line) {
        (Kind::Policy, Some(line)) if r.via.starts_with("group:") => {
            format!("{} (line {line})", r.via)
        }
        (Kind::Grant, _) => match r.status.as_deref() {
            Some("live") | None => format!("grant {}", r.via),
            Some(status) => format!("grant {} ({status})", r.via),
        },
        _ => r.via.clone(),
    }
}

fn print_table(rows: &[Row], since: u64) {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    println!(
        "Access review: access not used since {} is marked UNUSED",
        when(&Some(gatehouse_core::audit::timestamp_of(since)))
    );
    let mut heading: Option<&str> = None;
    for r in rows {
        match r.kind {
            Kind::User => {
                let how = match &r.last_used {
                    Some(_) => format!("last sign-in {}", when(&r.last_used)),
                    None => "never signed in".into(),
                };
                println!("\n{} ({}; {how})", dash(&r.user), r.via);
                heading = r.user.as_deref();
            }
            Kind::Policy | Kind::Grant => {
                if r.user.as_deref() != heading {
                    // A grant to a name that is neither a local nor a seen SSO user.
                    heading = r.user.as_deref();
                    println!(
                        "\n{} (not a local user nor an SSO user seen)",
                        dash(&r.user)
                    );
                }
                println!(
                    "  {:<32} {:<14} {:<34} {:<17} {}",
                    dash(&r.object),
                    dash(&r.action),
                    via(r),
                    when(&r.last_used),
                    if r.unused_in_window { "UNUSED" } else { "" }
                )
            }
            Kind::Unmatched => {}
        }
    }
    let grants: Vec<&Row> = rows.iter().filter(|r| r.kind == Kind::Grant).collect();
    let used = grants.iter().filter(|r| r.last_used.is_some()).count();
    println!(
        "\nGrants: {} ({used} used, {} never used)",
        grants.len(),
        grants.len() - used
    );
    for g in &grants {
        println!(
            "  {:<18} {:<16} {:<28} {:<8} expires {}  {}  \"{}\"",
            g.via,
            dash(&g.user),
            dash(&g.object),
            dash(&g.status),
            when(&g.expires_at),
            match &g.last_used {
                Some(_) => format!("used {}", when(&g.last_used)),
                None => "never used".into(),
            },
            dash(&g.reason)
        );
    }
    println!("\nUnused in the window (candidates for removal):");
    for r in rows
        .iter()
        .filter(|r| matches!(r.kind, Kind::Policy | Kind::Grant) && r.unused_in_window)
        .filter(|r| r.kind != Kind::Grant || r.status.as_deref() == Some("live"))
    {
        println!(
            "  {:<16} {:<32} {:<14} {}",
            dash(&r.user),
            dash(&r.object),
            dash(&r.action),
            via(r)
        );
    }
    let never: Vec<String> = rows
        .iter()
        .filter(|r| r.kind == Kind::User && r.via == "local" && r.last_used.is_none())
        .map(|r| dash(&r.user))
        .collect();
    println!("\nLocal users never signed in: {}", list_or_none(&never));
    let sso: Vec<String> = rows
        .iter()
        .filter(|r| r.kind == Kind::User && r.via.starts_with("sso:"))
        .map(|r| {
            format!(
                "{} ({}, last sign-in {})",
                dash(&r.user),
                r.via,
                when(&r.last_used)
            )
        })
        .collect();
    println!("SSO users seen: {}", list_or_none(&sso));
    println!("\nPolicy lines that reach nobody:");
    for r in rows.iter().filter(|r| r.kind == Kind::Unmatched) {
        println!("  {:<18} {}", r.via, dash(&r.rule));
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
