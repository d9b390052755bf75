//! What a session channel asks for before it starts: a terminal, environment variables, then
//! a shell, an exec or the SFTP subsystem.
//!
//! Threat: environment variables that change the target's behaviour (`LD_PRELOAD`, `PATH`)
//! and unbounded requests. Mitigation: only `LANG`, `LC_*` and `TERM` pass, at most
//! [`MAX_ENV`] of them, each value at most [`MAX_ENV_VALUE`] bytes; other subsystems are
//! refused.

use gatehouse_core::audit::SshRequest;
use russh::server;
use russh::{ChannelId, ChannelMsg, ChannelReadHalf};

use crate::auth::SshAction;
use crate::registry::Ending;
use crate::scp;
use crate::target::{Pty, Start};

/// Environment variables accepted per channel.
pub const MAX_ENV: usize = 32;
/// Longest environment value accepted.
pub const MAX_ENV_VALUE: usize = 1024;

/// Environment variables passed to targets; everything else is refused.
pub(crate) fn env_allowed(name: &str) -> bool {
    name == "LANG" || name == "TERM" || (name.starts_with("LC_") && name.len() <= 32)
}

/// What the channel runs.
pub(crate) enum Kind {
    Shell,
    Exec(String),
    Sftp,
}

impl Kind {
    /// The policy action: file transfer for SFTP and SCP, `ssh` otherwise.
    pub fn action(&self) -> SshAction {
        match self {
            Kind::Exec(cmd) if scp::scp_command(cmd).is_some() => SshAction::Sftp,
            Kind::Shell | Kind::Exec(_) => SshAction::Ssh,
            Kind::Sftp => SshAction::Sftp,
        }
    }

    /// What the audit record calls it.
    pub fn request(&self) -> SshRequest {
        match self {
            Kind::Shell => SshRequest::Shell,
            Kind::Exec(cmd) if scp::scp_command(cmd).is_some() => SshRequest::Scp,
            Kind::Exec(_) => SshRequest::Exec,
            Kind::Sftp => SshRequest::Subsystem,
        }
    }

    /// The exec command line, or the subsystem's name.
    pub fn command(&self) -> Option<&str> {
        match self {
            Kind::Shell => None,
            Kind::Exec(cmd) => Some(cmd),
            Kind::Sftp => Some("sftp"),
        }
    }

    /// What is started on the target.
    pub fn start(&self) -> Start<'_> {
        match self {
            Kind::Shell => Start::Shell,
            Kind::Exec(cmd) => Start::Exec(cmd),
            Kind::Sftp => Start::Subsystem("sftp"),
        }
    }

    /// For recording titles and logs.
    pub fn describe(&self) -> String {
        match self {
            Kind::Shell => "shell".into(),
            Kind::Exec(cmd) if scp::scp_command(cmd).is_some() => format!("scp: {cmd}"),
            Kind::Exec(cmd) => format!("exec: {cmd}"),
            Kind::Sftp => "subsystem: sftp".into(),
        }
    }
}

/// Everything the client asked for before the start.
pub(crate) struct Requested {
    pub kind: Kind,
    pub pty: Option<Pty>,
    pub env: Vec<(String, String)>,
}

/// Reads the channel's requests until it asks for a shell, an exec or SFTP. `None` when the
/// channel closes first or the connection ends.
pub(crate) async fn collect(
    rx: &mut ChannelReadHalf,
    handle: &server::Handle,
    id: ChannelId,
    ending: &Ending,
) -> Option<Requested> {
    let mut pty: Option<Pty> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    loop {
        let msg = tokio::select! {
            _ = ending.ended() => return None,
            m = rx.wait() => m,
        };
        let kind = match msg? {
            ChannelMsg::Close => return None,
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                pty = Some(Pty {
                    term,
                    cols: col_width,
                    rows: row_height,
                    pix_w: pix_width,
                    pix_h: pix_height,
                    modes: terminal_modes,
                });
                continue;
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => {
                if env_allowed(&variable_name)
                    && env.len() < MAX_ENV
                    && variable_value.len() <= MAX_ENV_VALUE
                {
                    env.push((variable_name, variable_value));
                }
                continue;
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(p) = pty.as_mut() {
                    (p.cols, p.rows, p.pix_w, p.pix_h) =
                        (col_width, row_height, pix_width, pix_height);
                }
                continue;
            }
            ChannelMsg::Exec { command, .. } => {
                Kind::Exec(String::from_utf8_lossy(&command).into_owned())
            }
            ChannelMsg::RequestShell { .. } => Kind::Shell,
            ChannelMsg::RequestSubsystem { name, .. } if name == "sftp" => Kind::Sftp,
            ChannelMsg::RequestSubsystem { .. } => {
                let _ = handle.channel_failure(id).await;
                continue;
            }
            _ => continue,
        };
        return Some(Requested { kind, pty, env });
    }
}
