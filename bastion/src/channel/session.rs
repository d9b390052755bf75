//! A session channel: collect the client's requests, authorize them with core's policy,
//! start the recording, audit the start, open the target channel with the permit and relay
//! both ways, then finish the recording and audit the end with the exit status.
//!
//! Threat: a session that bypasses policy, recording or audit, or one that goes unrecorded
//! past some size. Mitigation: nothing reaches the target before core's `Permit` exists,
//! the recording's header is on disk and the `ssh_session_start` record is written; a
//! recording that cannot be created refuses the session (audited as a refusal), one that
//! fails later ends it. A session with a terminal (shell, or exec with `-t`) is recorded in
//! full, always; one without is recorded in full unless `[recording] stream_cap` is set, and
//! reaching that cap is audited as an alert.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_core::audit::{AuditEvent, SshRefusal};
use gatehouse_core::policy::Permit;
use gatehouse_core::recording::typed::is_shell_reading_input;
use gatehouse_core::recording::{
    Header, Mode, Recorder, RecordingId, RecordingMeta, RecordingTask,
};
use russh::server::{self, Msg};
use russh::{Channel, ChannelId, ChannelWriteHalf};

use super::observer::Observer;
use super::relay::{Outcome, Relay, SessionNames};
use super::request::{self, Kind, Requested};
use crate::conn::Conn;
use crate::error::TargetError;

/// The refusal shown for an unknown target and for a policy denial alike.
pub const DENIED: &str = "gatehouse: access denied\r\n";

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

/// Runs one session channel to its end.
pub(crate) async fn run(conn: Arc<Conn>, channel: Channel<Msg>, handle: server::Handle) {
    let id = channel.id();
    let (mut rx, tx) = channel.split();
    let Some(req) = request::collect(&mut rx, &handle, id, &conn.ending).await else {
        let _ = tx.close().await;
        return;
    };
    let Ok(permit) = conn.authorize(req.kind.action()).await else {
        refuse(&handle, id, &tx, DENIED).await;
        return;
    };
    // Allowed only by a grant: the session ends when the grant does.
    let grant = conn.watch_grant(&permit);
    let (rec, rec_task) = match start_recording(&conn, &req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %gatehouse_core::error_chain(&e), "recording unavailable; session refused");
            conn.refused(
                SshRefusal::RecordingUnavailable,
                Some(gatehouse_core::error_chain(&e)),
            )
            .await;
            let msg = "gatehouse: session refused: the session recording cannot be written\r\n";
            refuse(&handle, id, &tx, msg).await;
            return;
        }
    };
    let names = names(&conn, rec.id());
    let started = AuditEvent::SshSessionStart {
        user: names.user.clone(),
        target: names.target.clone(),
        login: names.login.clone(),
        recording_id: names.recording_id.clone(),
        request: req.kind.request(),
        command: req.kind.command().map(str::to_string),
        action: permit.action().to_string(),
        context: conn.context(),
    };
    let outcome = if let Err(e) = conn.audit(started).await {
        tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit a session start; refusing it");
        refuse(
            &handle,
            id,
            &tx,
            "gatehouse: session refused: audit unavailable\r\n",
        )
        .await;
        Outcome {
            reason: "audit unavailable",
            ..Outcome::default()
        }
    } else {
        tracing::info!(user = %names.user, target = %names.target, recording = %names.recording_id, kind = %req.kind.describe(), "ssh session started");
        match open_target(&conn, &permit, &req).await {
            Err(e) => {
                let msg = match e {
                    TargetError::HostKeyMismatch { .. } => {
                        "gatehouse: the target's host key does not match the pinned key; connection refused and reported\r\n"
                    }
                    _ => "gatehouse: the target is unreachable\r\n",
                };
                let _ = rec.note(msg.trim_end()).await;
                refuse(&handle, id, &tx, msg).await;
                Outcome {
                    reason: "target refused",
                    ..Outcome::default()
                }
            }
            Ok(target) => {
                if let Kind::Exec(cmd) = &req.kind {
                    let _ = rec.note(&format!("exec {cmd}")).await;
                }
                let relay = Relay {
                    conn: &conn,
                    handle: &handle,
                    id,
                    rec: &rec,
                    observer: Observer::for_kind(&req.kind),
                    names: &names,
                };
                relay.run(rx, tx, target, grant).await
            }
        }
    };
    drop(rec);
    end(&conn, rec_task, names, outcome).await;
}

