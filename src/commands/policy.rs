//! `gatehouse policy check USER OBJECT ACTION`: prints `allow` or `deny` and the deciding
//! rule; exit 0 on allow, 1 on deny. Groups come from users.toml.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use gatehouse_core::identity::Users;
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
    let handle = runtime()?
        .block_on(PolicyHandle::from_config(&config.policy))
        .with_context(|| {
            format!(
                "loading {} and {}",
                config.policy.model.display(),
                config.policy.policy.display()
            )
        })?;
    let users = Users::load(&config.identity.users_file)?;
    let groups = users
        .get(&user)
        .map(|u| u.groups.clone())
        .unwrap_or_default();
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
        _ => println!("{verdict}\n  rule: none matched (default deny)"),
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
