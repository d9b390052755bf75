//! One client connection: TLS handshake under a deadline, HTTP/1 or HTTP/2 via ALPN, first
//! request deadline, idle timeout and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::ServeCtx;
use super::linger::{self, Returning};
use super::on_wake::OnWake;
use crate::conn::{ConnShared, TrackedIo, Tunnel};
use crate::handler;
use crate::preauth::Slot;
use crate::upstream::Driver;

/// Counts an open connection in the gauge and the drain report while alive.
struct Open<'a>(&'a ServeCtx);

impl<'a> Open<'a> {
    fn new(ctx: &'a ServeCtx) -> Self {
        ctx.open.fetch_add(1, Ordering::AcqRel);
        ctx.metrics.open_connections.inc();
        Open(ctx)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.open_connections.dec();
    }
}

/// How often idleness is sampled: a quarter of the timeout, within sane bounds.
fn idle_tick(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    preauth: Slot,
    ctx: Arc<ServeCtx>,
) {
    let _permit = permit;
    let _open = Open::new(&ctx);
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    // Fallible: a failed handshake hands the socket back, so the failure is counted before
    // the client sees the connection close.
    let handshake = tokio::time::timeout(
        ctx.handshake_timeout,
        ctx.acceptor.accept(tcp).into_fallible(),
    );
    let tls = tokio::select! {
        () = ctx.stop.cancelled() => return,
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err((e, tcp))) => {
                ctx.metrics.tls_handshake_failures.inc();
                tracing::debug!(error = %e, "tls handshake failed");
                drop(tcp);
                return;
            }
            Err(_) => {
                ctx.metrics.tls_handshake_failures.inc();
                tracing::debug!("tls handshake timed out");
                return;
            }
        },
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let shared = Arc::new(ConnShared::new(peer));
    shared.hold_preauth(preauth);
    // hyper hands the stream back when done with it, for a graceful close (see `linger`).
    let (tls, returned) = Returning::new(tls);
    let io = TokioIo::new(TrackedIo::new(tls, shared.clone(), !h2));
    let cs = Arc::new(handler::ConnState {
        state: ctx.state.clone(),
        conn: shared.clone(),
    });
    let svc = service_fn(move |req| handler::handle(cs.clone(), req));
    // In an `Option` so that it (and the stream hyper holds) can be dropped in place.
    let conn = ctx.builder.serve_connection_with_upgrades(io, svc);
    let mut conn = std::pin::pin!(Some(conn));

    // A connection must bring its first request within the header timeout (this also bounds
    // the HTTP/2-preface sniffing, which has no deadline of its own).
    let first = tokio::time::sleep(ctx.header_timeout);
    tokio::pin!(first);
    let mut first_seen = false;
    let period = idle_tick(ctx.idle_timeout.min(ctx.header_timeout));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // Polled only when its timer fired, not on each of the task's several wake-ups per request.
    let tick = OnWake::new(std::future::poll_fn(move |cx| {
        interval.poll_tick(cx).map(drop)
    }));
    let mut idle_for = Duration::ZERO;
    let mut closing = false;
    // The upstream connections requests on this connection opened: polled right after the
    // client side, in this task (see `crate::upstream`).
    let mut upstreams = Driver::default();
    // The shutdown futures are polled only when their tokens wake them, not on each of the
    // task's several wake-ups per request (a poll takes the token's lock); per-connection
    // child tokens keep that lock this connection's own, not one shared by every worker.
    let (hard_token, stop_token) = (ctx.hard.child_token(), ctx.stop.child_token());
    let hard = OnWake::new(hard_token.cancelled());
    let stop = OnWake::new(stop_token.cancelled());
    tokio::pin!(hard, stop, tick);
    loop {
        tokio::select! {
            biased;
            r = std::future::poll_fn(|cx| match conn.as_mut().as_pin_mut() {
                Some(c) => c.poll(cx),
                None => std::task::Poll::Pending,
            }) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut hard => {
                tracing::debug!("connection cut at the end of the grace period");
                return;
            }
            () = &mut stop, if !closing => {
                closing = true;
                if let Some(c) = conn.as_mut().as_pin_mut() {
                    c.graceful_shutdown();
                }
            }
            // Polled only until the first request arrives (not on every later wake-up).
            () = &mut first, if !first_seen && shared.served() == 0 => {
                if shared.served() == 0 {
                    tracing::debug!("no request within the header timeout; closing");
                    return;
                }
                first_seen = true;
            }
            () = &mut tick, if !closing => {
                // Slowloris: a request head (HTTP/1) must be complete within the header
                // timeout of its first byte, however its bytes trickle in.
                if shared.head_pending_for().is_some_and(|d| d >= ctx.header_timeout) {
                    tracing::debug!("request head not complete within the header timeout; closing");
                    return;
                }
                if shared.take_activity() || shared.in_flight() > 0 {
                    idle_for = Duration::ZERO;
                } else {
                    idle_for += period;
                    if idle_for >= ctx.idle_timeout {
                        tracing::debug!("idle timeout; closing");
                        closing = true;
                        if let Some(c) = conn.as_mut().as_pin_mut() {
                            c.graceful_shutdown();
                        }
                    }
                }
            }
            () = std::future::poll_fn(|cx| upstreams.poll_drive(cx, &shared.upstreams)) => {}
        }
    }
    // hyper is done: dropping it gives the stream back (unless a WebSocket took it).
    conn.set(None);
    // Upstream connections still busy (a WebSocket handing over its connection) finish in
    // the background; idle ones close now.
    ctx.tracker.spawn(upstreams.into_rest(&shared.upstreams));
    if let Some(t) = shared.take_tunnel() {
        tunnel(t, &ctx).await;
    } else if let Some(tls) = linger::take(&returned) {
        linger::linger(*tls, &ctx.hard).await;
    }
}

/// Runs a WebSocket tunnel the handler agreed to, until either side closes or shutdown.
async fn tunnel(t: Tunnel, ctx: &ServeCtx) {
    let app = t.app;
    let registration = t.registration;
    let (c, u) = match tokio::try_join!(t.client, t.upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(app = %app, error = %e, "websocket upgrade did not complete");
            return;
        }
    };
    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
    tokio::select! {
        () = ctx.stop.cancelled() => tracing::debug!(app = %app, "websocket closed by shutdown"),
        () = registration.revoked() => tracing::info!(app = %app, "websocket closed: session revoked"),
        r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
            if let Err(e) = r {
                tracing::debug!(app = %app, error = %e, "websocket tunnel ended");
            }
        }
    }
}
