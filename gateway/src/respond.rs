//! Responses Gatehouse writes itself (pages, refusals, redirects, assets) with their
//! security headers, and the bounded form reader of the `/.gatehouse/` endpoints.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::ResBody;
use crate::headers::HSTS;
use crate::pages::{self, Page};
use crate::request_id::RequestId;
use crate::web::form::{Form, FormError, MAX_BODY};

/// How long a client may take to send a form body.
pub const FORM_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `WWW-Authenticate` challenge every 401 carries (RFC 9110 §15.5.2): a cookie-based
/// scheme, in the form of the expired draft-broyer-http-cookie-auth, that browsers ignore
/// (no credentials dialog), naming where to sign in and the session cookie.
pub const CHALLENGE: HeaderValue = HeaderValue::from_static(
    "Cookie realm=\"Gatehouse\", form-action=\"/.gatehouse/login\", cookie-name=\"__Host-gatehouse\"",
);

/// A server-rendered page with the security headers (a 401 also with [`CHALLENGE`]).
pub fn html(page: Page) -> Response<ResBody> {
    let mut resp = empty(page.status);
    resp.headers_mut().insert(header::CONTENT_TYPE, pages::HTML);
    *resp.body_mut() = ResBody::page(page.html);
    resp
}

/// A body-less answer (redirects, refusals) with the security headers (a 401 also with
/// [`CHALLENGE`]).
pub fn empty(status: StatusCode) -> Response<ResBody> {
    let mut resp = Response::new(ResBody::page(Bytes::new()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (n, v) in pages::security_headers() {
        h.insert(n, v);
    }
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, CHALLENGE);
    }
    resp
}

/// The error page of `status` for request `id`; `close` asks an HTTP/1 client's connection
/// to close.
pub fn error(status: StatusCode, id: impl std::fmt::Display, close: bool) -> Response<ResBody> {
    let mut resp = html(pages::error(status, &id.to_string()));
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// 503 with the reason (store down, audit failing).
pub fn unavailable(reason: &str, id: RequestId) -> Response<ResBody> {
    html(pages::unavailable(reason, &id.to_string()))
}

/// A permanent redirect (308 keeps the method) with the security headers.
pub fn redirect(location: HeaderValue) -> Response<ResBody> {
    let mut resp = empty(StatusCode::PERMANENT_REDIRECT);
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

/// `303 See Other` to `location` (a path on this host or a checked same-site URL).
pub fn see_other(location: &str) -> Response<ResBody> {
    let mut resp = empty(StatusCode::SEE_OTHER);
    let loc = HeaderValue::from_str(location)
        .unwrap_or_else(|_| HeaderValue::from_static(crate::web::PORTAL_PATH));
    resp.headers_mut().insert(header::LOCATION, loc);
    resp
}

/// Adds a `Set-Cookie`.
pub fn with_cookie(mut resp: Response<ResBody>, cookie: HeaderValue) -> Response<ResBody> {
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    resp
}

/// A static asset (stylesheet, script) of `content_type`.
pub fn asset(body: &'static str, content_type: &'static str) -> Response<ResBody> {
    let mut resp = Response::new(ResBody::page(Bytes::from_static(body.as_bytes())));
    let h = resp.headers_mut();
    for (n, v) in pages::asset_headers(content_type) {
        h.insert(n, v);
    }
    resp
}

/// The JWKS document.
pub fn json(body: &str) -> Response<ResBody> {
    let mut resp = Response::new(ResBody::page(body.to_string()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    resp
}

/// Why a form could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("form content type is not application/x-www-form-urlencoded")]
    ContentType,
    #[error("form body too large")]
    TooLarge,
    #[error("form body not received in time")]
    Timeout,
    #[error("form body could not be read")]
    Body,
    #[error("malformed form")]
    Form(#[source] FormError),
}

impl ReadError {
    pub fn status(&self) -> StatusCode {
        match self {
            ReadError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ReadError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ReadError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ReadError::Body | ReadError::Form(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a urlencoded form of at most [`MAX_BODY`] bytes within [`FORM_BODY_TIMEOUT`].
pub async fn read_form(headers: &HeaderMap, body: Incoming) -> Result<Form, ReadError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(ReadError::ContentType);
    }
    let collected = tokio::time::timeout(FORM_BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| ReadError::Timeout)?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(ReadError::TooLarge),
        Err(_) => return Err(ReadError::Body),
    };
    Form::parse(&bytes).map_err(ReadError::Form)
}

/// The `next` parameter of a query string, if the query parses.
pub fn query_next(query: Option<&str>) -> Option<String> {
    let form = Form::parse(query?.as_bytes()).ok()?;
    form.get("next").map(str::to_string)
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_round_trips_through_the_query() {
        let q = format!("next={}", encode("/a b/?x=1&y=%2F"));
        assert_eq!(query_next(Some(&q)).as_deref(), Some("/a b/?x=1&y=%2F"));
        assert_eq!(query_next(Some("next=1&next=2")), None);
        assert_eq!(query_next(None), None);
        assert_eq!(query_next(Some("other=1")), None);
    }

    #[test]
    fn pages_carry_security_headers() {
        let r = see_other("/.gatehouse/");
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/.gatehouse/");
        assert!(r.headers().contains_key("strict-transport-security"));
        assert!(r.headers().contains_key("content-security-policy"));
        let r = with_cookie(r, crate::web::cookie::clear_login());
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 1);
    }

    #[test]
    fn error_pages_carry_security_headers() {
        let id = crate::request_id::RequestIds::default().next();
        let r = error(StatusCode::NOT_FOUND, id, false);
        assert_eq!(r.status(), 404);
        for name in [
            "strict-transport-security",
            "content-security-policy",
            "x-frame-options",
            "x-content-type-options",
            "referrer-policy",
            "content-type",
        ] {
            assert!(r.headers().contains_key(name), "{name}");
        }
        assert!(!r.headers().contains_key("connection"));
        assert_eq!(
            error(StatusCode::BAD_REQUEST, id, true).headers()["connection"],
            "close"
        );
        let r = redirect(HeaderValue::from_static("https://x.example/"));
        assert_eq!(r.status(), 308);
        assert!(r.headers().contains_key("strict-transport-security"));
    }
}
