//! The per-connection task: runs the russh session with a [`ConnHandler`] that turns
//! callbacks into events, answers those events (authentication through [`Login`], channel
//! opens by spawning channel tasks), enforces the handshake deadline (banner and key
//! exchange), the authentication deadline and the maximum session length, ends the connection on revocation or shutdown, and cleans up (channel
//! tasks, target connection, registry entry, store session, `ssh_connection_close` record).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::audit::AuditEvent;
use gatehouse_core::preauth::Slot;
use russh::server::RunningSession;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

mod killable;

use crate::channel;
use crate::conn::Conn;
use crate::event::{EVENT_QUEUE, Event};
use crate::handler::ConnHandler;
use crate::login::Login;
use crate::registry::Ending;
use crate::server::{AUTH_DEADLINE, HANDSHAKE_DEADLINE};
use crate::shared::Shared;

/// How long a closing connection may take to deliver its disconnect message.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);

/// Why the connection task stopped serving.
enum Stop {
    /// The client (or the transport) closed it.
    Closed,
    /// The bastion ends it, and tells the client why.
    Ended(&'static str),
}

/// A fresh session id: 16 random bytes as hex (the `session` of the audit records).
pub(crate) fn new_session_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An accepted TCP connection: its client, session id and pre-authentication slot.
pub(crate) struct Accepted {
    pub socket: TcpStream,
    pub client: SocketAddr,
    pub id: String,
    pub unauth: Slot,
}

/// Serves one accepted TCP connection until it ends.
pub(crate) async fn serve(shared: Arc<Shared>, accepted: Accepted, shutdown: CancellationToken) {
    let Accepted {
        socket,
        client,
        id,
        unauth,
    } = accepted;
    let conn = Arc::new(Conn::new(
        shared.clone(),
        id,
        client,
        Ending::under(&shutdown),
    ));
    let (tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let (kex_done, kex) = oneshot::channel();
    let kill = CancellationToken::new();
    let _ = socket.set_nodelay(true);
    let stream = killable::Killable::new(socket, kill.clone());
    let accepted_at = tokio::time::Instant::now();
    let running = match tokio::time::timeout(
        HANDSHAKE_DEADLINE,
        russh::server::run_stream(
            shared.configs.server.clone(),
            stream,
            ConnHandler::new(tx, kex_done),
        ),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "ssh handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!("ssh identification not received in time; closing");
            return;
        }
    };
    let mut running = std::pin::pin!(running);
    let mut login = Login::new(conn.clone(), unauth);
    let deadlines = Deadlines {
        kex,
        kex_by: accepted_at + HANDSHAKE_DEADLINE,
        auth_by: accepted_at + AUTH_DEADLINE,
    };
    let stop = serve_events(&conn, &mut login, &mut events, &mut running, deadlines).await;
    audit_queued_refusals(&conn, &mut events).await;
    // The handler's pending and future sends fail now: russh is never left waiting on us.
    drop(events);
    drop(login);
    close(&conn, stop, running, kill).await;
}

/// The deadlines of an unauthenticated connection, counted from its accept.
struct Deadlines {
    /// Fires when the key exchange is done (the client asks for authentication).
    kex: oneshot::Receiver<()>,
    kex_by: tokio::time::Instant,
    auth_by: tokio::time::Instant,
}

/// Answers the handler's events until the session ends, a deadline passes or the connection
/// is ended from outside.
async fn serve_events(
    conn: &Arc<Conn>,
    login: &mut Login,
    events: &mut mpsc::Receiver<Event>,
    running: &mut std::pin::Pin<&mut RunningSession<ConnHandler>>,
    deadlines: Deadlines,
) -> Stop {
    let Deadlines {
        mut kex,
        kex_by,
        auth_by,
    } = deadlines;
    let kex_deadline = tokio::time::sleep_until(kex_by);
    let auth_deadline = tokio::time::sleep_until(auth_by);
    // Counted from the connection's start (authentication takes at most AUTH_DEADLINE).
    let max_session = tokio::time::sleep(conn.shared.limits.max_session);
    tokio::pin!(kex_deadline, auth_deadline, max_session);
    let mut deadline_armed = true;
    let mut kex_pending = true;
    loop {
        tokio::select! {
            r = &mut kex, if kex_pending => {
                kex_pending = false;
                if r.is_err() {
                    // The handler is gone without a key exchange: the session is ending.
                    return Stop::Closed;
                }
            }
            _ = &mut kex_deadline, if kex_pending => {
                tracing::info!("ssh key exchange not completed in time; closing");
                return Stop::Ended("key exchange timed out");
            }
            r = running.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "ssh connection ended with an error");
                }
                return Stop::Closed;
            }
            ev = events.recv() => match ev {
                // Boxed: the login steps' futures would otherwise size this task, which
                // lives as long as the connection.
                Some(ev) => Box::pin(dispatch(conn, login, ev)).await,
                // The handler is gone: the session is ending; `running` says how.
                None => return Stop::Closed,
            },
            _ = &mut auth_deadline, if deadline_armed => {
                deadline_armed = false;
                if conn.auth.get().is_none() {
                    tracing::info!("authentication deadline passed; closing");
                    return Stop::Ended("authentication timed out");
                }
            }
            _ = &mut max_session => {
                tracing::info!("maximum session length reached; closing");
                return Stop::Ended("maximum session length reached");
            }
            _ = conn.ending.ended() => {
                return Stop::Ended(conn.ending.reason().unwrap_or("bastion shutting down"));
            }
        }
    }
}

