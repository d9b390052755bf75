//! Listeners, connection limits and the drain.
//!
//! Threat: resource exhaustion — connection floods, slow TLS handshakes, slowloris heads,
//! idle keep-alive connections — and requests cut mid-flight on restart. Mitigation: a
//! semaphore caps open connections; handshakes, the first request and every HTTP/1 head have
//! deadlines; idle connections are closed; on shutdown the listeners stop, every connection
//! is shut down gracefully and the drain is bounded by `gateway.shutdown_grace`.

mod admin;
mod connection;
mod linger;
mod on_wake;
mod redirect;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse_core::Config;
use gatehouse_core::config::defaults::{MAX_HEADER_BYTES, MAX_HEADERS};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::abuse::AbuseTrace;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::PolicyReloader;
use crate::request_id::RequestIds;
use crate::revoke::Tunnels;
use crate::routes::Routes;
use crate::services::{Services, StoreHealth};
use crate::state::{LoginCtx, State};
use crate::tls::{self, Reloader};
use crate::web_sessions::WebSessions;
use gatehouse_core::preauth::Preauth;
use workers::Workers;

/// HTTP/2 streams a client may open at once on one connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// First and longest pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// After the grace period, how long cut connections get to unwind.
const HARD_STOP_WAIT: Duration = Duration::from_secs(2);
/// Connections one source may have before their first request (see
/// `gatehouse_core::preauth`). Honest clients spend milliseconds there (a browser opens up to
/// six connections at once): a whole office behind one NAT address fits.
const PREAUTH_PER_SOURCE: usize = 32;
/// Connections all sources together may have before their first request (never more than
/// half of `gateway.max_connections`).
const PREAUTH_TOTAL: usize = 1024;

/// The addresses actually bound (port 0 in the config becomes a real port).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub redirect: Option<SocketAddr>,
}

/// How the drain ended.
#[derive(Debug, Clone, Copy)]
pub struct DrainReport {
    /// Every connection finished within the grace period.
    pub drained: bool,
    /// Connections still open when the grace period ended.
    pub remaining: usize,
}

/// Readiness as `/readyz` reports it.
#[derive(Debug, Default)]
pub(crate) struct Readiness(AtomicU8);

impl Readiness {
    const STARTING: u8 = 0;
    const SERVING: u8 = 1;
    const DRAINING: u8 = 2;

    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Release);
    }

    /// `Ok` when serving, else the reason.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        match self.0.load(Ordering::Acquire) {
            Self::SERVING => Ok(()),
            Self::DRAINING => Err("draining"),
            Self::STARTING => Err("starting"),
            _ => Err("unknown state"),
        }
    }
}

/// What every connection task shares.
pub(crate) struct ServeCtx {
    pub(crate) state: Arc<State>,
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) builder: auto::Builder<TokioExecutor>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) open: AtomicUsize,
    pub(crate) tracker: TaskTracker,
    pub(crate) stop: CancellationToken,
    pub(crate) hard: CancellationToken,
    pub(crate) handshake_timeout: Duration,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    /// Bounds on connections before their first request.
    pub(crate) preauth: Arc<Preauth>,
}

/// The bound gateway, ready to run.
pub struct Gateway {
    config: Arc<Config>,
    https: TcpListener,
    admin: TcpListener,
    redirect: Option<TcpListener>,
    bound: Bound,
    reloader: Reloader,
    policy_reloader: PolicyReloader,
    ctx: Arc<ServeCtx>,
    workers: Arc<Workers>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

async fn listen(
    addr: SocketAddr,
    what: &'static str,
) -> Result<(TcpListener, SocketAddr), GatewayError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { addr, what, source })?;
    let local = l
        .local_addr()
        .map_err(|source| GatewayError::Bind { addr, what, source })?;
    Ok((l, local))
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false)
        // hyper answers 431 when a head does not fit: the buffer is the head limit.
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        // The head deadline is the connection task's (from the framing scanner): hyper's own
        // also runs while a keep-alive connection waits, cutting it at `header_timeout`
        // instead of `idle_timeout`.
        .header_read_timeout(None);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(64)
        // No keep-alive pings: they would count as activity and defeat the idle timeout.
        .max_local_error_reset_streams(256);
    b
}

