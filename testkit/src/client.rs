//! Clients: TLS (rustls, test CA, chosen ALPN), HTTP/1.1 and HTTP/2 (hyper) over it, raw bytes
//! over TLS for attacks, and plain HTTP/1.1 for the admin listener.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = BoxBody<Bytes, BoxError>;

pub const H2: &[u8] = b"h2";
pub const H1: &[u8] = b"http/1.1";

/// A response read in full.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {} body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Values of header `name` as the upstream's echo saw them (lowercase names).
pub fn echoed_headers(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str() == Some(name))
        .map(|pair| pair[1].as_str().unwrap().to_string())
        .collect()
}

pub fn empty() -> ReqBody {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

pub fn full(b: impl Into<Bytes>) -> ReqBody {
    http_body_util::Full::new(b.into())
        .map_err(|e| match e {})
        .boxed()
}

/// TCP + TLS to `addr` with SNI `sni`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e))?;
    TlsConnector::from(cfg).connect(name, tcp).await
}

pub fn negotiated_alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
}

/// `extra` headers as given, then the connection's cookie unless `extra` sets one, then `body`.
fn finish(
    mut b: http::request::Builder,
    extra: &[(&str, &str)],
    cookie: Option<&str>,
    body: ReqBody,
) -> Request<ReqBody> {
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b = add_cookie(b, cookie, extra);
    b.body(body).unwrap()
}

/// An HTTP/1.1 connection (kept alive; upgrades allowed).
pub struct H1Conn {
    pub send: hyper::client::conn::http1::SendRequest<ReqBody>,
    pub alpn: Option<Vec<u8>>,
    pub leaf: Option<CertificateDer<'static>>,
    host: String,
    /// `Cookie` header value added to every request that sets none itself.
    pub cookie: Option<String>,
}

impl H1Conn {
    pub async fn over<S>(io: S, host: &str) -> H1Conn
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        H1Conn {
            send,
            alpn: None,
            leaf: None,
            host: host.to_string(),
            cookie: None,
        }
    }

    pub async fn connect(addr: SocketAddr, host: &str, cfg: Arc<ClientConfig>) -> H1Conn {
        let tls = tls_connect(addr, host, cfg)
            .await
            .unwrap_or_else(|e| panic!("TLS connection to {addr} ({host}) failed: {e}"));
        let alpn = negotiated_alpn(&tls);
        let leaf = peer_leaf(&tls);
        let mut c = H1Conn::over(tls, host).await;
        c.alpn = alpn;
        c.leaf = leaf;
        c
    }

    /// Sends `cookie` (a whole `Cookie` header value) with every request from now on.
    pub fn with_cookie(mut self, cookie: Option<String>) -> H1Conn {
        self.cookie = cookie;
        self
    }

    /// A WebSocket upgrade (`GET path`, the RFC 6455 sample key) with `extra` headers after
    /// the upgrade headers.
    pub fn upgrade_request(&self, path: &str, extra: &[(&str, &str)]) -> Request<ReqBody> {
        let mut headers = vec![
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        headers.extend_from_slice(extra);
        self.request("GET", path, &headers, empty())
    }

    /// A request with the `Host` header set; `extra` headers appended as given.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: ReqBody,
    ) -> Request<ReqBody> {
        let b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        finish(b, extra, self.cookie.as_deref(), body)
    }

    pub async fn send_head(
        &mut self,
        req: Request<ReqBody>,
    ) -> hyper::Result<hyper::Response<Incoming>> {
        self.send.ready().await?;
        self.send.send_request(req).await
    }

    pub async fn send(&mut self, req: Request<ReqBody>) -> Resp {
        let resp = self.send_head(req).await.expect("HTTP/1.1 request failed");
        collect(resp).await
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        let req = self.request("GET", path, &[], empty());
        self.send(req).await
    }
}

