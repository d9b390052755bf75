//! Per-connection state shared by the IO wrapper, the request handler and the connection task:
//! activity and in-flight tracking for the idle timeout, and the HTTP/1 framing verdicts.
//!
//! Threat: idle keep-alive connections holding slots forever (hyper has no idle timeout), and
//! framing ambiguities hyper hides from the handler. Mitigation: [`TrackedIo`] marks every
//! read/write as activity and feeds read bytes to the [`Scanner`]; the connection task closes a
//! connection with no request in flight and no bytes moving for `gateway.idle_timeout`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::authn::SessionKeys;
use crate::deadline::Deadlines;
use crate::guard::Verdicts;
use crate::guard::frames::{FrameCounts, FrameReader};
use crate::guard::scan::Scanner;
use crate::upstream::Upstreams;
use gatehouse_core::audit::{Answer, AuditEvent};
use gatehouse_core::preauth::Slot;

#[derive(Debug)]
pub struct ConnShared {
    pub peer: SocketAddr,
    /// The `X-Forwarded-For` value of `peer`, made once for every request of the connection.
    pub forwarded_for: http::HeaderValue,
    activity: AtomicBool,
    in_flight: AtomicUsize,
    served: AtomicUsize,
    upgraded: AtomicBool,
    tunnel: Mutex<Option<Tunnel>>,
    pub verdicts: Verdicts,
    /// This connection's upstream connections, driven by its task.
    pub upstreams: Upstreams,
    born: Instant,
    /// Response deadlines of this connection's proxied requests (one timer, reused).
    pub deadlines: Deadlines,
    /// The last session cookie's store key (see [`SessionKeys`]).
    pub session_keys: SessionKeys,
    /// When the request head now arriving began (ms since `born`, plus one); 0: none.
    head_since: AtomicU64,
    /// HTTP/2: the frames the client sent, by type (to name an attack h2 cut off).
    pub h2_frames: FrameCounts,
    /// The pre-authentication slot, given back when the first request arrives.
    preauth: Mutex<Option<Slot>>,
    /// The audit log, for the `requests_completed` records of this connection's responses
    /// (a handle per connection: no reference count shared by every worker per request).
    pub audit: Option<gatehouse_core::audit::AuditLog>,
    /// Answers to allowed requests not written yet (see [`ConnShared::answered`]).
    answers: Mutex<Answers>,
}

/// Most answers in one `requests_completed` record.
const ANSWERS_MAX: usize = 64;
/// Longest time an answer waits for others while the connection serves; a quiet connection
/// writes its answers at its next idle check, a closing one at once.
pub const ANSWERS_WAIT: Duration = Duration::from_secs(1);

/// The answers of one web session gathered on a connection.
#[derive(Debug, Default)]
struct Answers {
    session: String,
    list: Vec<Answer>,
    since: Option<Instant>,
}

impl Answers {
    fn take(&mut self) -> Option<AuditEvent> {
        if self.list.is_empty() {
            return None;
        }
        self.since = None;
        Some(AuditEvent::RequestsCompleted {
            session: std::mem::take(&mut self.session),
            answers: std::mem::take(&mut self.list),
        })
    }
}

/// A WebSocket upgrade agreed by both sides, run by the connection task once hyper hands the
/// connection over (so the tunnel keeps its connection slot and is cut on shutdown).
#[derive(Debug)]
pub struct Tunnel {
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
    pub app: Arc<str>,
    /// Closes the tunnel when its session is revoked (logout, `session revoke`).
    pub registration: crate::revoke::Registration,
    /// Closes the tunnel when the grant that alone allowed it ends.
    pub grant: Option<gatehouse_core::policy::GrantWatch>,
    /// Who, and the upgrade's request id, for the record of such an end.
    pub user: String,
    pub context: gatehouse_core::audit::AccessContext,
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        self.write_answers(Duration::ZERO);
    }
}

impl ConnShared {
    pub fn new(peer: SocketAddr) -> Self {
        ConnShared {
            peer,
            forwarded_for: crate::headers::forwarded_for(peer.ip()),
            activity: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            upgraded: AtomicBool::new(false),
            tunnel: Mutex::new(None),
            verdicts: Verdicts::default(),
            upstreams: Upstreams::default(),
            born: Instant::now(),
            deadlines: Deadlines::default(),
            session_keys: SessionKeys::default(),
            head_since: AtomicU64::new(0),
            h2_frames: FrameCounts::default(),
            preauth: Mutex::new(None),
            audit: None,
            answers: Mutex::new(Answers::default()),
        }
    }

