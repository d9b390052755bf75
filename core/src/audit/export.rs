//! `audit export`: the records of a time window, copied byte for byte, with what an outside
//! auditor needs to verify them without Gatehouse's secret: the checkpoints inside the
//! window, the public key, a signed manifest and a README.
//!
//! The manifest fixes the window's first record and the hash it continues from, its last
//! record and that record's hash, and each segment's records; it is signed with the audit
//! signing key after every exported record's MAC was checked with the secret, so a window
//! that starts mid-segment verifies from a signed start, and a record removed anywhere in
//! the export (the tail included) is found.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::chain::{self, AuditKey, BodyIn};
use super::checkpoint;
use super::signing::{AuditPublicKey, AuditSigner};
use crate::error::AuditError;

pub const MANIFEST_FILE: &str = "export.json";
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
pub const PUBLIC_KEY_FILE: &str = "public-key.pem";
pub const README_FILE: &str = "README.txt";
const FORMAT: &str = "gatehouse-audit-export/v1";

/// One exported segment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    pub name: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
}

/// The signed description of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub created: String,
    pub since: String,
    pub until: String,
    pub records: u64,
    /// The first exported record and the hash it continues from (its `prev`).
    pub first_seq: u64,
    pub first_prev: String,
    /// The last exported record and the SHA-256 of its line.
    pub last_seq: u64,
    pub last_hash: String,
    pub segments: Vec<SegmentEntry>,
    /// Id of the signing key.
    pub key: String,
    /// Base64 Ed25519 signature of [`Manifest::message`].
    pub sig: String,
}

impl Manifest {
    /// The signed bytes: every field but the signature, in a fixed order.
    pub fn message(&self) -> Vec<u8> {
        let mut m = format!(
            "{FORMAT}\ncreated={}\nsince={}\nuntil={}\nrecords={}\nfirst_seq={}\nfirst_prev={}\nlast_seq={}\nlast_hash={}\nkey={}\n",
            self.created,
            self.since,
            self.until,
            self.records,
            self.first_seq,
            self.first_prev,
            self.last_seq,
            self.last_hash,
            self.key
        );
        for s in &self.segments {
            m.push_str(&format!(
                "segment={}:{}:{}:{}\n",
                s.name, s.first_seq, s.last_seq, s.records
            ));
        }
        m.into_bytes()
    }

    pub fn verify(&self, key: &AuditPublicKey) -> bool {
        self.format == FORMAT && self.key == key.id() && key.verify(&self.message(), &self.sig)
    }

    pub(crate) fn load(dir: &Path) -> Result<Manifest, AuditError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|_| AuditError::Broken {
            path,
            problem: "the export manifest is not valid: it was edited".into(),
        })
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub records: u64,
    pub segments: usize,
    pub checkpoints: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn refuse(path: &Path, line: usize, problem: String) -> AuditError {
    AuditError::Tampered {
        path: path.to_path_buf(),
        line,
        problem: format!("refusing to export: {problem}"),
    }
}

/// The window being copied.
struct Window {
    since: String,
    until: String,
    records: u64,
    first: Option<(u64, String)>,
    last: Option<(u64, String)>,
    segments: Vec<SegmentEntry>,
}

/// Copies the records of `src` dated within `[since_ms, until_ms]` into `out` (created; it
/// must be empty), checking each one's MAC and link first, and writes the checkpoints inside
/// the window, the public key, the signed manifest and a README.
pub fn export(
    src: &Path,
    key: &AuditKey,
    signer: &AuditSigner,
    since_ms: u64,
    until_ms: u64,
    out: &Path,
) -> Result<ExportReport, AuditError> {
    if until_ms < since_ms {
        return Err(AuditError::Query("--until is before --since".into()));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    if std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(AuditError::Query(format!(
            "{} is not empty: export into a new directory",
            out.display()
        )));
    }
    let mut win = Window {
        since: chain::timestamp(since_ms).0,
        until: chain::timestamp(until_ms).0,
        records: 0,
        first: None,
        last: None,
        segments: Vec::new(),
    };
    let (d0, d1) = (chain::timestamp(since_ms).1, chain::timestamp(until_ms).1);
    for path in chain::segments(src).map_err(io(src))? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(date) = chain::segment_date(&name) else {
            continue;
        };
        if date < d0.as_str() || date > d1.as_str() {
            continue;
        }
        copy_segment(&path, &name, key, &mut win, out)?;
    }
    let public = signer.public_key();
    let mut cps = 0;
    if let (Some((first, _)), Some((last, _))) = (&win.first, &win.last) {
        let found = checkpoint::read_dir(src).map_err(io(src))?;
        let mut text = String::new();
        for f in found.items {
            if f.cp.seq >= *first && f.cp.seq <= *last && f.cp.verify(public) {
                text.push_str(&serde_json::to_string(&f.cp).map_err(AuditError::Encode)?);
                text.push('\n');
                cps += 1;
            }
        }
        let p = out.join(CHECKPOINTS_FILE);
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    let mut manifest = Manifest {
        format: FORMAT.into(),
        created: chain::timestamp(crate::store::now_ms()).0,
        since: win.since.clone(),
        until: win.until.clone(),
        records: win.records,
        first_seq: win.first.as_ref().map_or(0, |f| f.0),
        first_prev: win.first.as_ref().map(|f| f.1.clone()).unwrap_or_default(),
        last_seq: win.last.as_ref().map_or(0, |l| l.0),
        last_hash: win.last.as_ref().map(|l| l.1.clone()).unwrap_or_default(),
        segments: win.segments.clone(),
        key: public.id(),
        sig: String::new(),
    };
    manifest.sig = signer.sign(&manifest.message());
    let write = |name: &str, text: &str| {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(io(&p))
    };
    write(
        MANIFEST_FILE,
        &format!(
            "{}\n",
            serde_json::to_string_pretty(&manifest).map_err(AuditError::Encode)?
        ),
    )?;
    write(PUBLIC_KEY_FILE, &public.to_pem())?;
    write(README_FILE, &readme(&manifest, public))?;
    Ok(ExportReport {
        dir: out.to_path_buf(),
        records: win.records,
        segments: win.segments.len(),
        checkpoints: cps,
        first_seq: win.first.map(|f| f.0),
        last_seq: win.last.map(|l| l.0),
    })
}

