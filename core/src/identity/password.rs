//! Password hashing (argon2id, PHC strings) and the weak-password check.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use base64::Engine as _;

use crate::error::{IdentityError, KeyError};

/// Shortest password accepted (CNIL guidance for a password plus a second factor).
pub const MIN_PASSWORD_LEN: usize = 12;

/// A small built-in list of passwords that pass the length rule but appear at the top of
/// every breach corpus; compared case-insensitively.
const COMMON: &[&str] = &[
    "password1234",
    "password12345",
    "password123456",
    "123456789012",
    "1234567890123",
    "qwertyuiop12",
    "qwertyuiopas",
    "iloveyou1234",
    "administrator",
    "welcome12345",
    "letmein12345",
    "passw0rd1234",
    "changeme1234",
    "abcdefghijkl",
    "abc123456789",
    "aaaaaaaaaaaa",
    "111111111111",
    "000000000000",
    "monkey123456",
    "football1234",
    "baseball1234",
    "superman1234",
    "trustno11234",
    "dragon123456",
    "sunshine1234",
    "princess1234",
    "qwerty123456",
    "1q2w3e4r5t6y",
    "zaq12wsxcde3",
    "gatehouse123",
    "gatehouse1234",
    "correcthorsebatterystaple",
    "password!234",
    "p@ssw0rd1234",
];

/// Refuses a weak password, saying why (never echoing it).
pub fn check_password_strength(user: &str, password: &str) -> Result<(), IdentityError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(IdentityError::WeakPassword(format!(
            "shorter than {MIN_PASSWORD_LEN} characters"
        )));
    }
    let lower = password.to_lowercase();
    if COMMON.iter().any(|c| *c == lower) {
        return Err(IdentityError::WeakPassword(
            "it is in the list of common passwords".into(),
        ));
    }
    if !user.is_empty() && lower.contains(&user.to_lowercase()) {
        return Err(IdentityError::WeakPassword(
            "it contains the user name".into(),
        ));
    }
    let first = lower.chars().next();
    if lower.chars().all(|c| Some(c) == first) {
        return Err(IdentityError::WeakPassword(
            "it repeats one character".into(),
        ));
    }
    Ok(())
}

/// Longest password [`generate_password`] makes.
pub const MAX_GENERATED_LEN: usize = 64;

/// A random password of `len` characters (at most [`MAX_GENERATED_LEN`]) from the base64url
/// alphabet, 6 bits of the system CSPRNG per character (20 characters: 120 bits), for
/// accounts Gatehouse creates itself, such as the quick-start demo user.
pub fn generate_password(len: usize) -> Result<String, KeyError> {
    let mut raw = zeroize::Zeroizing::new([0u8; MAX_GENERATED_LEN]);
    crate::secret::random_bytes(raw.as_mut_slice())?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_slice());
    Ok(text.chars().take(len.min(MAX_GENERATED_LEN)).collect())
}

/// Hashes a password with argon2id (default parameters, random salt) into a PHC string.
pub(crate) fn hash_password(password: &str) -> Result<String, IdentityError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| IdentityError::Hash)
}

/// Verifies `password` against a PHC string; an unparsable hash is a failure.
pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, computed once: verifying against it costs the same as a real
/// verification, so unknown users take as long as known ones.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut r = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut r);
        // A hashing failure leaves an unparsable hash: verification then fails closed, and
        // still runs argon2's parser path; it cannot authenticate anyone.
        hash_password(&crate::secret::hex_lower(r)).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_random_strong_and_of_the_asked_length() {
        let a = generate_password(20).unwrap();
        let b = generate_password(20).unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        check_password_strength("demo", &a).unwrap();
        assert_eq!(generate_password(1000).unwrap().len(), MAX_GENERATED_LEN);
    }
}
