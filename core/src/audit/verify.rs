//! `verify`: walks every segment in order and checks each record's MAC, its `seq` (no gap,
//! no reorder), its `prev` (the hash of the line before) and that it sits in the segment of
//! its date.

use std::path::Path;

use super::chain::{self, AuditKey, BodyIn, GENESIS};
use crate::error::AuditError;

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    /// Hash of the last line (the chain head), `None` for an empty log.
    pub head: Option<String>,
}

/// Verifies the whole log in `dir`; the first problem found is returned with file and line.
pub fn verify(dir: &Path, key: &AuditKey) -> Result<VerifyReport, AuditError> {
    let segs = chain::segments(dir).map_err(|source| AuditError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut expected_seq = 0u64;
    let mut prev = GENESIS.to_string();
    let mut last_ts = String::new();
    for path in &segs {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        let seg_date = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let seg_date = chain::segment_date(&seg_date)
            .unwrap_or_default()
            .to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(bad(path, text.lines().count(), "last line is incomplete"));
        }
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let (body, mac) =
                chain::split_line(line).ok_or_else(|| bad(path, n, "malformed record"))?;
            if !key.mac_ok(body.as_bytes(), mac) {
                return Err(bad(path, n, "mac does not verify: the record was changed"));
            }
            let rec: BodyIn =
                serde_json::from_str(&body).map_err(|_| bad(path, n, "record is not json"))?;
            if rec.seq != expected_seq {
                return Err(bad(
                    path,
                    n,
                    &format!(
                        "seq {} where {} was expected: a record was removed or reordered",
                        rec.seq, expected_seq
                    ),
                ));
            }
            if !chain::ct_str_eq(&rec.prev, &prev) {
                return Err(bad(
                    path,
                    n,
                    "prev does not match the previous record: a record was removed or reordered",
                ));
            }
            if chain::date_of_ts(&rec.ts).as_deref() != Some(seg_date.as_str()) {
                return Err(bad(path, n, "record is not in the segment of its date"));
            }
            if rec.ts < last_ts {
                return Err(bad(path, n, "timestamp goes backwards"));
            }
            last_ts = rec.ts;
            prev = chain::line_hash(line);
            expected_seq += 1;
        }
    }
    Ok(VerifyReport {
        segments: segs.len(),
        records: expected_seq,
        head: (expected_seq > 0).then_some(prev),
    })
}

fn bad(path: &Path, line: usize, problem: &str) -> AuditError {
    AuditError::Tampered {
        path: path.to_path_buf(),
        line,
        problem: problem.to_string(),
    }
}
