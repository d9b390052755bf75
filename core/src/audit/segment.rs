//! The log on disk: daily segments, the chain head read back from the newest one, and
//! appending a batch. No locking here: the caller ([`super::writer`]) holds the directory
//! lock and the pen.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain::{self, AuditKey, BodyIn, GENESIS};
use crate::error::AuditError;

pub(super) struct ChainState {
    pub(super) next_seq: u64,
    pub(super) prev: String,
    pub(super) last_ms: u64,
    /// The timestamp and date strings of `last_ms`, reused while the millisecond lasts.
    pub(super) last_ts: (String, String),
    /// Newest segment and its length as of our last write: if another process appended
    /// while we did not hold the lock, the head is re-read.
    pub(super) tail: Option<(PathBuf, u64)>,
    /// Segment date of the newest record (empty for an empty log): a record of another date
    /// closes that segment.
    pub(super) head_date: String,
}

/// The open newest segment. `Arc` so the syncer can fdatasync it without the lock.
pub(super) struct Segment {
    date: String,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    ino: (u64, u64),
}

pub(super) fn newest_tail(dir: &Path) -> std::io::Result<Option<(PathBuf, u64)>> {
    Ok(match chain::segments(dir)?.pop() {
        Some(p) => {
            let len = std::fs::metadata(&p)?.len();
            Some((p, len))
        }
        None => None,
    })
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn seg_len(seg: &Segment) -> u64 {
    seg.file.metadata().map_or(0, |m| m.len())
}

/// The last complete line of a file (without its newline), the length up to and including
/// that newline (bytes after it are a torn record) and the file's length. Reads from the end
/// in growing windows: re-reading the head after another process appended costs a few KiB,
/// not the whole day's segment, while the caller holds the head's lock.
fn last_line(f: &mut File) -> std::io::Result<(Option<Vec<u8>>, u64, u64)> {
    let len = f.metadata()?.len();
    let mut window: u64 = 16 * 1024;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        Read::by_ref(f).take(len - start).read_to_end(&mut buf)?;
        let Some(nl) = buf.iter().rposition(|&b| b == b'\n') else {
            if start == 0 {
                return Ok((None, 0, len));
            }
            window = window.saturating_mul(4);
            continue;
        };
        let complete = start + nl as u64 + 1;
        let body = buf.get(..nl).unwrap_or_default();
        match body.iter().rposition(|&b| b == b'\n') {
            Some(p) => {
                return Ok((
                    Some(body.get(p + 1..).unwrap_or_default().to_vec()),
                    complete,
                    len,
                ));
            }
            None if start == 0 => return Ok((Some(body.to_vec()), complete, len)),
            None => window = window.saturating_mul(4),
        }
    }
}

/// Reads the chain head from the newest segment, cutting off a torn last line (a record
/// that was never confirmed). The caller holds the directory lock.
pub(super) fn recover(dir: &Path, key: &AuditKey) -> Result<ChainState, AuditError> {
    let segs = chain::segments(dir).map_err(io_err(dir))?;
    // The newest non-empty segment holds the head.
    for path in segs.iter().rev() {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let (last, complete, len) = last_line(&mut f).map_err(io_err(path))?;
        if complete < len {
            f.set_len(complete).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        }
        let Some(last) = last else {
            continue;
        };
        let tampered = |problem: &str| AuditError::Tampered {
            path: path.clone(),
            line: 0,
            problem: problem.to_string(),
        };
        let last = String::from_utf8(last).map_err(|_| tampered("last record is not text"))?;
        let last = last.as_str();
        let (body, mac) =
            chain::split_line(last).ok_or_else(|| tampered("last record is malformed"))?;
        if !key.mac_ok(body.as_bytes(), mac) {
            return Err(tampered(
                "last record's mac does not verify (wrong secret key or tampering)",
            ));
        }
        let parsed: BodyIn =
            serde_json::from_str(&body).map_err(|_| tampered("last record is not json"))?;
        let last_ms = chain::parse_timestamp(&parsed.ts).unwrap_or(0);
        let tail = newest_tail(dir).map_err(io_err(dir))?;
        let head_date = path
            .file_name()
            .and_then(|n| chain::segment_date(&n.to_string_lossy()).map(str::to_string))
            .unwrap_or_default();
        return Ok(ChainState {
            next_seq: parsed.seq + 1,
            prev: chain::line_hash(last),
            last_ms,
            last_ts: (String::new(), String::new()),
            tail,
            head_date,
        });
    }
    Ok(ChainState {
        next_seq: 0,
        prev: GENESIS.to_string(),
        last_ms: 0,
        last_ts: (String::new(), String::new()),
        tail: newest_tail(dir).map_err(io_err(dir))?,
        head_date: String::new(),
    })
}

/// (device, inode) of a file's metadata.
fn ino(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// Opens (creating) the segment of `date`; a new segment and its directory entry are made
/// durable at once.
fn open_segment(dir: &Path, date: &str) -> Result<Segment, AuditError> {
    let path = dir.join(chain::segment_name(date));
    let mut opts = OpenOptions::new();
    opts.append(true).create(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let existed = path.exists();
    let file = opts.open(&path).map_err(io_err(&path))?;
    if !existed {
        file.sync_data().map_err(io_err(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&path))?;
    }
    let meta = file.metadata().map_err(io_err(&path))?;
    Ok(Segment {
        date: date.to_string(),
        path,
        file: Arc::new(file),
        ino: ino(&meta),
    })
}

/// The newest segment's length after a write.
pub(super) enum Tail {
    /// It grew by this much (it was open before).
    Grew(u64),
    /// It was (re)opened: this is its length.
    Is(u64),
}

/// Appends the batch's chunks to their segments (one write(2) per segment).
/// `segment` is the open newest segment, replaced on roll-over.
pub(super) fn write_batch(
    dir: &Path,
    chunks: &[(String, String)],
    segment: &mut Option<Segment>,
) -> Result<Tail, AuditError> {
    let mut tail = Tail::Grew(0);
    let mut opened = false;
    for (date, text) in chunks {
        match segment.as_ref() {
            Some(seg) if seg.date == *date => {
                // The path must still name the open file: a moved, deleted or replaced log
                // directory is an error, not records written where nobody looks.
                let now = std::fs::metadata(&seg.path).map_err(io_err(&seg.path))?;
                if ino(&now) != seg.ino {
                    return Err(AuditError::Io {
                        path: seg.path.clone(),
                        source: std::io::Error::other("the audit segment was moved or replaced"),
                    });
                }
            }
            _ => {
                opened = true;
                let new = open_segment(dir, date)?;
                if let Some(older) = segment.replace(new) {
                    // Rolled over to a new segment: the older one is done.
                    older.file.sync_data().map_err(io_err(&older.path))?;
                }
            }
        }
        let Some(seg) = segment.as_ref() else {
            return Err(AuditError::Closed);
        };
        (&*seg.file)
            .write_all(text.as_bytes())
            .map_err(io_err(&seg.path))?;
        tail = if opened {
            Tail::Is(seg.file.metadata().map_err(io_err(&seg.path))?.len())
        } else {
            Tail::Grew(text.len() as u64)
        };
    }
    Ok(tail)
}
