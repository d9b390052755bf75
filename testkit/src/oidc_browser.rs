//! A scripted "browser" for a provider's pages: follows redirects with a cookie jar, fills the
//! login form (login, password) and the consent form, or aborts at consent, and stops at the
//! first redirect to Gatehouse (the URL it would have opened). Plain http or https (test CA).
//! One connection per request: no pooling to reason about.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// Where a scripted login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reached {
    /// The provider redirected to Gatehouse: the full URL (callback with code and state, or
    /// with an error).
    Gatehouse(String),
    /// The provider answered with a page that is not a form this client completes.
    Page { status: u16, body: String },
}

impl Reached {
    /// The callback URL's query; panics (failing the test) when the login ended elsewhere.
    pub fn query(&self) -> String {
        match self {
            Reached::Gatehouse(url) => url::Url::parse(url)
                .unwrap()
                .query()
                .unwrap_or_default()
                .to_string(),
            Reached::Page { status, body } => {
                panic!("the provider did not redirect back: {status}\n{body}")
            }
        }
    }
}

/// A cookie-keeping HTTP client for one provider.
pub struct ProviderBrowser {
    /// Redirects to URLs starting with this are Gatehouse's: stop there.
    gatehouse_prefix: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

/// The value of `attr="..."` in the first tag at or after `from` that contains `marker`.
fn attr_near(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let key = format!("{attr}=\"");
    let v = tag.find(&key)? + key.len();
    let end = v + tag[v..].find('"')?;
    Some(html_unescape(&tag[v..end]))
}

fn html_unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// `name=value` pairs of the hidden inputs in `html`.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input") {
        let tag_end = rest[i..].find('>').map_or(rest.len(), |e| i + e);
        let tag = &rest[i..tag_end];
        if tag.contains("type=\"hidden\"") {
            let get = |a: &str| {
                let key = format!("{a}=\"");
                tag.find(&key).and_then(|v| {
                    let v = v + key.len();
                    tag[v..].find('"').map(|e| html_unescape(&tag[v..v + e]))
                })
            };
            if let (Some(n), Some(v)) = (get("name"), get("value")) {
                out.push((n, v));
            }
        }
        rest = &rest[tag_end..];
    }
    out
}

