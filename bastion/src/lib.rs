//! gatehouse-bastion: the SSH bastion (russh server, pinned targets, relay, recording).
//!
//! At this stage it owns only the view of the configuration it will serve from; the listener
//! arrives with the bastion issue. It must never depend on the gateway crate.
#![forbid(unsafe_code)]

use gatehouse_core::config::{BastionConfig, TargetConfig};

/// What the bastion will serve: its listener settings and the pinned targets.
#[derive(Debug, Clone)]
pub struct BastionPlan {
    pub config: BastionConfig,
    pub targets: Vec<TargetConfig>,
}

impl BastionPlan {
    pub fn new(config: &gatehouse_core::Config) -> Self {
        Self { config: config.bastion.clone(), targets: config.targets.clone() }
    }
}
