//! Record format and chain arithmetic shared by the writer and the verifier.
//!
//! A line is `{"seq":N,"ts":"...","prev":"HEX","event":{...},"mac":"HEX"}`. The MAC covers
//! the line without its `,"mac":"..."` part (the "body", which ends in `}`); `prev` is the
//! SHA-256 of the whole previous line (without newline); the first record has `prev` = 64
//! zeros and `seq` 0.

use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::secret::SecretKey;

/// Label of the audit MAC key derived from the master secret.
const KEY_LABEL: &str = "gatehouse/audit-mac/v1";
/// `prev` of the first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Length of `,"mac":"` + 64 hex + `"}`.
const MAC_SUFFIX_LEN: usize = 8 + 64 + 2;
/// A line's length beyond its event: seq, ts, prev, mac, their keys and the newline.
pub(crate) const LINE_OVERHEAD: usize = 40 + 24 + 64 + MAC_SUFFIX_LEN + 1;

/// The audit MAC key.
#[derive(Clone)]
pub struct AuditKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub fn new(master: &SecretKey) -> AuditKey {
        let raw = zeroize::Zeroizing::new(master.derive(KEY_LABEL));
        AuditKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            raw.as_slice(),
        ))
    }

    pub(crate) fn mac_hex(&self, body: &[u8]) -> String {
        crate::secret::hex_lower(aws_lc_rs::hmac::sign(&self.0, body).as_ref())
    }

    pub(crate) fn mac_ok(&self, body: &[u8], mac_hex: &str) -> bool {
        let expected = self.mac_hex(body);
        expected.len() == mac_hex.len() && bool::from(expected.as_bytes().ct_eq(mac_hex.as_bytes()))
    }
}

/// The parsed body of a line (the event stays generic so the verifier accepts event kinds
/// added later).
#[derive(Deserialize)]
pub(crate) struct BodyIn {
    pub seq: u64,
    pub ts: String,
    pub prev: String,
    #[allow(dead_code)]
    pub event: serde::de::IgnoredAny,
}

/// Appends a complete line (without newline) for an event already serialized as JSON:
/// `{"seq":N,"ts":"..","prev":"..","event":EVENT,"mac":".."}`. `ts` and `prev` are
/// produced here (digits, `-:.TZ`, hex) and need no escaping. Runs under the chain lock on
/// every audited request: plain appends, no formatting machinery, no allocation beyond `out`.
pub(crate) fn push_line(
    out: &mut String,
    key: &AuditKey,
    seq: u64,
    ts: &str,
    prev: &str,
    event_json: &str,
) {
    let start = out.len();
    out.reserve(event_json.len() + LINE_OVERHEAD);
    out.push_str("{\"seq\":");
    push_decimal(out, seq);
    out.push_str(",\"ts\":\"");
    out.push_str(ts);
    out.push_str("\",\"prev\":\"");
    out.push_str(prev);
    out.push_str("\",\"event\":");
    out.push_str(event_json);
    out.push('}');
    let tag = aws_lc_rs::hmac::sign(&key.0, out.as_bytes().get(start..).unwrap_or_default());
    out.pop(); // the body's closing brace: the mac goes inside the object
    out.push_str(",\"mac\":\"");
    push_hex(out, tag.as_ref());
    out.push_str("\"}");
}

/// Appends the decimal digits of `n`.
fn push_decimal(out: &mut String, n: u64) {
    let (digits, start) = super::json::decimal_digits(n);
    for &d in digits.get(start..).unwrap_or_default() {
        out.push(char::from(d));
    }
}

/// Appends lowercase hex of `bytes` (a digest: at most 32 bytes are needed; any longer
/// input is done in pieces). Built in a stack buffer and appended once: this runs twice
/// per audit record under the chain lock.
fn push_hex(out: &mut String, bytes: &[u8]) {
    let digit = |n: u8| if n < 10 { b'0' + n } else { b'a' + n - 10 };
    for piece in bytes.chunks(32) {
        let mut buf = [0u8; 64];
        for (pair, &b) in buf.chunks_exact_mut(2).zip(piece) {
            if let [hi, lo] = pair {
                *hi = digit(b >> 4);
                *lo = digit(b & 0x0f);
            }
        }
        let used = buf.get(..piece.len() * 2).unwrap_or_default();
        // Only ASCII hex digits were written.
        out.push_str(std::str::from_utf8(used).unwrap_or_default());
    }
}

