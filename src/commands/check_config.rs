//! `gatehouse check-config`: validate everything a start would validate, bind nothing.

use std::path::Path;
use std::process::ExitCode;

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
    if let Err(e) = gatehouse_gateway::check(&config) {
        eprintln!("gatehouse: config error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    if config.bastion.enabled
        && let Err(e) = gatehouse_bastion::check(&config)
    {
        eprintln!("gatehouse: config error: {}", error_chain(&e));
        return Ok(ExitCode::FAILURE);
    }
    let policy =
        gatehouse_core::policy::load_index_blocking(&config.policy.model, &config.policy.policy);
    let rules = match policy {
        Ok(index) => index.len(),
        Err(e) => {
            let mut msg = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                msg.push_str(&format!(": {c}"));
                cur = c.source();
            }
            eprintln!("gatehouse: policy error: {msg}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let name = match &source {
        ConfigSource::File(p) => p.display().to_string(),
        ConfigSource::QuickStart => "quick-start configuration".to_string(),
    };
    println!(
        "{name}: ok ({} app(s), {} target(s), {rules} policy rule(s))",
        config.apps.len(),
        config.targets.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        msg.push_str(&format!(": {c}"));
        cur = c.source();
    }
    msg
}
