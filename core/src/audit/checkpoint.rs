//! Signed checkpoints of the chain head.
//!
//! A checkpoint says "record `seq` of this log hashes to `hash`", signed with the audit
//! signing key. Everything before it is then fixed: changing, removing or reordering any
//! earlier record changes the chain up to it, and a log that ends before `seq` was cut. They
//! are written by the syncer after the records they cover are on disk: at least every
//! [`CHECKPOINT_INTERVAL`](super::CHECKPOINT_INTERVAL) while records flow, when a segment is
//! closed (the first record of a new day), and when the log is closed.
//!
//! Files: `audit-YYYYMMDD.ckpt` beside each segment holds the checkpoints of records in that
//! segment (removed with it by retention); `retention.ckpt` holds the signed hash of the last
//! record retention removed, from which the oldest remaining segment continues.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::chain;
use super::signing::{AuditPublicKey, AuditSigner};

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// Periodic, while records flow.
    Minute,
    /// The segment of `seq` was closed; `next` names the segment opened after it.
    Close,
    /// The log was closed (shutdown, end of a CLI command).
    Stop,
    /// Retention removed every record up to and including `seq`.
    Retention,
    /// The head a server last confirmed (the head file, kept apart from the log).
    Head,
    /// The record an export starts after (`seq` may be that of a record not exported).
    ExportStart,
}

impl CheckpointKind {
    fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Minute => "minute",
            CheckpointKind::Close => "close",
            CheckpointKind::Stop => "stop",
            CheckpointKind::Retention => "retention",
            CheckpointKind::Head => "head",
            CheckpointKind::ExportStart => "export_start",
        }
    }
}

/// The newest record of a chain: its sequence number, the SHA-256 of its line and the date
/// of its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
    pub date: String,
}

/// One signed checkpoint (a JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub kind: CheckpointKind,
    pub seq: u64,
    pub hash: String,
    /// When it was signed.
    pub ts: String,
    /// Date (`YYYYMMDD`) of the segment holding record `seq`.
    pub segment: String,
    /// For `close`: the segment opened next; for `retention`: the oldest segment kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Id of the signing key ([`AuditPublicKey::id`]).
    pub key: String,
    /// Base64 Ed25519 signature of [`Checkpoint::message`].
    pub sig: String,
}

impl Checkpoint {
    /// Signs a checkpoint of `head`, dated now.
    pub(crate) fn sign(
        signer: &AuditSigner,
        kind: CheckpointKind,
        head: &ChainHead,
        next: Option<&str>,
    ) -> Checkpoint {
        let mut cp = Checkpoint {
            kind,
            seq: head.seq,
            hash: head.hash.clone(),
            ts: chain::timestamp(crate::store::now_ms()).0,
            segment: head.date.clone(),
            next: next.map(str::to_string),
            key: signer.public_key().id(),
            sig: String::new(),
        };
        cp.sig = signer.sign(&cp.message());
        cp
    }

    /// The signed bytes: every field but the signature, one per line, in a fixed order (the
    /// JSON layout may change without invalidating signatures).
    pub fn message(&self) -> Vec<u8> {
        format!(
            "gatehouse-audit-checkpoint/v1\nkind={}\nseq={}\nhash={}\nts={}\nsegment={}\nnext={}\nkey={}\n",
            self.kind.as_str(),
            self.seq,
            self.hash,
            self.ts,
            self.segment,
            self.next.as_deref().unwrap_or("-"),
            self.key
        )
        .into_bytes()
    }

    /// Whether `key` signed this checkpoint.
    pub fn verify(&self, key: &AuditPublicKey) -> bool {
        self.key == key.id() && key.verify(&self.message(), &self.sig)
    }
}

/// Sidecar file of a segment date.
pub(crate) fn sidecar_name(date: &str) -> String {
    format!("audit-{date}.ckpt")
}

