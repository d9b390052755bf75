//! Hostile-request guard, checked before routing.
//!
//! Threat: request smuggling (RFC 9112 §6.3) — a message whose framing two parsers read
//! differently (two `Content-Length`s, `Content-Length` with `Transfer-Encoding`, a list or an
//! obfuscated `Transfer-Encoding`), so bytes the gateway took as body become a second request
//! at the upstream; and Host confusion (no Host, two Hosts, an absolute-form target naming
//! another authority than Host) to reach another app than the one checked.
//! Mitigation: such requests are refused with 400 and the connection is closed, never repaired.
//! hyper already refuses differing `Content-Length`s, non-digit lengths, `Transfer-Encoding` on
//! HTTP/1.0 and a final coding other than chunked, but it silently merges equal duplicate
//! lengths and drops `Content-Length` next to `Transfer-Encoding` before we see the header map;
//! [`scan`] reads the raw HTTP/1 bytes to catch those. Bodies of refused requests are never
//! forwarded (the upstream is not contacted).

pub mod frames;
pub mod scan;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use gatehouse_core::config::defaults::MAX_HEADERS;
use http::{HeaderMap, StatusCode, Version, header};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[repr(u8)]
pub enum GuardError {
    #[error("more than one content-length")]
    DuplicateContentLength = 1,
    #[error("content-length together with transfer-encoding")]
    ContentLengthWithTransferEncoding = 2,
    #[error("more than one transfer-encoding")]
    DuplicateTransferEncoding = 3,
    #[error("transfer-encoding other than chunked")]
    UnsupportedTransferEncoding = 4,
    #[error("content-length is not a number")]
    BadContentLength = 5,
    #[error("transfer-encoding on http/1.0")]
    TransferEncodingOnHttp10 = 6,
    #[error("transfer-encoding on http/2")]
    TransferEncodingOnHttp2 = 7,
    #[error("message framing could not be followed")]
    FramingLost = 8,
    #[error("host header missing")]
    MissingHost = 9,
    #[error("more than one host header")]
    DuplicateHost = 10,
    #[error("host header is not a valid authority")]
    BadHost = 11,
    #[error("request-target authority differs from host")]
    AuthorityMismatch = 12,
    #[error("too many header fields")]
    TooManyHeaders = 13,
}

impl GuardError {
    const ALL: [GuardError; 13] = [
        Self::DuplicateContentLength,
        Self::ContentLengthWithTransferEncoding,
        Self::DuplicateTransferEncoding,
        Self::UnsupportedTransferEncoding,
        Self::BadContentLength,
        Self::TransferEncodingOnHttp10,
        Self::TransferEncodingOnHttp2,
        Self::FramingLost,
        Self::MissingHost,
        Self::DuplicateHost,
        Self::BadHost,
        Self::AuthorityMismatch,
        Self::TooManyHeaders,
    ];