impl Gateway {
    /// Loads the certificate and binds every listener (nothing is served until [`run`]).
    /// Every request is served with `services`: there is no way to bind without them.
    ///
    /// [`run`]: Gateway::run
    pub async fn bind(config: Arc<Config>, services: Services) -> Result<Gateway, GatewayError> {
        let g = &config.gateway;
        let metrics = Arc::new(Metrics::with_audit(&services.audit));
        let (server_config, reloader) = tls::server_config(
            g.tls_profile,
            tls::CertFiles::from_config(g),
            metrics.tls_certificate_expiry.clone(),
        )?;
        let routes = Routes::new(&config.apps).map_err(GatewayError::Route)?;
        let (https, https_addr) = listen(g.listen, "gateway.listen").await?;
        let (admin, admin_addr) = listen(config.admin.listen, "admin.listen").await?;
        let (redirect, redirect_addr) = match g.http_redirect_listen {
            Some(a) => {
                let (l, addr) = listen(a, "gateway.http_redirect_listen").await?;
                (Some(l), Some(addr))
            }
            None => (None, None),
        };
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let proxy = Proxy::new(g.upstream_connect_timeout, g.upstream_timeout);
        let mut policy_reloader =
            PolicyReloader::new(services.policy.clone(), services.audit.clone());
        if config.source.is_some() {
            // Not for the quick-start: its example policy names apps it does not have.
            policy_reloader = policy_reloader
                .with_scope(gatehouse_core::policy::PolicyScope::from_config(&config));
        }
        let web_sessions = Arc::new(WebSessions::new(services.recordings.clone()));
        services.signer.note_first_uses(web_sessions.clone());
        let state = Arc::new(State {
            routes,
            proxy,
            metrics: metrics.clone(),
            ids: RequestIds::default(),
            no_app: Arc::from("none"),
            login: LoginCtx::new(&config),
            review: crate::state::ReviewCtx::new(&config, stop.clone()),
            services,
            health: Arc::new(StoreHealth::default()),
            tunnels: Arc::new(Tunnels::default()),
            abuse: AbuseTrace::default(),
            web_sessions,
        });
        let preauth = Preauth::new(
            "https",
            PREAUTH_PER_SOURCE,
            PREAUTH_TOTAL.min((g.max_connections / 2).max(1)),
            metrics.preauth.clone(),
        );
        let ctx = Arc::new(ServeCtx {
            state,
            acceptor: TlsAcceptor::from(server_config),
            builder: http_builder(),
            metrics,
            open: AtomicUsize::new(0),
            tracker,
            stop,
            hard: CancellationToken::new(),
            handshake_timeout: g.tls_handshake_timeout,
            header_timeout: g.header_timeout,
            idle_timeout: g.idle_timeout,
            max_connections: g.max_connections,
            preauth,
        });
        let workers = Arc::new(Workers::per_core().map_err(GatewayError::Workers)?);
        let bound = Bound {
            https: https_addr,
            admin: admin_addr,
            redirect: redirect_addr,
        };
        Ok(Gateway {
            config,
            https,
            admin,
            redirect,
            bound,
            reloader,
            policy_reloader,
            ctx,
            workers,
        })
    }

    /// Reloads the policy files (wire it to SIGHUP); file changes are picked up anyway.
    pub fn policy_reloader(&self) -> PolicyReloader {
        self.policy_reloader.clone()
    }

    pub fn bound(&self) -> Bound {
        self.bound
    }

    /// The bastion's pre-authentication series, exposed on this gateway's admin listener
    /// (`gatehouse_ssh_preauth_*`): hand them to the bastion's limiter.
    pub fn ssh_preauth_metrics(&self) -> gatehouse_core::preauth::PreauthMetrics {
        self.ctx.metrics.ssh_preauth.clone()
    }

    /// Reloads the TLS certificate (wire it to SIGHUP); file changes are picked up anyway.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains within `gateway.shutdown_grace`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<DrainReport, GatewayError> {
        let Gateway {
            config,
            https,
            admin,
            redirect,
            reloader,
            policy_reloader,
            ctx,
            workers,
            ..
        } = self;
        let ready = Arc::new(Readiness::default());
        // The admin listener has its own tracker so `/readyz` keeps answering "draining"
        // while the gateway's tasks drain.
        let admin_tracker = TaskTracker::new();
        let admin_stop = CancellationToken::new();
        admin_tracker.spawn(
            admin::serve(
                admin,
                ctx.metrics.clone(),
                ready.clone(),
                ctx.state.health.clone(),
                admin_stop.clone(),
                admin_tracker.clone(),
            )
            .instrument(tracing::info_span!("admin")),
        );
        spawn_background(&ctx, reloader, policy_reloader);
        ctx.tracker.spawn(
            ctx.preauth
                .clone()
                .audit(ctx.state.services.audit.clone(), ctx.stop.clone())
                .instrument(tracing::info_span!("preauth_audit")),
        );
        ctx.tracker.spawn(
            accept_loop(https, ctx.clone(), workers.clone())
                .instrument(tracing::info_span!("gateway")),
        );
        if let Some(l) = redirect {
            let base = config.gateway.public_url.origin().ascii_serialization();
            ctx.tracker.spawn(
                redirect::serve(
                    l,
                    base,
                    ctx.stop.clone(),
                    ctx.tracker.clone(),
                    config.gateway.header_timeout,
                )
                .instrument(tracing::info_span!("redirect")),
            );
        }
        ready.set(Readiness::SERVING);

