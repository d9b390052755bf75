//! OpenSSH public key lines: `ALGORITHM BASE64 [comment]`, validated (known algorithm, base64
//! blob whose embedded algorithm name matches).

use base64::Engine;

use crate::error::IdentityError;

/// Algorithms accepted for staff keys.
const ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-256",
    "rsa-sha2-512",
    "ssh-rsa",
];

/// A parsed public key: algorithm and decoded blob (the comment is kept for display only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPublicKey {
    pub algorithm: String,
    pub blob: Vec<u8>,
    pub comment: String,
}

impl SshPublicKey {
    /// Same key (comments ignored), compared in constant time over the blob. The blob names
    /// its own key type (checked at parse), so an RSA key written `rsa-sha2-512 AAAA...`
    /// matches the same key offered as `ssh-rsa AAAA...`.
    pub fn same_key(&self, other: &SshPublicKey) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.blob.ct_eq(&other.blob))
    }

    /// `ALGORITHM BASE64` without the comment.
    pub fn to_openssh(&self) -> String {
        format!(
            "{} {}",
            self.algorithm,
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }
}

/// Parses and validates one OpenSSH public key line.
pub fn parse_ssh_public_key(line: &str) -> Result<SshPublicKey, IdentityError> {
    let mut parts = line.split_whitespace();
    let algorithm = parts
        .next()
        .ok_or_else(|| IdentityError::InvalidSshKey("empty line".into()))?;
    if !ALGORITHMS.contains(&algorithm) {
        return Err(IdentityError::InvalidSshKey(format!(
            "unknown algorithm `{}`",
            algorithm.chars().take(40).collect::<String>()
        )));
    }
    let b64 = parts
        .next()
        .ok_or_else(|| IdentityError::InvalidSshKey("no key data after the algorithm".into()))?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| IdentityError::InvalidSshKey("key data is not base64".into()))?;
    // The blob starts with a length-prefixed copy of the algorithm name (RFC 4253 6.6);
    // rsa-sha2-* keys carry "ssh-rsa" there.
    let inner = blob
        .get(..4)
        .and_then(|l| <[u8; 4]>::try_from(l).ok())
        .map(|l| u32::from_be_bytes(l) as usize)
        .and_then(|n| blob.get(4..4usize.saturating_add(n)))
        .ok_or_else(|| IdentityError::InvalidSshKey("key data is truncated".into()))?;
    let expected = if algorithm.starts_with("rsa-sha2-") {
        "ssh-rsa"
    } else {
        algorithm
    };
    if inner != expected.as_bytes() {
        return Err(IdentityError::InvalidSshKey(
            "key data does not match the algorithm".into(),
        ));
    }
    if blob.len() < 4 + inner.len() + 16 {
        return Err(IdentityError::InvalidSshKey("key data is too short".into()));
    }
    let comment = parts.collect::<Vec<_>>().join(" ");
    Ok(SshPublicKey {
        algorithm: algorithm.to_string(),
        blob,
        comment,
    })
}
