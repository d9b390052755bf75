//! Request-path normalisation for the policy and the upstream.
//!
//! Threat: a path the policy reads one way and the upstream another (`/wiki/%2e%2e/admin`,
//! `/wiki//admin`, `/wiki;x/../admin`, `/wiki%2fadmin`, `\`), used to reach a path a deny rule
//! covers. Mitigation: one normaliser whose output is both what the policy sees and what the
//! upstream receives; anything that stays ambiguous after normalising (an encoded `/` or `\`, a
//! NUL or control character, bad percent-encoding, a path climbing above the root) is refused.

use std::borrow::Cow;

/// Why a path was refused (each maps to 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is not absolute")]
    NotAbsolute,
    #[error("path contains an encoded slash")]
    EncodedSlash,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a nul or control character")]
    ControlChar,
    #[error("path contains invalid percent-encoding")]
    BadEncoding,
    #[error("path climbs above the root")]
    EscapesRoot,
}

/// Normalises an origin-form path (no query). Returns the input unchanged (borrowed) when it is
/// already normal, which is the common case and costs one scan.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(bytes)? {
        return Ok(Cow::Borrowed(path));
    }
    slow(path).map(Cow::Owned)
}

/// Normalises the path of an `app:<name>/<path>` policy object as the gateway normalises a
/// request's path (the object the gateway decides is `app:<name>` + the normalised path), so
/// `gatehouse policy check` decides what the gateway would. Other objects are returned
/// unchanged, as is an `app:` object without a path (the gateway never asks for one).
pub fn normalize_app_object(object: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(rest) = object.strip_prefix("app:") else {
        return Ok(Cow::Borrowed(object));
    };
    let Some(slash) = rest.find('/') else {
        return Ok(Cow::Borrowed(object));
    };
    let (name, path) = rest.split_at(slash);
    Ok(match normalize(path)? {
        Cow::Borrowed(_) => Cow::Borrowed(object),
        Cow::Owned(p) => Cow::Owned(format!("app:{name}{p}")),
    })
}

/// True when the path needs no rewriting: no `%`, `;`, `//`, or dot segment. Refuses raw
/// backslashes and control characters on the way.
fn is_plain(bytes: &[u8]) -> Result<bool, PathError> {
    let mut plain = true;
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlChar),
            b'%' | b';' => plain = false,
            b'/' if prev == b'/' => plain = false,
            b'.' if prev == b'/' => {
                // "/." starts a dot segment only when the segment is "." or "..".
                let rest = bytes.get(i + 1..).unwrap_or_default();
                let seg_end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                let seg = rest.get(..seg_end).unwrap_or_default();
                if seg.is_empty() || seg == b"." {
                    plain = false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    Ok(plain)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes one raw segment: unreserved percent-escapes decoded, others kept (upper-case hex),
/// `;params` dropped, ambiguous bytes refused.
fn decode_segment(raw: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b';' => break,
            b'%' => {
                let (Some(h), Some(l)) = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEncoding);
                };
                let v = (h << 4) | l;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0..=0x1f | 0x7f => return Err(PathError::ControlChar),
                    v if is_unreserved(v) => out.push(v),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push(b'%');
                        out.push(HEX.get(usize::from(v >> 4)).copied().unwrap_or(b'0'));
                        out.push(HEX.get(usize::from(v & 0xf)).copied().unwrap_or(b'0'));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlChar),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}

fn slow(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes().get(1..).unwrap_or_default();
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut trailing_slash = false;
    let mut raw_segments = bytes.split(|&b| b == b'/').peekable();
    while let Some(raw) = raw_segments.next() {
        let last = raw_segments.peek().is_none();
        let mut seg = Vec::with_capacity(raw.len());
        decode_segment(raw, &mut seg)?;
        match seg.as_slice() {
            b"" => {
                // Repeated slashes collapse; a final empty segment is a trailing slash.
                if last {
                    trailing_slash = true;
                }
            }
            b"." => trailing_slash = last,
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
                trailing_slash = last;
            }
            _ => {
                segments.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for seg in &segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if trailing_slash || segments.is_empty() {
        out.push(b'/');
    }
    // Only ASCII was rewritten; other bytes were copied from a `str`, so this cannot fail, but
    // fail closed rather than assume.
    String::from_utf8(out).map_err(|_| PathError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_table() {
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/a/.%2e/b", "/b"),
            ("/%61dmin", "/admin"),
            ("/a%7Eb", "/a~b"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/admin;jsessionid=1/x", "/admin/x"),
            ("/wiki/..;/admin", "/admin"),
            ("/a;b", "/a"),
            ("/a%3Bb", "/a%3Bb"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/.b", "/a/.b"),
            ("/a/..b", "/a/..b"),
            ("/..a", "/..a"),
            ("/a/b/../../", "/"),
            ("/%2e", "/"),
            ("/caf%C3%A9", "/caf%C3%A9"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(*want), "input {input}");
        }
    }

    #[test]
    fn app_objects_are_normalised_like_requests() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("app:wiki/../admin/x", Err(PathError::EscapesRoot)),
            ("app:wiki/a/../../admin/x", Err(PathError::EscapesRoot)),
            ("app:wiki/docs/../admin/x", Ok("app:wiki/admin/x")),
            ("app:wiki//admin", Ok("app:wiki/admin")),
            ("app:wiki/%61dmin/", Ok("app:wiki/admin/")),
            ("app:wiki/admin;x=1/y", Ok("app:wiki/admin/y")),
            ("app:wiki/a%2fb", Err(PathError::EncodedSlash)),
            ("app:wiki/page", Ok("app:wiki/page")),
            ("app:wiki", Ok("app:wiki")),
            ("ssh:db/../root", Ok("ssh:db/../root")),
            ("gatehouse:review", Ok("gatehouse:review")),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize_app_object(input).as_deref().map_err(|e| *e),
                *want,
                "input {input}"
            );
        }
    }

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(normalize("/api/v1/users"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a/.b/c.d"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn refuses_table() {
        let cases: &[(&str, PathError)] = &[
            ("a/b", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a\\b", PathError::Backslash),
            ("/a%5cb", PathError::Backslash),
            ("/a%5C..%5Cb", PathError::Backslash),
            ("/a%00b", PathError::ControlChar),
            ("/a\0b", PathError::ControlChar),
            ("/a%0d%0ab", PathError::ControlChar),
            ("/a%7f", PathError::ControlChar),
            ("/a%", PathError::BadEncoding),
            ("/a%2", PathError::BadEncoding),
            ("/a%zz", PathError::BadEncoding),
            ("/..", PathError::EscapesRoot),
            ("/a/../..", PathError::EscapesRoot),
            ("/%2e%2e/etc", PathError::EscapesRoot),
            ("/..;/x", PathError::EscapesRoot),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), Err(*want), "input {input:?}");
        }
    }
}
