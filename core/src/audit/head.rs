//! The signed head a server last confirmed, kept apart from the log, and the check at open.
//!
//! Threat: deleting the newest records (the last one, the last fifty, the newest segment,
//! or all of it) leaves a chain that is still consistent, and a server restarted on it would
//! chain new records onto the cut, hiding it. Mitigation: after every sync the server signs
//! its durable head into a file outside the log directory; at open, a log that ends before
//! that head (or before its newest signed checkpoint), or whose record at that position
//! differs, is refused with [`AuditError::CutTail`]. The check runs before anything is
//! chained, so nothing is written onto a cut log.

use std::io::{Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::Path;

use super::chain;
use super::checkpoint::{self, ChainHead, Checkpoint, CheckpointKind};
use super::segment::ChainState;
use super::signing::AuditSigner;
use crate::error::AuditError;

/// Writes `head` into the head file, signed, unless the file already holds a later head
/// (another process sharing the log wrote it).
pub(crate) fn store(path: &Path, signer: &AuditSigner, head: &ChainHead) -> std::io::Result<()> {
    if let Ok(Some(cur)) = checkpoint::read_single(path)
        && cur.seq > head.seq
        && cur.verify(signer.public_key())
    {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let cp = Checkpoint::sign(signer, CheckpointKind::Head, head, None);
    // Not fsync'd: it is rewritten after every sync, and an older head surviving a power
    // loss only makes the check at open less strict, never wrong.
    checkpoint::write_single(path, &cp, false)
}

/// The problem text of a cut tail, with the fix.
fn cut(what: &str, cp: &Checkpoint, found: &str) -> String {
    format!(
        "{what} (signed {}) confirmed record {} but {found}: records were removed from the end of the log (a cut tail); refusing to chain onto it. Restore the log (from a backup, the Redis stream or the syslog copy) and start again; to accept the loss after investigating, move the head file and the checkpoint files past the log's end aside",
        cp.ts, cp.seq
    )
}

/// Refuses a log shorter than (or different from) the signed head and the newest signed
/// checkpoint. Syncs the newest segment first: the head file is signed for it right after.
pub(crate) fn check_start(
    dir: &Path,
    head_file: Option<&Path>,
    signer: &AuditSigner,
    st: &ChainState,
) -> Result<(), AuditError> {
    let key = signer.public_key();
    if let Some((path, _)) = &st.tail {
        std::fs::File::open(path)
            .and_then(|f| f.sync_data())
            .map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
    }
    let mut bars: Vec<(String, std::path::PathBuf, Checkpoint)> = Vec::new();
    if let Some(path) = head_file {
        match checkpoint::read_single(path) {
            Ok(Some(cp)) if cp.verify(key) => {
                bars.push(("the signed head".to_string(), path.to_path_buf(), cp))
            }
            Ok(Some(_)) => {
                return Err(AuditError::CutTail {
                    path: path.to_path_buf(),
                    problem: "the signed head does not verify with the audit signing key (forged or corrupted); refusing to chain onto a log that cannot be checked. Check the log with `gatehouse audit verify`, then move the head file aside".into(),
                });
            }
            Ok(None) => {}
            Err(why) => {
                return Err(AuditError::CutTail {
                    path: path.to_path_buf(),
                    problem: format!(
                        "the signed head cannot be read ({why}); check the log with `gatehouse audit verify`, then move the head file aside"
                    ),
                });
            }
        }
    }
    if let Some((path, cp)) = newest_checkpoint(dir, key)? {
        bars.push(("a signed checkpoint".to_string(), path, cp));
    }
    let last = st.next_seq.checked_sub(1);
    for (what, path, cp) in bars {
        let found = match last {
            None => "the log is empty".to_string(),
            Some(l) if l < cp.seq => format!("the log ends at record {l}"),
            Some(l) => {
                let hash = if l == cp.seq {
                    Some(st.prev.clone())
                } else {
                    line_hash_of(dir, cp.seq)?
                };
                if hash.is_some_and(|h| chain::ct_str_eq(&h, &cp.hash)) {
                    continue;
                }
                format!("the log's record {} differs from it", cp.seq)
            }
        };
        return Err(AuditError::CutTail {
            path,
            problem: cut(&what, &cp, &found),
        });
    }
    Ok(())
}

/// The newest verifying checkpoint of the newest sidecar file, with the file.
fn newest_checkpoint(
    dir: &Path,
    key: &super::AuditPublicKey,
) -> Result<Option<(std::path::PathBuf, Checkpoint)>, AuditError> {
    let io = |source| AuditError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut newest: Option<String> = None;
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if checkpoint::sidecar_date(&name).is_some() && newest.as_ref().is_none_or(|n| *n < name) {
            newest = Some(name);
        }
    }
    let Some(name) = newest else { return Ok(None) };
    let path = dir.join(name);
    let mut items = Vec::new();
    let mut malformed = Vec::new();
    checkpoint::read_file(&path, &mut items, &mut malformed).map_err(|source| AuditError::Io {
        path: path.clone(),
        source,
    })?;
    // Newest first; only the first that verifies is needed (a day holds ~1,440).
    let mut cps: Vec<Checkpoint> = items.into_iter().map(|f| f.cp).collect();
    cps.sort_by_key(|cp| std::cmp::Reverse(cp.seq));
    Ok(cps
        .into_iter()
        .find(|cp| cp.verify(key))
        .map(|cp| (path, cp)))
}

/// The sequence number at the start of a record line, read without parsing the rest.
pub(crate) fn seq_of(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()
}

/// SHA-256 of the line of record `seq`, searched from the end of the log (the record a head
/// names is among the newest).
fn line_hash_of(dir: &Path, seq: u64) -> Result<Option<String>, AuditError> {
    let segs = chain::segments(dir).map_err(|source| AuditError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for path in segs.iter().rev() {
        let mut found = None;
        let mut before = false;
        rev_lines(path, |line| match seq_of(line) {
            Some(s) if s == seq => {
                found = Some(chain::line_hash(&String::from_utf8_lossy(line)));
                ControlFlow::Break(())
            }
            Some(s) if s < seq => {
                before = true;
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })
        .map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        if found.is_some() || before {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Calls `f` with the complete lines of a file (without newline), newest first, reading
/// backwards in blocks. Bytes after the last newline (a torn line) are skipped.
pub(crate) fn rev_lines(
    path: &Path,
    mut f: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> std::io::Result<()> {
    const BLOCK: u64 = 64 * 1024;
    let mut file = std::fs::File::open(path)?;
    let mut end = file.metadata()?.len();
    // The start of a line whose rest lies in later blocks.
    let mut pending: Vec<u8> = Vec::new();
    // Past the file's last newline (what follows it is not a complete line).
    let mut started = false;
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((end - start) as usize + pending.len());
        Read::by_ref(&mut file)
            .take(end - start)
            .read_to_end(&mut buf)?;
        buf.extend_from_slice(&pending);
        let mut cut = buf.len();
        while let Some(nl) = buf
            .get(..cut)
            .and_then(|b| b.iter().rposition(|&c| c == b'\n'))
        {
            let line = buf.get(nl + 1..cut).unwrap_or_default();
            if started && !line.is_empty() && f(line).is_break() {
                return Ok(());
            }
            started = true;
            cut = nl;
        }
        pending = buf.get(..cut).unwrap_or_default().to_vec();
        end = start;
    }
    if started && !pending.is_empty() {
        let _ = f(&pending);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(path: &Path) -> Vec<String> {
        let mut out = Vec::new();
        rev_lines(path, |l| {
            out.push(String::from_utf8_lossy(l).into_owned());
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_come_newest_first_across_blocks_and_a_torn_tail_is_skipped() {
        let dir = crate::testutil::TempDir::new("revlines");
        let p = dir.path().join("f");
        let lines: Vec<String> = (0..5000)
            .map(|i| format!("line {i} {}", "x".repeat(i % 97)))
            .collect();
        let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let mut want = lines.clone();
        want.reverse();
        assert_eq!(collect(&p), want);
        text.push_str("torn");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(collect(&p), want);
        std::fs::write(&p, "only torn").unwrap();
        assert!(collect(&p).is_empty());
        std::fs::write(&p, "").unwrap();
        assert!(collect(&p).is_empty());
        assert_eq!(seq_of(b"{\"seq\":123,\"ts\""), Some(123));
        assert_eq!(seq_of(b"{\"seq\":x"), None);
    }
}
