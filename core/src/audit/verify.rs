//! Verification of the live log ([`verify_log`], with the MAC key and the signed head) and of
//! an exported copy ([`verify_export`], with only the public key).
//!
//! What it finds: a changed record (its MAC, or the next record's `prev`, or a signed
//! checkpoint no longer matches), a removed, inserted or reordered record (`seq` and
//! `prev`), a missing segment (named when a checkpoint names it), records cut from the end
//! up to the newest signed checkpoint or head, and a forged checkpoint (its signature). A
//! torn last line of the newest segment is a crash (the record was never confirmed), reported
//! in [`VerifyReport::torn_tail`], not an error.

mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::chain::{self, AuditKey};
use super::checkpoint::{self, Checkpoint, CheckpointKind};
use super::export::Manifest;
use super::signing::AuditPublicKey;
use crate::error::AuditError;
use walk::{Fixed, Start, Walker, range};

/// A last line cut short by a crash: the process stopped while writing it, so it was never
/// confirmed. Not tampering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub line: usize,
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    /// Hash of the last line (the chain head), `None` for an empty log.
    pub head: Option<String>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Signed checkpoints whose signature was checked.
    pub checkpoints: usize,
    /// The newest record a signature covers: records after it could be cut or rewritten
    /// without detection offline (at most a checkpoint interval's worth on a live log).
    pub signed_through: Option<u64>,
    /// Records before `first_seq` removed by retention (verified by its signed checkpoint).
    pub retention_through: Option<u64>,
    pub torn_tail: Option<TornTail>,
    /// Whether every record's MAC was checked (live log with the secret key).
    pub macs_checked: bool,
}

/// What the live log is checked with.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// The MAC key (the secret); `None` checks the chain and signatures only.
    pub mac: Option<&'a AuditKey>,
    /// The public signing key: checkpoints, the retention checkpoint and the head file are
    /// checked with it. `None`: they are not used.
    pub public_key: Option<&'a AuditPublicKey>,
    /// The signed head the server last confirmed (kept apart from the log).
    pub head_file: Option<&'a Path>,
}

