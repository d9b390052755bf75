//! Reading the log's files from a given record on, as they grow (`tail -f` over daily
//! segments): complete lines only, never more than a batch in memory.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::audit::chain;
use crate::audit::head::seq_of;

/// Most bytes read from a segment per call.
const CHUNK: u64 = 1 << 20;

/// A record line to ship (without newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipLine {
    pub seq: u64,
    pub text: String,
}

impl ShipLine {
    /// The record's `ts` (RFC 3339), when the line has one where records do.
    pub fn ts(&self) -> Option<&str> {
        let at = self
            .text
            .get(..48.min(self.text.len()))?
            .find(",\"ts\":\"")?
            + 7;
        self.text.get(at..at + 24)
    }

    /// The event kind (`"event":{"event":"KIND"`), when present.
    pub fn kind(&self) -> Option<&str> {
        let at = self.text.find("\"event\":{\"event\":\"")? + 18;
        let rest = self.text.get(at..)?;
        rest.get(..rest.find('"')?)
    }
}

/// What one read found.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub lines: Vec<ShipLine>,
    /// Records skipped because the log no longer holds them (`from..=to`).
    pub gap: Option<(u64, u64)>,
}

/// Position in the log.
pub(crate) struct Tail {
    dir: PathBuf,
    next: u64,
    /// The segment being read and the offset after its last complete line read.
    cur: Option<(PathBuf, u64)>,
    /// Bytes of the current segment read from that offset on but not used yet (a read takes
    /// a chunk, a batch may use part of it): the next call starts with them instead of
    /// reading them from the file again.
    ahead: Vec<u8>,
}

impl Tail {
    pub fn new(dir: &Path) -> Tail {
        Tail {
            dir: dir.to_path_buf(),
            next: 0,
            cur: None,
            ahead: Vec::new(),
        }
    }

    /// Reads from record `next` on (the segment holding it is found again).
    pub fn seek(&mut self, next: u64) {
        self.next = next;
        self.cur = None;
        self.ahead.clear();
    }

