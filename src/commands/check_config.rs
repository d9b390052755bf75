//! `gatehouse check-config`: validate everything a start would validate, bind nothing.

use std::path::Path;
use std::process::ExitCode;

use gatehouse_core::error_chain;

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
    let policy = super::audit::runtime()?.block_on(gatehouse_core::policy::load_index(
        &config.policy.model,
        &config.policy.policy,
    ));
    let rules = match policy {
        Ok(index) => index.len(),
        Err(e) => {
            eprintln!("gatehouse: policy error: {}", error_chain(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "{name}: ok ({} app(s), {} target(s), {rules} policy rule(s))",
        config.apps.len(),
        config.targets.len()
    );
    Ok(ExitCode::SUCCESS)
}
