//! Upstreams that report what reaches them over a channel: [`upstream`] answers 200
//! `upstream ok` (or echoes a WebSocket after 101) and sends each request it saw;
//! [`silent_upstream`] accepts connections, never answers, and reports each accept.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use crate::net::serve_http1;

/// What an upstream saw.
#[derive(Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A recording upstream: answers 200 "upstream ok" (or echoes a WebSocket after 101), and
/// reports each request. With `gate`, it waits for the gate before answering.
pub async fn upstream(gate: Option<Arc<Notify>>) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = service_fn(move |req| answer(req, tx.clone(), gate.clone()));
    tokio::spawn(serve_http1(listener, svc));
    (addr, rx)
}

/// One request: the WebSocket echo, or the request reported and answered (after the gate).
async fn answer(
    mut req: Request<Incoming>,
    tx: mpsc::UnboundedSender<Seen>,
    gate: Option<Arc<Notify>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v == "websocket")
    {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(on.await.unwrap());
            let mut buf = [0u8; 1024];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        let resp = Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let _ = tx.send(Seen {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
    });
    if let Some(g) = gate {
        g.notified().await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"upstream ok"))))
}

/// An upstream that accepts connections and never answers; reports each accepted connection.
pub async fn silent_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
            let _ = tx.send(());
        }
    });
    (addr, rx)
}