    /// Notes the answer to an allowed request of web session `session` (its id's hash), for
    /// its `requests_completed` record: written with up to [`ANSWERS_MAX`] others of the same
    /// session, once [`ANSWERS_WAIT`] passed, when the connection goes quiet
    /// ([`ConnShared::write_answers`]) or when it ends. One record per request was a second
    /// audit write on every request's path.
    /// `now` is the time of the answer.
    pub fn answered(&self, session: String, answer: Answer, now: Instant) {
        if self.audit.is_none() {
            return;
        }
        let (before, full) = {
            let mut a = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
            let before = if a.session == session { None } else { a.take() };
            if a.list.is_empty() {
                a.session = session;
                a.since = Some(now);
                a.list.reserve(ANSWERS_MAX);
            }
            a.list.push(answer);
            let due = a.list.len() >= ANSWERS_MAX
                || a.since
                    .is_some_and(|t| now.saturating_duration_since(t) >= ANSWERS_WAIT);
            (before, if due { a.take() } else { None })
        };
        for event in [before, full].into_iter().flatten() {
            self.write(&event);
        }
    }

    /// Writes the answers gathered for at least `waited` (all of them: `Duration::ZERO`).
    pub fn write_answers(&self, waited: Duration) {
        let event = {
            let mut a = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
            if a.since.is_some_and(|t| t.elapsed() >= waited) {
                a.take()
            } else {
                None
            }
        };
        if let Some(event) = event {
            self.write(&event);
        }
    }

    fn write(&self, event: &AuditEvent) {
        if let Some(audit) = &self.audit
            && !audit.record_detached(event)
        {
            tracing::error!(peer = %self.peer, "audit log: cannot record the answers to requests");
        }
    }

    /// With the audit log its responses' `requests_completed` records go to.
    pub fn with_audit(mut self, audit: gatehouse_core::audit::AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Holds `slot` until the first request (or the end of the connection).
    pub fn hold_preauth(&self, slot: Slot) {
        *self.preauth.lock().unwrap_or_else(PoisonError::into_inner) = Some(slot);
    }

    /// Marks a request in flight until the guard (moved into the response body) drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.served.fetch_add(1, Ordering::Relaxed) == 0 {
            // The first request head is complete: the connection is no longer pre-auth.
            drop(
                self.preauth
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
        }
        InFlight(self.clone())
    }

    /// True (and reset) when bytes moved since the last call.
    pub fn take_activity(&self) -> bool {
        self.activity.swap(false, Ordering::AcqRel)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// How long the HTTP/1 request head now arriving has been arriving (the head deadline:
    /// hyper's own would also cut idle keep-alive connections).
    pub fn head_pending_for(&self) -> Option<Duration> {
        match self.head_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(
                self.born
                    .elapsed()
                    .saturating_sub(Duration::from_millis(since - 1)),
            ),
        }
    }

    /// Notes whether a request head is arriving (called after each read).
    fn mark_head(&self, mid_head: bool) {
        let since = self.head_since.load(Ordering::Relaxed);
        if mid_head && since == 0 {
            let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            self.head_since.store(ms + 1, Ordering::Release);
        } else if !mid_head && since != 0 {
            self.head_since.store(0, Ordering::Release);
        }
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// True once the connection switched protocols (WebSocket).
    pub fn upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
    }

    /// The connection switches protocols (WebSocket): stop HTTP/1 scanning and hand the
    /// tunnel to the connection task.
    pub fn upgrade(&self, tunnel: Tunnel) {
        self.upgraded.store(true, Ordering::Release);
        match self.tunnel.lock() {
            Ok(mut g) => *g = Some(tunnel),
            Err(p) => *p.into_inner() = Some(tunnel),
        }
    }