fn form_body(fields: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

impl ProviderBrowser {
    /// A client that stops at redirects to `gatehouse_prefix` (e.g. the public URL);
    /// `tls` for an https provider.
    pub fn new(gatehouse_prefix: &str, tls: Option<Arc<rustls::ClientConfig>>) -> ProviderBrowser {
        ProviderBrowser {
            gatehouse_prefix: gatehouse_prefix.to_string(),
            tls,
            cookies: BTreeMap::new(),
        }
    }

    async fn request(&mut self, method: &str, url: &str, body: Option<String>) -> Page {
        let u = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
        let host = u.host_str().unwrap().to_string();
        let port = u.port_or_known_default().unwrap();
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .unwrap_or_else(|e| panic!("connecting to {host}:{port}: {e}"));
        let path = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        };
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", u.authority())
            .header("accept", "text/html");
        if !self.cookies.is_empty() {
            let line: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            b = b.header("cookie", line.join("; "));
        }
        if body.is_some() {
            b = b.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = if u.scheme() == "https" {
            let cfg = self
                .tls
                .clone()
                .expect("an https provider needs the test CA");
            let name = ServerName::try_from(host.clone()).unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .unwrap_or_else(|e| panic!("TLS to {host}:{port}: {e}"));
            send(tls, req).await
        } else {
            send(tcp, req).await
        };
        for v in resp.headers().get_all("set-cookie") {
            let s = v.to_str().unwrap_or_default();
            let pair = s.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || s.to_ascii_lowercase().contains("expires=thu, 01 jan 1970") {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .map(|l| u.join(l.to_str().unwrap()).unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            location,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Follows redirects from `url` until Gatehouse or a page.
    async fn follow(&mut self, mut page: Page) -> Result<Reached, Page> {
        for _ in 0..20 {
            match page.location.clone() {
                Some(loc) if page.status.is_redirection() => {
                    if loc.starts_with(&self.gatehouse_prefix) {
                        return Ok(Reached::Gatehouse(loc));
                    }
                    page = self.request("GET", &loc, None).await;
                }
                _ => return Err(page),
            }
        }
        panic!("more than 20 redirects at the provider");
    }

    /// Opens `auth_url` and signs in as `login` / `password`, consenting when asked.
    pub async fn sign_in(&mut self, auth_url: &str, login: &str, password: &str) -> Reached {
        self.run(auth_url, Some((login, password)), true).await
    }

    /// Opens `auth_url`, signs in, and declines at the consent page.
    pub async fn sign_in_and_decline(
        &mut self,
        auth_url: &str,
        login: &str,
        password: &str,
    ) -> Reached {
        self.run(auth_url, Some((login, password)), false).await
    }

    async fn run(&mut self, auth_url: &str, creds: Option<(&str, &str)>, consent: bool) -> Reached {
        let first = self.request("GET", auth_url, None).await;
        let mut page = match self.follow(first).await {
            Ok(r) => return r,
            Err(p) => p,
        };
        for _ in 0..6 {
            if page.status != StatusCode::OK {
                break;
            }
            let prompt = hidden_inputs(&page.body)
                .into_iter()
                .find(|(n, _)| n == "prompt")
                .map(|(_, v)| v);
            let Some(action) = attr_near(&page.body, "method=\"post\"", "action") else {
                break;
            };
            let base = url::Url::parse(auth_url).unwrap();
            let action = base.join(&action).unwrap().to_string();
            let next = match prompt.as_deref() {
                Some("login") => {
                    let Some((login, password)) = creds else {
                        break;
                    };
                    let body = form_body(&[
                        ("prompt".into(), "login".into()),
                        ("login".into(), login.into()),
                        ("password".into(), password.into()),
                    ]);
                    self.request("POST", &action, Some(body)).await
                }
                Some("consent") if consent => {
                    let body = form_body(&[("prompt".into(), "consent".into())]);
                    self.request("POST", &action, Some(body)).await
                }
                Some("consent") => {
                    let abort = format!("{}/abort", action.trim_end_matches('/'));
                    self.request("GET", &abort, None).await
                }
                _ => break,
            };
            page = match self.follow(next).await {
                Ok(r) => return r,
                Err(p) => p,
            };
        }
        Reached::Page {
            status: page.status.as_u16(),
            body: page.body,
        }
    }

    /// Opens the provider's logout URL, confirms (the confirmation form, or the page that
    /// posts itself), and returns where it sent the browser.
    pub async fn sign_out(&mut self, end_session_url: &str) -> Reached {
        let first = self.request("GET", end_session_url, None).await;
        let mut page = match self.follow(first).await {
            Ok(r) => return r,
            Err(p) => p,
        };
        for _ in 0..3 {
            let Some(action) = attr_near(&page.body, "method=\"post\"", "action") else {
                break;
            };
            let action = url::Url::parse(end_session_url)
                .unwrap()
                .join(&action)
                .unwrap()
                .to_string();
            let mut fields = hidden_inputs(&page.body);
            if !fields.iter().any(|(n, _)| n == "logout") {
                fields.push(("logout".into(), "yes".into()));
            }
            let next = self
                .request("POST", &action, Some(form_body(&fields)))
                .await;
            page = match self.follow(next).await {
                Ok(r) => return r,
                Err(p) => p,
            };
        }
        Reached::Page {
            status: page.status.as_u16(),
            body: page.body,
        }
    }
}

async fn send<S>(io: S, req: Request<Full<Bytes>>) -> hyper::Response<hyper::body::Incoming>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.send_request(req).await.unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read() {
        let html = r#"<form autocomplete="off" action="/interaction/abc" method="post">
            <input type="hidden" name="prompt" value="login"/><input required type="text" name="login">"#;
        assert_eq!(
            attr_near(html, "method=\"post\"", "action").unwrap(),
            "/interaction/abc"
        );
        assert_eq!(hidden_inputs(html), vec![("prompt".into(), "login".into())]);
    }
}
