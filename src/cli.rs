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
    /// Just-in-time grants: a group or an object for a bounded time, with a reason.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Who can reach what (by policy line, group and grant), and what was used when.
    AccessReview(AccessReview),
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
    /// Lock a local or SSO user: no new login, and their live sessions are revoked.
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
    /// Check the chain: any change, removal (at the tail too), insertion or reorder is
    /// reported with the record or segment (exit 1). With DIR: an exported copy, checked with
    /// the public key alone (no config file, no secret).
    Verify {
        /// An exported copy (`audit export -o DIR`); without it, the live log.
        dir: Option<PathBuf>,
        /// The published public key (PEM); default: the export's own public-key.pem, or the
        /// live log's `<signing_key_file>.pub`.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Also compare the live log with its copy in the Redis audit stream (redis:// store).
        #[arg(long)]
        stream: bool,
    },
    /// Copy the records of a time window, with what an outside auditor needs to verify them
    /// without any secret (checkpoints, public key, signed manifest, README).
    Export {
        /// RFC 3339 time or a duration back from now (`24h`, `90d`).
        #[arg(long, value_name = "T")]
        since: String,
        #[arg(long, value_name = "T")]
        until: String,
        /// Directory to create (must be new or empty).
        #[arg(short = 'o', long = "out", value_name = "DIR")]
        out: PathBuf,
    },
    /// Audit records matching every filter given, newest last.
    Search(AuditSearch),
    /// Print the public key (PEM) that verifies the log's checkpoints and exports.
    PublicKey,
}

#[derive(Debug, clap::Args)]
pub struct AuditSearch {
    #[arg(long, value_name = "U")]
    pub user: Option<String>,
    /// Event kind, e.g. `access_denied`, `login_success`, `lockout`.
    #[arg(long, value_name = "KIND")]
    pub event: Option<String>,
    /// RFC 3339 time or a duration back from now (`24h`, `90d`).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// SSH target.
    #[arg(long, value_name = "T")]
    pub target: Option<String>,
    /// Web app.
    #[arg(long, value_name = "A")]
    pub app: Option<String>,
    /// `allow` or `deny`.
    #[arg(long, value_name = "D")]
    pub decision: Option<String>,
    #[arg(long, value_name = "ID")]
    pub incident_id: Option<String>,
    /// Client address.
    #[arg(long, value_name = "ADDR")]
    pub client: Option<String>,
    /// Only the newest N records.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// The records themselves, one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Give USER a group (`group:NAME`) or an object pattern (`app:wiki/*`,
    /// `ssh:db-prod-1/deploy`) until it expires; prints the grant id.
    Add {
        user: String,
        /// `group:NAME`, or an object pattern as in the policy file.
        #[arg(value_name = "ROLE_OR_OBJECT")]
        object: String,
        /// Action pattern (`GET|HEAD`, `ssh|sftp`, `port-forward`); default `*`. Not for a
        /// group (its own lines say what it may do).
        #[arg(long, value_name = "A")]
        action: Option<String>,
        /// How long, e.g. `4h`, `2d` (at most `[grants] max_duration`, default 7d).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (required): the ticket, the task. Recorded with every access it allows.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Live grants; `--json`: one object per line.
    List {
        #[arg(long)]
        json: bool,
    },
    /// End a grant now, on every instance (what only it allowed ends too).
    Revoke { id: String },
}

#[derive(Debug, clap::Args)]
pub struct AccessReview {
    /// The window: access not used since then is reported unused (RFC 3339 or a duration
    /// back from now).
    #[arg(long, value_name = "T", default_value = "90d")]
    pub since: String,
    /// One JSON object per row (user, object, action, via, last_used, ...).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List live sessions (with memory://, those of the running `serve`).
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
