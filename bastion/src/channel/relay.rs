//! The relay of one session channel: client and target directions polled together, each
//! forwarding through russh's window-aware writers (a full window stops that direction, and
//! its bounded queue then slows its connection), recording or observing as it goes, until the
//! target closes, the client closes, or the session ends (revocation, time limits, shutdown,
//! recording or audit failure, idle timeout).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_core::audit::{AuditEvent, new_incident_id};
use gatehouse_core::policy::{GrantWatch, lapsed};
use gatehouse_core::recording::{FileTransfer, Kept, Recorder, RecordingError};
use russh::client;
use russh::server::{self, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use super::observer::{Observer, Seen};
use crate::conn::Conn;

/// Longest time the target's EOF waits for its exit status (see [`Relay::down`]).
const EOF_HOLD: Duration = Duration::from_secs(2);

/// Who and what a session channel is, for its audit records.
pub(crate) struct SessionNames {
    pub user: String,
    pub target: String,
    pub login: String,
    pub recording_id: String,
}

/// How a relayed session ended.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub reason: &'static str,
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
}

enum UpEnd {
    /// The client sent EOF; wait for the target to finish.
    Eof,
    /// The client closed the channel (or the connection went away).
    Closed,
    /// The session must end (recording or audit failed).
    Failed(&'static str),
}

/// When either direction last moved, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// One session channel's relay.
pub(crate) struct Relay<'a> {
    pub conn: &'a Conn,
    pub handle: &'a server::Handle,
    pub id: ChannelId,
    pub rec: &'a Recorder,
    pub observer: Observer,
    pub names: &'a SessionNames,
}