    fn from_code(code: u8) -> GuardError {
        Self::ALL
            .into_iter()
            .find(|e| *e as u8 == code)
            .unwrap_or(Self::FramingLost)
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Per-connection verdicts of the raw HTTP/1 scanner, read by the request handler. Requests are
/// numbered from 1 in arrival order on both sides (HTTP/1 serves them one at a time).
#[derive(Debug)]
pub struct Verdicts {
    hostile_from: AtomicU64,
    reason: AtomicU8,
    served: AtomicU64,
    /// Set when the scanner saw a head hyper itself will answer with a bare 4xx (hostile
    /// framing, too large, too many fields): the IO layer then dresses that answer.
    armed: std::sync::atomic::AtomicBool,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            hostile_from: AtomicU64::new(u64::MAX),
            reason: AtomicU8::new(0),
            served: AtomicU64::new(0),
            armed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Verdicts {
    /// Records that request `n` (and every later one) must be refused; the first record wins.
    pub fn record(&self, n: u64, why: GuardError) {
        self.arm();
        if self.hostile_from.load(Ordering::Acquire) == u64::MAX {
            self.reason.store(why as u8, Ordering::Release);
            self.hostile_from.store(n, Ordering::Release);
        }
    }

    /// Notes that hyper may answer a head itself (a bare 4xx without our headers).
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    /// Whether a hyper-written error answer may follow (see [`Verdicts::arm`]).
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    /// Called once per HTTP/1 request the handler receives: refused when the scanner flagged
    /// this request or an earlier one.
    pub fn next_request(&self) -> Result<(), GuardError> {
        let n = self.served.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.hostile_from.load(Ordering::Acquire) {
            return Err(GuardError::from_code(self.reason.load(Ordering::Acquire)));
        }
        Ok(())
    }
}

/// Framing checks on the parsed header map (both protocols; HTTP/1 also goes through [`scan`]).
pub fn check_framing(version: Version, headers: &HeaderMap) -> Result<(), GuardError> {
    if headers.len() > MAX_HEADERS {
        return Err(GuardError::TooManyHeaders);
    }
    let mut cl = headers.get_all(header::CONTENT_LENGTH).iter();
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    let first_cl = cl.next();
    let first_te = te.next();
    if first_cl.is_some() && cl.next().is_some() {
        return Err(GuardError::DuplicateContentLength);
    }
    if let Some(v) = first_cl
        && !is_digits(v.as_bytes())
    {
        return Err(GuardError::BadContentLength);
    }
    let Some(te_value) = first_te else {
        return Ok(());
    };
    match version {
        Version::HTTP_09 | Version::HTTP_10 => return Err(GuardError::TransferEncodingOnHttp10),
        Version::HTTP_2 | Version::HTTP_3 => return Err(GuardError::TransferEncodingOnHttp2),
        _ => {}
    }
    if first_cl.is_some() {
        return Err(GuardError::ContentLengthWithTransferEncoding);
    }
    if te.next().is_some() {
        return Err(GuardError::DuplicateTransferEncoding);
    }
    if !te_value.as_bytes().eq_ignore_ascii_case(b"chunked") {
        return Err(GuardError::UnsupportedTransferEncoding);
    }
    Ok(())
}

pub(crate) fn is_digits(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit)
}

/// The host a request is for.
#[derive(Debug, PartialEq, Eq)]
pub struct Host<'a> {
    /// Lowercase, port stripped: what routing uses.
    pub name: Cow<'a, str>,
    /// As the client sent it (for `X-Forwarded-Host` and the upstream's Host).
    pub authority: &'a str,
}

/// Finds and checks the request's host: exactly one Host header (or, for HTTP/2 without one,
/// `:authority`), a syntactically valid authority, agreeing with any authority in the target.
pub fn host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Result<Host<'a>, GuardError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let header_host = hosts.next();
    if hosts.next().is_some() {
        return Err(GuardError::DuplicateHost);
    }
    let target = uri.authority().map(http::uri::Authority::as_str);
    let authority = match (header_host, target) {
        (Some(h), target) => {
            let h = h.to_str().map_err(|_| GuardError::BadHost)?;
            if let Some(t) = target
                && !t.eq_ignore_ascii_case(h)
            {
                return Err(GuardError::AuthorityMismatch);
            }
            h
        }
        (None, Some(t)) => t,
        (None, None) => return Err(GuardError::MissingHost),
    };
    let name = host_name(authority).ok_or(GuardError::BadHost)?;
    let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    Ok(Host { name, authority })
}

/// `host[:port]` or `[v6][:port]` -> host; None when not a plain authority (no userinfo).
pub(crate) fn host_name(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = authority.get(..end + 2)?;
        let inner = rest.get(..end)?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        (host, rest.get(end + 1..)?)
    } else {
        match authority.find(':') {
            Some(i) => (authority.get(..i)?, authority.get(i..)?),
            None => (authority, ""),
        }
    };
    if let Some(p) = port.strip_prefix(':') {
        if !is_digits(p.as_bytes()) || p.len() > 5 {
            return None;
        }
    } else if !port.is_empty() {
        return None;
    }
    let plain = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    plain.then_some(host)
}

#[cfg(test)]
mod tests;
