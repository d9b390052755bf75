//! CSRF tokens for every form under `/.gatehouse/`, and an `Origin`/`Referer` check.
//!
//! Threat: a page on another site makes the user's browser post to the gateway (log in as
//! the attacker — login CSRF —, log out, confirm a TOTP enrolment, act in the reviewer
//! console); a token from one form or user replayed on another.
//! Mitigation: `token = base64url(HMAC-SHA256(key, domain || len(purpose) || purpose ||
//! binding))`, bound to the form's purpose and to the login transaction id or the session
//! hash, verified in constant time (`subtle`); a missing, garbled or unbound token is
//! refused. The key is 32 random bytes per process, or a shared key for a cluster. As defence
//! in depth, a present `Origin` (else `Referer`) must be one of the gateway's own origins.

use std::fmt;

use aws_lc_rs::hmac;
use http::header::{HeaderMap, ORIGIN, REFERER};
use subtle::ConstantTimeEq;

use super::{RandomError, b64url, b64url_decode, random_bytes};

/// Purposes: a token minted for one form is refused by every other.
pub mod purpose {
    pub const LOGIN: &str = "login";
    pub const TOTP: &str = "totp";
    pub const ENROL: &str = "enrol";
    pub const LOGOUT: &str = "logout";
    pub const REVIEW: &str = "review";
}

/// Key length in bytes; a shorter shared key is refused.
pub const KEY_LEN: usize = 32;
/// Length of a token: base64url of a 32-byte HMAC-SHA256 tag, unpadded.
pub const TOKEN_LEN: usize = 43;
/// Domain separation, so this key's MACs can never be mistaken for another use's.
const DOMAIN: &[u8] = b"gatehouse-csrf-v1\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("csrf key shorter than {KEY_LEN} bytes")]
    ShortKey,
    #[error("csrf token missing")]
    Missing,
    #[error("csrf token malformed")]
    Malformed,
    #[error("csrf token has no binding to check against")]
    Unbound,
    #[error("csrf token does not match")]
    Mismatch,
    #[error("request origin is not the gateway")]
    CrossOrigin,
}

/// The HMAC key. `Debug` hides it.
#[derive(Clone)]
pub struct CsrfKey(hmac::Key);

impl fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

impl CsrfKey {
    /// A fresh random key (one process; tokens die with it).
    pub fn generate() -> Result<CsrfKey, RandomError> {
        Ok(CsrfKey::new(&random_bytes::<KEY_LEN>()?))
    }

    /// A shared key, so several gateway instances accept each other's tokens.
    pub fn from_bytes(bytes: &[u8]) -> Result<CsrfKey, CsrfError> {
        if bytes.len() < KEY_LEN {
            return Err(CsrfError::ShortKey);
        }
        Ok(CsrfKey::new(bytes))
    }