impl Relay<'_> {
    /// Relays until the session ends; closes both channels.
    pub async fn run(
        &self,
        crx: ChannelReadHalf,
        ctx: ChannelWriteHalf<Msg>,
        target: Channel<client::Msg>,
        grant: Option<GrantWatch>,
    ) -> Outcome {
        let (trx, ttx) = target.split();
        let activity = Activity::new();
        let exit = Mutex::new(Outcome::default());
        let up = self.up(crx, &ttx, &activity);
        let down = self.down(trx, &ctx, &activity, &exit);
        let reason = self.supervise(up, down, &ctx, &activity, grant).await;
        let _ = ttx.close().await;
        let _ = ctx.close().await;
        let mut outcome = exit.into_inner().unwrap_or_default();
        outcome.reason = reason;
        outcome
    }

    async fn supervise(
        &self,
        up: impl Future<Output = UpEnd>,
        down: impl Future<Output = &'static str>,
        ctx: &ChannelWriteHalf<Msg>,
        activity: &Activity,
        grant: Option<GrantWatch>,
    ) -> &'static str {
        let grant_lapsed = lapsed(grant);
        tokio::pin!(up, down, grant_lapsed);
        let idle = self.conn.shared.limits.idle_timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle));
        let rec_failed = self.rec.failed();
        let mut up_done = false;
        let (reason, notice): (&'static str, Bytes) = loop {
            tokio::select! {
                r = &mut down => return r,
                r = &mut up, if !up_done => {
                    up_done = true;
                    match r {
                        UpEnd::Eof => {}
                        UpEnd::Closed => return "client closed",
                        UpEnd::Failed(reason) => {
                            break (reason, Bytes::from_static(b"\r\ngatehouse: session ended: it cannot be recorded or audited\r\n"));
                        }
                    }
                }
                _ = self.conn.ending.ended() => {
                    break ("ended by the bastion (revoked, time limit or shutdown)", Bytes::from_static(b"\r\ngatehouse: session ended by the bastion\r\n"));
                }
                lapse = &mut grant_lapsed => {
                    Box::pin(self.conn.grant_ended(&lapse)).await;
                    break (lapse.reason.session_end(), Bytes::from(format!("\r\n{}\r\n", lapse.notice())));
                }
                _ = rec_failed.cancelled() => {
                    break ("recording failed", Bytes::from_static(b"\r\ngatehouse: session ended: the recording cannot be written\r\n"));
                }
                _ = tick.tick() => {
                    if activity.idle_for() >= idle {
                        break ("idle timeout", Bytes::from_static(b"\r\ngatehouse: session closed after inactivity\r\n"));
                    }
                }
            }
        };
        let _ = ctx.extended_data_bytes(1, notice).await;
        reason
    }

    /// What became of recorded bytes: a cap reached is audited as an alert (and the
    /// session ends if that record cannot be written); a recording failure ends it.
    async fn kept(&self, kept: Result<Kept, RecordingError>) -> Result<(), &'static str> {
        let kept = kept.map_err(|_| "recording failed")?;
        let Kept::CapReached { direction, cap } = kept else {
            return Ok(());
        };
        let n = self.names;
        let incident_id = new_incident_id();
        tracing::warn!(user = %n.user, target = %n.target, recording = %n.recording_id, direction = direction.as_str(), cap, incident_id = %incident_id, "recording cap reached: the rest of this direction is not recorded");
        let event = AuditEvent::RecordingCapped {
            user: n.user.clone(),
            target: n.target.clone(),
            login: n.login.clone(),
            recording_id: n.recording_id.clone(),
            direction: direction.as_str().to_string(),
            cap_bytes: cap,
            incident_id,
            context: self.conn.context(),
        };
        // Boxed, as every rare step of the relay: inline, its future would size the session's
        // task, which an idle session holds for hours.
        if let Err(e) = Box::pin(self.conn.audit(event)).await {
            tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit a recording cap; ending the session");
            return Err("audit unavailable");
        }
        Ok(())
    }

    /// Records what an observer saw; `Err` names why the session must end.
    async fn observed(&self, seen: Vec<Seen>) -> Result<(), &'static str> {
        for s in seen {
            if !s.note.is_empty() && self.rec.note(&s.note).await.is_err() {
                return Err("recording failed");
            }
            let Some(t) = s.transfer else { continue };
            let transfer = FileTransfer {
                protocol: t.protocol,
                direction: t.direction,
                path: t.path.clone(),
                bytes: t.bytes,
            };
            if self.rec.transfer(transfer).await.is_err() {
                return Err("recording failed");
            }
            let n = self.names;
            let event = AuditEvent::SshFileTransfer {
                user: n.user.clone(),
                target: n.target.clone(),
                login: n.login.clone(),
                recording_id: n.recording_id.clone(),
                protocol: t.protocol,
                path: t.path,
                direction: t.direction,
                bytes: t.bytes,
                context: self.conn.context(),
            };
            if let Err(e) = Box::pin(self.conn.audit(event)).await {
                tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit a file transfer; ending the session");
                return Err("audit unavailable");
            }
        }
        Ok(())
    }

    /// Client to target.
    async fn up(
        &self,
        mut crx: ChannelReadHalf,
        ttx: &ChannelWriteHalf<client::Msg>,
        activity: &Activity,
    ) -> UpEnd {
        loop {
            match crx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    activity.touch();
                    let kept = if self.observer.is_plain() {
                        self.kept(self.rec.input(data.clone()).await).await
                    } else {
                        self.observed(self.observer.client_bytes(&data)).await
                    };
                    if let Err(reason) = kept {
                        return UpEnd::Failed(reason);
                    }
                    if ttx.data_bytes(data).await.is_err() {
                        return UpEnd::Closed;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = ttx.eof().await;
                    return UpEnd::Eof;
                }
                Some(ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                }) => {
                    activity.touch();
                    let _ = self.rec.resize(col_width, row_height).await;
                    let _ = ttx
                        .window_change(col_width, row_height, pix_width, pix_height)
                        .await;
                }
                Some(ChannelMsg::Signal { signal }) => {
                    let _ = ttx.signal(signal).await;
                }
                None | Some(ChannelMsg::Close) => return UpEnd::Closed,
                Some(_) => {}
            }
        }
    }

    /// Target to client.
    ///
    /// The target's EOF is held until its exit status (or close) follows, for at most
    /// [`EOF_HOLD`]: a client that has sent and received EOF may close the channel at once
    /// (OpenSSH ControlMaster does), and an exit status arriving after that close is lost.
    async fn down(
        &self,
        mut trx: ChannelReadHalf,
        ctx: &ChannelWriteHalf<Msg>,
        activity: &Activity,
        exit: &Mutex<Outcome>,
    ) -> &'static str {
        let mut eof_held: Option<tokio::time::Instant> = None;
        loop {
            let msg = match eof_held {
                None => trx.wait().await,
                Some(until) => match tokio::time::timeout_at(until, trx.wait()).await {
                    Ok(m) => m,
                    Err(_) => {
                        eof_held = None;
                        let _ = ctx.eof().await;
                        continue;
                    }
                },
            };
            let exit_msg = matches!(
                msg,
                Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. })
            );
            if eof_held.is_some() && !exit_msg {
                // Anything but the exit status: release the EOF first, in order.
                eof_held = None;
                let _ = ctx.eof().await;
            }
            match msg {
                Some(ChannelMsg::Eof) => {
                    eof_held = Some(tokio::time::Instant::now() + EOF_HOLD);
                }
                None | Some(ChannelMsg::Close) => return "closed",
                Some(msg) => {
                    if let Err(reason) = self.on_target(msg, ctx, activity, exit).await {
                        return reason;
                    }
                    if exit_msg && eof_held.take().is_some() {
                        let _ = ctx.eof().await;
                    }
                }
            }
        }
    }

    /// One message from the target other than EOF and close.
    async fn on_target(
        &self,
        msg: ChannelMsg,
        ctx: &ChannelWriteHalf<Msg>,
        activity: &Activity,
        exit: &Mutex<Outcome>,
    ) -> Result<(), &'static str> {
        match msg {
            ChannelMsg::Data { data } => {
                activity.touch();
                if self.observer.is_plain() {
                    self.kept(self.rec.output(data.clone()).await).await?;
                } else {
                    self.observed(self.observer.target_bytes(&data)).await?;
                }
                ctx.data_bytes(data).await.map_err(|_| "client gone")?;
            }
            ChannelMsg::ExtendedData { data, ext } => {
                activity.touch();
                if self.observer.is_plain() {
                    self.kept(self.rec.output(data.clone()).await).await?;
                }
                ctx.extended_data_bytes(ext, data)
                    .await
                    .map_err(|_| "client gone")?;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                if let Ok(mut e) = exit.lock() {
                    e.exit_status = Some(exit_status);
                }
                let _ = self.rec.marker(format!("exit status {exit_status}")).await;
                let _ = ctx.exit_status(exit_status).await;
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                let name = format!("{signal_name:?}");
                let _ = self.rec.marker(format!("exit signal {name}")).await;
                if let Ok(mut e) = exit.lock() {
                    e.exit_signal = Some(name);
                }
                let _ = self
                    .handle
                    .exit_signal_request(self.id, signal_name, core_dumped, error_message, lang_tag)
                    .await;
            }
            ChannelMsg::Success => {
                let _ = self.handle.channel_success(self.id).await;
            }
            ChannelMsg::Failure => {
                let _ = self.handle.channel_failure(self.id).await;
            }
            _ => {}
        }
        Ok(())
    }
}
