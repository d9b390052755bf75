//! The optional plain-HTTP listener: every request gets a 308 to the same path on the public
//! HTTPS origin — the public host from the config, never the client's Host (no open redirect).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::respond;

const REDIRECT_MAX_CONNECTIONS: usize = 1024;

fn location(base: &str, req: &Request<Incoming>) -> Option<HeaderValue> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if !pq.starts_with('/') {
        return None;
    }
    HeaderValue::from_str(&format!("{base}{pq}")).ok()
}

pub(super) async fn serve(
    listener: TcpListener,
    base: String,
    stop: CancellationToken,
    tracker: TaskTracker,
    header_timeout: Duration,
) {
    let base: Arc<str> = Arc::from(base);
    let limit = Arc::new(Semaphore::new(REDIRECT_MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, _) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "redirect accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (base, stop) = (base.clone(), stop.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = match location(&base, &req) {
                    Some(loc) => respond::redirect(loc),
                    None => respond::error(StatusCode::BAD_REQUEST, "-", true),
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(false);
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "redirect connection error");
                    }
                    return;
                }
                () = stop.cancelled() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(header_timeout, conn).await;
        });
    }
}