/// The date of a sidecar file name, when it is one.
pub(crate) fn sidecar_date(name: &str) -> Option<&str> {
    let d = name.strip_prefix("audit-")?.strip_suffix(".ckpt")?;
    (d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

/// Name of the retention checkpoint file.
pub(crate) const RETENTION_FILE: &str = "retention.ckpt";

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Appends `cp` to the sidecar of its segment (one write, then fdatasync).
pub(crate) fn append(dir: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    let mut line = serde_json::to_string(cp).map_err(std::io::Error::other)?;
    line.push('\n');
    let f = open_append(&dir.join(sidecar_name(&cp.segment)))?;
    (&f).write_all(line.as_bytes())?;
    f.sync_data()
}

/// Replaces `path` with one checkpoint, atomically (temporary file, fsync, rename, fsync of
/// the directory).
pub(crate) fn write_single(path: &Path, cp: &Checkpoint, sync: bool) -> std::io::Result<()> {
    let mut text = serde_json::to_string(cp).map_err(std::io::Error::other)?;
    text.push('\n');
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".tmp{}", std::process::id()));
        PathBuf::from(s)
    };
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        if sync {
            f.sync_data()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if sync && let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// A file holding one checkpoint: `None` when it does not exist, `Err` when it cannot be
/// read or parsed.
pub(crate) fn read_single(path: &Path) -> Result<Option<Checkpoint>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(text.trim())
            .map(Some)
            .map_err(|_| "not a checkpoint".to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A checkpoint as read, with where it was read from.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub path: PathBuf,
    pub line: usize,
    pub cp: Checkpoint,
}

/// What the checkpoint files of a directory hold.
#[derive(Debug, Default)]
pub(crate) struct Checkpoints {
    pub items: Vec<Found>,
    /// Lines that are not checkpoints (tampering), with their place.
    pub malformed: Vec<(PathBuf, usize)>,
    /// The retention checkpoint, if any.
    pub retention: Option<Found>,
}

/// Reads every sidecar of `dir` (and `retention.ckpt`). A torn last line (a crash while
/// appending) is ignored; any other unreadable line is reported.
pub(crate) fn read_dir(dir: &Path) -> std::io::Result<Checkpoints> {
    let mut out = Checkpoints::default();
    let mut files = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e?;
                if sidecar_date(&e.file_name().to_string_lossy()).is_some() {
                    files.push(e.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    }
    files.sort();
    for path in files {
        read_file(&path, &mut out.items, &mut out.malformed)?;
    }
    let rpath = dir.join(RETENTION_FILE);
    match read_single(&rpath) {
        Ok(Some(cp)) => {
            out.retention = Some(Found {
                path: rpath,
                line: 1,
                cp,
            })
        }
        Ok(None) => {}
        Err(_) => out.malformed.push((rpath, 1)),
    }
    Ok(out)
}

/// Reads one JSON-lines checkpoint file into `items`.
pub(crate) fn read_file(
    path: &Path,
    items: &mut Vec<Found>,
    malformed: &mut Vec<(PathBuf, usize)>,
) -> std::io::Result<()> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let body = text.get(..complete).unwrap_or_default();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Checkpoint>(line) {
            Ok(cp) => items.push(Found {
                path: path.to_path_buf(),
                line: i + 1,
                cp,
            }),
            Err(_) => malformed.push((path.to_path_buf(), i + 1)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_unchanged_and_with_its_key() {
        let signer = AuditSigner::generate().unwrap();
        let head = ChainHead {
            seq: 41,
            hash: "ab".repeat(32),
            date: "20260101".into(),
        };
        let cp = Checkpoint::sign(&signer, CheckpointKind::Close, &head, Some("20260102"));
        assert!(cp.verify(signer.public_key()));
        let json = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        assert!(back.verify(signer.public_key()));
        for tamper in [
            |c: &mut Checkpoint| c.seq += 1,
            |c: &mut Checkpoint| c.hash = "cd".repeat(32),
            |c: &mut Checkpoint| c.next = None,
            |c: &mut Checkpoint| c.kind = CheckpointKind::Minute,
            |c: &mut Checkpoint| c.segment = "20260102".into(),
        ] {
            let mut c = cp.clone();
            tamper(&mut c);
            assert!(!c.verify(signer.public_key()), "{c:?}");
        }
        let other = AuditSigner::generate().unwrap();
        assert!(!cp.verify(other.public_key()));
    }
}
