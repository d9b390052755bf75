//! The chain walk shared by the live log's and an export's verification: every record's MAC
//! (when the key is at hand), its `seq`, its `prev`, its date and the signed checkpoints
//! that cover it. The first problem is returned, named as precisely as the evidence allows:
//! which record was changed, removed, inserted or moved, which segment is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::super::chain::{self, AuditKey, BodyIn};
use super::super::checkpoint::Checkpoint;
use super::super::head::seq_of;
use super::super::signing::AuditPublicKey;
use super::TornTail;
use crate::error::AuditError;

/// What a checkpoint (or the head, or an export's end) fixes: the hash of record `seq`.
#[derive(Debug, Clone)]
pub(super) struct Fixed {
    /// How to name it: "the signed checkpoint at audit-20260101.ckpt:4 (signed ...)".
    pub what: String,
    pub hash: String,
    /// Date of the segment holding the record.
    pub segment: String,
    /// A checkpoint whose signature is checked only if it disagrees with the log (one that
    /// agrees adds nothing a forger could use; the newest and every segment's close are
    /// always checked): the checkpoint, its file and line.
    pub unchecked: Option<(Checkpoint, PathBuf, usize)>,
}

/// Where the first record must continue from.
#[derive(Debug, Clone)]
pub(super) enum Start {
    /// Record 0 after the genesis hash, or a retention checkpoint's record.
    Log { retention: Option<(u64, String)> },
    /// An export's signed start: record `seq` follows `prev`.
    Export { seq: u64, prev: String },
}

pub(super) struct Walker<'a> {
    pub mac: Option<&'a AuditKey>,
    /// Checks the signatures of checkpoints left unchecked.
    pub public_key: Option<&'a AuditPublicKey>,
    pub fixed: &'a BTreeMap<u64, Vec<Fixed>>,
    /// Segment dates named by checkpoints (to name a missing one).
    pub known: &'a BTreeSet<String>,
    pub dir: &'a Path,
    pub start: Start,
    /// Segments dated up to this one are not expected (removed by retention).
    pub floor_date: Option<String>,
    pub expected: Option<u64>,
    running: String,
    last_ts: String,
    /// Place of the last record: file, line.
    last_at: Option<(PathBuf, usize)>,
    last_fixed: Option<u64>,
    last_date: Option<String>,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub torn: Option<TornTail>,
    pub fixed_seen: usize,
}

fn tampered(path: &Path, line: usize, problem: String) -> AuditError {
    AuditError::Tampered {
        path: path.to_path_buf(),
        line,
        problem,
    }
}

/// `a..b` or `a` for a range of record numbers.
pub(super) fn range(a: u64, b: u64) -> String {
    if a == b {
        format!("record {a}")
    } else {
        format!("records {a}..{b}")
    }
}

