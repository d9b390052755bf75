//! The Ed25519 key that signs checkpoints of the chain head, and its public half.
//!
//! Threat: an outside auditor must check an exported log without Gatehouse's secret (the
//! HMAC key would let them forge records). Mitigation: checkpoints are signed with an Ed25519
//! key whose public half (`<key file>.pub`, PEM `PUBLIC KEY`, readable by `openssl pkey
//! -pubin`) is published; verifying needs only that. The private key is PKCS#8 PEM, created
//! 0600 when missing and refused when group or others can read it.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;

use crate::error::KeyError;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The signing key. `Debug` never shows it.
pub struct AuditSigner {
    pair: Ed25519KeyPair,
    public: AuditPublicKey,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("public", &self.public.id())
            .finish_non_exhaustive()
    }
}

/// A published checkpoint-signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditPublicKey([u8; 32]);

impl std::fmt::Debug for AuditPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditPublicKey({})", self.id())
    }
}

/// The public key file written beside a signing key file.
pub fn public_key_path(key_file: &Path) -> PathBuf {
    let mut s = key_file.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(label: &str, text: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = text.get(start..)?.find(&end)? + start;
    let body: String = text
        .get(start..stop)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

impl AuditSigner {
    /// Loads the key file, or creates it (0600) with a fresh key when missing; the public key
    /// file `<path>.pub` is (re)written when missing or different.
    pub fn load_or_create(path: &Path) -> Result<AuditSigner, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let signer = match std::fs::metadata(path) {
            Ok(meta) => {
                crate::secret::check_private(path, &meta)?;
                let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
                let der =
                    zeroize::Zeroizing::new(unpem("PRIVATE KEY", &text).ok_or_else(|| {
                        KeyError::BadSigningKey {
                            path: path.to_path_buf(),
                        }
                    })?);
                Self::from_pkcs8(&der).ok_or_else(|| KeyError::BadSigningKey {
                    path: path.to_path_buf(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                    .map_err(|_| KeyError::Random)?;
                let text = zeroize::Zeroizing::new(pem("PRIVATE KEY", doc.as_ref()));
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts.open(path).map_err(io)?;
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Self::from_pkcs8(doc.as_ref()).ok_or(KeyError::Random)?
            }
            Err(e) => return Err(io(e)),
        };
        let pub_path = public_key_path(path);
        let want = signer.public.to_pem();
        if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(want.as_str()) {
            std::fs::write(&pub_path, want).map_err(|source| KeyError::Io {
                path: pub_path.clone(),
                source,
            })?;
        }
        Ok(signer)
    }

    /// A key from PKCS#8 DER (tests, or keys held elsewhere).
    pub fn from_pkcs8(der: &[u8]) -> Option<AuditSigner> {
        let pair = Ed25519KeyPair::from_pkcs8(der).ok()?;
        let raw = <[u8; 32]>::try_from(pair.public_key().as_ref()).ok()?;
        Some(AuditSigner {
            pair,
            public: AuditPublicKey(raw),
        })
    }

    /// A fresh key that lives only in memory (tests).
    pub fn generate() -> Result<AuditSigner, KeyError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| KeyError::Random)?;
        Self::from_pkcs8(doc.as_ref()).ok_or(KeyError::Random)
    }

    pub fn public_key(&self) -> &AuditPublicKey {
        &self.public
    }

    /// Base64 of the signature of `msg`.
    pub(crate) fn sign(&self, msg: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.sign(msg).as_ref())
    }
}

impl AuditPublicKey {
    /// Parses a PEM `PUBLIC KEY` (Ed25519 SubjectPublicKeyInfo).
    pub fn from_pem(text: &str) -> Option<AuditPublicKey> {
        let der = unpem("PUBLIC KEY", text)?;
        let key = der.strip_prefix(&SPKI_PREFIX[..])?;
        <[u8; 32]>::try_from(key).ok().map(AuditPublicKey)
    }

    /// Reads a PEM public key file.
    pub fn load(path: &Path) -> Result<AuditPublicKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&text).ok_or_else(|| KeyError::BadPublicKey {
            path: path.to_path_buf(),
        })
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem("PUBLIC KEY", &der)
    }

    /// Short id naming the key in checkpoints: hex of the first 8 bytes of SHA-256(key).
    pub fn id(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0);
        crate::secret::hex_lower(d.as_ref().get(..8).unwrap_or_default())
    }

    /// Fingerprint to compare with the published one: `SHA256:` and base64 (as OpenSSH
    /// prints key fingerprints).
    pub fn fingerprint(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0);
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(d.as_ref())
        )
    }

    /// Whether `sig_b64` is this key's signature of `msg`.
    pub(crate) fn verify(&self, msg: &[u8], sig_b64: &str) -> bool {
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig_b64) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, &sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn key_file_is_created_private_and_reloads_to_the_same_key() {
        let dir = TempDir::new("signing");
        let path = dir.path().join("keys/audit-signing.key");
        let a = AuditSigner::load_or_create(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let b = AuditSigner::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let published = AuditPublicKey::load(&public_key_path(&path)).unwrap();
        assert_eq!(&published, a.public_key());
        let sig = a.sign(b"checkpoint");
        assert!(published.verify(b"checkpoint", &sig));
        assert!(!published.verify(b"checkpoinT", &sig));
        let other = AuditSigner::generate().unwrap();
        assert!(!other.public_key().verify(b"checkpoint", &sig));
        assert_eq!(a.public_key().id().len(), 16);
    }

    #[test]
    fn a_readable_or_garbled_key_file_is_refused() {
        let dir = TempDir::new("signing");
        let path = dir.path().join("k");
        AuditSigner::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(matches!(
            AuditSigner::load_or_create(&path),
            Err(KeyError::Permissions { .. })
        ));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(
            AuditSigner::load_or_create(&path),
            Err(KeyError::BadSigningKey { .. })
        ));
        assert!(AuditPublicKey::from_pem("not a key").is_none());
    }
}
