//! Retention: whole segments older than `retention_days` are removed, at start-up and daily,
//! and the rest still verifies.
//!
//! Before anything is removed, a checkpoint of the last removed record (its sequence number
//! and hash, and the oldest segment kept) is signed into `retention.ckpt` and synced; the
//! oldest remaining record must continue from it, which `verify` checks. The newest segment
//! is never removed, and a gap between the removed and the kept records refuses the pruning
//! (it would hide the gap). The removal is itself an audit record (`audit_retention`).

use std::path::Path;

use super::chain::{self, BodyIn};
use super::checkpoint::{self, ChainHead, Checkpoint, CheckpointKind};
use super::event::AuditEvent;
use super::signing::AuditSigner;
use super::writer::AuditLog;
use crate::error::AuditError;

const DAY_MS: u64 = 86_400_000;

/// What a pruning removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment file names, oldest first.
    pub removed: Vec<String>,
    /// The last removed record (the kept log continues after it), when any record was
    /// removed.
    pub through_seq: Option<u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The first and last complete lines of a segment, parsed, with the last line's hash.
fn ends(path: &Path) -> Result<Option<(BodyIn, BodyIn, String)>, AuditError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let complete = text.rfind('\n').map_or(0, |p| p + 1);
    let mut lines = text.get(..complete).unwrap_or_default().lines();
    let Some(first) = lines.next() else {
        return Ok(None);
    };
    let last = lines.next_back().unwrap_or(first);
    let parse = |l: &str| -> Result<BodyIn, AuditError> {
        chain::split_line(l)
            .and_then(|(body, _)| serde_json::from_str(&body).ok())
            .ok_or_else(|| AuditError::Broken {
                path: path.to_path_buf(),
                problem: "retention refused: a record of this segment is malformed; run `gatehouse audit verify`".into(),
            })
    };
    Ok(Some((parse(first)?, parse(last)?, chain::line_hash(last))))
}

/// Removes the segments of `dir` dated more than `days` before `now_ms` (never the newest),
/// after signing the retention checkpoint. Does not record the removal: see [`apply`].
pub fn prune(
    dir: &Path,
    days: u32,
    now_ms: u64,
    signer: &AuditSigner,
) -> Result<Option<RetentionReport>, AuditError> {
    let segs = chain::segments(dir).map_err(io(dir))?;
    let cutoff = chain::timestamp(now_ms.saturating_sub(u64::from(days) * DAY_MS)).1;
    let date_of = |p: &Path| {
        p.file_name()
            .and_then(|n| chain::segment_date(&n.to_string_lossy()).map(str::to_string))
            .unwrap_or_default()
    };
    let removable: Vec<&std::path::PathBuf> = segs
        .iter()
        .take(segs.len().saturating_sub(1))
        .filter(|p| date_of(p) < cutoff)
        .collect();
    let Some(kept) = segs.get(removable.len()) else {
        return Ok(None);
    };
    if removable.is_empty() {
        return Ok(None);
    }
    // The last removed record, and the first kept one that must continue from it.
    let mut last = None;
    for p in removable.iter().rev() {
        if let Some((_, l, hash)) = ends(p)? {
            last = Some((l.seq, hash, date_of(p)));
            break;
        }
    }
    let mut through_seq = None;
    if let Some((seq, hash, date)) = last {
        let next = segs
            .iter()
            .skip(removable.len())
            .find_map(|p| ends(p).transpose());
        if let Some(next) = next {
            let (first, _, _) = next?;
            if first.seq != seq + 1 || !chain::ct_str_eq(&first.prev, &hash) {
                return Err(AuditError::Broken {
                    path: kept.clone(),
                    problem: format!(
                        "retention refused: the oldest kept record ({}) does not continue from the last record to remove ({seq}); removing the segments would hide that gap; run `gatehouse audit verify`",
                        first.seq
                    ),
                });
            }
        }
        let cp = Checkpoint::sign(
            signer,
            CheckpointKind::Retention,
            &ChainHead { seq, hash, date },
            Some(&date_of(kept)),
        );
        let path = dir.join(checkpoint::RETENTION_FILE);
        checkpoint::write_single(&path, &cp, true).map_err(io(&path))?;
        through_seq = Some(seq);
    }
    let mut removed = Vec::new();
    for p in removable {
        let date = date_of(p);
        std::fs::remove_file(p).map_err(io(p))?;
        let side = dir.join(checkpoint::sidecar_name(&date));
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&side)(e)),
        }
        removed.push(chain::segment_name(&date));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(Some(RetentionReport {
        removed,
        through_seq,
    }))
}

/// Prunes `log`'s directory (on a blocking thread) and records the removal; a failure is
/// recorded and alerted (`audit_retention_failed`) and returned.
pub async fn apply(log: &AuditLog, days: u32) -> Result<Option<RetentionReport>, AuditError> {
    let Some(signer) = log.signer().cloned() else {
        return Err(AuditError::Key(crate::error::KeyError::BadSigningKey {
            path: log.dir().to_path_buf(),
        }));
    };
    let dir = log.dir().to_path_buf();
    let result =
        tokio::task::spawn_blocking(move || prune(&dir, days, crate::store::now_ms(), &signer))
            .await
            .map_err(|_| AuditError::Closed)
            .and_then(|r| r);
    match result {
        Ok(Some(report)) => {
            tracing::info!(
                removed = report.removed.len(),
                through_seq = report.through_seq,
                "audit retention removed old segments"
            );
            log.record(AuditEvent::AuditRetention {
                removed: report.removed.clone(),
                through_seq: report.through_seq.unwrap_or(0),
                retention_days: days,
            })
            .await?;
            Ok(Some(report))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            super::ship::raise_system(
                log,
                "audit_retention_failed",
                &format!("audit retention failed: {}", crate::error::error_chain(&e)),
            )
            .await;
            Err(e)
        }
    }
}
