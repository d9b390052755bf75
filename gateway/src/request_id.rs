//! Request ids: unique per process (a per-process random-ish prefix and a counter), not
//! secret; they tie a page shown to a client to the log lines and audit records of its
//! request.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Request ids: a per-process random-ish prefix and a counter (unique, not secret).
#[derive(Debug)]
pub struct RequestIds {
    boot: u32,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        RequestIds {
            boot: nanos ^ std::process::id().rotate_left(16),
            next: AtomicU64::new(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RequestId(u32, u64);

impl RequestId {
    /// `{boot:08x}-{n:x}` as ASCII in a stack buffer (every request formats its id for the
    /// audit record; this skips the formatting machinery): the buffer and the used length.
    fn ascii(&self) -> ([u8; 25], usize) {
        let hex = |n: u64| {
            let n = (n & 0xf) as u8;
            if n < 10 { b'0' + n } else { b'a' + n - 10 }
        };
        let mut buf = [0u8; 25];
        for (i, slot) in buf.iter_mut().take(8).enumerate() {
            *slot = hex(u64::from(self.0) >> (28 - 4 * i));
        }
        buf[8] = b'-';
        let digits = (16 - (self.1.leading_zeros() / 4) as usize).max(1);
        for (i, slot) in buf.iter_mut().skip(9).take(digits).enumerate() {
            *slot = hex(self.1 >> (4 * (digits - 1 - i)));
        }
        (buf, 9 + digits)
    }
}

impl RequestId {
    /// `f` of the id's text.
    fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        let (buf, len) = self.ascii();
        // Only ASCII hex digits and '-' were written.
        f(std::str::from_utf8(buf.get(..len).unwrap_or_default()).unwrap_or_default())
    }

    /// The id as text (what `Display` writes), without the formatting machinery: every
    /// request puts it in its audit record and its answer.
    pub fn text(&self) -> String {
        self.with_text(|t| t.to_owned())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|t| f.write_str(t))
    }
}

/// Ids a thread takes from the shared counter at a time: the counter's cache line then moves
/// between worker threads once per block, not on every request.
const ID_BLOCK: u64 = 256;

thread_local! {
    /// This thread's current block: (owner, next id, end); see `RequestIds::next`.
    static ID_BLOCK_CURSOR: std::cell::Cell<(usize, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

impl RequestIds {
    pub fn next(&self) -> RequestId {
        // The address and the boot value: a later `RequestIds` at the same address (an
        // in-process restart) does not continue a block of the earlier one.
        let owner = (std::ptr::from_ref(self) as usize) ^ (self.boot as usize).rotate_left(32);
        let n = ID_BLOCK_CURSOR.with(|c| {
            let (o, next, end) = c.get();
            if o == owner && next < end {
                c.set((o, next + 1, end));
                next
            } else {
                let start = self.next.fetch_add(ID_BLOCK, Ordering::Relaxed);
                c.set((owner, start + 1, start + ID_BLOCK));
                start
            }
        });
        RequestId(self.boot, n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn request_id_text_is_boot_then_counter_in_hex() {
        for (boot, n) in [
            (0u32, 0u64),
            (1, 1),
            (0xdead_beef, 0xff),
            (u32::MAX, u64::MAX),
            (0x0a0b_0c0d, 0x1_0000_0000),
        ] {
            let want = format!("{boot:08x}-{n:x}");
            assert_eq!(
                RequestId(boot, n).to_string(),
                want,
                "boot {boot:#x} n {n:#x}"
            );
            assert_eq!(
                RequestId(boot, n).text(),
                want,
                "text(): boot {boot:#x} n {n:#x}"
            );
        }
    }

    #[test]
    fn request_ids_are_unique_across_threads_and_instances() {
        let mut seen = HashSet::new();
        for _ in 0..2 {
            // A new instance (possibly at the same address) starts its own blocks.
            let ids = Arc::new(RequestIds::default());
            let all: Vec<Vec<String>> = (0..4)
                .map(|_| {
                    let ids = ids.clone();
                    std::thread::spawn(move || {
                        (0..1000)
                            .map(|_| ids.next().to_string())
                            .collect::<Vec<_>>()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap_or_default())
                .collect();
            let main: Vec<String> = (0..600).map(|_| ids.next().to_string()).collect();
            for id in all.into_iter().flatten().chain(main) {
                assert!(seen.insert(id.clone()), "duplicate request id {id}");
            }
        }
        assert_eq!(seen.len(), 2 * (4 * 1000 + 600));
    }
}