        shutdown.cancelled().await;
        ready.set(Readiness::DRAINING);
        tracing::info!(grace = ?config.gateway.shutdown_grace, "draining connections");
        ctx.stop.cancel();
        ctx.tracker.close();
        let drained = tokio::time::timeout(config.gateway.shutdown_grace, ctx.tracker.wait())
            .await
            .is_ok();
        let remaining = if drained {
            0
        } else {
            ctx.open.load(Ordering::Acquire)
        };
        if !drained {
            ctx.hard.cancel();
            let _ = tokio::time::timeout(HARD_STOP_WAIT, ctx.tracker.wait()).await;
        }
        // Whatever a worker still holds (connections past the hard stop) is dropped with it.
        workers.stop();
        let joined = tokio::task::spawn_blocking(move || workers.join());
        let _ = tokio::time::timeout(HARD_STOP_WAIT, joined).await;
        admin_stop.cancel();
        admin_tracker.close();
        let _ = tokio::time::timeout(HARD_STOP_WAIT, admin_tracker.wait()).await;
        Ok(DrainReport { drained, remaining })
    }
}

/// The gateway's background tasks: certificate and policy watchers, the store probe, the
/// revocation listener and the SSO providers' refresh, each under the tracker until
/// `ctx.stop`.
fn spawn_background(ctx: &ServeCtx, reloader: Reloader, policy_reloader: PolicyReloader) {
    ctx.tracker.spawn(
        reloader
            .watch(ctx.stop.clone())
            .instrument(tracing::info_span!("tls_watch")),
    );
    let st = &ctx.state;
    ctx.tracker.spawn(
        st.health
            .clone()
            .probe(st.services.store.clone(), ctx.stop.clone())
            .instrument(tracing::info_span!("store_probe")),
    );
    ctx.tracker.spawn(
        st.tunnels
            .clone()
            .listen(
                st.services.store.clone(),
                st.services.authenticator.clone(),
                ctx.stop.clone(),
            )
            .instrument(tracing::info_span!("revocations")),
    );
    ctx.tracker.spawn(
        st.web_sessions
            .clone()
            .run(st.services.store.clone(), ctx.stop.clone())
            .instrument(tracing::info_span!("web_recordings")),
    );
    ctx.tracker.spawn(
        policy_reloader
            .watch(ctx.stop.clone())
            .instrument(tracing::info_span!("policy_watch")),
    );
    // Follows users.toml (the bastion runs the same watcher on the same authenticator: the
    // second one finds nothing new and does nothing).
    ctx.tracker.spawn(
        st.services
            .authenticator
            .clone()
            .watch_users(ctx.stop.clone())
            .instrument(tracing::info_span!("users_watch")),
    );
    // Never awaited: a provider that is down or slow only disables its login button.
    ctx.tracker.spawn(
        crate::login::sso::refresh_providers(st.services.sso.clone(), ctx.stop.clone())
            .instrument(tracing::info_span!("sso_refresh")),
    );
}

async fn accept_loop(listener: TcpListener, ctx: Arc<ServeCtx>, workers: Arc<Workers>) {
    let limit = Arc::new(Semaphore::new(ctx.max_connections));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let permit = tokio::select! {
            () = ctx.stop.cancelled() => return,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = ctx.stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                // Before any TLS work: a source over its pre-authentication share is closed.
                let slot = match ctx.preauth.acquire(peer.ip()) {
                    Ok(s) => s,
                    Err(why) => {
                        tracing::debug!(client.addr = %peer, reason = why.as_str(), "connection refused: pre-authentication limit");
                        drop(tcp);
                        continue;
                    }
                };
                // Off this runtime's reactor, onto the worker's.
                let tcp = match tcp.into_std() {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot hand the connection to a worker");
                        continue;
                    }
                };
                let span = tracing::debug_span!("conn", client.addr = %peer);
                let conn_ctx = ctx.clone();
                let task = async move {
                    match tokio::net::TcpStream::from_std(tcp) {
                        Ok(tcp) => connection::serve(tcp, peer, permit, slot, conn_ctx).await,
                        Err(e) => tracing::debug!(error = %e, "cannot register the connection"),
                    }
                };
                workers.spawn(ctx.tracker.track_future(task.instrument(span)));
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff = ?backoff, "accept failed; backing off");
                tokio::select! {
                    () = ctx.stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}
