//! `gatehouse policy check USER OBJECT ACTION`: prints `allow` or `deny` and the deciding
//! rule, and the grant when one decides; exit 0 on allow, 1 on deny. Groups come from
//! users.toml (or, for an SSO user, its last sign-in); grants from the store (`redis://`) or
//! the running server (`memory://`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use gatehouse_core::identity::Users;
use gatehouse_core::identity::oidc::SsoUsers;
use gatehouse_core::policy::PolicyHandle;

use super::audit::runtime;
use super::{config_source, load_config};
use crate::cli::PolicyCommand;

pub fn run(explicit: Option<&Path>, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_source(explicit))?;
    let PolicyCommand::Check {
        user,
        object,
        action,
    } = cmd;
    let rt = runtime()?;
    let handle = rt
        .block_on(PolicyHandle::from_config(&config.policy))
        .with_context(|| {
            format!(
                "loading {} and {}",
                config.policy.model.display(),
                config.policy.policy.display()
            )
        })?;
    let grants = rt.block_on(super::grant::live_grants(&config))?;
    let no_server = grants.is_none();
    handle.set_grants(grants.unwrap_or_default());
    let users = Users::load(&config.identity.users_file)?;
    let groups = match users.get(&user) {
        Some(u) => u.groups.clone(),
        None => SsoUsers::load(&SsoUsers::path_in(&config.data_dir))?
            .get(&user)
            .map(|u| u.groups.clone())
            .unwrap_or_default(),
    };
    // The object as the gateway decides it: an `app:` path normalised by the same code. A
    // path the gateway refuses (400) is a deny here too.
    let (object, normalised) = match gatehouse_core::path::normalize_app_object(&object) {
        Ok(normal) => {
            let changed = normal != object;
            (normal.into_owned(), changed)
        }
        Err(e) => {
            println!(
                "deny\n  rule: none: the gateway refuses this path before any rule ({e}: 400 Bad Request)"
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let d = handle.check(&user, &groups, &object, &action);
    let verdict = if d.allowed { "allow" } else { "deny" };
    match (&d.rule, d.line) {
        (Some(rule), Some(line)) => println!(
            "{verdict}\n  rule: {rule}\n  at:   {}:{line}",
            config.policy.policy.display()
        ),
        (Some(rule), None) => println!("{verdict}\n  rule: {rule}"),
        _ => println!("{verdict}\n  rule: none matched (default deny)"),
    }
    if let Some(g) = &d.grant {
        println!(
            "  grant: {} (reason: {}; expires {}; by {})",
            g.id,
            g.reason,
            gatehouse_core::audit::timestamp_of(g.expires_ms),
            g.granted_by
        );
    } else if no_server && !d.allowed {
        println!("  grants: none read (memory:// and no running server holds any)");
    }
    if normalised {
        println!("  object: {object} (the path as the gateway normalises it)");
    }
    if groups.is_empty() {
        println!("  subjects: {user}");
    } else {
        println!(
            "  subjects: {user}, {}",
            groups
                .iter()
                .map(|g| format!("group:{g}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(if d.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
