//! The frame types an HTTP/2 client sends, counted as its bytes arrive, so that when h2 cuts
//! a connection off for abuse (it tells only "ENHANCE_YOUR_CALM"), the audit record can name
//! the attack: streams reset at once (rapid reset), endless CONTINUATION frames, more streams
//! than allowed, floods of DATA frames.
//!
//! Only the 9-byte frame headers are read (payloads are skipped by length): a few
//! operations per frame, no allocation; the counts are relaxed atomics written by the
//! connection's own task.

use std::sync::atomic::{AtomicU32, Ordering};

use gatehouse_core::audit::AbuseKind;

/// The client connection preface, which precedes the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const CONTINUATION: u8 = 0x9;

/// Frames of each telling type a client sent on one connection.
#[derive(Debug, Default)]
pub struct FrameCounts {
    data: AtomicU32,
    headers: AtomicU32,
    rst_stream: AtomicU32,
    continuation: AtomicU32,
}

impl FrameCounts {
    fn count(&self, kind: u8) {
        let slot = match kind {
            DATA => &self.data,
            HEADERS => &self.headers,
            RST_STREAM => &self.rst_stream,
            CONTINUATION => &self.continuation,
            _ => return,
        };
        // Saturating: a counter that stopped at u32::MAX still tells the story.
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
    }

    /// The attack these counts show, once h2 closed the connection for going over a limit
    /// (`ENHANCE_YOUR_CALM`).
    pub fn flood_kind(&self) -> AbuseKind {
        let get = |c: &AtomicU32| c.load(Ordering::Relaxed);
        let (data, headers) = (get(&self.data), get(&self.headers));
        let (rst, continuation) = (get(&self.rst_stream), get(&self.continuation));
        if rst >= 32 && rst.saturating_mul(2) >= headers {
            AbuseKind::Http2RapidReset
        } else if continuation >= 8 {
            AbuseKind::Http2ContinuationFlood
        } else if headers >= 128 {
            AbuseKind::Http2StreamFlood
        } else if data >= 1000 {
            AbuseKind::Http2DataFlood
        } else {
            AbuseKind::Http2Flood
        }
    }
}

/// Where the reader is in the client's byte stream.
#[derive(Debug)]
pub struct FrameReader {
    /// Preface bytes still to skip.
    preface: usize,
    head: [u8; FRAME_HEADER],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            preface: PREFACE_LEN,
            head: [0; FRAME_HEADER],
            have: 0,
            skip: 0,
        }
    }
}

impl FrameReader {
    /// Reads the next bytes the client sent, counting the frames that start in them.
    pub fn feed(&mut self, mut bytes: &[u8], counts: &FrameCounts) {
        let n = self.preface.min(bytes.len());
        self.preface -= n;
        bytes = bytes.get(n..).unwrap_or_default();
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            if let (Some(dst), Some(src)) =
                (self.head.get_mut(self.have..self.have + n), bytes.get(..n))
            {
                dst.copy_from_slice(src);
            }
            self.have += n;
            bytes = bytes.get(n..).unwrap_or_default();
            if self.have == FRAME_HEADER {
                let [l0, l1, l2, kind, ..] = self.head;
                self.skip = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                self.have = 0;
                counts.count(kind);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(out: &mut Vec<u8>, kind: u8, payload_len: usize) {
        out.extend_from_slice(&(payload_len as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, 0, 0, 0, 0, 1]);
        out.extend(std::iter::repeat_n(0xaa, payload_len));
    }

    fn counted(stream: &[u8], chunk: usize) -> FrameCounts {
        let counts = FrameCounts::default();
        let mut r = FrameReader::default();
        for piece in stream.chunks(chunk) {
            r.feed(piece, &counts);
        }
        counts
    }

    #[test]
    fn counts_frames_whatever_the_read_boundaries() {
        let mut s = vec![b'P'; PREFACE_LEN];
        frame(&mut s, 0x4, 0); // SETTINGS
        for _ in 0..40 {
            frame(&mut s, HEADERS, 13);
            frame(&mut s, RST_STREAM, 4);
        }
        frame(&mut s, DATA, 100_000);
        frame(&mut s, CONTINUATION, 0);
        for chunk in [1, 5, 9, 10, 4096, s.len()] {
            let c = counted(&s, chunk);
            let get = |a: &AtomicU32| a.load(Ordering::Relaxed);
            assert_eq!(
                (
                    get(&c.headers),
                    get(&c.rst_stream),
                    get(&c.data),
                    get(&c.continuation)
                ),
                (40, 40, 1, 1),
                "chunk {chunk}"
            );
            assert_eq!(c.flood_kind(), AbuseKind::Http2RapidReset);
        }
    }

    #[test]
    fn names_the_flood() {
        let table: &[(u8, usize, AbuseKind)] = &[
            (CONTINUATION, 100, AbuseKind::Http2ContinuationFlood),
            (HEADERS, 500, AbuseKind::Http2StreamFlood),
            (DATA, 5000, AbuseKind::Http2DataFlood),
            (0x6, 5000, AbuseKind::Http2Flood), // PING
        ];
        for (kind, n, want) in table {
            let mut s = vec![b'P'; PREFACE_LEN];
            for _ in 0..*n {
                frame(&mut s, *kind, 1);
            }
            assert_eq!(counted(&s, 777).flood_kind(), *want, "{kind} x {n}");
        }
    }
}
