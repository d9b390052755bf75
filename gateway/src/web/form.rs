//! A strict `application/x-www-form-urlencoded` parser for the login forms (and query
//! strings such as `?next=`).
//!
//! Threat: memory or CPU exhaustion through huge bodies or many fields; parameter pollution
//! (`user=alice&user=admin`, read differently by two layers); invalid escapes or non-UTF-8
//! bytes reaching code that assumes clean text; passwords leaking through `Debug`.
//! Mitigation: the body is capped at [`MAX_BODY`] and [`MAX_FIELDS`]; a repeated field, a bad
//! `%` escape or invalid UTF-8 is an error, never a guess; `Debug` prints field names only.

use std::fmt;

use super::redirect::hex_val;

/// Largest body accepted (collect the request body with this limit, then parse).
pub const MAX_BODY: usize = 8 * 1024;
/// Most fields accepted; the login forms have fewer than ten.
pub const MAX_FIELDS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("form body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("form has more than {MAX_FIELDS} fields")]
    TooManyFields,
    #[error("form field repeated")]
    Duplicate,
    #[error("form field without a name")]
    EmptyName,
    #[error("form has a malformed percent escape")]
    BadEscape,
    #[error("form is not valid utf-8")]
    NotUtf8,
    #[error("form field `{0}` missing")]
    Missing(&'static str),
}

/// Decoded fields, in order, each name at most once. `Debug` shows names only.
#[derive(Clone, Default)]
pub struct Form {
    fields: Vec<(String, String)>,
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Form")
            .field(
                "names",
                &self
                    .fields
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Form {
    /// Parses a form body or a query string (without the `?`).
    pub fn parse(body: &[u8]) -> Result<Form, FormError> {
        if body.len() > MAX_BODY {
            return Err(FormError::TooLarge);
        }
        let mut fields: Vec<(String, String)> = Vec::new();
        for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            if fields.len() == MAX_FIELDS {
                return Err(FormError::TooManyFields);
            }
            let mut parts = pair.splitn(2, |&b| b == b'=');
            let raw_name = parts.next().unwrap_or_default();
            let raw_value = parts.next().unwrap_or_default();
            let name = decode(raw_name)?;
            let value = decode(raw_value)?;
            if name.is_empty() {
                return Err(FormError::EmptyName);
            }
            if fields.iter().any(|(n, _)| *n == name) {
                return Err(FormError::Duplicate);
            }
            fields.push((name, value));
        }
        Ok(Form { fields })
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or [`FormError::Missing`].
    pub fn require(&self, name: &'static str) -> Result<&str, FormError> {
        self.get(name).ok_or(FormError::Missing(name))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// `+` is a space, `%XX` a byte; the result must be UTF-8.
fn decode(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&b) = it.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = it
                    .next()
                    .and_then(|&h| hex_val(h))
                    .ok_or(FormError::BadEscape)?;
                let lo = it
                    .next()
                    .and_then(|&l| hex_val(l))
                    .ok_or(FormError::BadEscape)?;
                out.push((hi << 4) | lo);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (body, expected fields)
    type ValidCase<'a> = (&'a [u8], &'a [(&'a str, &'a str)]);

    #[test]
    fn parses_valid_forms() {
        let table: &[ValidCase<'_>] = &[
            (b"", &[]),
            (b"&&", &[]),
            (
                b"user=alice&password=s3cret",
                &[("user", "alice"), ("password", "s3cret")],
            ),
            (
                b"user=alice+smith&p=a%2Bb%26c%3Dd",
                &[("user", "alice smith"), ("p", "a+b&c=d")],
            ),
            (
                b"name=caf%C3%A9&x=%e2%9c%93",
                &[("name", "café"), ("x", "✓")],
            ),
            (b"flag&empty=", &[("flag", ""), ("empty", "")]),
            (b"a=b=c", &[("a", "b=c")]),
            (
                b"next=%2F.gatehouse%2F%3Fx%3D1",
                &[("next", "/.gatehouse/?x=1")],
            ),
            (b"p=%00", &[("p", "\0")]),
            (b"u%73er=bob", &[("user", "bob")]),
        ];
        for (body, want) in table {
            let f = Form::parse(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
            assert_eq!(f.len(), want.len(), "{body:?}");
            for (n, v) in *want {
                assert_eq!(f.get(n), Some(*v), "{body:?} {n}");
            }
        }
    }

    #[test]
    fn refuses_hostile_forms() {
        let big = vec![b'a'; MAX_BODY + 1];
        let many = (0..=MAX_FIELDS)
            .map(|i| format!("f{i}=1"))
            .collect::<Vec<_>>()
            .join("&");
        let table: &[(&[u8], FormError)] = &[
            (&big, FormError::TooLarge),
            (many.as_bytes(), FormError::TooManyFields),
            (b"user=alice&user=admin", FormError::Duplicate),
            (b"user=alice&us%65r=admin", FormError::Duplicate),
            (b"user=a&user", FormError::Duplicate),
            (b"=x", FormError::EmptyName),
            (b"p=%", FormError::BadEscape),
            (b"p=%4", FormError::BadEscape),
            (b"p=%zz", FormError::BadEscape),
            (b"p=%%41", FormError::BadEscape),
            (b"p=%-1", FormError::BadEscape),
            (b"p=%C3", FormError::NotUtf8),
            (b"p=\xff", FormError::NotUtf8),
            (b"p=%C0%AF", FormError::NotUtf8),
            (b"p=%ED%A0%80", FormError::NotUtf8),
        ];
        for (body, want) in table {
            assert_eq!(
                Form::parse(body).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let exact = vec![b'a'; MAX_BODY];
        assert!(Form::parse(&exact).is_ok());
        let at_cap = (0..MAX_FIELDS)
            .map(|i| format!("f{i}=1"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(Form::parse(at_cap.as_bytes()).unwrap().len(), MAX_FIELDS);
    }

    #[test]
    fn require_and_debug_hide_values() {
        let f = Form::parse(b"user=alice&password=hunter2").unwrap();
        assert_eq!(f.require("user"), Ok("alice"));
        assert_eq!(f.require("code"), Err(FormError::Missing("code")));
        let dbg = format!("{f:?}");
        assert!(
            dbg.contains("password") && !dbg.contains("hunter2"),
            "{dbg}"
        );
    }
}
