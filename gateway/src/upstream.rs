//! Upstream HTTP/1.1 connections owned by one client connection and driven by its task.
//!
//! A shared pool puts every upstream connection in a task of its own: each proxied request
//! then crosses tasks (often worker threads) twice, and takes a pool-wide lock. Here a client
//! connection keeps its own few keep-alive connections to the upstreams it used, and its
//! connection task polls them beside the client side, so a request and its upstream exchange
//! run in one task. An HTTP/1 client has one request in flight, so one upstream connection
//! per app is reused for its whole life; an HTTP/2 client opens one per concurrent request
//! and keeps at most [`MAX_IDLE`] for reuse. When the client connection ends, its idle
//! upstream connections are closed.
//!
//! Threat: an upstream closing an idle keep-alive connection just as a request is sent on it
//! (its keep-alive timeout); a hung upstream. Mitigation: a request that was provably not
//! sent is retried once on a fresh connection; connect and response deadlines are the
//! caller's (502/504).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::ProxyError;

/// Idle upstream connections a client connection keeps for reuse.
pub const MAX_IDLE: usize = 4;

type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The upstream side of one client connection.
#[derive(Default)]
pub struct Upstreams {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    idle: Vec<(Authority, http1::SendRequest<Incoming>)>,
    /// Connections opened by a request, not yet adopted by the connection task.
    new: Vec<ConnFuture>,
    closed: bool,
}

/// A checked-out upstream connection; `fresh` when it was opened for this request.
struct Checkout {
    sender: http1::SendRequest<Incoming>,
    fresh: bool,
}

impl Upstreams {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `req` to `authority` and returns the response head (the body streams on,
    /// driven by the connection task).
    pub async fn send(
        &self,
        authority: &Authority,
        req: Request<Incoming>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut co = self.checkout(authority, connect_timeout).await?;
        let resp = match co.sender.try_send_request(req).await {
            Ok(resp) => resp,
            Err(mut e) => match e.take_message() {
                // Not sent (the upstream closed this idle connection): once more, fresh.
                Some(req) if !co.fresh => {
                    tracing::debug!(error = %e.error(), "reused upstream connection was closed; retrying");
                    // Boxed, like the open in `checkout`: a rare path.
                    co = Box::pin(self.open(authority, connect_timeout)).await?;
                    co.sender
                        .try_send_request(req)
                        .await
                        .map_err(|e| ProxyError::Upstream(e.into_error()))?
                }
                _ => return Err(ProxyError::Upstream(e.into_error())),
            },
        };
        self.checkin(authority, co.sender);
        Ok(resp)
    }

    async fn checkout(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
    ) -> Result<Checkout, ProxyError> {
        {
            let mut g = self.inner();
            g.idle.retain(|(_, s)| !s.is_closed());
            if let Some(i) = g
                .idle
                .iter()
                .position(|(a, s)| a == authority && s.is_ready())
            {
                let (_, sender) = g.idle.swap_remove(i);
                return Ok(Checkout {
                    sender,
                    fresh: false,
                });
            }
        }
        // Boxed: opening is rare (once per client connection and upstream), and its future
        // inline would enlarge every request's future, which is moved at each await.
        Box::pin(self.open(authority, connect_timeout)).await
    }

    async fn open(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
    ) -> Result<Checkout, ProxyError> {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority.port_u16().unwrap_or(80);
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                ProxyError::UpstreamConnect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(ProxyError::UpstreamConnect)?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY upstream");
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(ProxyError::Upstream)?;
        let fut: ConnFuture = Box::pin(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        let mut g = self.inner();
        if g.closed {
            // The client connection is gone: nobody would drive this one.
            return Err(ProxyError::UpstreamClosed);
        }
        g.new.push(fut);
        Ok(Checkout {
            sender,
            fresh: true,
        })
    }

    fn checkin(&self, authority: &Authority, sender: http1::SendRequest<Incoming>) {
        let mut g = self.inner();
        if g.closed || sender.is_closed() {
            return;
        }
        if g.idle.len() >= MAX_IDLE {
            g.idle.remove(0);
        }
        g.idle.push((authority.clone(), sender));
    }

    /// Lets the idle connections go (they close once their driver sees it); later requests
    /// open new ones. For a client connection that is parked while idle.
    pub fn release_idle(&self) {
        self.inner().idle.clear();
    }

    /// Closes the idle connections and hands back those not yet adopted; later requests
    /// get no connection.
    pub fn close(&self) -> Vec<ConnFuture> {
        let mut g = self.inner();
        g.closed = true;
        g.idle.clear();
        std::mem::take(&mut g.new)
    }
}

/// The upstream connections a connection task drives.
#[derive(Default)]
pub struct Driver {
    conns: Vec<ConnFuture>,
}

impl Driver {
    /// Polls every upstream connection (adopting new ones); pending while any is open, and
    /// also when there is none (the select branch never ends by itself).
    pub fn poll_drive(&mut self, cx: &mut Context<'_>, ups: &Upstreams) -> Poll<()> {
        {
            let mut g = ups.inner();
            if !g.new.is_empty() {
                self.conns.append(&mut g.new);
            }
        }
        poll_all(&mut self.conns, cx);
        Poll::Pending
    }

    /// What is left to drive once the client side is done.
    pub fn into_rest(self, ups: &Upstreams) -> impl Future<Output = ()> + Send + 'static {
        let mut conns = self.conns;
        conns.extend(ups.close());
        std::future::poll_fn(move |cx| {
            poll_all(&mut conns, cx);
            if conns.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// Polls every connection once, dropping those that ended.
fn poll_all(conns: &mut Vec<ConnFuture>, cx: &mut Context<'_>) {
    conns.retain_mut(|c| c.as_mut().poll(cx).is_pending());
}