/// Refusals the handler queued before the session ended (a client refused a remote forward
/// exits at once, often before its refusal is read) are audited all the same; the other
/// events wait for answers nobody needs any more, and dropping them refuses them.
async fn audit_queued_refusals(conn: &Conn, events: &mut mpsc::Receiver<Event>) {
    while let Ok(event) = events.try_recv() {
        if let Event::Refused(reason) = event {
            conn.refused(reason, None).await;
        }
    }
}

async fn dispatch(conn: &Arc<Conn>, login: &mut Login, event: Event) {
    match event {
        Event::Key {
            name,
            key,
            algorithm,
            signed,
            reply,
        } => {
            let auth = login.key(&name, &key, &algorithm, signed).await;
            let _ = reply.send(auth);
        }
        Event::Totp {
            name,
            response,
            reply,
        } => {
            let auth = login.totp(&name, response).await;
            let _ = reply.send(auth);
        }
        Event::OpenSession {
            channel,
            reply,
            handle,
        } => {
            if conn.auth.get().is_none() || conn.ending.is_ended() {
                return; // dropping `reply` refuses the channel
            }
            reply.accept().await;
            conn.channels
                .spawn(channel::session::run(conn.clone(), channel, handle));
        }
        Event::OpenForward {
            channel,
            reply,
            request,
        } => {
            if conn.auth.get().is_none() || conn.ending.is_ended() {
                return;
            }
            conn.channels
                .spawn(channel::forward::run(conn.clone(), channel, reply, request));
        }
        Event::Refused(reason) => conn.refused(reason, None).await,
    }
}

/// Ends the channels, tells the client why (when the bastion ended it), closes the target
/// connection and the store session, and records the end of an authenticated connection.
async fn close(
    conn: &Arc<Conn>,
    stop: Stop,
    mut running: std::pin::Pin<&mut RunningSession<ConnHandler>>,
    kill: CancellationToken,
) {
    let handle = running.handle();
    conn.ending.end("connection closed");
    conn.channels.close();
    // Channel tasks end on the cancellation and flush their recordings.
    conn.channels.wait().await;
    let reason = match stop {
        Stop::Closed => "client closed the connection",
        Stop::Ended(reason) => {
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    format!("session ended by the bastion: {reason}"),
                    "en".to_string(),
                )
                .await;
            // A session still in key exchange cannot send the disconnect: give it a moment,
            // then cut the stream so the session task ends in every case.
            let grace = if conn.auth.get().is_some() {
                DISCONNECT_GRACE
            } else {
                Duration::from_millis(200)
            };
            // (A completed `running` must not be polled again.)
            if tokio::time::timeout(grace, running.as_mut()).await.is_err() {
                kill.cancel();
                let _ = tokio::time::timeout(DISCONNECT_GRACE, running.as_mut()).await;
            }
            reason
        }
    };
    if let Some(t) = conn.target.get() {
        t.close().await;
    }
    let services = &conn.shared.services;
    if let Some(token) = conn.shared.registry.remove(&conn.id)
        && let Err(e) = services.store().delete_session(token.expose()).await
    {
        // It expires on its own (TTL, idle timeout).
        tracing::warn!(error = %gatehouse_core::error_chain(&e), "cannot remove an ended ssh session from the store");
    }
    let Some(authn) = conn.auth.get() else { return };
    tracing::info!(user = %authn.user(), reason, "ssh connection closed");
    let event = AuditEvent::SshConnectionClose {
        user: authn.user().to_string(),
        target: authn.target().to_string(),
        reason: reason.to_string(),
        context: conn.context(),
    };
    if let Err(e) = conn.audit(event).await {
        tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit the end of an ssh connection");
    }
}
