//! Outbound HTTPS: the one client for the calls Gatehouse makes itself (alert webhooks;
//! OpenID Connect discovery, key sets, token and userinfo endpoints).
//!
//! Threats: a peer that never answers (a stalled call holding a task forever), a huge or
//! endless response body (memory), a redirect to somewhere else, a plain-http URL leaking
//! data on the network, a man-in-the-middle, a secret in a log line. Mitigations: every call
//! has one deadline covering connect, TLS, request and the whole body; the body is read up
//! to a caller-given limit; redirects are never followed; `https` is required (plain http
//! only to a loopback host, and only for a client made to allow it: local tests); TLS is
//! rustls on aws-lc-rs with the webpki roots (plus an optional extra CA file) or, for an SSO
//! provider with a `ca_file`, only that file's anchors; certificate and host name are always
//! checked; requests and responses are never logged, and URLs in errors are cut to scheme,
//! host and port.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{CaBundle, OidcConfig};
pub use crate::error::OutboundError;

/// Connect deadline inside a call's own deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle pooled connections kept per host (a webhook or a provider: a handful of calls).
const POOL_MAX_IDLE_PER_HOST: usize = 2;

/// Which certificates a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The built-in webpki roots, plus the certificates of a PEM file when given (the alert
    /// webhook's `ca_file`).
    WebRoots { extra_ca: Option<&'a Path> },
    /// Only these anchors (an SSO provider's `ca_file`, read and checked by the config).
    Only(&'a CaBundle),
}

/// Where plain http may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainHttp {
    /// Nowhere: https only.
    Never,
    /// To a loopback host (`localhost`, 127.0.0.0/8, ::1) only.
    Loopback,
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
            HeaderValue::from_static("application/json"),
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
    plain: PlainHttp,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("plain_http", &self.plain)
            .finish_non_exhaustive()
    }
}

/// Whether `url` may be called at all: https, or http to a loopback host (what
/// [`HttpClient::new`]'s clients allow; config validation uses it for webhook URLs).
pub fn url_allowed(url: &url::Url) -> bool {
    allowed(url, PlainHttp::Loopback)
}

fn allowed(url: &url::Url, plain: PlainHttp) -> bool {
    match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => plain == PlainHttp::Loopback && is_loopback(url),
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

/// The anchors of `trust`.
fn roots(trust: Trust<'_>) -> Result<rustls::RootCertStore, OutboundError> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Trust::Only(ca) => {
            for c in ca.certs.iter() {
                roots
                    .add(c.clone())
                    .map_err(|source| OutboundError::CaCert {
                        path: ca.path.clone(),
                        source: Some(source),
                    })?;
            }
        }
        Trust::WebRoots { extra_ca } => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = extra_ca {
                add_pem_file(&mut roots, path)?;
            }
        }
    }
    Ok(roots)
}

fn add_pem_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), OutboundError> {
    let file_error = |source| OutboundError::CaFile {
        path: path.to_path_buf(),
        source,
    };
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(file_error)? {
        roots
            .add(cert.map_err(file_error)?)
            .map_err(|source| OutboundError::CaCert {
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
    Ok(())
}

impl HttpClient {
    /// A client trusting the webpki roots and, when given, the certificates of `extra_ca`
    /// (PEM); plain http to loopback allowed (alert webhooks, validated by the config).
    pub fn new(extra_ca: Option<&Path>) -> Result<HttpClient, OutboundError> {
        Self::with(Trust::WebRoots { extra_ca }, PlainHttp::Loopback)
    }

    /// The client of one SSO provider: its `ca_file` anchors only (else the webpki roots);
    /// plain http only when its issuer is itself plain http on loopback (tests).
    pub fn for_provider(p: &OidcConfig) -> Result<HttpClient, OutboundError> {
        let trust =
            p.ca.as_ref()
                .map_or(Trust::WebRoots { extra_ca: None }, Trust::Only);
        let plain = if p.insecure_loopback {
            PlainHttp::Loopback
        } else {
            PlainHttp::Never
        };
        Self::with(trust, plain)
    }

    /// A client with these anchors and this plain-http rule.
    pub fn with(trust: Trust<'_>, plain: PlainHttp) -> Result<HttpClient, OutboundError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(OutboundError::Tls)?
            .with_root_certificates(roots(trust)?)
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
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        Ok(HttpClient { inner, plain })
    }

    /// True when this client would call `url` (scheme and host rule).
    pub fn allows(&self, url: &url::Url) -> bool {
        allowed(url, self.plain)
    }

    /// Sends `req` and reads the response within its deadline and body limit; follows no
    /// redirect. Any status is a response; the caller decides what a failure status means.
    pub async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let url = redacted(&req.url);
        if !self.allows(&req.url) {
            return Err(OutboundError::Scheme(url));
        }
        let mut builder = http::Request::builder()
            .method(req.method)
            .uri(req.url.as_str());
        if let Some(h) = builder.headers_mut() {
            h.extend(req.headers);
            h.entry(http::header::USER_AGENT)
                .or_insert(HeaderValue::from_static("gatehouse"));
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
                .map_err(|source| OutboundError::Call {
                    url: url.clone(),
                    source,
                })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|source| OutboundError::Body {
                    url: url.clone(),
                    limit,
                    source,
                })?
                .to_bytes();
            Ok(OutboundResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(req.timeout, call)
            .await
            .map_err(|_| OutboundError::Timeout {
                url: url.clone(),
                after: req.timeout,
            })?
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
        let url = url::Url::parse(&parts.uri.to_string()).map_err(|_| {
            OutboundError::Scheme(format!(
                "{}://{}",
                parts.uri.scheme_str().unwrap_or("?"),
                parts.uri.authority().map_or("?", |a| a.as_str())
            ))
        })?;
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
mod tests;
