//! Outbound HTTPS: one small client for the calls Gatehouse makes itself (alert webhooks,
//! OpenID Connect discovery, token and JWKS requests).
//!
//! Threats: a peer that never answers (a stalled call holding a task forever), a huge or
//! endless response body (memory), a plain-http URL leaking data on the network, a
//! man-in-the-middle. Mitigations: every call has one deadline covering connect, TLS,
//! request and the whole body; the body is read up to a caller-given limit; `https` is
//! required except for a loopback host (local tests); TLS is rustls with aws-lc-rs, the
//! webpki root set plus an optional extra CA file, certificate and host name always checked.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Connect deadline inside a call's own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Why an outbound call failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("`{0}` is not an https URL (plain http is allowed only for a loopback host)")]
    Scheme(String),
    #[error("invalid request")]
    Request(#[source] http::Error),
    #[error("the call did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the call failed")]
    Call(#[source] hyper_util::client::legacy::Error),
    #[error("reading the response body failed or it is larger than {limit} bytes")]
    Body {
        limit: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: cannot read the CA file")]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: no usable CA certificate in the file")]
    CaCert {
        path: std::path::PathBuf,
        #[source]
        source: Option<rustls::Error>,
    },
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
}

/// One outbound request.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: Method,
    pub url: url::Url,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Deadline for the whole call, body included.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: usize,
}

impl OutboundRequest {
    /// A `POST` of a JSON body.
    pub fn post_json(url: url::Url, body: Vec<u8>, timeout: Duration) -> OutboundRequest {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        OutboundRequest {
            method: Method::POST,
            url,
            headers,
            body: Bytes::from(body),
            timeout,
            max_body: 64 * 1024,
        }
    }
}

/// A response read within the request's limits.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The client; cheap to clone (connections are pooled and shared).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// Whether `url` may be called: https, or http to a loopback host.
pub fn url_allowed(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => is_loopback(url),
        _ => false,
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl HttpClient {
    /// A client trusting the webpki roots and, when given, the certificates of `extra_ca`
    /// (PEM).
    pub fn new(extra_ca: Option<&Path>) -> Result<HttpClient, OutboundError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_ca {
            let mut added = 0;
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|source| OutboundError::CaFile {
                    path: path.to_path_buf(),
                    source,
                })?
            {
                let cert = cert.map_err(|source| OutboundError::CaFile {
                    path: path.to_path_buf(),
                    source,
                })?;
                roots.add(cert).map_err(|source| OutboundError::CaCert {
                    path: path.to_path_buf(),
                    source: Some(source),
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(OutboundError::CaCert {
                    path: path.to_path_buf(),
                    source: None,
                });
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(OutboundError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(2)
            .build(connector);
        Ok(HttpClient { inner })
    }

    /// Sends `req` and reads the response within its deadline and body limit. Any status
    /// is a response; the caller decides what a failure status means.
    pub async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        if !url_allowed(&req.url) {
            return Err(OutboundError::Scheme(redacted(&req.url)));
        }
        let mut builder = http::Request::builder()
            .method(req.method)
            .uri(req.url.as_str());
        if let Some(h) = builder.headers_mut() {
            h.extend(req.headers);
        }
        let request = builder
            .body(Full::new(req.body))
            .map_err(OutboundError::Request)?;
        let limit = req.max_body;
        let call = async {
            let resp = self
                .inner
                .request(request)
                .await
                .map_err(OutboundError::Call)?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|source| OutboundError::Body { limit, source })?
                .to_bytes();
            Ok(OutboundResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(req.timeout, call)
            .await
            .map_err(|_| OutboundError::Timeout(req.timeout))?
    }

    /// [`send`](HttpClient::send) for callers holding an `http::Request<Vec<u8>>` (the shape
    /// openidconnect's bring-your-own client uses).
    pub async fn execute(
        &self,
        req: http::Request<Vec<u8>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<http::Response<Vec<u8>>, OutboundError> {
        let (parts, body) = req.into_parts();
        let url = url::Url::parse(&parts.uri.to_string())
            .map_err(|_| OutboundError::Scheme(parts.uri.to_string()))?;
        let resp = self
            .send(OutboundRequest {
                method: parts.method,
                url,
                headers: parts.headers,
                body: Bytes::from(body),
                timeout,
                max_body,
            })
            .await?;
        let mut out = http::Response::new(resp.body.to_vec());
        *out.status_mut() = resp.status;
        *out.headers_mut() = resp.headers;
        Ok(out)
    }
}

/// A URL for error messages: scheme, host and port only (no path, query or credentials).
pub fn redacted(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        _ => format!("{}://", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_everywhere_http_only_on_loopback() {
        for (url, ok) in [
            ("https://hooks.example.com/x", true),
            ("http://127.0.0.1:9/x", true),
            ("http://[::1]:9/x", true),
            ("http://localhost:9/x", true),
            ("http://hooks.example.com/x", false),
            ("http://10.0.0.1/x", false),
            ("ftp://127.0.0.1/x", false),
        ] {
            assert_eq!(url_allowed(&url::Url::parse(url).unwrap()), ok, "{url}");
        }
        assert_eq!(
            redacted(&url::Url::parse("https://u:p@h.example:8443/a?token=1").unwrap()),
            "https://h.example:8443"
        );
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_a_big_body_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut n = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                n += 1;
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    if n == 1 {
                        // Never answers.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    } else {
                        let body = "x".repeat(2000);
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
                    }
                });
            }
        });
        let client = HttpClient::new(None).unwrap();
        let url = url::Url::parse(&format!("http://{addr}/hook")).unwrap();
        let start = std::time::Instant::now();
        let r = client
            .send(OutboundRequest::post_json(
                url.clone(),
                b"{}".to_vec(),
                Duration::from_millis(300),
            ))
            .await;
        assert!(matches!(r, Err(OutboundError::Timeout(_))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        let mut req =
            OutboundRequest::post_json(url.clone(), b"{}".to_vec(), Duration::from_secs(5));
        req.max_body = 100;
        let r = client.send(req).await;
        assert!(matches!(r, Err(OutboundError::Body { .. })), "{r:?}");
        let mut req = OutboundRequest::post_json(url, b"{}".to_vec(), Duration::from_secs(5));
        req.max_body = 4096;
        let ok = client.send(req).await.unwrap();
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.body.len(), 2000);
        let plain = url::Url::parse("http://hooks.example.com/x").unwrap();
        assert!(matches!(
            client
                .send(OutboundRequest::post_json(
                    plain,
                    vec![],
                    Duration::from_secs(1)
                ))
                .await,
            Err(OutboundError::Scheme(_))
        ));
    }
}
