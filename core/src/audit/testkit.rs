//! Builds a log with chosen timestamps, for tests and benchmarks (a year of records to time
//! search, old segments for retention). It needs the MAC key, so it does nothing the key's
//! holder could not do by hand; the server never uses it.

use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::chain::{self, AuditKey, GENESIS};
use super::checkpoint::{self, ChainHead, Checkpoint, CheckpointKind};
use super::event::AuditEvent;
use super::signing::AuditSigner;
use crate::error::AuditError;

/// Writes a fresh chain into an empty directory, record by record, with given times.
pub struct Backfill {
    dir: PathBuf,
    key: AuditKey,
    next_seq: u64,
    prev: String,
    last_ms: u64,
    open: Option<(String, std::io::BufWriter<std::fs::File>)>,
    line: String,
    /// Signs a `close` checkpoint at each change of day, as a server does.
    signer: Option<Arc<AuditSigner>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Backfill {
    /// Starts a chain in `dir` (created), which must hold no segment yet.
    pub fn new(dir: &Path, key: &AuditKey) -> Result<Backfill, AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if !chain::segments(dir).map_err(io(dir))?.is_empty() {
            return Err(AuditError::Query(format!(
                "{} already holds a log",
                dir.display()
            )));
        }
        Ok(Backfill {
            dir: dir.to_path_buf(),
            key: key.clone(),
            next_seq: 0,
            prev: GENESIS.to_string(),
            last_ms: 0,
            open: None,
            line: String::with_capacity(1024),
            signer: None,
        })
    }

    /// Signs `close` checkpoints at each change of day with `signer`, as a server does.
    pub fn sign_with(&mut self, signer: Arc<AuditSigner>) {
        self.signer = Some(signer);
    }

    /// Appends `event` dated `ms` (unix milliseconds, never before the previous record's).
    pub fn push(&mut self, ms: u64, event: &AuditEvent) -> Result<u64, AuditError> {
        let mut json = Vec::with_capacity(512);
        super::json::write_event(&mut json, event).map_err(AuditError::Encode)?;
        let json = String::from_utf8(json)
            .map_err(|e| AuditError::Encode(serde::ser::Error::custom(e)))?;
        let ms = ms.max(self.last_ms);
        self.last_ms = ms;
        let (ts, date) = chain::timestamp(ms);
        if self.open.as_ref().is_none_or(|(d, _)| *d != date) {
            let closed = self.open.as_ref().map(|(d, _)| d.clone());
            self.flush()?;
            if let (Some(old), Some(signer)) = (closed, &self.signer) {
                let head = ChainHead {
                    seq: self.next_seq - 1,
                    hash: self.prev.clone(),
                    date: old,
                };
                let cp = Checkpoint::sign(signer, CheckpointKind::Close, &head, Some(&date));
                checkpoint::append(&self.dir, &cp).map_err(io(&self.dir))?;
            }
            let path = self.dir.join(chain::segment_name(&date));
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .map_err(io(&path))?;
            self.open = Some((date, std::io::BufWriter::with_capacity(1 << 20, f)));
        }
        self.line.clear();
        chain::push_line(
            &mut self.line,
            &self.key,
            self.next_seq,
            &ts,
            &self.prev,
            &json,
        );
        chain::set_line_hash(&mut self.prev, &self.line);
        self.line.push('\n');
        if let Some((_, w)) = self.open.as_mut() {
            w.write_all(self.line.as_bytes()).map_err(io(&self.dir))?;
        }
        self.next_seq += 1;
        Ok(self.next_seq - 1)
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        if let Some((_, mut w)) = self.open.take() {
            w.flush().map_err(io(&self.dir))?;
            w.get_ref().sync_all().map_err(io(&self.dir))?;
        }
        Ok(())
    }

    /// Flushes and returns the number of records written.
    pub fn finish(mut self) -> Result<u64, AuditError> {
        self.flush()?;
        Ok(self.next_seq)
    }
}

impl Drop for Backfill {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
