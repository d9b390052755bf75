//! The one 32-byte master secret from which the TOTP-at-rest key and the audit MAC key are
//! derived.
//!
//! Threat: a copy of `users.toml` or of the audit log lets an attacker read TOTP secrets or
//! forge audit records. Mitigation: TOTP secrets are encrypted and audit records MACed with
//! keys derived (HMAC-SHA256 with a label) from a secret that lives outside those files: in
//! `GATEHOUSE_SECRET_KEY` (base64) or a 0600 key file, refused when group/others can read it.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::config::Config;
use crate::error::KeyError;

/// Environment variable holding the base64 secret key; it overrides the key file.
pub const SECRET_KEY_ENV: &str = "GATEHOUSE_SECRET_KEY";

/// The master secret. Never printed (no `Debug` of the bytes).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Fills `buf` from the system CSPRNG (aws-lc).
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), KeyError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| KeyError::Random)
}

impl SecretKey {
    /// Wraps raw key bytes (tests, or keys from another secret manager).
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut k = [0u8; 32];
        random_bytes(&mut k)?;
        Ok(SecretKey(k))
    }

    /// Loads the key for `config`: `GATEHOUSE_SECRET_KEY` when set, else the key file
    /// (`identity.secret_key_file`), created with random bytes (0600) when missing.
    pub fn load(config: &Config) -> Result<SecretKey, KeyError> {
        match std::env::var(SECRET_KEY_ENV) {
            Ok(v) => Self::from_base64(&v),
            Err(_) => Self::load_or_create_file(&config.identity.secret_key_file),
        }
    }

    /// Decodes a base64 key (standard alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<SecretKey, KeyError> {
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim().trim_end_matches('='))
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(text.trim().trim_end_matches('='))
            })
            .map_err(|_| KeyError::BadEnv)?;
        let out = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| KeyError::BadEnv);
        raw.zeroize();
        out.map(SecretKey)
    }

    /// Reads the key file, or creates it (0600, 32 random bytes) when it does not exist.
    pub fn load_or_create_file(path: &Path) -> Result<SecretKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                check_private(path, &meta)?;
                let mut raw = std::fs::read(path).map_err(io)?;
                let out = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| KeyError::BadFile {
                    path: path.to_path_buf(),
                });
                raw.zeroize();
                out.map(SecretKey)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let key = Self::generate()?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts.open(path).map_err(io)?;
                f.write_all(&key.0).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A 32-byte sub-key for one purpose: HMAC-SHA256(master, label). Different labels give
    /// independent keys, so a leak of one derived key does not expose the others.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let tag = aws_lc_rs::hmac::sign(&key, label.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

#[cfg(unix)]
pub(crate) fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_created_private_and_reloaded() {
        let dir = crate::testutil::TempDir::new("secret");
        let path = dir.path().join("sub/secret.key");
        let a = SecretKey::load_or_create_file(&path).unwrap();
        let b = SecretKey::load_or_create_file(&path).unwrap();
        assert_eq!(a.derive("x"), b.derive("x"));
        assert_ne!(a.derive("x"), a.derive("y"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                SecretKey::load_or_create_file(&path),
                Err(KeyError::Permissions { .. })
            ));
        }
    }

    #[test]
    fn base64_key() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(SecretKey::from_base64(&b64).is_ok());
        assert!(SecretKey::from_base64("AAAA").is_err());
        assert!(SecretKey::from_base64("not base64!").is_err());
    }
}

/// Lower-case hex of `bytes`: ids, hashes and MACs, into a string sized once (the `hex`
/// crate's `encode` collects an iterator of `char`s, which showed up in the per-request
/// profile: session hashes, audit MACs and chain hashes).
pub fn hex_lower(bytes: impl AsRef<[u8]>) -> String {
    let bytes = bytes.as_ref();
    let digit = |n: u8| char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 });
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0x0f));
    }
    out
}

#[cfg(test)]
mod hex_tests {
    #[test]
    fn hex_lower_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::hex_lower(&bytes), hex::encode(&bytes));
        assert_eq!(super::hex_lower([]), "");
    }
}