    fn new(bytes: &[u8]) -> CsrfKey {
        CsrfKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    fn tag(&self, purpose: &str, binding: &str) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(DOMAIN);
        // The length prefix keeps (purpose, binding) pairs unambiguous.
        ctx.update(
            &u32::try_from(purpose.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        ctx.update(purpose.as_bytes());
        ctx.update(binding.as_bytes());
        ctx.sign()
    }

    /// The token for a form of `purpose` bound to `binding` (the login transaction id or the
    /// session hash). `binding` must not be empty: [`CsrfKey::verify`] refuses empty ones.
    pub fn token(&self, purpose: &str, binding: &str) -> String {
        b64url(self.tag(purpose, binding).as_ref())
    }

    /// Checks the `csrf` field of a submitted form, in constant time.
    pub fn verify(
        &self,
        purpose: &str,
        binding: &str,
        presented: Option<&str>,
    ) -> Result<(), CsrfError> {
        let presented = presented
            .filter(|p| !p.is_empty())
            .ok_or(CsrfError::Missing)?;
        if binding.is_empty() {
            return Err(CsrfError::Unbound);
        }
        if presented.len() != TOKEN_LEN {
            return Err(CsrfError::Malformed);
        }
        let given = b64url_decode(presented).ok_or(CsrfError::Malformed)?;
        let expected = self.tag(purpose, binding);
        if bool::from(given.as_slice().ct_eq(expected.as_ref())) {
            Ok(())
        } else {
            Err(CsrfError::Mismatch)
        }
    }
}

/// The ASCII origin of `url` as browsers send it in `Origin` (`https://host[:port]`, the
/// port omitted when it is the default).
pub fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// Defence in depth for state-changing requests: a present `Origin` header, else a present
/// `Referer`, must name one of `allowed` (origins as made by [`origin_of`] or
/// [`RedirectPolicy::origins`](super::redirect::RedirectPolicy::origins)). Both absent is
/// accepted (some clients send neither; the token still protects). `Origin: null`, several
/// `Origin` or `Referer` headers, or an unreadable one are refused.
pub fn check_origin<S: AsRef<str>>(headers: &HeaderMap, allowed: &[S]) -> Result<(), CsrfError> {
    let allowed = |o: &str| allowed.iter().any(|a| a.as_ref() == o);
    if let Some(origin) = single(headers, &ORIGIN)? {
        return if allowed(origin) {
            Ok(())
        } else {
            Err(CsrfError::CrossOrigin)
        };
    }
    if let Some(referer) = single(headers, &REFERER)? {
        let origin = url::Url::parse(referer)
            .ok()
            .filter(|u| u.scheme() == "https")
            .map(|u| origin_of(&u))
            .ok_or(CsrfError::CrossOrigin)?;
        return if allowed(&origin) {
            Ok(())
        } else {
            Err(CsrfError::CrossOrigin)
        };
    }
    Ok(())
}

fn single<'h>(
    headers: &'h HeaderMap,
    name: &http::header::HeaderName,
) -> Result<Option<&'h str>, CsrfError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CsrfError::CrossOrigin);
    }
    first.to_str().map(Some).map_err(|_| CsrfError::CrossOrigin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// (key, purpose, binding, presented token, expected result)
    type VerifyCase<'a> = (
        &'a CsrfKey,
        &'a str,
        &'a str,
        Option<&'a str>,
        Result<(), CsrfError>,
    );
    /// (request headers, expected result)
    type OriginCase<'a> = (&'a [(&'a str, &'a [u8])], Result<(), CsrfError>);

    const BIND: &str = "login-transaction-id-AAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn token_verifies_only_for_its_purpose_binding_and_key() {
        let key = CsrfKey::generate().unwrap();
        let other = CsrfKey::generate().unwrap();
        let t = key.token(purpose::LOGIN, BIND);
        assert_eq!(t.len(), TOKEN_LEN);
        assert_eq!(key.token(purpose::LOGIN, BIND), t, "deterministic");
        let flipped = {
            let mut b = t.clone().into_bytes();
            b[5] = if b[5] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        };
        let table: &[VerifyCase<'_>] = &[
            (&key, purpose::LOGIN, BIND, Some(&t), Ok(())),
            (
                &key,
                purpose::LOGOUT,
                BIND,
                Some(&t),
                Err(CsrfError::Mismatch),
            ),
            (
                &key,
                purpose::LOGIN,
                "other-binding",
                Some(&t),
                Err(CsrfError::Mismatch),
            ),
            (
                &other,
                purpose::LOGIN,
                BIND,
                Some(&t),
                Err(CsrfError::Mismatch),
            ),
            (
                &key,
                purpose::LOGIN,
                BIND,
                Some(&flipped),
                Err(CsrfError::Mismatch),
            ),
            (&key, purpose::LOGIN, BIND, None, Err(CsrfError::Missing)),
            (
                &key,
                purpose::LOGIN,
                BIND,
                Some(""),
                Err(CsrfError::Missing),
            ),
            (&key, purpose::LOGIN, "", Some(&t), Err(CsrfError::Unbound)),
            (
                &key,
                purpose::LOGIN,
                BIND,
                Some(&t[..42]),
                Err(CsrfError::Malformed),
            ),
            (
                &key,
                purpose::LOGIN,
                BIND,
                Some(&format!("{t}=")),
                Err(CsrfError::Malformed),
            ),
            (
                &key,
                purpose::LOGIN,
                BIND,
                Some(&"!".repeat(43)),
                Err(CsrfError::Malformed),
            ),
            (
                &key,
                purpose::LOGIN,
                BIND,
                Some(&"A".repeat(4096)),
                Err(CsrfError::Malformed),
            ),
            (
                &key,
                purpose::LOGIN,
                BIND,
                Some(&format!("{}é", &t[..41])),
                Err(CsrfError::Malformed),
            ),
        ];
        for (k, p, b, presented, want) in table {
            assert_eq!(k.verify(p, b, *presented), *want, "{p} {b} {presented:?}");
        }
    }

    #[test]
    fn purpose_and_binding_cannot_be_shifted() {
        let key = CsrfKey::from_bytes(&[7u8; 32]).unwrap();
        assert_ne!(key.token("log", "inX"), key.token("login", "X"));
    }

    #[test]
    fn shared_keys_agree_and_short_keys_are_refused() {
        let a = CsrfKey::from_bytes(&[1u8; 32]).unwrap();
        let b = CsrfKey::from_bytes(&[1u8; 32]).unwrap();
        let t = a.token(purpose::TOTP, BIND);
        assert_eq!(b.verify(purpose::TOTP, BIND, Some(&t)), Ok(()));
        assert_eq!(
            CsrfKey::from_bytes(&[1u8; 31]).unwrap_err(),
            CsrfError::ShortKey
        );
        assert_eq!(CsrfKey::from_bytes(&[]).unwrap_err(), CsrfError::ShortKey);
        assert_eq!(format!("{a:?}"), "CsrfKey(<redacted>)");
    }

    #[test]
    fn origin_and_referer_checks() {
        let public = url::Url::parse("https://gatehouse.localhost:8443/").unwrap();
        let own = origin_of(&public);
        assert_eq!(own, "https://gatehouse.localhost:8443");
        let default_port = origin_of(&url::Url::parse("https://gate.example.com:443/").unwrap());
        assert_eq!(default_port, "https://gate.example.com");
        let allowed = [own.as_str()];
        let ok = Ok(());
        let bad = Err(CsrfError::CrossOrigin);
        let table: &[OriginCase<'_>] = &[
            (&[], ok),
            (&[("origin", b"https://gatehouse.localhost:8443")], ok),
            (
                &[(
                    "referer",
                    b"https://gatehouse.localhost:8443/.gatehouse/login?x=1",
                )],
                ok,
            ),
            (
                &[
                    ("origin", b"https://gatehouse.localhost:8443"),
                    ("referer", b"https://evil.com/"),
                ],
                ok,
            ),
            (&[("origin", b"https://evil.com")], bad),
            (&[("origin", b"null")], bad),
            (&[("origin", b"")], bad),
            (&[("origin", b"http://gatehouse.localhost:8443")], bad),
            (&[("origin", b"https://gatehouse.localhost")], bad),
            (&[("origin", b"https://gatehouse.localhost:8443/")], bad),
            (&[("origin", b"https://GATEHOUSE.localhost:8443")], bad),
            (
                &[("origin", b"https://gatehouse.localhost:8443.evil.com")],
                bad,
            ),
            (
                &[
                    ("origin", b"https://evil.com"),
                    ("referer", b"https://gatehouse.localhost:8443/"),
                ],
                bad,
            ),
            (
                &[
                    ("origin", b"https://gatehouse.localhost:8443"),
                    ("origin", b"https://gatehouse.localhost:8443"),
                ],
                bad,
            ),
            (&[("origin", b"https://gatehouse.localhost:8443\xff")], bad),
            (
                &[(
                    "referer",
                    b"https://evil.com/https://gatehouse.localhost:8443/",
                )],
                bad,
            ),
            (
                &[("referer", b"https://gatehouse.localhost:8443@evil.com/")],
                bad,
            ),
            (&[("referer", b"http://gatehouse.localhost:8443/")], bad),
            (&[("referer", b"/relative")], bad),
            (&[("referer", b"garbage")], bad),
            (
                &[
                    ("referer", b"https://gatehouse.localhost:8443/"),
                    ("referer", b"https://gatehouse.localhost:8443/"),
                ],
                bad,
            ),
        ];
        for (hs, want) in table {
            let mut h = HeaderMap::new();
            for (n, v) in *hs {
                h.append(*n, HeaderValue::from_bytes(v).unwrap());
            }
            assert_eq!(check_origin(&h, &allowed), *want, "{hs:?}");
        }
    }
}
