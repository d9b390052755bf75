//! One module per subcommand.

pub mod audit;
pub mod check_config;
pub mod grant;
pub mod policy;
pub mod recordings;
pub mod review;
pub mod serve;
pub mod services;
pub mod session;
pub mod user;

use std::path::{Path, PathBuf};

use anyhow::Context;
use gatehouse_core::Config;

/// The default config file, used when present in the current directory.
pub const DEFAULT_CONFIG: &str = "gatehouse.toml";

/// Where the configuration comes from: a file, or the quick-start.
pub enum ConfigSource {
    File(PathBuf),
    QuickStart,
}

pub fn config_source(explicit: Option<&Path>) -> ConfigSource {
    match explicit {
        Some(p) => ConfigSource::File(p.to_path_buf()),
        None if Path::new(DEFAULT_CONFIG).is_file() => {
            ConfigSource::File(PathBuf::from(DEFAULT_CONFIG))
        }
        None => ConfigSource::QuickStart,
    }
}

pub fn load_config(source: &ConfigSource) -> anyhow::Result<Config> {
    match source {
        ConfigSource::File(p) => Ok(Config::load(p)?),
        ConfigSource::QuickStart => {
            Config::quickstart().context("building the quick-start configuration")
        }
    }
}
