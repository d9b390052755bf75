//! The assertion signing key on disk, and its public JWK form.
//!
//! Threat: a key readable by other local users lets them mint identities for every upstream;
//! two instances starting at once each writing their own key would make one's tokens fail
//! at upstreams pinned to the other's JWKS; a half-written file read as a key.
//! Mitigation: the key is written to a private temporary file (0600, `create_new`), synced,
//! then hard-linked into place, which fails if another instance won the race (its key is then
//! loaded). A key file with any group/other permission bit is refused.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{AssertionError, KEY_FILE};
use crate::web::{b64url, random_bytes, sha256_b64url};

/// Length of one P-256 coordinate.
const COORD_LEN: usize = 32;

pub(super) fn load_or_create(data_dir: &Path) -> Result<rcgen::KeyPair, AssertionError> {
    fs::create_dir_all(data_dir).map_err(|source| AssertionError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(KEY_FILE);
    match load(&path) {
        Err(AssertionError::ReadKey { source, .. }) if source.kind() == ErrorKind::NotFound => {}
        other => return other,
    }
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(AssertionError::Generate)?;
    let suffix = b64url(&random_bytes::<8>()?);
    let tmp = data_dir.join(format!(".{KEY_FILE}.{suffix}.tmp"));
    let write_err = |source| AssertionError::WriteKey {
        path: path.clone(),
        source,
    };
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(pair.serialize_pem().as_bytes())?;
        file.sync_all()?;
        fs::hard_link(&tmp, &path)
    })();
    // The temporary name is gone either way; a failure to remove it leaves only a 0600 file.
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            if let Ok(dir) = fs::File::open(data_dir) {
                // Best effort: makes the new name durable across a crash.
                let _ = dir.sync_all();
            }
            Ok(pair)
        }
        // Another instance created it first: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => load(&path),
        Err(e) => Err(write_err(e)),
    }
}

fn load(path: &Path) -> Result<rcgen::KeyPair, AssertionError> {
    let read_err = |source| AssertionError::ReadKey {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AssertionError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let pem = fs::read_to_string(path).map_err(read_err)?;
    let pair = rcgen::KeyPair::from_pem(&pem).map_err(|source| AssertionError::ParseKey {
        path: path.to_path_buf(),
        source,
    })?;
    if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(AssertionError::WrongKeyType);
    }
    Ok(pair)
}

/// base64url x and y of an uncompressed SEC1 P-256 point (`04 || x || y`).
pub(super) fn public_xy(raw: &[u8]) -> Option<(String, String)> {
    let (tag, xy) = raw.split_first()?;
    if *tag != 0x04 || xy.len() != 2 * COORD_LEN {
        return None;
    }
    let (x, y) = xy.split_at_checked(COORD_LEN)?;
    Some((b64url(x), b64url(y)))
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, no spaces.
pub(super) fn thumbprint(x: &str, y: &str) -> String {
    sha256_b64url(format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#).as_bytes())
}
