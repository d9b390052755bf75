//! Loopback ports: a free one to hand to a component that binds it itself, and a closed one
//! (nothing listens) for "upstream down" tests; and the accept loop of the kit's HTTP servers.
//!
//! A port picked by binding `:0` and closing may be taken again before the component binds
//! it: launchers that use [`free_port`] retry on a bind failure (see [`crate::redis`]).

use std::net::{SocketAddr, TcpListener};

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::TokioIo;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A loopback port nothing listened on a moment ago.
pub fn free_port() -> u16 {
    closed_port().port()
}

/// A loopback address nothing listens on (for "upstream down").
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Serves HTTP/1.1 (upgrades allowed) with `svc` on every connection `listener` accepts, each
/// connection on its own task; runs until its task is aborted.
pub async fn serve_http1<S, B>(listener: tokio::net::TcpListener, svc: S)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let svc = svc.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}