    /// The first record's sequence number of a segment.
    fn first_seq(path: &Path) -> std::io::Result<Option<u64>> {
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 64];
        let n = f.read(&mut buf)?;
        Ok(seq_of(buf.get(..n).unwrap_or_default()))
    }

    /// Finds the segment holding `next` (or the first after it). Returns a gap when the
    /// oldest segment starts after `next`.
    fn locate(&mut self) -> std::io::Result<Option<(u64, u64)>> {
        let segs = chain::segments(&self.dir)?;
        let mut chosen = None;
        let mut oldest_first = None;
        for p in segs.iter().rev() {
            match Self::first_seq(p)? {
                Some(s) if s <= self.next => {
                    chosen = Some(p.clone());
                    break;
                }
                Some(s) => {
                    oldest_first = Some(s);
                    chosen = Some(p.clone());
                }
                None => {}
            }
        }
        let gap = match (oldest_first, &chosen) {
            (Some(s), Some(p)) if s > self.next && Self::first_seq(p)? == Some(s) => {
                let g = (self.next, s - 1);
                self.next = s;
                Some(g)
            }
            _ => None,
        };
        self.cur = chosen.map(|p| (p, 0));
        self.ahead.clear();
        Ok(gap)
    }

    /// Up to `max` complete record lines from the current position on.
    pub fn read(&mut self, max: usize) -> std::io::Result<Batch> {
        let mut out = Batch::default();
        if self.cur.is_none() {
            out.gap = self.locate()?;
        }
        loop {
            let Some((path, offset)) = self.cur.clone() else {
                return Ok(out);
            };
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Removed under us (retention): find the position again.
                    self.cur = None;
                    out.gap = out.gap.or(self.locate()?);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let len = f.metadata()?.len();
            if len < offset + self.ahead.len() as u64 {
                // Truncated or replaced: find the position again.
                self.cur = None;
                out.gap = out.gap.or(self.locate()?);
                continue;
            }
            let mut buf = std::mem::take(&mut self.ahead);
            let want = CHUNK.saturating_sub(buf.len() as u64);
            f.seek(SeekFrom::Start(offset + buf.len() as u64))?;
            Read::by_ref(&mut f).take(want).read_to_end(&mut buf)?;
            let full = buf.len() as u64 >= CHUNK;
            if full && !buf.contains(&b'\n') {
                // One line longer than a chunk: read it whole.
                f.read_to_end(&mut buf)?;
            }
            let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let mut used = 0;
            for raw in buf
                .get(..complete)
                .unwrap_or_default()
                .split_inclusive(|&b| b == b'\n')
            {
                if out.lines.len() >= max {
                    break;
                }
                used += raw.len();
                let line = raw.strip_suffix(b"\n").unwrap_or(raw);
                let Some(seq) = seq_of(line) else { continue };
                if seq < self.next {
                    continue;
                }
                if seq > self.next && out.gap.is_none() {
                    out.gap = Some((self.next, seq - 1));
                }
                self.next = seq + 1;
                let text = match std::str::from_utf8(line) {
                    Ok(t) => t.to_owned(),
                    Err(_) => String::from_utf8_lossy(line).into_owned(),
                };
                out.lines.push(ShipLine { seq, text });
            }
            let partial = complete < buf.len();
            buf.drain(..used);
            self.ahead = buf;
            self.cur = Some((path.clone(), offset + used as u64));
            if !out.lines.is_empty() {
                return Ok(out);
            }
            if full {
                // Only records before `next` so far: read on.
                continue;
            }
            if partial {
                // A line being written: wait for it.
                return Ok(out);
            }
            // At the end of this segment: move to the next one if it exists (records are
            // never appended to a segment once a later one exists).
            let segs = chain::segments(&self.dir)?;
            match segs.iter().find(|p| **p > path).cloned() {
                Some(p) => {
                    // The later segment exists, so this one is final; whatever was appended
                    // to it before that is read first.
                    let read = offset + used as u64 + self.ahead.len() as u64;
                    if std::fs::metadata(&path)?.len() > read {
                        continue;
                    }
                    self.cur = Some((p, 0));
                    self.ahead.clear();
                }
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testkit::Backfill;
    use crate::audit::tests::{ev, key};

    #[test]
    fn reads_across_segments_from_any_record_and_follows_growth() {
        let dir = crate::testutil::TempDir::new("tail");
        let mut b = Backfill::new(dir.path(), &key()).unwrap();
        let day = 86_400_000;
        for i in 0..30u32 {
            b.push(1_700_000_000_000 + u64::from(i / 10) * day, &ev(i))
                .unwrap();
        }
        b.finish().unwrap();
        let mut t = Tail::new(dir.path());
        t.seek(7);
        let mut seen = Vec::new();
        loop {
            let batch = t.read(4).unwrap();
            assert!(batch.gap.is_none());
            if batch.lines.is_empty() {
                break;
            }
            assert!(batch.lines.len() <= 4);
            seen.extend(batch.lines.iter().map(|l| l.seq));
        }
        assert_eq!(seen, (7..30).collect::<Vec<u64>>());
        // A torn line is not read; once completed, it is.
        let seg = chain::segments(dir.path()).unwrap().pop().unwrap();
        let text = std::fs::read_to_string(&seg).unwrap();
        let last = text.lines().last().unwrap().to_string();
        std::fs::write(
            &seg,
            format!(
                "{text}{}",
                last.replacen("\"seq\":29", "\"seq\":30", 1)
                    .get(..20)
                    .unwrap()
            ),
        )
        .unwrap();
        assert!(t.read(10).unwrap().lines.is_empty());
        std::fs::write(
            &seg,
            format!("{text}{}\n", last.replacen("\"seq\":29", "\"seq\":30", 1)),
        )
        .unwrap();
        let b = t.read(10).unwrap();
        assert_eq!(b.lines.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![30]);
        assert_eq!(b.lines[0].kind(), Some("admin_action"));
        assert!(b.lines[0].ts().unwrap().ends_with('Z'));
        // Starting before the oldest record is a gap (retention removed them).
        std::fs::remove_file(chain::segments(dir.path()).unwrap().remove(0)).unwrap();
        let mut t = Tail::new(dir.path());
        t.seek(2);
        let b = t.read(100).unwrap();
        assert_eq!(b.gap, Some((2, 9)));
        assert_eq!(b.lines.first().map(|l| l.seq), Some(10));
    }
}
