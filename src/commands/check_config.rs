//! `gatehouse check-config`: validate everything a start would validate, bind nothing.

use std::path::Path;
use std::process::ExitCode;

use gatehouse_core::error_chain;
use gatehouse_core::policy::{PolicyScope, lint};

use super::{ConfigSource, config_source, load_config};

pub fn run(explicit: Option<&Path>) -> anyhow::Result<ExitCode> {
    let source = config_source(explicit);
    let config = match load_config(&source) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: config error: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let name = match &source {
        ConfigSource::File(p) => p.display().to_string(),
        ConfigSource::QuickStart => "quick-start configuration".to_string(),
    };
    // What the config names (certificates, keys) is checked as a start would load it; the
    // message names the config file too.
    match gatehouse_gateway::check(&config) {
        Ok(warnings) => {
            for w in warnings {
                eprintln!("gatehouse: warning: {name}: {w}");
            }
        }
        Err(e) => {
            eprintln!("gatehouse: config error: {name}: {}", error_chain(&e));
            return Ok(ExitCode::FAILURE);
        }
    }
    if config.bastion.enabled
        && let Err(e) = gatehouse_bastion::check(&config)
    {
        eprintln!("gatehouse: config error: {name}: {}", error_chain(&e));
        return Ok(ExitCode::FAILURE);
    }
    let policy =
        gatehouse_core::policy::load_index_blocking(&config.policy.model, &config.policy.policy);
    let (rules, warnings) = match policy {
        // The quick-start's example policy names apps and targets it does not have.
        Ok(index) if config.source.is_none() => (index.len(), Vec::new()),
        Ok(index) => (
            index.len(),
            lint(&index, &PolicyScope::from_config(&config)),
        ),
        Err(e) => {
            eprintln!("gatehouse: policy error: {}", error_chain(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let file = config.policy.policy.display();
    for w in &warnings {
        match w.line {
            Some(line) => eprintln!("gatehouse: policy warning: {file}:{line}: {}", w.message),
            None => eprintln!("gatehouse: policy warning: {file}: {}", w.message),
        }
    }
    let noted = match warnings.len() {
        0 => String::new(),
        n => format!(", {n} policy warning(s)"),
    };
    println!(
        "{name}: ok ({} app(s), {} target(s), {rules} policy rule(s){noted})",
        config.apps.len(),
        config.targets.len()
    );
    Ok(ExitCode::SUCCESS)
}
