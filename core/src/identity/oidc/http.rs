//! The outbound HTTP client of SSO: discovery, key sets, the token and userinfo endpoints.
//!
//! Threat: a provider (or whoever sits between) that hangs, streams without end, redirects
//! elsewhere, or downgrades to plain http; a secret in a log line. Mitigation: every request
//! runs under one deadline (connect included), bodies are capped, redirects are not
//! followed, https is required (plain http only to a loopback address, and only for a
//! provider whose issuer is itself plain http on loopback), TLS is rustls on aws-lc-rs with
//! either the built-in web roots or the provider's own `ca_file`; requests and responses are
//! never logged. [`OidcHttp`] is the seam: the shared outbound client can replace
//! [`HyperHttp`] without touching the protocol code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{CaBundle, OidcConfig};
use crate::error::OidcHttpError;

/// Deadline for one request, from connecting to the last body byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for the TCP connection alone.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read (discovery documents and key sets are a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024;
/// Idle pooled connections to a provider are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// A boxed, `Send` response future.
pub type HttpFuture<'a> =
    Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, OidcHttpError>> + Send + 'a>>;

/// Sends one request and returns the whole (bounded) response; follows no redirect.
pub trait OidcHttp: Send + Sync + std::fmt::Debug {
    fn send(&self, request: http::Request<Vec<u8>>) -> HttpFuture<'_>;
}

/// Which URLs a provider's client may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Plain http is allowed to loopback addresses (the issuer itself is plain http on
    /// loopback: tests).
    pub insecure_loopback: bool,
}

impl UrlPolicy {
    /// Checks a request URI: https anywhere, http only to loopback when allowed.
    pub fn check(&self, uri: &http::Uri) -> Result<(), OidcHttpError> {
        let refuse = || OidcHttpError::InsecureUrl(redacted(uri));
        match uri.scheme_str() {
            Some("https") if uri.host().is_some() => Ok(()),
            Some("http") if self.insecure_loopback && uri.host().is_some_and(is_loopback) => Ok(()),
            _ => Err(refuse()),
        }
    }
}

/// `localhost` or a loopback IP literal (IPv6 in brackets, as in a URI).
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// A URI for messages: scheme, authority and path only (a query may hold a code or token).
pub fn redacted(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map_or("?", |a| a.as_str()),
        uri.path()
    )
}

/// [`OidcHttp`] on hyper-util's pooled client and hyper-rustls (aws-lc-rs).
pub struct HyperHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    policy: UrlPolicy,
}

impl std::fmt::Debug for HyperHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperHttp")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl HyperHttp {
    /// A client for one provider: its CA bundle (else the built-in web roots) and URL policy.
    pub fn for_provider(p: &OidcConfig) -> Result<HyperHttp, OidcHttpError> {
        Self::new(
            p.ca.as_ref(),
            UrlPolicy {
                insecure_loopback: p.insecure_loopback,
            },
        )
    }

    pub fn new(ca: Option<&CaBundle>, policy: UrlPolicy) -> Result<HyperHttp, OidcHttpError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in ca.certs.iter() {
                    roots.add(c.clone()).map_err(OidcHttpError::Tls)?;
                }
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(OidcHttpError::Tls)?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(config)
            }
            None => builder
                .with_provider_and_webpki_roots(provider)
                .map_err(OidcHttpError::Tls)?,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(2)
            .build(connector);
        Ok(HyperHttp { client, policy })
    }

    async fn send_inner(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, OidcHttpError> {
        self.policy.check(request.uri())?;
        let url = redacted(request.uri());
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("gatehouse"),
        );
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| OidcHttpError::Transport {
                        url: url.clone(),
                        source: Box::new(e),
                    })?;
            let (parts, body) = response.into_parts();
            let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        OidcHttpError::TooLarge {
                            url: url.clone(),
                            limit: MAX_RESPONSE_BYTES,
                        }
                    } else {
                        OidcHttpError::Transport {
                            url: url.clone(),
                            source: e,
                        }
                    }
                })?
                .to_bytes();
            Ok(http::Response::from_parts(parts, bytes.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| OidcHttpError::Timeout(url.clone()))?
    }
}

impl OidcHttp for HyperHttp {
    fn send(&self, request: http::Request<Vec<u8>>) -> HttpFuture<'_> {
        Box::pin(self.send_inner(request))
    }
}

/// openidconnect's view of an [`OidcHttp`].
pub(super) struct Adapter<'a>(pub(super) &'a dyn OidcHttp);

impl<'c> openidconnect::AsyncHttpClient<'c> for Adapter<'_> {
    type Error = OidcHttpError;
    type Future = HttpFuture<'c>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        self.0.send(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_policy_allows_https_and_loopback_http_only_when_asked() {
        let strict = UrlPolicy {
            insecure_loopback: false,
        };
        let loose = UrlPolicy {
            insecure_loopback: true,
        };
        for (uri, strict_ok, loose_ok) in [
            ("https://idp.example.com/token", true, true),
            ("http://idp.example.com/token", false, false),
            ("http://127.0.0.1:9000/token", false, true),
            ("http://[::1]:9000/token", false, true),
            ("http://localhost:9000/token", false, true),
            ("http://10.0.0.1/token", false, false),
            ("ftp://idp.example.com/", false, false),
            ("/relative", false, false),
        ] {
            let u: http::Uri = uri.parse().unwrap();
            assert_eq!(strict.check(&u).is_ok(), strict_ok, "{uri}");
            assert_eq!(loose.check(&u).is_ok(), loose_ok, "{uri}");
        }
    }

    #[test]
    fn messages_leave_out_queries() {
        let u: http::Uri = "https://idp/cb?code=secret&state=x".parse().unwrap();
        assert_eq!(redacted(&u), "https://idp/cb");
    }

    #[tokio::test]
    async fn a_refused_url_sends_nothing() {
        let h = HyperHttp::new(
            None,
            UrlPolicy {
                insecure_loopback: false,
            },
        )
        .unwrap();
        let req = http::Request::get("http://127.0.0.1:1/x")
            .body(Vec::new())
            .unwrap();
        assert!(matches!(
            h.send(req).await,
            Err(OidcHttpError::InsecureUrl(_))
        ));
    }
}
