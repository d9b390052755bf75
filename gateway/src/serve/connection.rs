//! One client connection: TLS handshake under a deadline, HTTP/1 or HTTP/2 via ALPN, first
//! request deadline, idle timeout and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gatehouse_core::audit::AbuseKind;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::server::TlsStream;

use super::ServeCtx;
use super::on_wake::OnWake;
use crate::conn::{ConnShared, TrackedIo, Tunnel};
use crate::handler;
use crate::state::ConnState;
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

/// The TLS handshake under its deadline; `None` (counted as a failure unless shutdown cut
/// it) when it fails, times out or shutdown begins.
async fn handshake(tcp: TcpStream, ctx: &ServeCtx) -> Option<TlsStream<TcpStream>> {
    // Fallible: a failed handshake hands the socket back, so the failure is counted before
    // the client sees the connection close.
    let handshake = tokio::time::timeout(
        ctx.handshake_timeout,
        ctx.acceptor.accept(tcp).into_fallible(),
    );
    tokio::select! {
        () = ctx.stop.cancelled() => None,
        r = handshake => match r {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err((e, tcp))) => {
                ctx.metrics.tls_handshake_failures.inc();
                tracing::debug!(error = %e, "tls handshake failed");
                drop(tcp);
                None
            }
            Err(_) => {
                ctx.metrics.tls_handshake_failures.inc();
                tracing::debug!("tls handshake timed out");
                None
            }
        },
    }
}

/// The idle and slow-head clock of one connection, advanced every `period`.
struct Clock {
    period: Duration,
    idle_for: Duration,
}

/// What a tick of the [`Clock`] found.
enum Tick {
    Fine,
    /// An HTTP/1 request head still incomplete after the header timeout: cut.
    SlowHead,
    /// Nothing moved and nothing in flight for the idle timeout: close gracefully.
    Idle,
}

impl Clock {
    fn new(ctx: &ServeCtx) -> Clock {
        Clock {
            period: idle_tick(ctx.idle_timeout.min(ctx.header_timeout)),
            idle_for: Duration::ZERO,
        }
    }

    fn tick(&mut self, shared: &ConnShared, ctx: &ServeCtx) -> Tick {
        // Slowloris: a request head (HTTP/1) must be complete within the header timeout of
        // its first byte, however its bytes trickle in.
        if shared
            .head_pending_for()
            .is_some_and(|d| d >= ctx.header_timeout)
        {
            tracing::debug!("request head not complete within the header timeout; closing");
            return Tick::SlowHead;
        }
        if shared.take_activity() || shared.in_flight() > 0 {
            self.idle_for = Duration::ZERO;
            return Tick::Fine;
        }
        self.idle_for += self.period;
        if self.idle_for >= ctx.idle_timeout {
            tracing::debug!("idle timeout; closing");
            return Tick::Idle;
        }
        Tick::Fine
    }
}

pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    ctx: Arc<ServeCtx>,
) {
    let _permit = permit;
    let _open = Open::new(&ctx);
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let Some(tls) = handshake(tcp, &ctx).await else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let shared = Arc::new(ConnShared::new(peer));
    let io = TokioIo::new(TrackedIo::new(tls, shared.clone(), !h2));
    let cs = Arc::new(ConnState {
        state: ctx.state.clone(),
        conn: shared.clone(),
    });
    let svc = service_fn(move |req| handler::handle(cs.clone(), req));
    let conn = ctx.builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);

    // A connection must bring its first request within the header timeout (this also bounds
    // the HTTP/2-preface sniffing, which has no deadline of its own).
    let first = tokio::time::sleep(ctx.header_timeout);
    tokio::pin!(first);
    let mut first_seen = false;
    let mut clock = Clock::new(&ctx);
    let period = clock.period;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // Polled only when its timer fired, not on each of the task's several wake-ups per request.
    let tick = OnWake::new(std::future::poll_fn(move |cx| {
        interval.poll_tick(cx).map(drop)
    }));
    let mut closing = false;
    let mut abuse = None;
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
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                    abuse = crate::abuse::classify(&*e, &shared.h2_frames);
                }
                break;
            }
            () = &mut hard => {
                tracing::debug!("connection cut at the end of the grace period");
                return;
            }
            () = &mut stop, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            // Polled only until the first request arrives (not on every later wake-up).
            () = &mut first, if !first_seen && shared.served() == 0 => {
                if shared.served() == 0 {
                    tracing::debug!("no request within the header timeout; closing");
                    return;
                }
                first_seen = true;
            }
            () = &mut tick, if !closing => match clock.tick(&shared, &ctx) {
                Tick::Fine => {}
                Tick::SlowHead => return,
                Tick::Idle => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            },
            () = std::future::poll_fn(|cx| upstreams.poll_drive(cx, &shared.upstreams)) => {}
        }
    }
    // Upstream connections still busy (a WebSocket handing over its connection) finish in
    // the background; idle ones close now.
    ctx.tracker.spawn(upstreams.into_rest(&shared.upstreams));
    if let Some(kind) = abuse {
        record_abuse(&ctx, peer, kind).await;
    }
    if let Some(t) = shared.take_tunnel() {
        tunnel(t, &ctx).await;
    }
}

/// The rate-limited audit trace of a connection h2 closed for abuse (see `crate::abuse`).
async fn record_abuse(ctx: &ServeCtx, peer: SocketAddr, kind: AbuseKind) {
    let state = &ctx.state;
    match state
        .abuse
        .admit(peer.ip(), kind, std::time::Instant::now())
    {
        Some(record) => {
            tracing::warn!(client.addr = %peer, kind = kind.as_str(), "http/2 protocol abuse; connection closed");
            if let Err(e) = state.services.audit.record(record).await {
                tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot record http/2 protocol abuse");
            }
        }
        None => {
            tracing::debug!(client.addr = %peer, kind = kind.as_str(), "http/2 protocol abuse (trace rate-limited)")
        }
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
