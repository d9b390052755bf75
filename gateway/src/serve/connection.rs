//! One client connection: TLS handshake under a deadline, HTTP/1 or HTTP/2 via ALPN, first
//! request deadline, idle timeout and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
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
use super::linger::{self, Returning};
use super::on_wake::OnWake;
use crate::conn::{ConnShared, TrackedIo, Tunnel};
use crate::handler;
use crate::state::ConnState;
use crate::upstream::Driver;
use gatehouse_core::preauth::Slot;

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

/// An idle HTTP/1 connection is parked (hyper and its buffers let go) once it has had no
/// request in flight and no bytes moving for this long (checked at the idle tick).
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(2);

type Tls = TlsStream<TcpStream>;

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
    // Boxed, as every large phase below: the task keeps only the live one's memory.
    let Some(tls) = Box::pin(handshake(tcp, &ctx)).await else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let shared = Arc::new(ConnShared::new(peer).with_audit(ctx.state.services.audit.clone()));
    shared.hold_preauth(preauth);
    // The upstream connections requests on this connection opened: polled right after the
    // client side, in this task (see `crate::upstream`).
    let mut upstreams = Driver::default();
    // The shutdown futures are polled only when their tokens wake them, not on each of the
    // task's several wake-ups per request (a poll takes the token's lock); per-connection
    // child tokens keep that lock this connection's own, not one shared by every worker.
    let (hard_token, stop_token) = (ctx.hard.child_token(), ctx.stop.child_token());
    let hard = OnWake::new(hard_token.cancelled());
    let stop = OnWake::new(stop_token.cancelled());
    tokio::pin!(hard, stop);
    let mut w = Watch {
        hard,
        stop,
        idle_for: Duration::ZERO,
    };
    let mut stream = tls;
    let last = loop {
        let run = Box::pin(run_hyper(stream, h2, &shared, &ctx, &mut upstreams, &mut w)).await;
        let tls = match run {
            Ran::Cut => return,
            Ran::Closed(tls) => break tls,
            Ran::Parked(tls) => tls,
        };
        // Parked: no hyper, no buffers, no spare timer, no idle upstream connection; the
        // stream waits for the client's next bytes (or the rest of the idle timeout).
        let _parked = Parked::new(&ctx);
        shared.upstreams.release_idle();
        shared.deadlines.clear();
        let rest = ctx.idle_timeout.saturating_sub(w.idle_for);
        let readable = tokio::select! {
            biased;
            () = &mut w.hard => return,
            () = &mut w.stop => false,
            r = tls.get_ref().0.readable() => r.is_ok(),
            () = tokio::time::sleep(rest) => {
                tracing::debug!("idle timeout while parked; closing");
                false
            }
            () = std::future::poll_fn(|cx| upstreams.poll_drive(cx, &shared.upstreams)) => false,
        };
        if !readable {
            break Some(tls);
        }
        w.idle_for = Duration::ZERO;
        stream = tls;
    };
    // Upstream connections still busy (a WebSocket handing over its connection) finish in
    // the background; idle ones close now.
    ctx.tracker.spawn(upstreams.into_rest(&shared.upstreams));
    if let Some(t) = shared.take_tunnel() {
        Box::pin(tunnel(t, &ctx)).await;
    } else if let Some(tls) = last {
        Box::pin(linger::linger(tls, &ctx.hard)).await;
    }
}

/// Counts a parked connection in the gauge while alive.
struct Parked<'a>(&'a ServeCtx);

impl<'a> Parked<'a> {
    fn new(ctx: &'a ServeCtx) -> Self {
        ctx.metrics.parked_connections.inc();
        Parked(ctx)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.metrics.parked_connections.dec();
    }
}

