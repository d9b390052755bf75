//! The quick-start demo upstream: an in-process HTTP/1.1 app on 127.0.0.1 that shows the
//! request it received (method, path, every header, HTML-escaped), highlighting the identity
//! and forwarding headers Gatehouse sets, so a newcomer sees what an upstream sees.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::pages::escape;

fn highlighted(name: &str) -> bool {
    name.starts_with("x-gatehouse-") || name.starts_with("x-forwarded-")
}

fn page(req: &Request<Incoming>) -> String {
    let mut rows = String::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        let class = if highlighted(name.as_str()) {
            " class=\"id\""
        } else {
            ""
        };
        let _ = writeln!(
            rows,
            "<tr{class}><th>{}</th><td>{}</td></tr>",
            escape(name.as_str()),
            escape(&value)
        );
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Gatehouse demo app</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}}\
table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd;\
font-family:monospace;word-break:break-all}}tr.id{{background:#fff3c4;font-weight:bold}}</style></head>\n<body>\
<h1>Gatehouse demo app</h1><p>This upstream received the request below through Gatehouse. Highlighted rows \
are the identity (<code>x-gatehouse-user</code>, <code>x-gatehouse-groups</code>, \
<code>x-gatehouse-assertion</code>) and <code>X-Forwarded-*</code> headers set by the gateway; a client can \
never set them itself.</p>\n<p><b>{method}</b> <code>{path}</code></p>\n<table>\n{rows}</table></body></html>\n",
        method = escape(req.method().as_str()),
        path = escape(path),
    )
}

/// Starts the demo app on `127.0.0.1:0`; it stops when `stop` is cancelled.
pub async fn spawn(stop: CancellationToken) -> Result<SocketAddr, GatewayError> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(GatewayError::Demo)?;
    let addr = listener.local_addr().map_err(GatewayError::Demo)?;
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                () = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "demo app accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| {
                    let mut resp = Response::new(Full::new(Bytes::from(page(&req))));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    async move { Ok::<_, Infallible>(resp) }
                });
                let mut b = http1::Builder::new();
                b.timer(TokioTimer::new());
                let conn = b.serve_connection(TokioIo::new(tcp), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(addr)
}
