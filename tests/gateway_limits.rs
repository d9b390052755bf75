//! Limits that must refuse cleanly: an oversized request head is answered (431) and the
//! connection closed gracefully (TLS close_notify and FIN), never reset: a reset can destroy
//! the answer in the client's receive buffer (Windows and BSD stacks discard it; Linux keeps
//! it, so here the reset itself is what is checked).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write as _;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host};

/// How many times the oversized head is sent: a reset lost the answer in a fraction of tries.
const OVERSIZED_TRIES: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_kb_head_in_one_write_always_gets_its_431() {
    let up = Upstream::start().await;
    let gh = Gatehouse::start_signed_in(GatehouseSpec::default().with_app(AppSpec::new(
        "echo",
        &host("echo"),
        &up.url(),
    )))
    .await;
    let head = format!(
        "GET /big HTTP/1.1\r\nHost: {}\r\n{}X-Big: {}\r\n\r\n",
        host("echo"),
        gh.cookie_line(),
        "a".repeat(70 * 1000)
    );
    let mut failures = Vec::new();
    for i in 0..OVERSIZED_TRIES {
        let mut c = gh.raw(&host("echo")).await;
        // The whole head encrypted first, then put on the socket at once.
        let (_, tls) = c.tls.get_mut();
        tls.set_buffer_limit(None);
        tls.writer().write_all(head.as_bytes()).unwrap();
        // A write error means the gateway already closed: read what it sent.
        let _ = c.tls.flush().await;
        let (bytes, mut end) = read_to_end(&mut c.tls, QUICK).await;
        if matches!(end, End::Clean) && reset_follows(c.tls.get_ref().0).await {
            end = End::ResetAfterEof;
        }
        let text = String::from_utf8_lossy(&bytes);
        if !text.starts_with("HTTP/1.1 431 ") || !matches!(end, End::Clean) {
            failures.push(format!(
                "try {i}: {:?}, ended {end:?} after {} bytes",
                text.lines().next(),
                bytes.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {OVERSIZED_TRIES} tries were not answered and closed cleanly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(up.count(), 0, "nothing reached the upstream");
}

/// How a connection ended for the client.
#[derive(Debug)]
#[allow(dead_code, reason = "the fields are shown in failure messages")]
enum End {
    /// TLS close_notify, then EOF.
    Clean,
    /// An error (a reset shows as `ConnectionReset`; EOF without close_notify as
    /// `UnexpectedEof`).
    Error(std::io::ErrorKind),
    /// Still open at the deadline.
    Open,
    /// A clean end, then a reset: the server closed with the client's bytes unread.
    ResetAfterEof,
}

/// How long a reset may take to follow the server's FIN. There is no event for "no reset
/// will come": the server's close follows its FIN at once (it would reset within this time),
/// while a lingering server holds the socket open until the client closes.
const RESET_WINDOW: Duration = Duration::from_millis(200);

/// True when the socket reports a reset within [`RESET_WINDOW`] (the client has read the
/// EOF; it sends nothing, so a reset can only come from the server discarding unread bytes).
async fn reset_follows(tcp: &tokio::net::TcpStream) -> bool {
    let end = tokio::time::Instant::now() + RESET_WINDOW;
    while tokio::time::Instant::now() < end {
        if let Ok(Some(e)) = tcp.take_error() {
            // Linux reports a reset that follows a FIN as EPIPE (the socket is in CLOSE_WAIT).
            use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
            return matches!(e.kind(), ConnectionReset | BrokenPipe);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Reads until the server closes; returns the bytes and how it closed.
async fn read_to_end<R: AsyncRead + Unpin>(r: &mut R, limit: Duration) -> (Vec<u8>, End) {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Err(_) => return (bytes, End::Open),
            Ok(Ok(0)) => return (bytes, End::Clean),
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (bytes, End::Error(e.kind())),
        }
    }
}
