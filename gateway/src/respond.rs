//! Responses of the `/.gatehouse/` endpoints and the bounded form reader.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::ResBody;
use crate::headers::HSTS;
use crate::web::form::{Form, FormError, MAX_BODY};
use crate::web::pages::{self, Page};

/// How long a client may take to send a form body.
pub const FORM_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A server-rendered page with the page security headers and HSTS.
pub fn html(page: Page) -> Response<ResBody> {
    let mut resp = Response::new(ResBody::page(page.html));
    *resp.status_mut() = page.status;
    let h = resp.headers_mut();
    for (n, v) in pages::page_headers() {
        h.insert(n, v);
    }
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    resp
}

/// A body-less answer (redirects, refusals) with the page security headers.
pub fn empty(status: StatusCode) -> Response<ResBody> {
    let mut resp = Response::new(ResBody::page(Bytes::new()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (n, v) in pages::page_headers() {
        h.insert(n, v);
    }
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
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

/// A static asset (stylesheet, script) with its own headers.
pub fn asset(
    body: &'static str,
    headers: impl IntoIterator<Item = (http::HeaderName, HeaderValue)>,
) -> Response<ResBody> {
    let mut resp = Response::new(ResBody::page(Bytes::from_static(body.as_bytes())));
    let h = resp.headers_mut();
    for (n, v) in headers {
        h.insert(n, v);
    }
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
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
}