/// Splits a line into (body, mac); `None` when the line does not have the shape.
pub(crate) fn split_line(line: &str) -> Option<(String, &str)> {
    let cut = line.len().checked_sub(MAC_SUFFIX_LEN)?;
    let (head, tail) = (line.get(..cut)?, line.get(cut..)?);
    let mac = tail.strip_prefix(",\"mac\":\"")?.strip_suffix("\"}")?;
    if mac.len() != 64 || !mac.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((format!("{head}}}"), mac))
}

/// Equality of two hex strings.
pub(crate) fn ct_str_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// SHA-256 of a line, hex: the next record's `prev`.
pub(crate) fn line_hash(line: &str) -> String {
    let mut out = String::with_capacity(64);
    set_line_hash(&mut out, line);
    out
}

/// Sets `prev` to the SHA-256 of `line`, hex, reusing its allocation.
pub(crate) fn set_line_hash(prev: &mut String, line: &str) {
    prev.clear();
    push_hex(
        prev,
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, line.as_bytes()).as_ref(),
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 UTC timestamp with milliseconds, and the `YYYYMMDD` segment date.
pub(crate) fn timestamp(ms: u64) -> (String, String) {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms % 1000
        ),
        format!("{y:04}{m:02}{d:02}"),
    )
}

/// Inverse of [`timestamp`]: unix milliseconds of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn parse_timestamp(ts: &str) -> Option<u64> {
    let num = |a: usize, b: usize| ts.get(a..b).and_then(|s| s.parse::<i64>().ok());
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    // Days from civil (Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((((days * 24 + hh) * 60 + mm) * 60 + ss) * 1000 + ms).ok()
}

/// The segment date (`YYYYMMDD`) of an RFC 3339 timestamp written by [`timestamp`].
pub(crate) fn date_of_ts(ts: &str) -> Option<String> {
    let d = ts.get(..10)?;
    let s: String = d.chars().filter(char::is_ascii_digit).collect();
    (s.len() == 8).then_some(s)
}

/// Segment file name for a date.
pub(crate) fn segment_name(date: &str) -> String {
    format!("audit-{date}.jsonl")
}

/// The date of a segment file name, when it is one.
pub(crate) fn segment_date(name: &str) -> Option<&str> {
    let d = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    (d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

/// Segment files of `dir`, oldest first.
pub(crate) fn segments(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e?;
                if segment_date(&e.file_name().to_string_lossy()).is_some() {
                    out.push(e.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_hex_is_lowercase_hex_of_any_length() {
        let bytes: Vec<u8> = (0..=255).collect();
        for n in [0, 1, 31, 32, 33, 64, 100, 256] {
            let part = bytes.get(..n).unwrap_or_default();
            let mut out = String::from("x");
            push_hex(&mut out, part);
            assert_eq!(
                out,
                format!("x{}", crate::secret::hex_lower(part)),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn dates() {
        assert_eq!(timestamp(0).0, "1970-01-01T00:00:00.000Z");
        for n in [0, 7, 10, 99, 1_000_001, u64::MAX] {
            let mut s = String::new();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        assert_eq!(timestamp(951_782_400_000).1, "20000229");
        assert_eq!(timestamp(1_796_003_520_123).0, "2026-11-30T01:52:00.123Z");
        for ms in [0, 951_782_400_000, 1_796_003_520_123, 4_102_444_799_999] {
            assert_eq!(parse_timestamp(&timestamp(ms).0), Some(ms));
        }
        assert_eq!(
            date_of_ts("2026-11-29T15:52:00.123Z").as_deref(),
            Some("20261129")
        );
    }
}