impl<'a> Walker<'a> {
    pub fn new(
        mac: Option<&'a AuditKey>,
        fixed: &'a BTreeMap<u64, Vec<Fixed>>,
        known: &'a BTreeSet<String>,
        dir: &'a Path,
        start: Start,
    ) -> Walker<'a> {
        Walker {
            mac,
            public_key: None,
            fixed,
            known,
            dir,
            start,
            floor_date: None,
            expected: None,
            running: String::new(),
            last_ts: String::new(),
            last_at: None,
            last_fixed: None,
            last_date: None,
            records: 0,
            first_seq: None,
            torn: None,
            fixed_seen: 0,
        }
    }

    /// Hash of the last record walked.
    pub fn head(&self) -> Option<&str> {
        (self.records > 0).then_some(self.running.as_str())
    }

    pub fn last_at(&self) -> Option<&(PathBuf, usize)> {
        self.last_at.as_ref()
    }

    /// Segment files named by checkpoints between the last walked segment and `date`,
    /// missing from the directory.
    fn missing_between(&self, date: &str) -> Vec<String> {
        let after = self
            .last_date
            .clone()
            .or_else(|| self.floor_date.clone())
            .unwrap_or_default();
        self.known
            .iter()
            .filter(|d| d.as_str() > after.as_str() && d.as_str() < date)
            .map(|d| chain::segment_name(d))
            .filter(|n| !self.dir.join(n).exists())
            .collect()
    }

    /// Walks one segment file; `newest` when no segment follows (a torn last line there is a
    /// crash, anywhere else tampering).
    pub fn segment(&mut self, path: &Path, newest: bool) -> Result<(), AuditError> {
        let text = std::fs::read(path).map_err(|source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let date = chain::segment_date(&name).unwrap_or_default().to_string();
        // Complete lines end with a newline; what follows the last one is torn.
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let lines: Vec<&[u8]> = text
            .get(..complete)
            .unwrap_or_default()
            .split(|&b| b == b'\n')
            .collect();
        let lines = lines
            .get(..lines.len().saturating_sub(1))
            .unwrap_or_default();
        for (i, raw) in lines.iter().enumerate() {
            self.line(
                path,
                &date,
                i + 1,
                raw,
                lines.get(i + 1..).unwrap_or_default(),
            )?;
        }
        if complete < text.len() {
            let n = lines.len() + 1;
            if newest {
                self.torn = Some(TornTail {
                    path: path.to_path_buf(),
                    line: n,
                });
            } else {
                return Err(tampered(
                    path,
                    n,
                    "the line is incomplete, in a segment that is not the newest: the segment was cut or edited".into(),
                ));
            }
        }
        self.last_date = Some(date);
        Ok(())
    }

    /// Checks one line; `rest` are the lines after it in the same segment.
    fn line(
        &mut self,
        path: &Path,
        date: &str,
        n: usize,
        raw: &[u8],
        rest: &[&[u8]],
    ) -> Result<(), AuditError> {
        let line = std::str::from_utf8(raw)
            .map_err(|_| tampered(path, n, "the line is not text: it was edited".into()))?;
        let (body, mac) = chain::split_line(line).ok_or_else(|| {
            tampered(
                path,
                n,
                "the line is not a record (malformed): it was edited or inserted".into(),
            )
        })?;
        let loose = seq_of(raw).map_or("?".to_string(), |s| s.to_string());
        if let Some(key) = self.mac
            && !key.mac_ok(body.as_bytes(), mac)
        {
            return Err(tampered(
                path,
                n,
                format!("record {loose} was changed: its MAC does not verify"),
            ));
        }
        let rec: BodyIn = serde_json::from_str(&body).map_err(|_| {
            tampered(
                path,
                n,
                format!("record {loose} is not valid JSON: it was edited"),
            )
        })?;
        let s = rec.seq;
        match self.expected {
            None => self.first(path, date, n, &rec)?,
            Some(e) if s == e => {
                if !chain::ct_str_eq(&rec.prev, &self.running) {
                    let (lp, ln) = self.last_at.clone().unwrap_or_default();
                    return Err(tampered(
                        path,
                        n,
                        if self.mac.is_some() {
                            format!(
                                "record {s} does not chain onto record {} ({}:{ln}): the log was rewritten",
                                e.saturating_sub(1),
                                lp.display()
                            )
                        } else {
                            format!(
                                "record {} ({}:{ln}) was changed: record {s} holds a different hash of it",
                                e.saturating_sub(1),
                                lp.display()
                            )
                        },
                    ));
                }
            }
            Some(e) if s > e => return Err(self.ahead(path, date, n, e, s, rest)),
            Some(e) => {
                let problem = if rest.first().and_then(|l| seq_of(l)) == Some(e) {
                    format!(
                        "this line is an inserted copy of record {s} (record {s} was already seen and record {e} follows it)"
                    )
                } else {
                    format!(
                        "record {s} appears again where record {e} was expected: an inserted copy or a reorder"
                    )
                };
                return Err(tampered(path, n, problem));
            }
        }
        if chain::date_of_ts(&rec.ts).as_deref() != Some(date) {
            return Err(tampered(
                path,
                n,
                format!(
                    "record {s} is dated {}, which is not this segment's date: it was moved or changed",
                    rec.ts
                ),
            ));
        }
        if rec.ts < self.last_ts {
            return Err(tampered(
                path,
                n,
                format!("record {s} is dated before the record ahead of it: reordered or changed"),
            ));
        }
        self.running = chain::line_hash(line);
        if let Some(list) = self.fixed.get(&s) {
            for f in list {
                self.fixed_seen += 1;
                if !chain::ct_str_eq(&f.hash, &self.running) {
                    if let (Some((cp, cpath, cline)), Some(key)) = (&f.unchecked, self.public_key)
                        && !cp.verify(key)
                    {
                        return Err(super::bad_signature(cpath, *cline, key));
                    }
                    let from = self.last_fixed.map_or_else(
                        || "the first record".to_string(),
                        |x| format!("record {}", x + 1),
                    );
                    return Err(tampered(
                        path,
                        n,
                        format!(
                            "the records from {from} to record {s} were changed: record {s} no longer matches {}",
                            f.what
                        ),
                    ));
                }
            }
            self.last_fixed = Some(s);
        }
        self.last_ts = rec.ts;
        self.last_at = Some((path.to_path_buf(), n));
        self.records += 1;
        self.expected = Some(s + 1);
        Ok(())
    }

    /// The first record: it must continue from the genesis, the retention checkpoint or the
    /// export's signed start.
    fn first(&mut self, path: &Path, date: &str, n: usize, rec: &BodyIn) -> Result<(), AuditError> {
        let s = rec.seq;
        let from_genesis = s == 0 && chain::ct_str_eq(&rec.prev, chain::GENESIS);
        let (want_seq, want_prev, from) = match &self.start {
            Start::Export { seq, prev } => (*seq, prev.clone(), "the export's signed start"),
            // Records retention was about to remove may still be there (a crash between
            // signing its checkpoint and removing the segments): the log then starts at 0.
            Start::Log { .. } if from_genesis => {
                (0, chain::GENESIS.to_string(), "the start of the log")
            }
            Start::Log {
                retention: Some((seq, hash)),
            } => (seq + 1, hash.clone(), "the signed retention checkpoint"),
            Start::Log { retention: None } => {
                (0, chain::GENESIS.to_string(), "the start of the log")
            }
        };
        if s > want_seq {
            let missing = self.missing_between(date);
            let what = range(want_seq, s - 1);
            return Err(match missing.first() {
                Some(seg) => AuditError::Broken {
                    path: self.dir.join(seg),
                    problem: format!(
                        "segment {seg} is missing: {what} gone (deleted), the log continues only at {}:{n}",
                        path.display()
                    ),
                },
                None => tampered(
                    path,
                    n,
                    format!(
                        "{what} missing before this record: the oldest records were removed (the log must continue from {from})"
                    ),
                ),
            });
        }
        if s < want_seq || !chain::ct_str_eq(&rec.prev, &want_prev) {
            return Err(tampered(
                path,
                n,
                format!(
                    "record {s} does not continue from {from} (record {want_seq}): it or the start was changed, or records were inserted"
                ),
            ));
        }
        self.first_seq = Some(s);
        Ok(())
    }

    /// Record `s` where `e` was expected (`s > e`): a reorder, a removal, or a missing segment.
    fn ahead(
        &self,
        path: &Path,
        date: &str,
        n: usize,
        e: u64,
        s: u64,
        rest: &[&[u8]],
    ) -> AuditError {
        if let Some(k) = rest.iter().position(|l| seq_of(l) == Some(e)) {
            return tampered(
                path,
                n,
                if k == 0 {
                    format!(
                        "records {e} and {s} are swapped: record {s} comes before record {e} (reordered)"
                    )
                } else {
                    format!(
                        "record {e} was moved to line {} (reordered): record {s} stands where it belongs",
                        n + k + 1
                    )
                },
            );
        }
        if n == 1 {
            let missing = self.missing_between(date);
            if let Some(seg) = missing.first() {
                return AuditError::Broken {
                    path: self.dir.join(seg),
                    problem: format!(
                        "segment {seg} is missing: {} gone (deleted) between the segment before it and {}",
                        range(e, s - 1),
                        path.display()
                    ),
                };
            }
            return tampered(
                path,
                n,
                format!(
                    "{} missing before this segment: a segment was deleted or cut",
                    range(e, s - 1)
                ),
            );
        }
        tampered(
            path,
            n,
            if s == e + 1 {
                format!(
                    "record {e} was removed: record {s} follows record {}",
                    e.saturating_sub(1)
                )
            } else {
                format!("{} removed before this line", range(e, s - 1))
            },
        )
    }
}
