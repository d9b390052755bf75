//! HTTP/2 protocol abuse: which connection errors are attacks, and a rate-limited audit
//! trace of them.
//!
//! Threat: HTTP/2 resource-exhaustion attacks — rapid reset (streams opened and cancelled
//! at once, CVE-2023-44487), CONTINUATION floods (CVE-2024-27316 and kin), HPACK bombs,
//! more streams than allowed again and again, floods of tiny DATA frames — that the h2
//! library already cuts off (GOAWAY `ENHANCE_YOUR_CALM`) but that nobody would see (the
//! kind is named from the frames the client sent: `crate::guard::frames`); and the
//! audit trace itself becoming the flood (one record per attacking connection). Mitigation:
//! a connection that h2 closed for one of them is recorded as a typed
//! [`AuditEvent::ProtocolAbuse`] with the client address, at most once per address and
//! kind per [`WINDOW`] and at most [`MAX_RECORDS_PER_WINDOW`] in all; the records left out
//! are counted and the count is carried by the next record of that kind.

use std::collections::HashMap;
use std::error::Error;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_core::audit::{AbuseKind, AuditEvent};

use crate::guard::frames::FrameCounts;

/// The rate-limit window of the trace.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Records written per [`WINDOW`] at most, whatever the number of attacking addresses.
pub const MAX_RECORDS_PER_WINDOW: u32 = 30;
/// Addresses remembered at most (a flood from many addresses is capped by the total).
const MAX_TRACKED: usize = 4096;

/// The abuse a connection error shows, if any: an error h2 raised itself (a GOAWAY it sent,
/// not one received, not an I/O error) for a flood (named from the client's `frames`, since
/// h2 says only which limit class was hit) or a protocol violation.
pub fn classify(err: &(dyn Error + 'static), frames: &FrameCounts) -> Option<AbuseKind> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return classify_h2(h2, frames);
        }
        cur = e.source();
    }
    None
}

fn classify_h2(e: &h2::Error, frames: &FrameCounts) -> Option<AbuseKind> {
    if !(e.is_go_away() && e.is_library()) {
        return None;
    }
    let reason = e.reason()?;
    if reason == h2::Reason::ENHANCE_YOUR_CALM {
        return Some(frames.flood_kind());
    }
    let violation = [
        h2::Reason::PROTOCOL_ERROR,
        h2::Reason::COMPRESSION_ERROR,
        h2::Reason::FRAME_SIZE_ERROR,
        h2::Reason::FLOW_CONTROL_ERROR,
    ];
    violation
        .contains(&reason)
        .then_some(AbuseKind::Http2ProtocolError)
}

#[derive(Debug)]
struct Window {
    start: Instant,
    written: u32,
    /// Last record per (address, kind) in this window.
    seen: HashMap<(IpAddr, AbuseKind), Instant>,
    /// Records left out since the last one written, per kind.
    suppressed: HashMap<AbuseKind, u64>,
}

/// The rate limiter of the abuse trace (one per gateway).
#[derive(Debug)]
pub struct AbuseTrace {
    window: Mutex<Window>,
}

impl Default for AbuseTrace {
    fn default() -> Self {
        AbuseTrace {
            window: Mutex::new(Window {
                start: Instant::now(),
                written: 0,
                seen: HashMap::new(),
                suppressed: HashMap::new(),
            }),
        }
    }
}

impl AbuseTrace {
    /// The record to write for abuse `kind` from `addr` at `now`, or `None` when the rate
    /// limit leaves it out (counted for the next record of its kind).
    pub fn admit(&self, addr: IpAddr, kind: AbuseKind, now: Instant) -> Option<AuditEvent> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(w.start) >= WINDOW {
            w.start = now;
            w.written = 0;
            w.seen.clear();
        }
        let repeat = w.seen.contains_key(&(addr, kind));
        if repeat || w.written >= MAX_RECORDS_PER_WINDOW || w.seen.len() >= MAX_TRACKED {
            *w.suppressed.entry(kind).or_insert(0) += 1;
            return None;
        }
        w.seen.insert((addr, kind), now);
        w.written += 1;
        let suppressed = w.suppressed.remove(&kind).unwrap_or(0);
        Some(AuditEvent::ProtocolAbuse {
            kind,
            client_addr: Some(addr),
            suppressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_per_address_and_kind_per_window_and_a_total_cap() {
        let t = AbuseTrace::default();
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let rr = AbuseKind::Http2RapidReset;
        assert!(t.admit(a, rr, now).is_some());
        for _ in 0..5 {
            assert!(t.admit(a, rr, now).is_none());
        }
        // Another kind from the same address is its own record.
        assert!(t.admit(a, AbuseKind::Http2ContinuationFlood, now).is_some());
        // Many addresses: capped in total; the first record carries the 5 left out before.
        let records: Vec<AuditEvent> = (0..100u8)
            .filter_map(|i| t.admit(IpAddr::from([198, 51, 100, i]), rr, now))
            .collect();
        let admitted = records.len();
        assert_eq!(admitted, MAX_RECORDS_PER_WINDOW as usize - 2);
        assert!(matches!(
            records[0],
            AuditEvent::ProtocolAbuse { suppressed: 5, .. }
        ));
        // The next window: the first record says how many were left out.
        let later = now + WINDOW;
        match t.admit(a, rr, later) {
            Some(AuditEvent::ProtocolAbuse {
                suppressed, kind, ..
            }) => {
                assert_eq!(kind, rr);
                assert_eq!(suppressed, 100 - admitted as u64);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_errors_are_no_abuse() {
        let io = std::io::Error::other("connection reset");
        let frames = FrameCounts::default();
        assert_eq!(classify(&io, &frames), None);
        let calm: h2::Error = h2::Reason::ENHANCE_YOUR_CALM.into();
        // A bare reason (not a GOAWAY h2 sent) says nothing about the peer.
        assert_eq!(classify(&calm, &frames), None);
    }
}
