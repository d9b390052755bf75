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
    /// Recorded SSH and web sessions: list, replay, export (every read is audited).
    #[command(subcommand)]
    Recordings(RecordingsCommand),
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
    /// List local users (no secrets).
    List,
    /// Lock a user: no new login; with Redis, live sessions are revoked too.
    Lock { name: String },
    /// Replace a user's TOTP secret and print the new enrolment.
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

#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// Recorded sessions, oldest first; nothing found prints nothing (exit 0).
    List {
        #[arg(long)]
        user: Option<String>,
        /// SSH target name.
        #[arg(long)]
        target: Option<String>,
        /// Web app name.
        #[arg(long)]
        app: Option<String>,
        /// Sessions still running at or after this time: RFC 3339 or a duration back (`24h`).
        #[arg(long)]
        since: Option<String>,
        /// Sessions started at or before this time: RFC 3339 or a duration back.
        #[arg(long)]
        until: Option<String>,
        /// Sessions in which a command containing TEXT was typed or executed.
        #[arg(long, value_name = "TEXT")]
        command: Option<String>,
        /// Sessions in which a file whose path contains NAME was transferred.
        #[arg(long, value_name = "NAME")]
        file: Option<String>,
        /// JSON lines: id, kind, user, target or app, started_at, ended_at (null while live).
        #[arg(long)]
        json: bool,
    },
    /// Replays an SSH session in this terminal (idle gaps capped at 2 s); a web session's
    /// requests are printed.
    Play {
        id: String,
        /// Playback speed (2 = twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Writes a plain asciicast v2 file (SSH, decrypted) or the requests as JSON lines (web).
    Export {
        id: String,
        /// Output file (default: stdout).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
}