/// Copies the window's lines of one segment, checking MAC and link.
fn copy_segment(
    path: &Path,
    name: &str,
    key: &AuditKey,
    win: &mut Window,
    out: &Path,
) -> Result<(), AuditError> {
    let text = std::fs::read(path).map_err(io(path))?;
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let mut copy: Vec<u8> = Vec::new();
    let mut entry: Option<SegmentEntry> = None;
    for (i, raw) in text
        .get(..complete)
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .enumerate()
    {
        if raw.is_empty() {
            continue;
        }
        let n = i + 1;
        let line =
            std::str::from_utf8(raw).map_err(|_| refuse(path, n, "the line is not text".into()))?;
        let (body, mac) = chain::split_line(line)
            .ok_or_else(|| refuse(path, n, "the line is not a record".into()))?;
        if !key.mac_ok(body.as_bytes(), mac) {
            return Err(refuse(
                path,
                n,
                "the record's MAC does not verify (it was changed); run `gatehouse audit verify`"
                    .into(),
            ));
        }
        let rec: BodyIn = serde_json::from_str(&body)
            .map_err(|_| refuse(path, n, "the record is not JSON".into()))?;
        if rec.ts < win.since || rec.ts > win.until {
            continue;
        }
        if let Some((seq, hash)) = &win.last
            && (rec.seq != seq + 1 || !chain::ct_str_eq(&rec.prev, hash))
        {
            return Err(refuse(
                path,
                n,
                format!(
                    "record {} does not follow record {seq}; run `gatehouse audit verify`",
                    rec.seq
                ),
            ));
        }
        if win.first.is_none() {
            win.first = Some((rec.seq, rec.prev.clone()));
        }
        win.last = Some((rec.seq, chain::line_hash(line)));
        win.records += 1;
        copy.extend_from_slice(raw);
        copy.push(b'\n');
        let e = entry.get_or_insert_with(|| SegmentEntry {
            name: name.to_string(),
            first_seq: rec.seq,
            last_seq: rec.seq,
            records: 0,
        });
        e.last_seq = rec.seq;
        e.records += 1;
    }
    if let Some(e) = entry {
        let p = out.join(name);
        let mut f = std::fs::File::create(&p).map_err(io(&p))?;
        f.write_all(&copy).map_err(io(&p))?;
        f.sync_all().map_err(io(&p))?;
        win.segments.push(e);
    }
    Ok(())
}

fn readme(m: &Manifest, key: &AuditPublicKey) -> String {
    let span = if m.records == 0 {
        "no records".to_string()
    } else {
        format!(
            "records {}..{} ({} records)",
            m.first_seq, m.last_seq, m.records
        )
    };
    format!(
        "Gatehouse audit log export
==========================

{span} dated {since} to {until}, exported {created}.

Verify it (no secret, no configuration and no running server needed):

    gatehouse audit verify THIS-DIRECTORY --public-key PUBLISHED-KEY.pem

Use the public key the operator published (printed on the server by `gatehouse audit
public-key`), not only the copy in this directory: public-key.pem here has fingerprint
{fp}; compare it with the published one.

The command exits 0 and prints \"ok\" when the export is intact. Otherwise it exits 1 and
names the record that was changed, removed, inserted or reordered, the missing segment, or
the records cut from the end.

What is checked:
- export.json (the manifest) is signed (Ed25519) by the audit signing key. It fixes the
  first exported record and the hash it continues from, the last record and its hash, and
  each segment file's records.
- audit-YYYYMMDD.jsonl: one JSON record per line: seq (consecutive), ts (UTC), prev (the
  SHA-256, hex, of the previous line as stored, without its newline), event, mac (an HMAC
  by the server's secret, which is not needed here). Each line must hash into the next
  line's prev, from the manifest's first_prev to its last_hash.
- checkpoints.jsonl: signed checkpoints of the chain inside the window (seq, hash).
",
        since = m.since,
        until = m.until,
        created = m.created,
        fp = key.fingerprint()
    )
}
