//! Session channels: collect the client's pty/env, authorize, start the recording, open the
//! target channel and relay both directions with flow control, recording as it goes.
//!
//! Threat: a session that bypasses policy or recording, unbounded buffering when one side is
//! slow, and sessions outliving a revocation. Mitigation: nothing reaches the target before a
//! [`Permit`](crate::Permit) exists and the recording header is on disk; data moves through
//! russh's window-aware writers (a full window stops reading from the other side, whose
//! bounded channel then stops its connection); cancellation (revocation, shutdown, recording
//! failure, idle timeout) ends the relay.

use std::sync::Arc;
use std::sync::Mutex;

use bytes::Bytes;
use russh::client;
use russh::server::{self, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf, Pty};

use crate::auth;
use crate::backend::{BastionEvent, SshAction};
use crate::error::TargetError;
use crate::handler::env_allowed;
use crate::recording::{Caps, Header, Recorder};
use crate::scp::{self, ScpTracker};
use crate::session::Conn;
use crate::sftp::SftpTracker;

/// Output and input kept in an exec recording; beyond it only the byte count is kept.
pub const EXEC_RECORD_CAP: u64 = 1024 * 1024;
/// Environment variables accepted per channel.
const MAX_ENV: usize = 32;
/// Longest environment value accepted.
const MAX_ENV_VALUE: usize = 1024;
/// The refusal shown for an unknown target and for a policy denial alike.
pub const DENIED: &str = "gatehouse: access denied\r\n";

struct PtyReq {
    term: String,
    cols: u32,
    rows: u32,
    pix_w: u32,
    pix_h: u32,
    modes: Vec<(Pty, u32)>,
}

enum Kind {
    Shell,
    Exec(String),
    Sftp,
}

impl Kind {
    fn action(&self) -> SshAction {
        match self {
            Kind::Shell => SshAction::Ssh,
            Kind::Exec(cmd) if scp::scp_command(cmd).is_some() => SshAction::Sftp,
            Kind::Exec(_) => SshAction::Ssh,
            Kind::Sftp => SshAction::Sftp,
        }
    }

    fn describe(&self) -> String {
        match self {
            Kind::Shell => "shell".into(),
            Kind::Exec(cmd) if scp::scp_command(cmd).is_some() => format!("scp: {cmd}"),
            Kind::Exec(cmd) => format!("exec: {cmd}"),
            Kind::Sftp => "subsystem: sftp".into(),
        }
    }
}

mod pump;
use pump::Observer;

