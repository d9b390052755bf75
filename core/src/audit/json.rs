//! The JSON text of an audit event.
//!
//! An access decision is recorded for every proxied request, and serde's path for it (the
//! flattened context makes it a map, so every key is escaped like a value) was a visible
//! share of a request's CPU. That event, and the `requests_completed` that gathers the
//! answers of a connection's requests, are written here by hand, byte for byte what serde
//! writes (differential tests hold the two together); every other event goes to serde.

use std::io::Write;
use std::net::IpAddr;

use super::event::{AccessContext, AuditEvent};

/// Appends `event` as serde_json would serialize it.
pub(crate) fn write_event(out: &mut Vec<u8>, event: &AuditEvent) -> Result<(), serde_json::Error> {
    match event {
        AuditEvent::AccessAllowed {
            user,
            object,
            action,
            rule,
            grant_id,
            grant_reason,
            context,
        } => {
            out.extend_from_slice(br#"{"event":"access_allowed","user":"#);
            push_str(out, user)?;
            out.extend_from_slice(br#","object":"#);
            push_str(out, object)?;
            out.extend_from_slice(br#","action":"#);
            push_str(out, action)?;
            out.extend_from_slice(br#","rule":"#);
            push_str(out, rule)?;
            if let Some(id) = grant_id {
                out.extend_from_slice(br#","grant_id":"#);
                push_str(out, id)?;
            }
            if let Some(reason) = grant_reason {
                out.extend_from_slice(br#","grant_reason":"#);
                push_str(out, reason)?;
            }
            push_context(out, context)?;
            out.push(b'}');
            Ok(())
        }
        AuditEvent::RequestsCompleted { session, answers } => {
            // About 70 bytes per answer.
            out.reserve(64 + session.len() + answers.len() * 72);
            out.extend_from_slice(br#"{"event":"requests_completed","session":"#);
            push_str(out, session)?;
            out.extend_from_slice(br#","answers":["#);
            for (i, a) in answers.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"request_id":"#);
                push_str(out, &a.request_id)?;
                out.extend_from_slice(br#","status":"#);
                push_u64(out, u64::from(a.status));
                out.extend_from_slice(br#","bytes":"#);
                push_u64(out, a.bytes);
                out.extend_from_slice(br#","duration_ms":"#);
                push_u64(out, a.duration_ms);
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
            Ok(())
        }
        other => serde_json::to_writer(out, other),
    }
}

/// The context's present fields, each with its leading comma.
fn push_context(out: &mut Vec<u8>, ctx: &AccessContext) -> Result<(), serde_json::Error> {
    if let Some(addr) = ctx.client_addr {
        out.extend_from_slice(br#","client_addr":""#);
        push_addr(out, addr);
        out.push(b'"');
    }
    if let Some(session) = &ctx.session {
        out.extend_from_slice(br#","session":"#);
        push_str(out, session)?;
    }
    if let Some(id) = &ctx.request_id {
        out.extend_from_slice(br#","request_id":"#);
        push_str(out, id)?;
    }
    Ok(())
}

/// A JSON string. Text with nothing to escape (serde_json escapes only control characters,
/// `"` and `\`) is copied as it is; anything else is left to serde_json.
fn push_str(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    // A fold without early exit: the compiler vectorizes it.
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

/// An address as its `Display` text (what serde writes for it).
fn push_addr(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u8(out, octet);
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The decimal digits of `n`: a buffer, and where in it they start.
pub(super) fn decimal_digits(mut n: u64) -> ([u8; 20], usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    (digits, i)
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    let (digits, start) = decimal_digits(n);
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

fn push_u8(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn serde_text(e: &AuditEvent) -> String {
        serde_json::to_string(e).unwrap()
    }

    fn ours(e: &AuditEvent) -> String {
        let mut out = Vec::new();
        write_event(&mut out, e).unwrap();
        String::from_utf8(out).unwrap()
    }

    const PIECES: &[&str] = &[
        "alice",
        "app:wiki/",
        "GET",
        "p, group:staff, app:*",
        "\"",
        "\\",
        "\n",
        "\t",
        "\u{1}",
        "\u{1f}",
        "\u{7f}",
        "é",
        "日本",
        "😀",
        "/",
        " ",
        "",
        "</script>",
    ];

    fn text(rng: &mut Rng) -> String {
        let n = rng.next() % 6;
        (0..n).map(|_| *rng.pick(PIECES)).collect()
    }

    fn addr(rng: &mut Rng) -> Option<IpAddr> {
        match rng.next() % 4 {
            0 => None,
            1 => Some(IpAddr::from((rng.next() as u32).to_be_bytes())),
            2 => Some(IpAddr::from([0, 0, 0, 0, 0, 0, 0, (rng.next() % 3) as u16])),
            _ => Some(IpAddr::from(
                (u128::from(rng.next()) << 64 | u128::from(rng.next())).to_be_bytes(),
            )),
        }
    }

    fn opt(rng: &mut Rng) -> Option<String> {
        (!rng.next().is_multiple_of(3)).then(|| text(rng))
    }

    #[test]
    fn access_allowed_is_written_exactly_as_serde_writes_it() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..5000 {
            let e = AuditEvent::AccessAllowed {
                user: text(&mut rng),
                object: text(&mut rng),
                action: text(&mut rng),
                rule: text(&mut rng),
                grant_id: opt(&mut rng),
                grant_reason: opt(&mut rng),
                context: AccessContext {
                    client_addr: addr(&mut rng),
                    session: opt(&mut rng),
                    request_id: opt(&mut rng),
                },
            };
            assert_eq!(ours(&e), serde_text(&e), "round {round}: {e:?}");
        }
    }

    #[test]
    fn requests_completed_is_written_exactly_as_serde_writes_it() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..2000 {
            let n = (rng.next() % 5) as usize;
            let answers = (0..n)
                .map(|i| crate::audit::Answer {
                    request_id: text(&mut rng),
                    status: (rng.next() % 1000) as u16,
                    bytes: if (round + i) % 7 == 0 {
                        u64::MAX
                    } else {
                        rng.next() >> (rng.next() % 64)
                    },
                    duration_ms: rng.next() % 100_000,
                })
                .collect();
            let e = AuditEvent::RequestsCompleted {
                session: text(&mut rng),
                answers,
            };
            assert_eq!(ours(&e), serde_text(&e), "round {round}: {e:?}");
        }
    }

    #[test]
    fn octets_print_as_decimal() {
        for n in [0u8, 7, 9, 10, 42, 99, 100, 199, 200, 255] {
            let mut out = Vec::new();
            push_u8(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn other_events_go_to_serde() {
        let e = AuditEvent::Logout {
            user: "bob\"".into(),
            session: "s".into(),
        };
        assert_eq!(ours(&e), serde_text(&e));
    }
}