/// An HTTP/2 connection.
pub struct H2Conn {
    pub send: hyper::client::conn::http2::SendRequest<ReqBody>,
    pub alpn: Option<Vec<u8>>,
    host: String,
    /// `Cookie` header value added to every request that sets none itself.
    pub cookie: Option<String>,
}

impl H2Conn {
    pub async fn connect(addr: SocketAddr, host: &str, cfg: Arc<ClientConfig>) -> H2Conn {
        let tls = tls_connect(addr, host, cfg)
            .await
            .unwrap_or_else(|e| panic!("TLS connection to {addr} ({host}) failed: {e}"));
        let alpn = negotiated_alpn(&tls);
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap_or_else(|e| panic!("HTTP/2 handshake failed (ALPN {alpn:?}): {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Conn {
            send,
            alpn,
            host: host.to_string(),
            cookie: None,
        }
    }

    /// Sends `cookie` (a whole `Cookie` header value) with every request from now on.
    pub fn with_cookie(mut self, cookie: Option<String>) -> H2Conn {
        self.cookie = cookie;
        self
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: ReqBody,
    ) -> Request<ReqBody> {
        let b = Request::builder()
            .method(method)
            .version(Version::HTTP_2)
            .uri(format!("https://{}{path}", self.host));
        finish(b, extra, self.cookie.as_deref(), body)
    }

    pub async fn send(&mut self, req: Request<ReqBody>) -> Resp {
        self.send
            .ready()
            .await
            .expect("HTTP/2 connection not ready");
        let resp = self
            .send
            .send_request(req)
            .await
            .expect("HTTP/2 request failed");
        collect(resp).await
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        let req = self.request("GET", path, &[], empty());
        self.send(req).await
    }
}

/// Adds the connection's cookie unless the caller set a `Cookie` header itself.
fn add_cookie(
    b: http::request::Builder,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
) -> http::request::Builder {
    match cookie {
        Some(c) if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("cookie")) => {
            b.header("cookie", c)
        }
        _ => b,
    }
}

pub async fn collect(resp: hyper::Response<Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "reading the body of a {} response failed: {e}",
                parts.status
            )
        })
        .to_bytes();
    Resp {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// What the server did with a raw request: the bytes it sent back and whether it closed.
#[derive(Debug)]
pub struct RawOutcome {
    pub bytes: Vec<u8>,
    /// The server closed (EOF, reset or TLS error) before the deadline.
    pub closed: bool,
    pub elapsed: Duration,
}

impl RawOutcome {
    /// The status code of the first response, if any.
    pub fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        let line = text.lines().next()?;
        let mut parts = line.split_whitespace();
        let proto = parts.next()?;
        if !proto.starts_with("HTTP/") {
            return None;
        }
        parts.next()?.parse().ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Raw bytes over TLS (ALPN http/1.1), for requests hyper's client would refuse to send.
pub struct RawConn {
    pub tls: TlsStream<TcpStream>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr, sni: &str, cfg: Arc<ClientConfig>) -> RawConn {
        let tls = tls_connect(addr, sni, cfg)
            .await
            .unwrap_or_else(|e| panic!("TLS connection to {addr} failed: {e}"));
        RawConn { tls }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes).await?;
        self.tls.flush().await
    }

    /// Reads until the server closes or `limit` passes.
    pub async fn read_until_close(&mut self, limit: Duration) -> RawOutcome {
        read_until_close(&mut self.tls, limit).await
    }
}

pub async fn read_until_close<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    limit: Duration,
) -> RawOutcome {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Err(_) => {
                return RawOutcome {
                    bytes,
                    closed: false,
                    elapsed: start.elapsed(),
                };
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return RawOutcome {
                    bytes,
                    closed: true,
                    elapsed: start.elapsed(),
                };
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// A plain-HTTP GET (admin listener, redirect listener).
pub async fn plain_get(addr: SocketAddr, host: &str, path: &str) -> Resp {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let mut c = H1Conn::over(tcp, host).await;
    c.get(path).await
}