    pub fn take_tunnel(&self) -> Option<Tunnel> {
        match self.tunnel.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<ConnShared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity.store(true, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// The client stream as hyper sees it.
    pub struct TrackedIo<T> {
        #[pin]
        inner: T,
        shared: Arc<ConnShared>,
        scanner: Option<Scanner>,
        // HTTP/2: the frame headers the client sends, counted (see `guard::frames`).
        frames: Option<FrameReader>,
        dressed: Option<Dressed>,
    }
}

/// hyper's own bare error answer, replaced on the wire by a full page (see
/// [`crate::pages::raw_error`]); `sent` bytes of the replacement are out.
#[derive(Debug)]
struct Dressed {
    bytes: Vec<u8>,
    sent: usize,
}

/// When `data` starts a response head hyper wrote itself (a 4xx without the HSTS header every
/// Gatehouse answer carries), the page to send instead.
fn dress(data: &[u8]) -> Option<Vec<u8>> {
    if !(data.starts_with(b"HTTP/1.1 4") || data.starts_with(b"HTTP/1.0 4")) {
        return None;
    }
    let head_end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = data.get(..head_end)?;
    let marker = b"strict-transport-security";
    if head
        .windows(marker.len())
        .any(|w| w.eq_ignore_ascii_case(marker))
    {
        return None;
    }
    let code = std::str::from_utf8(data.get(9..12)?)
        .ok()?
        .parse::<u16>()
        .ok()?;
    let status = http::StatusCode::from_u16(code).ok()?;
    Some(crate::pages::raw_error(status))
}

impl<T> TrackedIo<T> {
    /// `scan_http1` is false when ALPN chose HTTP/2.
    pub fn new(inner: T, shared: Arc<ConnShared>, scan_http1: bool) -> Self {
        TrackedIo {
            inner,
            shared,
            scanner: scan_http1.then(Scanner::default),
            frames: (!scan_http1).then(FrameReader::default),
            dressed: None,
        }
    }
}

impl<T: AsyncRead> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let new = buf.filled().get(before..).unwrap_or_default();
            if !new.is_empty() {
                this.shared.activity.store(true, Ordering::Release);
                if let Some(frames) = this.frames {
                    frames.feed(new, &this.shared.h2_frames);
                }
                if let Some(scanner) = this.scanner {
                    if this.shared.upgraded.load(Ordering::Acquire) || scanner.is_off() {
                        *this.scanner = None;
                        this.shared.mark_head(false);
                    } else {
                        scanner.feed(new, &this.shared.verdicts);
                        this.shared.mark_head(scanner.mid_head());
                    }
                }
            }
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        if this.dressed.is_none() && this.shared.verdicts.armed() {
            *this.dressed = dress(data).map(|bytes| Dressed { bytes, sent: 0 });
        }
        if let Some(d) = this.dressed.as_mut().filter(|d| d.sent < d.bytes.len()) {
            // Put the whole replacement out, then report hyper's bytes as written: its
            // answer (head only, content-length 0) is superseded, and the connection closes.
            while let Some(rest) = d.bytes.get(d.sent..).filter(|r| !r.is_empty()) {
                match this.inner.as_mut().poll_write(cx, rest) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => d.sent += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            this.shared.activity.store(true, Ordering::Release);
            return Poll::Ready(Ok(data.len()));
        }
        let res = this.inner.poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            this.shared.activity.store(true, Ordering::Release);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.shared.verdicts.armed() {
            // Rare path (a hostile head was seen): write slice by slice so a bare error
            // answer from hyper can be recognised and dressed.
            let first = bufs.iter().find(|b| !b.is_empty());
            return match first {
                Some(b) => self.poll_write(cx, b),
                None => Poll::Ready(Ok(0)),
            };
        }
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            this.shared.activity.store(true, Ordering::Release);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::dress;

    #[test]
    fn bare_hyper_errors_are_dressed_and_ours_are_not() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let page = String::from_utf8(dress(bare).unwrap()).unwrap();
        assert!(page.starts_with("HTTP/1.1 431 "));
        assert!(page.contains("strict-transport-security: max-age=63072000"));
        assert!(page.contains("x-content-type-options: nosniff"));
        assert!(page.contains("content-security-policy:"));
        assert!(page.contains("connection: close"));
        let ours = b"HTTP/1.1 400 Bad Request\r\nstrict-transport-security: max-age=1\r\n\r\n";
        assert!(dress(ours).is_none());
        assert!(dress(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(
            dress(b"HTTP/1.1 400 Bad").is_none(),
            "an incomplete head is left alone"
        );
        assert!(dress(b"some body bytes").is_none());
    }
}
