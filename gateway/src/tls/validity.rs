//! The validity period of a certificate, read from its DER (RFC 5280 §4.1.2.5) without an
//! X.509 crate: the walk to `tbsCertificate.validity` is four fields, and rustls does not
//! expose it. Operator input (the configured certificate), parsed strictly: anything
//! unexpected is `None`, and the caller refuses the certificate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a certificate starts and stops being valid (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// The validity of a DER certificate; `None` when it cannot be read.
    pub fn of_der(der: &[u8]) -> Option<Validity> {
        of_der(der)
    }

    /// Seconds from `now` until the end of validity (negative once expired).
    pub fn remaining(&self, now: SystemTime) -> i64 {
        self.not_after.saturating_sub(unix(now))
    }

    /// True when `now` is before the start of validity.
    pub fn not_yet_valid(&self, now: SystemTime) -> bool {
        unix(now) < self.not_before
    }

    /// True when `now` is past the end of validity.
    pub fn expired(&self, now: SystemTime) -> bool {
        unix(now) > self.not_after
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// A unix time as a `SystemTime` (for messages).
pub fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// One DER element: (tag, contents, what follows). Only the forms a certificate's first
/// fields use: single-byte tags, definite lengths of up to four bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = rest.get(..n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest.get(n..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The validity of a DER certificate.
pub fn of_der(der: &[u8]) -> Option<Validity> {
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    let (mut tag, mut value);
    (tag, value, rest) = tlv(rest)?;
    if tag == VERSION {
        (tag, value, rest) = tlv(rest)?;
    }
    let _ = value;
    if tag != INTEGER {
        return None;
    }
    for _ in 0..2 {
        // signature AlgorithmIdentifier, issuer Name
        let (t, _, r) = tlv(rest)?;
        if t != SEQUENCE {
            return None;
        }
        rest = r;
    }
    let (tag, validity, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (t1, before, r) = tlv(validity)?;
    let (t2, after, _) = tlv(r)?;
    Some(Validity {
        not_before: time(t1, before)?,
        not_after: time(t2, after)?,
    })
}

/// `YYMMDDHHMMSSZ` (UTCTime: 1950-2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime), as RFC 5280
/// requires them (UTC, seconds, no fraction), in unix seconds.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(text.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        (GENERALIZED_TIME, 15) => (digits(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(rest.get(i..i + 2)?);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        p.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 (RFC 5280).
        let v = of_der(&cert((2024, 1, 2), (2051, 3, 4))).unwrap();
        assert_eq!(v.not_before, 1_704_153_600); // 2024-01-02T00:00:00Z
        assert_eq!(v.not_after, 2_561_500_800); // 2051-03-04T00:00:00Z
        let v = of_der(&cert((1999, 12, 31), (2000, 2, 29))).unwrap();
        assert_eq!(v.not_before, 946_598_400);
        assert_eq!(v.not_after, 951_782_400);
    }

    #[test]
    fn validity_against_now() {
        let v = Validity {
            not_before: 1000,
            not_after: 2000,
        };
        assert!(v.not_yet_valid(system_time(999)));
        assert!(!v.not_yet_valid(system_time(1000)));
        assert!(!v.expired(system_time(2000)));
        assert!(v.expired(system_time(2001)));
        assert_eq!(v.remaining(system_time(1500)), 500);
        assert_eq!(v.remaining(system_time(2500)), -500);
    }

    #[test]
    fn malformed_input_is_none() {
        let good = cert((2024, 1, 2), (2030, 1, 1));
        assert!(of_der(&[]).is_none());
        assert!(of_der(&[0x30]).is_none());
        assert!(of_der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(of_der(&[0x31, 0x00]).is_none());
        for cut in [1, 10, 50, 120, good.len() / 2] {
            assert!(of_der(&good[..cut]).is_none(), "cut at {cut}");
        }
        assert!(time(UTC_TIME, b"240102000000").is_none());
        assert!(time(UTC_TIME, b"241302000000Z").is_none());
        assert!(time(GENERALIZED_TIME, b"20240102000000.5Z").is_none());
        assert!(time(0x04, b"240102000000Z").is_none());
    }
}