/// Tells the client why, then ends the channel.
async fn refuse(handle: &server::Handle, id: ChannelId, tx: &ChannelWriteHalf<Msg>, message: &str) {
    let _ = handle.channel_success(id).await;
    let _ = tx
        .extended_data_bytes(1, Bytes::from(message.to_string()))
        .await;
    let _ = tx.exit_status(1).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

pub(crate) async fn session_channel(
    conn: Arc<Conn>,
    channel: Channel<Msg>,
    handle: server::Handle,
) {
    let id = channel.id();
    let (mut rx, tx) = channel.split();
    let mut pty: Option<PtyReq> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let kind = loop {
        let msg = tokio::select! {
            _ = conn.cancel.cancelled() => { let _ = tx.close().await; return; }
            m = rx.wait() => m,
        };
        match msg {
            None | Some(ChannelMsg::Close) => return,
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            }) => {
                pty = Some(PtyReq {
                    term,
                    cols: col_width,
                    rows: row_height,
                    pix_w: pix_width,
                    pix_h: pix_height,
                    modes: terminal_modes,
                });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if env_allowed(&variable_name)
                    && env.len() < MAX_ENV
                    && variable_value.len() <= MAX_ENV_VALUE
                {
                    env.push((variable_name, variable_value));
                }
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            }) => {
                if let Some(p) = pty.as_mut() {
                    (p.cols, p.rows, p.pix_w, p.pix_h) =
                        (col_width, row_height, pix_width, pix_height);
                }
            }
            Some(ChannelMsg::Exec { command, .. }) => {
                break Kind::Exec(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestShell { .. }) => break Kind::Shell,
            Some(ChannelMsg::RequestSubsystem { name, .. }) => {
                if name == "sftp" {
                    break Kind::Sftp;
                }
                let _ = handle.channel_failure(id).await;
            }
            Some(_) => {}
        }
    };
    let Some(authn) = conn.auth.get() else {
        let _ = tx.close().await;
        return;
    };
    let backend = &conn.shared.backend;
    let action = kind.action();
    let Some(dest) = authn.dest.as_ref() else {
        // Unknown target: answered exactly like a policy denial.
        let sel = &authn.selection;
        let object = format!("ssh:{}/{}", sel.target, sel.login.as_deref().unwrap_or(""));
        let event = BastionEvent::AccessDenied {
            user: authn.user.clone(),
            client: conn.client,
            object,
            action,
            rule: None,
        };
        if let Err(e) = backend.audit(event).await {
            tracing::error!(error = %e, "cannot audit a denial");
        }
        refuse(&handle, id, &tx, DENIED).await;
        return;
    };
    let permit = match auth::authorize(backend.as_ref(), dest, action, conn.client).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::info!(user = %dest.user, target = %dest.target.name, action = action.as_str(), decision = "deny", "ssh access denied");
            refuse(&handle, id, &tx, DENIED).await;
            return;
        }
        Err(e) => {
            tracing::error!(error = %crate::error_chain(&e), "policy unavailable; denying");
            refuse(&handle, id, &tx, DENIED).await;
            return;
        }
    };

    let recording_id = crate::recording::new_id();
    let (cols, rows, term) = pty
        .as_ref()
        .map_or((80, 24, None), |p| (p.cols, p.rows, Some(p.term.clone())));
    let command = match &kind {
        Kind::Exec(c) => Some(c.clone()),
        Kind::Sftp => Some("sftp-server".into()),
        Kind::Shell => None,
    };
    let title = format!(
        "{}:{}@{} {}",
        dest.user,
        dest.login,
        dest.target.name,
        kind.describe()
    );
    let header = Header::new(cols, rows, title, command, term);
    let caps = match &kind {
        Kind::Shell => Caps::NONE,
        _ => Caps {
            output: Some(EXEC_RECORD_CAP),
            input: Some(EXEC_RECORD_CAP),
        },
    };
    let (rec, rec_task) = match Recorder::create(
        &conn.shared.recording_dir,
        &recording_id,
        &header,
        caps,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %crate::error_chain(&e), "recording unavailable; session refused");
            refuse(
                &handle,
                id,
                &tx,
                "gatehouse: session refused: the session recording cannot be written\r\n",
            )
            .await;
            return;
        }
    };
    let started = BastionEvent::SessionStarted {
        session_id: conn.id.clone(),
        recording_id: recording_id.clone(),
        user: dest.user.clone(),
        client: conn.client,
        target: dest.target.name.clone(),
        login: dest.login.clone(),
        action,
        kind: kind.describe(),
    };
    let reason = match backend.audit(started).await {
        Err(e) => {
            tracing::error!(error = %e, "cannot audit a session start; refusing it");
            refuse(
                &handle,
                id,
                &tx,
                "gatehouse: session refused: audit unavailable\r\n",
            )
            .await;
            "audit unavailable".to_string()
        }
        Ok(()) => {
            tracing::info!(user = %dest.user, target = %dest.target.name, recording = %recording_id, kind = %kind.describe(), "ssh session started");
            match start_target(&conn, &permit, &kind, pty.as_ref(), &env).await {
                Err(e) => {
                    let msg = match e {
                        TargetError::HostKeyMismatch { .. } => {
                            "gatehouse: the target's host key does not match the pinned key; connection refused and reported\r\n"
                        }
                        _ => "gatehouse: the target is unreachable\r\n",
                    };
                    let _ = rec.note(msg.trim_end()).await;
                    refuse(&handle, id, &tx, msg).await;
                    "target refused".to_string()
                }
                Ok(target_channel) => {
                    if let Kind::Exec(cmd) = &kind {
                        let _ = rec.note(&format!("exec {cmd}")).await;
                    }
                    let observer = match &kind {
                        Kind::Sftp => Observer::Sftp(Mutex::new(SftpTracker::new())),
                        Kind::Exec(cmd) => match scp::scp_command(cmd) {
                            Some((dir, _)) => Observer::Scp(Mutex::new(ScpTracker::new(dir))),
                            None => Observer::Plain,
                        },
                        Kind::Shell => Observer::Plain,
                    };
                    let r =
                        pump::relay(&conn, &handle, id, rx, tx, target_channel, &rec, &observer)
                            .await;
                    r.to_string()
                }
            }
        }
    };
    drop(rec);
    if let Err(e) = rec_task.finish().await {
        tracing::error!(error = %crate::error_chain(&e), recording = %recording_id, "recording incomplete");
    }
    let ended = BastionEvent::SessionEnded {
        session_id: conn.id.clone(),
        recording_id,
        user: dest.user.clone(),
        target: dest.target.name.clone(),
        reason,
    };
    if let Err(e) = backend.audit(ended).await {
        tracing::error!(error = %e, "cannot audit a session end");
    }
}

async fn start_target(
    conn: &Conn,
    permit: &crate::Permit,
    kind: &Kind,
    pty: Option<&PtyReq>,
    env: &[(String, String)],
) -> Result<Channel<client::Msg>, TargetError> {
    let target = conn.target(permit).await?;
    let ch = target.open_session(permit).await?;
    if let Some(p) = pty {
        ch.request_pty(false, &p.term, p.cols, p.rows, p.pix_w, p.pix_h, &p.modes)
            .await
            .map_err(TargetError::Channel)?;
    }
    for (k, v) in env {
        ch.set_env(false, k.as_str(), v.as_str())
            .await
            .map_err(TargetError::Channel)?;
    }
    match kind {
        Kind::Shell => ch.request_shell(true).await,
        Kind::Exec(cmd) => ch.exec(true, cmd.as_bytes()).await,
        Kind::Sftp => ch.request_subsystem(true, "sftp").await,
    }
    .map_err(TargetError::Channel)?;
    Ok(ch)
}