fn names(conn: &Conn, recording_id: &RecordingId) -> SessionNames {
    let (user, target, login) = match conn.auth.get() {
        Some(a) => (a.user(), a.target(), a.login()),
        None => ("", "", ""),
    };
    SessionNames {
        user: user.to_string(),
        target: target.to_string(),
        login: login.to_string(),
        recording_id: recording_id.to_string(),
    }
}

/// Creates the recording (its header on disk) for a session about to start.
async fn start_recording(
    conn: &Conn,
    req: &Requested,
) -> Result<(Recorder, RecordingTask), gatehouse_core::RecordingError> {
    let (user, target, login) = match conn.auth.get() {
        Some(a) => (a.user(), a.target(), a.login()),
        None => ("", "", ""),
    };
    let mut meta = RecordingMeta::ssh(RecordingId::generate()?, user, target);
    meta.login = Some(login.to_string());
    meta.session = conn.context().session;
    meta.request = Some(request_name(req.kind.request()).to_string());
    meta.command = req.kind.command().map(str::to_string);
    let (cols, rows, term) = req
        .pty
        .as_ref()
        .map_or((80, 24, None), |p| (p.cols, p.rows, Some(p.term.clone())));
    let command = match &req.kind {
        Kind::Exec(c) => Some(c.clone()),
        Kind::Sftp => Some("sftp-server".into()),
        Kind::Shell => None,
    };
    let title = format!("{user}:{login}@{target} {}", req.kind.describe());
    let header = Header::new(cols, rows, title, command, term);
    let mode = match (&req.kind, &req.pty) {
        (Kind::Sftp, _) => Mode::Files,
        (Kind::Exec(cmd), _) if crate::scp::scp_command(cmd).is_some() => Mode::Files,
        // A terminal: in full, always (`ssh -t target bash` too).
        (_, Some(p)) => Mode::Terminal {
            cols: p.cols,
            rows: p.rows,
        },
        (Kind::Shell, None) => Mode::Stream { script: true },
        (Kind::Exec(cmd), None) => Mode::Stream {
            script: is_shell_reading_input(cmd),
        },
    };
    conn.shared
        .services
        .recordings
        .start(meta, &header, mode)
        .await
}

/// The audit vocabulary's name of a request, for the recording's metadata.
fn request_name(r: gatehouse_core::audit::SshRequest) -> &'static str {
    use gatehouse_core::audit::SshRequest;
    match r {
        SshRequest::Shell => "shell",
        SshRequest::Exec => "exec",
        SshRequest::Scp => "scp",
        SshRequest::Subsystem => "subsystem",
    }
}

/// The target's channel, started as asked, with the permit.
async fn open_target(
    conn: &Conn,
    permit: &Permit,
    req: &Requested,
) -> Result<Channel<russh::client::Msg>, TargetError> {
    let target = conn.target(permit).await?;
    target
        .start_session(permit, req.kind.start(), req.pty.as_ref(), &req.env)
        .await
}

/// Finishes the recording and records the end of the session.
async fn end(conn: &Conn, rec_task: RecordingTask, names: SessionNames, outcome: Outcome) {
    if let Err(e) = rec_task.finish().await {
        tracing::error!(error = %gatehouse_core::error_chain(&e), recording = %names.recording_id, "recording incomplete");
    }
    let ended = AuditEvent::SshSessionEnd {
        user: names.user,
        target: names.target,
        login: names.login,
        recording_id: names.recording_id,
        exit_status: outcome.exit_status,
        exit_signal: outcome.exit_signal,
        reason: outcome.reason.to_string(),
        context: conn.context(),
    };
    if let Err(e) = conn.audit(ended).await {
        tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit a session end");
    }
}
