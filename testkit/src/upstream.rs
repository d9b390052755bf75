//! A real HTTP/1.1 upstream on 127.0.0.1:0 (hyper), counting every request it receives so tests
//! can assert that nothing reached it. Endpoints:
//! - `/slow/<ms>`: answers 200 `slow done` after `ms` milliseconds;
//! - `/download/<mib>`: streams `mib` MiB of [`pattern_chunk`] data, never holding it all;
//! - `/upload`: reads the body frame by frame, answers `{"bytes": n, "sha256": hex}`;
//! - `/ws`: a WebSocket-style upgrade (101) that echoes every byte afterwards;
//! - `/set-cookie?c=V&c=W`: answers 200 with one `Set-Cookie` per `c` (percent-decoded);
//! - anything else: echo — `{"method", "path", "query", "version", "headers": [[name, value]]}`.
//!
//! [`recording`] holds the upstreams that report each request (or connection) over a channel
//! instead: a test that must see what passed reads it there.

pub mod recording;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::net::serve_http1;

/// Size of one streamed chunk of the download endpoint.
pub const CHUNK: usize = 64 * 1024;
pub const MIB: u64 = 1024 * 1024;

type RespBody = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct State {
    count: AtomicU64,
    paths: Mutex<Vec<String>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    seen: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let st = state.clone();
        let svc = hyper::service::service_fn(move |req| {
            let st = st.clone();
            let tx = tx.clone();
            async move { Ok::<_, Infallible>(handle(req, &st, &tx).await) }
        });
        let task = tokio::spawn(serve_http1(listener, svc));
        Upstream {
            addr,
            state,
            seen: rx,
            task,
        }
    }

    /// `http://127.0.0.1:PORT` for the config's `upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far (any endpoint).
    pub fn count(&self) -> u64 {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Request targets received so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.state.paths.lock().unwrap().clone()
    }

    /// Waits until the upstream has received at least `n` requests (readiness signal).
    pub async fn wait_for_count(&self, n: u64, limit: Duration) {
        let mut rx = self.seen.clone();
        let res = tokio::time::timeout(limit, rx.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(res, Ok(Ok(_))),
            "upstream did not receive {n} request(s) within {limit:?}; got {:?}",
            self.paths()
        );
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub use crate::net::closed_port;

async fn handle(req: Request<Incoming>, st: &State, tx: &watch::Sender<u64>) -> Response<RespBody> {
    let target = req.uri().path_and_query().map_or_else(
        || req.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    st.paths.lock().unwrap().push(target);
    let n = st.count.fetch_add(1, Ordering::SeqCst) + 1;
    tx.send_replace(n);
    let path = req.uri().path().to_string();
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return text(StatusCode::OK, "slow done");
    }
    if let Some(mib) = path.strip_prefix("/download/") {
        let mib: u64 = mib.parse().unwrap_or(1);
        let body = PatternBody::new(mib * MIB);
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/octet-stream")
            .body(body.boxed())
            .unwrap();
    }
    if path == "/upload" {
        return upload(req).await;
    }
    if path == "/ws" {
        return upgrade(req);
    }
    if path == "/set-cookie" {
        return set_cookies(req.uri().query().unwrap_or_default());
    }
    echo(&req)
}

/// `%XX` and `+` decoding of one query value.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn set_cookies(query: &str) -> Response<RespBody> {
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain");
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("c=") {
            b = b.header("set-cookie", percent_decode(v));
        }
    }
    b.body(Full::new(Bytes::from_static(b"cookies set")).boxed())
        .unwrap()
}

fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .unwrap()
}

fn echo(req: &Request<Incoming>) -> Response<RespBody> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("x-upstream", "echo")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

async fn upload(req: Request<Incoming>) -> Response<RespBody> {
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    total += data.len() as u64;
                    hasher.update(&data);
                }
            }
            Err(e) => {
                let msg = format!("{{\"error\":\"{e}\",\"bytes\":{total}}}");
                return Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body(Full::new(Bytes::from(msg)).boxed())
                    .unwrap();
            }
        }
    }
    let json = serde_json::json!({"bytes": total, "sha256": hex(&hasher.finalize())});
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())).boxed())
        .unwrap()
}

fn upgrade(mut req: Request<Incoming>) -> Response<RespBody> {
    let wants = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants {
        return text(StatusCode::BAD_REQUEST, "expected an upgrade to websocket");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(up) = on_upgrade.await {
            let io = TokioIo::new(up);
            let (mut r, mut w) = tokio::io::split(io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

/// Deterministic content of chunk `i` of a download/upload stream (each chunk differs, so a
/// reordered or repeated chunk changes the hash).
pub fn pattern_chunk(i: u64, len: usize) -> Bytes {
    let seed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut v = Vec::with_capacity(len);
    let mut x = seed | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// SHA-256 (hex) of `total` bytes of the pattern stream.
pub fn pattern_sha256(total: u64) -> String {
    let mut h = Sha256::new();
    let mut left = total;
    let mut i = 0;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        h.update(pattern_chunk(i, n));
        left -= n as u64;
        i += 1;
    }
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A body producing `total` bytes of the pattern, one chunk per poll, so memory stays flat on
/// whichever side produces it.
pub struct PatternBody {
    left: u64,
    index: u64,
    /// Announce the size (HTTP/1.1 Content-Length) or not (chunked).
    sized: bool,
}

impl PatternBody {
    pub fn new(total: u64) -> PatternBody {
        PatternBody {
            left: total,
            index: 0,
            sized: true,
        }
    }

    /// The same stream without a size hint: HTTP/1.1 sends it chunked.
    pub fn chunked(total: u64) -> PatternBody {
        PatternBody {
            sized: false,
            ..PatternBody::new(total)
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        let chunk = pattern_chunk(self.index, n);
        self.index += 1;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.sized {
            hyper::body::SizeHint::with_exact(self.left)
        } else {
            hyper::body::SizeHint::default()
        }
    }
}
