//! Where a recording's bytes go: its file, in one of three formats.
//!
//! - `<id>.cast`: plain asciicast, each batch of events appended and flushed as it comes
//!   (terminal sessions and SCP/SFTP, unencrypted): `asciinema` plays it as it is.
//! - `<id>.cast.gz`: asciicast in gzip members (streams without a terminal, unencrypted): a
//!   member is closed every [`CHUNK_BYTES`] of text or [`CHUNK_AGE`] after it was opened,
//!   so a crash loses at most that much; `zcat` reads it.
//! - `<id>.cast.enc`: encrypted frames (see `crypt`); terminal sessions seal a frame per
//!   batch, streams a gzip member per frame.
//!
//! The header line is written (and flushed) before `create` returns, in every format.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::RecordingError;
use super::RecordingId;
use super::crypt::{Content, RecordingKey, Sealer, gzip_member};

/// Text gathered into one compressed chunk before it is closed.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Longest time a compressed chunk stays open (what a crash may lose of a stream).
pub const CHUNK_AGE: Duration = Duration::from_secs(2);

/// A recording's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    #[serde(rename = "cast")]
    Plain,
    #[serde(rename = "cast.gz")]
    Gzip,
    #[serde(rename = "cast.enc")]
    Sealed,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Plain => "cast",
            Format::Gzip => "cast.gz",
            Format::Sealed => "cast.enc",
        }
    }

    /// Every format, for finding a recording's file without its metadata.
    pub const ALL: [Format; 3] = [Format::Plain, Format::Gzip, Format::Sealed];

    pub fn path(self, dir: &Path, id: &RecordingId) -> PathBuf {
        dir.join(format!("{id}.{}", self.extension()))
    }
}

pub(super) struct Sink {
    file: tokio::fs::File,
    path: PathBuf,
    gzip: bool,
    sealer: Option<Sealer>,
    /// Text not yet in the file.
    buf: Vec<u8>,
    /// When the open compressed chunk must be closed.
    due: Option<Instant>,
    out: Vec<u8>,
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Write {
        path: path.to_path_buf(),
        source,
    }
}

impl Sink {
    /// Creates the file (never over an existing one, owner-only) and writes `header` (the
    /// cast's first line, newline included).
    pub async fn create(
        dir: &Path,
        id: &RecordingId,
        gzip: bool,
        key: Option<&RecordingKey>,
        header: &[u8],
    ) -> Result<(Sink, Format), RecordingError> {
        let format = match (key.is_some(), gzip) {
            (true, _) => Format::Sealed,
            (false, true) => Format::Gzip,
            (false, false) => Format::Plain,
        };
        let path = format.path(dir, id);
        let mut opts = tokio::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let file = opts
            .open(&path)
            .await
            .map_err(|source| RecordingError::Create {
                path: path.clone(),
                source,
            })?;
        let sealer = match key {
            Some(k) => {
                let content = if gzip { Content::Gzip } else { Content::Cast };
                Some(Sealer::new(k, id, content).map_err(write_err(&path))?)
            }
            None => None,
        };
        let mut sink = Sink {
            file,
            path,
            gzip,
            sealer,
            buf: Vec::with_capacity(8192),
            due: None,
            out: Vec::new(),
        };
        if let Some(s) = &sink.sealer {
            sink.out.extend_from_slice(s.file_header());
        }
        sink.buf.extend_from_slice(header);
        sink.close_chunk(false).await?;
        Ok((sink, format))
    }

    /// The text buffer events are encoded into.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        if self.gzip && self.due.is_none() {
            self.due = Some(Instant::now() + CHUNK_AGE);
        }
        &mut self.buf
    }

    /// When the open chunk must be closed, if one is open.
    pub fn due(&self) -> Option<Instant> {
        self.due.filter(|_| !self.buf.is_empty())
    }

    /// The end of a batch of events: plain and sealed terminal recordings write it now,
    /// compressed ones when the chunk is full or old.
    pub async fn batch_end(&mut self) -> Result<(), RecordingError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = self.buf.len() >= CHUNK_BYTES;
        let old = self.due.is_some_and(|d| Instant::now() >= d);
        if !self.gzip || full || old {
            self.close_chunk(false).await?;
        }
        Ok(())
    }

    /// Closes the open chunk now (its time is up).
    pub async fn close_due(&mut self) -> Result<(), RecordingError> {
        self.close_chunk(false).await
    }

    async fn close_chunk(&mut self, last: bool) -> Result<(), RecordingError> {
        self.due = None;
        if self.buf.is_empty() && !last {
            return Ok(());
        }
        let text = std::mem::take(&mut self.buf);
        let body = if self.gzip && !text.is_empty() {
            gzip_member(&text).map_err(write_err(&self.path))?
        } else {
            text
        };
        match self.sealer.as_mut() {
            Some(s) => s
                .seal(&body, last, &mut self.out)
                .map_err(write_err(&self.path))?,
            None => self.out.extend_from_slice(&body),
        }
        let out = std::mem::take(&mut self.out);
        self.file
            .write_all(&out)
            .await
            .map_err(write_err(&self.path))?;
        self.file.flush().await.map_err(write_err(&self.path))?;
        self.buf = Vec::with_capacity(8192);
        Ok(())
    }

    /// Writes what is left (and the final frame of a sealed recording) and syncs the file.
    pub async fn finish(&mut self) -> Result<(), RecordingError> {
        if self.sealer.is_some() {
            self.close_chunk(false).await?;
            self.close_chunk(true).await?;
        } else {
            self.close_chunk(false).await?;
        }
        self.file.sync_data().await.map_err(write_err(&self.path))
    }
}
