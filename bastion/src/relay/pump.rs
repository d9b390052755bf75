//! The relay loop of one session channel: client and target directions polled together, each
//! forwarding through russh's window-aware writers (a full window stops that direction, and
//! its bounded queue then slows its connection), recording or observing as it goes, until the
//! target closes, the client closes, or the session is cancelled (revocation, time limits,
//! shutdown, recording failure, idle timeout).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh::client;
use russh::server::{self, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf};

use crate::recording::Recorder;
use crate::scp::{self, ScpTracker};
use crate::session::Conn;
use crate::sftp::SftpTracker;

/// What is recorded of a channel's bytes.
pub(crate) enum Observer {
    /// Raw input and output (shell, exec).
    Plain,
    /// SFTP file operations only.
    Sftp(Mutex<SftpTracker>),
    /// SCP file operations only.
    Scp(Mutex<ScpTracker>),
}

enum UpEnd {
    /// The client sent EOF; wait for the target to finish.
    Eof,
    /// The client closed the channel (or the connection went away).
    Closed,
}

/// Longest time the target's EOF waits for its exit status (see the `down` loop).
const EOF_HOLD: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay(
    conn: &Conn,
    handle: &server::Handle,
    id: ChannelId,
    mut crx: russh::ChannelReadHalf,
    ctx: ChannelWriteHalf<Msg>,
    target: Channel<client::Msg>,
    rec: &Recorder,
    observer: &Observer,
) -> &'static str {
    let (mut trx, ttx) = target.split();
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let rec_failed = rec.failed();

    let up = async {
        loop {
            match crx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    touch();
                    let ok = match observer {
                        Observer::Plain => rec.input(data.clone()).await.is_ok(),
                        Observer::Sftp(t) => {
                            note_all(rec, lock_ops(t, |t| t.from_client(&data))).await
                        }
                        Observer::Scp(t) => {
                            let ops = lock_ops(t, |t| {
                                if t.direction() == scp::Direction::Upload {
                                    t.feed(&data)
                                } else {
                                    Vec::new()
                                }
                            });
                            note_all(rec, ops).await
                        }
                    };
                    if !ok || ttx.data_bytes(data).await.is_err() {
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
                    touch();
                    let _ = rec.resize(col_width, row_height).await;
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
    };
    let down = async {
        // The target's EOF is held until its exit status (or close) follows, for at most
        // EOF_HOLD: a client that has sent and received EOF may close the channel at once
        // (OpenSSH ControlMaster does), and an exit status arriving after that close is lost.
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
            if eof_held.is_some()
                && !matches!(
                    msg,
                    Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. })
                )
            {
                // Anything but the exit status: release the EOF first, in order.
                eof_held = None;
                let _ = ctx.eof().await;
            }
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    touch();
                    let ok = match observer {
                        Observer::Plain => rec.output(data.clone()).await.is_ok(),
                        Observer::Sftp(t) => {
                            note_all(rec, lock_ops(t, |t| t.from_server(&data))).await
                        }
                        Observer::Scp(t) => {
                            let ops = lock_ops(t, |t| {
                                if t.direction() == scp::Direction::Download {
                                    t.feed(&data)
                                } else {
                                    Vec::new()
                                }
                            });
                            note_all(rec, ops).await
                        }
                    };
                    if !ok || ctx.data_bytes(data).await.is_err() {
                        return "client gone";
                    }
                }
                Some(ChannelMsg::ExtendedData { data, ext }) => {
                    touch();
                    if matches!(observer, Observer::Plain)
                        && rec.output(data.clone()).await.is_err()
                    {
                        return "recording failed";
                    }
                    if ctx.extended_data_bytes(ext, data).await.is_err() {
                        return "client gone";
                    }
                }
                Some(ChannelMsg::Eof) => {
                    eof_held = Some(tokio::time::Instant::now() + EOF_HOLD);
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    let _ = rec.marker(format!("exit status {exit_status}")).await;
                    let _ = ctx.exit_status(exit_status).await;
                    if eof_held.take().is_some() {
                        let _ = ctx.eof().await;
                    }
                }
                Some(ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                }) => {
                    let _ = rec.marker(format!("exit signal {signal_name:?}")).await;
                    let _ = handle
                        .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                        .await;
                    if eof_held.take().is_some() {
                        let _ = ctx.eof().await;
                    }
                }
                Some(ChannelMsg::Success) => {
                    let _ = handle.channel_success(id).await;
                }
                Some(ChannelMsg::Failure) => {
                    let _ = handle.channel_failure(id).await;
                }
                None | Some(ChannelMsg::Close) => return "closed",
                Some(_) => {}
            }
        }
    };
    tokio::pin!(up, down);
    let idle = conn.shared.limits.idle_timeout;
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle));
    let mut up_done = false;
    let reason: &'static str = loop {
        tokio::select! {
            r = &mut down => break r,
            r = &mut up, if !up_done => {
                up_done = true;
                if matches!(r, UpEnd::Closed) {
                    break "client closed";
                }
            }
            _ = conn.cancel.cancelled() => {
                let _ = ctx.extended_data_bytes(1, Bytes::from_static(b"\r\ngatehouse: session ended by the bastion\r\n")).await;
                break "ended by the bastion (revoked, time limit or shutdown)";
            }
            _ = rec_failed.cancelled() => {
                let _ = ctx.extended_data_bytes(1, Bytes::from_static(b"\r\ngatehouse: session ended: the recording cannot be written\r\n")).await;
                break "recording failed";
            }
            _ = tick.tick() => {
                let idle_for = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if idle_for >= idle {
                    let _ = ctx.extended_data_bytes(1, Bytes::from_static(b"\r\ngatehouse: session closed after inactivity\r\n")).await;
                    break "idle timeout";
                }
            }
        }
    };
    let _ = ttx.close().await;
    let _ = ctx.close().await;
    reason
}

fn lock_ops<T, O>(m: &Mutex<T>, f: impl FnOnce(&mut T) -> Vec<O>) -> Vec<O> {
    match m.lock() {
        Ok(mut g) => f(&mut g),
        Err(_) => Vec::new(),
    }
}

async fn note_all<O: std::fmt::Display>(rec: &Recorder, ops: Vec<O>) -> bool {
    for op in ops {
        if rec.note(&op.to_string()).await.is_err() {
            return false;
        }
    }
    true
}