/// Verifies the whole log in `dir` with its MAC key (no checkpoints): see [`verify_log`].
pub fn verify(dir: &Path, key: &AuditKey) -> Result<VerifyReport, AuditError> {
    verify_log(
        dir,
        VerifyOptions {
            mac: Some(key),
            ..VerifyOptions::default()
        },
    )
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn broken(path: PathBuf, problem: String) -> AuditError {
    AuditError::Broken { path, problem }
}

/// Adds a checkpoint to what the walk must match (`unchecked`: its signature is checked
/// only if it disagrees with the log).
fn fix(
    fixed: &mut BTreeMap<u64, Vec<Fixed>>,
    known: &mut BTreeSet<String>,
    cp: &Checkpoint,
    what: String,
    unchecked: Option<(PathBuf, usize)>,
) {
    known.insert(cp.segment.clone());
    if let Some(n) = &cp.next {
        known.insert(n.clone());
    }
    fixed.entry(cp.seq).or_default().push(Fixed {
        what,
        hash: cp.hash.clone(),
        segment: cp.segment.clone(),
        unchecked: unchecked.map(|(p, l)| (cp.clone(), p, l)),
    });
}

pub(super) fn bad_signature(path: &Path, line: usize, key: &AuditPublicKey) -> AuditError {
    broken(
        path.to_path_buf(),
        format!(
            "the checkpoint at line {line} does not verify with the public key {}: it was forged or changed, or this is not the key that signed the log",
            key.fingerprint()
        ),
    )
}

/// Verifies the live log in `dir`. The first problem found is returned, naming the record
/// (file and line) or the segment.
pub fn verify_log(dir: &Path, opts: VerifyOptions<'_>) -> Result<VerifyReport, AuditError> {
    let mut fixed = BTreeMap::new();
    let mut known = BTreeSet::new();
    let mut checked = 0;
    let mut retention = None;
    let mut closes = Vec::new();
    if let Some(key) = opts.public_key {
        let cps = checkpoint::read_dir(dir).map_err(io(dir))?;
        if let Some((p, l)) = cps.malformed.first() {
            return Err(AuditError::Tampered {
                path: p.clone(),
                line: *l,
                problem: "the line is not a checkpoint: the checkpoint file was edited".into(),
            });
        }
        // Signatures checked now: every segment's close and stop, and the newest (it fixes
        // the whole chain before it, and the log's length). The periodic ones in between
        // only pinpoint a rewrite: checked when they disagree with the log (a year of them
        // is half a million signatures).
        let newest = cps.items.iter().map(|f| f.cp.seq).max();
        for f in &cps.items {
            let eager = f.cp.kind != CheckpointKind::Minute || Some(f.cp.seq) == newest;
            if eager {
                if !f.cp.verify(key) {
                    return Err(bad_signature(&f.path, f.line, key));
                }
                checked += 1;
            }
            let what = format!(
                "the signed checkpoint at {}:{} (signed {})",
                f.path.display(),
                f.line,
                f.cp.ts
            );
            let lazy = (!eager).then(|| (f.path.clone(), f.line));
            fix(&mut fixed, &mut known, &f.cp, what, lazy);
            if f.cp.kind == CheckpointKind::Close {
                closes.push(f.clone());
            }
        }
        if let Some(r) = &cps.retention {
            if !r.cp.verify(key) {
                return Err(bad_signature(&r.path, 1, key));
            }
            checked += 1;
            if let Some(n) = &r.cp.next {
                known.insert(n.clone());
            }
            retention = Some(r.cp.clone());
        }
        if let Some(path) = opts.head_file {
            match checkpoint::read_single(path) {
                Ok(Some(cp)) if cp.verify(key) => {
                    checked += 1;
                    let what = format!("the signed head {} (signed {})", path.display(), cp.ts);
                    fix(&mut fixed, &mut known, &cp, what, None);
                }
                Ok(Some(_)) => return Err(bad_signature(path, 1, key)),
                Ok(None) => {}
                Err(why) => {
                    return Err(broken(
                        path.to_path_buf(),
                        format!("the signed head cannot be read: {why}"),
                    ));
                }
            }
        }
    }
    // Listed after the checkpoints and the head were read: on a live log they only cover
    // records already in these files.
    let segs = chain::segments(dir).map_err(io(dir))?;
    let start = Start::Log {
        retention: retention.as_ref().map(|c| (c.seq, c.hash.clone())),
    };
    let mut w = Walker::new(opts.mac, &fixed, &known, dir, start);
    w.public_key = opts.public_key;
    w.floor_date = retention.as_ref().map(|c| c.segment.clone());
    for (i, path) in segs.iter().enumerate() {
        w.segment(path, i + 1 == segs.len())?;
    }
    let last = w.expected.and_then(|e| e.checked_sub(1));
    // A signed position beyond the log's end: its tail was cut.
    if let Some((&seq, list)) = fixed.range(last.map_or(0, |l| l + 1)..).next_back()
        && last.is_none_or(|l| seq > l)
    {
        let Some(f) = list.first() else {
            return Err(broken(dir.to_path_buf(), "empty checkpoint list".into()));
        };
        return Err(cut_tail(dir, &segs, last, seq, f));
    }
    let newest_date = segs
        .last()
        .and_then(|p| p.file_name())
        .and_then(|n| chain::segment_date(&n.to_string_lossy()).map(str::to_string));
    for c in &closes {
        if let Some(next) = &c.cp.next
            && newest_date.as_ref().is_none_or(|d| d < next)
        {
            let seg = chain::segment_name(next);
            return Err(broken(
                dir.join(&seg),
                format!(
                    "segment {seg} is missing: {}:{} closed segment {} and named it as the next; the newest records were deleted",
                    c.path.display(),
                    c.line,
                    c.cp.segment
                ),
            ));
        }
    }
    Ok(VerifyReport {
        segments: segs.len(),
        records: w.records,
        head: w.head().map(str::to_string),
        first_seq: w.first_seq,
        last_seq: last,
        checkpoints: checked,
        signed_through: last.and_then(|l| fixed.range(..=l).next_back().map(|(s, _)| *s)),
        retention_through: retention.map(|c| c.seq),
        torn_tail: w.torn,
        macs_checked: opts.mac.is_some(),
    })
}

/// The error for a log that ends before a signed position `seq`: the newest segment is
/// named when it is gone.
fn cut_tail(dir: &Path, segs: &[PathBuf], last: Option<u64>, seq: u64, f: &Fixed) -> AuditError {
    let from = last.map_or(0, |l| l + 1);
    let ends = last.map_or_else(
        || "nothing (it is empty)".to_string(),
        |l| format!("record {l}"),
    );
    let seg = chain::segment_name(&f.segment);
    if !f.segment.is_empty() && !dir.join(&seg).exists() {
        return broken(
            dir.join(&seg),
            format!(
                "segment {seg} is missing: {} covers record {seq} in it, and the log ends at {ends}: the newest segment was deleted ({} gone)",
                f.what,
                range(from, seq)
            ),
        );
    }
    let at = segs.last().cloned().unwrap_or_else(|| dir.to_path_buf());
    broken(
        at,
        format!(
            "the log ends at {ends} but {} covers record {seq}: {} cut from the end",
            f.what,
            range(from, seq)
        ),
    )
}

/// Verifies an exported copy in `dir` with only the public key: the signed manifest (start
/// hash, end hash, segments), every record's chain, and the checkpoints it carries.
pub fn verify_export(dir: &Path, key: &AuditPublicKey) -> Result<VerifyReport, AuditError> {
    let manifest = Manifest::load(dir)?;
    if !manifest.verify(key) {
        return Err(broken(
            dir.join(super::export::MANIFEST_FILE),
            format!(
                "the export manifest does not verify with the public key {}: the manifest was changed, or this is not the key that signed it",
                key.fingerprint()
            ),
        ));
    }
    let segs = chain::segments(dir).map_err(io(dir))?;
    let names: BTreeSet<String> = segs
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for s in &manifest.segments {
        if !names.contains(&s.name) {
            return Err(broken(
                dir.join(&s.name),
                format!(
                    "segment {} is missing from the export: the signed manifest lists it with {}",
                    s.name,
                    range(s.first_seq, s.last_seq)
                ),
            ));
        }
    }
    if let Some(extra) = names
        .iter()
        .find(|n| !manifest.segments.iter().any(|s| &s.name == *n))
    {
        return Err(broken(
            dir.join(extra),
            format!("segment {extra} is not in the signed manifest: it was added to the export"),
        ));
    }
    let mut fixed = BTreeMap::new();
    let mut known: BTreeSet<String> = manifest
        .segments
        .iter()
        .filter_map(|s| chain::segment_date(&s.name).map(str::to_string))
        .collect();
    let mut checked = 1;
    let mut items = Vec::new();
    let mut malformed = Vec::new();
    let cpath = dir.join(super::export::CHECKPOINTS_FILE);
    checkpoint::read_file(&cpath, &mut items, &mut malformed).map_err(io(&cpath))?;
    if let Some((p, l)) = malformed.first() {
        return Err(AuditError::Tampered {
            path: p.clone(),
            line: *l,
            problem: "the line is not a checkpoint: the checkpoint file was edited".into(),
        });
    }
    for f in &items {
        if !f.cp.verify(key) {
            return Err(bad_signature(&f.path, f.line, key));
        }
        checked += 1;
        let what = format!(
            "the signed checkpoint at {}:{} (signed {})",
            f.path.display(),
            f.line,
            f.cp.ts
        );
        fix(&mut fixed, &mut known, &f.cp, what, None);
    }
    let mut w = Walker::new(
        None,
        &fixed,
        &known,
        dir,
        Start::Export {
            seq: manifest.first_seq,
            prev: manifest.first_prev.clone(),
        },
    );
    for (i, path) in segs.iter().enumerate() {
        w.segment(path, i + 1 == segs.len())?;
    }
    let mpath = dir.join(super::export::MANIFEST_FILE);
    if let Some(t) = &w.torn {
        return Err(AuditError::Tampered {
            path: t.path.clone(),
            line: t.line,
            problem: "the line is incomplete: the export was cut or edited (an export holds only complete records)".into(),
        });
    }
    match (w.expected.and_then(|e| e.checked_sub(1)), manifest.records) {
        (None, 0) => {}
        (None, _) => {
            return Err(broken(
                mpath,
                format!(
                    "the export holds no records but its signed manifest lists {}",
                    range(manifest.first_seq, manifest.last_seq)
                ),
            ));
        }
        (Some(l), _) if l < manifest.last_seq => {
            let at = w.last_at().map(|(p, _)| p.clone()).unwrap_or(mpath);
            return Err(broken(
                at,
                format!(
                    "the export ends at record {l} but its signed manifest ends at record {}: {} cut from the end",
                    manifest.last_seq,
                    range(l + 1, manifest.last_seq)
                ),
            ));
        }
        (Some(l), _) if l > manifest.last_seq => {
            return Err(broken(
                mpath,
                format!(
                    "the export holds records after its signed end (record {}): {} were added",
                    manifest.last_seq,
                    range(manifest.last_seq + 1, l)
                ),
            ));
        }
        (Some(l), _) => {
            if w.head()
                .is_none_or(|h| !chain::ct_str_eq(h, &manifest.last_hash))
            {
                let (p, n) = w.last_at().cloned().unwrap_or_default();
                return Err(AuditError::Tampered {
                    path: p,
                    line: n,
                    problem: format!(
                        "record {l} was changed: its hash differs from the export's signed end hash"
                    ),
                });
            }
        }
    }
    Ok(VerifyReport {
        segments: segs.len(),
        records: w.records,
        head: w.head().map(str::to_string),
        first_seq: w.first_seq,
        last_seq: w.expected.and_then(|e| e.checked_sub(1)),
        checkpoints: checked,
        signed_through: (manifest.records > 0).then_some(manifest.last_seq),
        retention_through: None,
        torn_tail: None,
        macs_checked: false,
    })
}
