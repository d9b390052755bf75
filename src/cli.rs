//! The command line: part of the product's contract (see README).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about = "Zero-trust access gateway and SSH bastion")]
pub struct Cli {
    /// Config file (default: gatehouse.toml in the current directory when it exists, else the
    /// quick-start configuration).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the bastion (the default when no command is given).
    Serve,
    /// Validate the config and policy files without binding a port; exit 1 on error.
    CheckConfig,
}
