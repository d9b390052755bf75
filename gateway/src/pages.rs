//! Gatehouse's own small HTML pages (errors, not found, redirects). Every dynamic value is
//! HTML-escaped; details stay in the log under the request id shown on the page.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ResBody;
use crate::headers;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request was malformed or ambiguous and was refused.",
        403 => "You are not allowed to open this page.",
        404 => "There is nothing here.",
        405 => "This method is not allowed here.",
        431 => "The request headers are too large.",
        502 => "The application behind this address could not be reached.",
        504 => "The application behind this address did not answer in time.",
        _ => "The request could not be completed.",
    }
}

fn error_html(status: StatusCode, request_id: &str) -> String {
    let reason = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {reason}</title>\
<style>body{{font-family:system-ui,sans-serif;margin:4rem auto;max-width:36rem;color:#222}}\
code{{background:#eee;padding:.1rem .3rem}}</style></head>\n<body><h1>{code} {reason}</h1>\
<p>{msg}</p><p>Request id: <code>{id}</code></p><p><small>Gatehouse</small></p></body></html>\n",
        code = status.as_u16(),
        reason = escape(reason),
        msg = message(status),
        id = escape(request_id),
    )
}

/// An error page with security headers; `close` asks HTTP/1 clients' connections to close.
pub fn error(status: StatusCode, request_id: &str, close: bool) -> Response<ResBody> {
    let body = error_html(status, request_id);
    let mut resp = Response::new(ResBody::page(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers::own_response(h);
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The raw HTTP/1.1 bytes of an error page, for answers hyper writes itself before any
/// handler runs (parse errors): the connection layer puts these on the wire instead, so
/// they too carry the security headers and a page. The connection closes after it.
pub fn raw_error(status: StatusCode) -> Vec<u8> {
    let request_id = format!("conn-{:016x}", rand_id());
    let page = error(status, &request_id, true);
    let body = error_html(status, &request_id).into_bytes();
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        )
        .as_bytes(),
    );
    for (name, value) in page.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out
}

/// A non-secret identifier for log correlation (time and a counter; not a token).
fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(40)
}

/// A permanent redirect (308 keeps the method) with security headers.
pub fn redirect(location: HeaderValue) -> Response<ResBody> {
    let mut resp = Response::new(ResBody::page(""));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    headers::own_response(h);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn error_page_has_security_headers() {
        let r = error(StatusCode::NOT_FOUND, "abc<", false);
        assert_eq!(r.status(), 404);
        for name in [
            "strict-transport-security",
            "content-security-policy",
            "x-frame-options",
            "x-content-type-options",
            "referrer-policy",
        ] {
            assert!(r.headers().contains_key(name), "{name}");
        }
        assert!(!r.headers().contains_key("connection"));
        assert_eq!(
            error(StatusCode::BAD_REQUEST, "x", true).headers()["connection"],
            "close"
        );
    }
}
