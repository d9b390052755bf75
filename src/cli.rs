//! The command line: part of the product's contract (see README).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Zero-trust access gateway and SSH bastion"
)]
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
    /// Manage local users (users.toml).
    #[command(subcommand)]
    User(UserCommand),
    /// Explain policy decisions.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Live web and SSH sessions.
    #[command(subcommand)]
    Session(SessionCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a local user and print the TOTP enrolment (otpauth:// URI and QR code).
    Add {
        name: String,
        /// Groups, comma separated (each becomes the policy subject `group:NAME`).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// File with the user's OpenSSH public key(s), one per line.
        #[arg(long, value_name = "FILE")]
        ssh_key: Option<PathBuf>,
        /// Read the password from the first line of stdin (never from the command line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List local users and the SSO users seen so far, with their provider (no secrets).
    List,
    /// Lock a local or SSO user: no new login; with Redis, live sessions are revoked too.
    Lock { name: String },
    /// Replace a local user's TOTP secret and print the new enrolment; for an SSO user,
    /// remove it (a new authenticator is enrolled at its next sign-in).
    TotpReset { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print `allow` or `deny` and the deciding rule; exit 0 on allow, 1 on deny.
    Check {
        user: String,
        object: String,
        action: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain: any change, removal or reorder is reported (exit 1).
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List live sessions (Redis store; memory:// sessions live only inside `serve`).
    List,
    /// End every session of USER on every instance, live connections included.
    Revoke { user: String },
}