/// The TLS handshake under its deadline; failures are counted.
async fn handshake(tcp: TcpStream, ctx: &ServeCtx) -> Option<Tls> {
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

/// What outlives one run of hyper over the connection.
struct Watch<H, S> {
    hard: Pin<H>,
    stop: Pin<S>,
    /// How long no request has been in flight and no byte moved.
    idle_for: Duration,
}

/// How a run of hyper ended.
enum Ran {
    /// Cut without a graceful close (hard stop, a deadline missed).
    Cut,
    /// hyper is done with the connection: close it gracefully (`None`: a WebSocket took it).
    Closed(Option<Tls>),
    /// hyper let go of an idle HTTP/1 connection, which stays open.
    Parked(Tls),
}

/// Serves the connection with hyper until it ends or is parked.
async fn run_hyper<H, S>(
    tls: Tls,
    h2: bool,
    shared: &Arc<ConnShared>,
    ctx: &Arc<ServeCtx>,
    upstreams: &mut Driver,
    w: &mut Watch<H, S>,
) -> Ran
where
    H: std::ops::DerefMut<Target: Future<Output = ()>>,
    S: std::ops::DerefMut<Target: Future<Output = ()>>,
{
    // hyper hands the stream back when done with it, for a graceful close or to park it.
    let (tls, returned) = Returning::new(tls);
    let io = TokioIo::new(TrackedIo::new(tls, shared.clone(), !h2));
    let cs = Arc::new(ConnState {
        state: ctx.state.clone(),
        conn: shared.clone(),
    });
    let svc = service_fn(move |req| handler::handle(cs.clone(), req));
    // Boxed so that dropping it (below) drops hyper and the stream it holds.
    let mut conn = Box::pin(ctx.builder.serve_connection_with_upgrades(io, svc));
    // A connection must bring its first request within the header timeout (this also bounds
    // the HTTP/2-preface sniffing, which has no deadline of its own).
    let first = tokio::time::sleep(ctx.header_timeout);
    tokio::pin!(first);
    let mut first_seen = shared.served() > 0;
    let period = idle_tick(ctx.idle_timeout.min(ctx.header_timeout));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // Polled only when its timer fired, not on each of the task's several wake-ups per request.
    let tick = OnWake::new(std::future::poll_fn(move |cx| {
        interval.poll_tick(cx).map(drop)
    }));
    tokio::pin!(tick);
    let mut closing = false;
    // Set when parking: the number of requests served then.
    let mut parking: Option<usize> = None;
    let mut abuse = None;
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
            () = w.hard.as_mut() => {
                tracing::debug!("connection cut at the end of the grace period");
                return Ran::Cut;
            }
            () = w.stop.as_mut(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            // Polled only until the first request arrives (not on every later wake-up).
            () = &mut first, if !first_seen && shared.served() == 0 => {
                if shared.served() == 0 {
                    tracing::debug!("no request within the header timeout; closing");
                    return Ran::Cut;
                }
                first_seen = true;
            }
            () = &mut tick, if !closing && parking.is_none() => {
                // Slowloris: a request head (HTTP/1) must be complete within the header
                // timeout of its first byte, however its bytes trickle in.
                if shared.head_pending_for().is_some_and(|d| d >= ctx.header_timeout) {
                    tracing::debug!("request head not complete within the header timeout; closing");
                    return Ran::Cut;
                }
                if shared.take_activity() || shared.in_flight() > 0 {
                    w.idle_for = Duration::ZERO;
                    shared.write_answers(crate::conn::ANSWERS_WAIT);
                    continue;
                }
                // Quiet: the answers gathered so far are written now.
                shared.write_answers(Duration::ZERO);
                w.idle_for += period;
                if w.idle_for >= ctx.idle_timeout {
                    tracing::debug!("idle timeout; closing");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                } else if w.idle_for >= PARK_AFTER && parkable(h2, shared) {
                    // hyper closes an idle HTTP/1 connection at once, and its shutdown of
                    // the stream is made a no-op: the stream comes back open.
                    parking = Some(shared.served());
                    returned.park();
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = std::future::poll_fn(|cx| upstreams.poll_drive(cx, &shared.upstreams)) => {}
        }
    }
    // hyper is done: dropping it gives the stream back (unless a WebSocket took it).
    drop(conn);
    // The last answers' bodies went with hyper: written now, before the connection parks
    // (no idle check runs while it is parked).
    shared.write_answers(Duration::ZERO);
    if let Some(kind) = abuse {
        record_abuse(ctx, shared.peer, kind).await;
    }
    let tls = returned.take().map(|b| *b);
    match (tls, parking) {
        // Parked only if no request slipped in meanwhile (it was told the connection closes).
        (Some(tls), Some(n)) if n == shared.served() && !closing => Ran::Parked(tls),
        (tls, _) => Ran::Closed(tls),
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

/// An idle HTTP/1 connection between requests (nothing in flight, no head arriving, not a
/// WebSocket): hyper holds nothing the next request needs.
fn parkable(h2: bool, shared: &ConnShared) -> bool {
    !h2 && !shared.upgraded()
        && shared.served() > 0
        && shared.in_flight() == 0
        && shared.head_pending_for().is_none()
}

/// Runs a WebSocket tunnel the handler agreed to, until either side closes or shutdown.
async fn tunnel(t: Tunnel, ctx: &ServeCtx) {
    let app = t.app;
    let registration = t.registration;
    let grant = gatehouse_core::policy::lapsed(t.grant);
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
        lapse = grant => {
            tracing::info!(app = %app, user = %t.user, grant = %lapse.grant.id, ended = lapse.reason.as_str(), "websocket closed: its access grant ended");
            let event = gatehouse_core::audit::AuditEvent::GrantSessionEnded {
                grant_id: lapse.grant.id.clone(),
                user: t.user.clone(),
                object: lapse.object.clone(),
                action: lapse.action.clone(),
                ended: lapse.reason.as_str().to_string(),
                context: t.context.clone(),
            };
            if let Err(e) = ctx.state.services.audit.record(event).await {
                tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot record the end of a grant's websocket");
            }
        }
        r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
            if let Err(e) = r {
                tracing::debug!(app = %app, error = %e, "websocket tunnel ended");
            }
        }
    }
}
