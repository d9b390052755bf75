//! Error pages: a refused or failed request gets the status, a plain sentence and the
//! request id to quote; the details stay in the log under that id.

use http::StatusCode;

use super::{HTML, Page, escape, page, security_headers};

fn message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request was malformed or ambiguous and was refused.",
        401 => "Sign in first: this request carries no live session.",
        403 => "You are not allowed to open this page.",
        404 => "There is nothing here.",
        405 => "This method is not allowed here.",
        429 => "Too many requests from this address: wait a minute and try again.",
        431 => "The request headers are too large.",
        502 => "The application behind this address could not be reached.",
        504 => "The application behind this address did not answer in time.",
        _ => "The request could not be completed.",
    }
}

/// The error page of `status` for request `request_id`.
pub fn error(status: StatusCode, request_id: &str) -> Page {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<p>{msg}</p>\n<p>Request id: <code class=\"request-id\">{id}</code></p>\n",
        msg = message(status),
        id = escape(request_id),
    );
    page(status, &format!("{} {reason}", status.as_u16()), &body)
}

/// The raw HTTP/1.1 bytes of an error page, for answers hyper writes itself before any
/// handler runs (parse errors): the connection layer puts these on the wire instead, so
/// they too carry the security headers and a page. The connection closes after it.
pub fn raw_error(status: StatusCode) -> Vec<u8> {
    let request_id = format!("conn-{:016x}", rand_id());
    let body = error(status, &request_id).html.into_bytes();
    let mut out = Vec::with_capacity(1024 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: ",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        )
        .as_bytes(),
    );
    out.extend_from_slice(HTML.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in security_headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "connection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
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
