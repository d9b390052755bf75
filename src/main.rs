//! The `gatehouse` binary: runtime, tracing, exit codes. Each command is a thin layer over
//! the library crates.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod control;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: per-thread free lists without glibc's arena locks; the proxy allocates and frees
/// small buffers on every request, often on different worker threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // rustls picks its crypto provider at run time; there is exactly one in this tree.
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("gatehouse: a TLS crypto provider was already installed");
        return ExitCode::from(70);
    }
    let result = match cli.command.unwrap_or(cli::Command::Serve) {
        cli::Command::Serve => commands::serve::run(cli.config.as_deref()),
        cli::Command::CheckConfig => commands::check_config::run(cli.config.as_deref()),
        cli::Command::User(c) => commands::user::run(cli.config.as_deref(), c),
        cli::Command::Policy(c) => commands::policy::run(cli.config.as_deref(), c),
        cli::Command::Audit(c) => commands::audit::run(cli.config.as_deref(), c),
        cli::Command::Session(c) => commands::session::run(cli.config.as_deref(), c),
        cli::Command::Recordings(c) => commands::recordings::run(cli.config.as_deref(), c),
        cli::Command::Grant(c) => commands::grant::run(cli.config.as_deref(), c),
        cli::Command::AccessReview(c) => commands::review::run(cli.config.as_deref(), c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatehouse: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
