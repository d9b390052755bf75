//! A recording's metadata file, `<id>.meta.json` beside it: what the index needs to list the
//! recording (its [`RecordingMeta`]), its file format and whether it had a terminal. Written
//! when the recording starts (before the session may start) and again when it ends, each
//! time to a temporary file renamed over the old one, so a crash leaves the old or the new
//! version, never a mix. A recording whose metadata still says it is live when the server
//! starts again was cut by a crash: [`Sidecar::recover`] ends it at its file's last write.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sink::Format;
use super::{RecordingError, RecordingId, RecordingMeta};

/// Largest metadata file read (a hostile file cannot make the reader hold more).
const MAX_SIDECAR: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    #[serde(flatten)]
    pub meta: RecordingMeta,
    /// The recording file's format; `None` for a web session (its recording is a view over
    /// its audit records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default)]
    pub pty: bool,
    /// Set by [`Sidecar::recover`]: the session did not end cleanly (the process died).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// The metadata file of `id` in `dir`.
pub fn path(dir: &Path, id: &RecordingId) -> PathBuf {
    dir.join(format!("{id}.meta.json"))
}

impl Sidecar {
    /// Writes the file (temporary file, fsync, rename).
    pub fn write(&self, dir: &Path) -> Result<(), RecordingError> {
        let path = path(dir, &self.meta.id);
        let tmp = dir.join(format!(".{}.meta.tmp", self.meta.id));
        let io = |source| RecordingError::Sidecar {
            path: path.clone(),
            source,
        };
        let mut text = serde_json::to_vec(self).map_err(RecordingError::Encode)?;
        text.push(b'\n');
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut f, &text).map_err(io)?;
        f.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Reads the metadata of `id`.
    pub fn read(dir: &Path, id: &RecordingId) -> Result<Sidecar, RecordingError> {
        Self::read_path(&path(dir, id))
    }

    pub fn read_path(path: &Path) -> Result<Sidecar, RecordingError> {
        let io = |source| RecordingError::Sidecar {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_SIDECAR), &mut text)
            .map_err(io)?;
        serde_json::from_slice(&text)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    /// The recording's file, if it has one.
    pub fn file(&self, dir: &Path) -> Option<PathBuf> {
        self.format.map(|f| f.path(dir, &self.meta.id))
    }

    /// A recording left live by a process that died: ended at its file's last write.
    pub fn recover(&mut self, dir: &Path) -> bool {
        if self.meta.ended_at.is_some() {
            return false;
        }
        let last = self
            .file(dir)
            .or_else(|| Some(path(dir, &self.meta.id)))
            .and_then(|p| std::fs::metadata(p).ok())
            .and_then(|m| m.modified().ok())
            .unwrap_or(self.meta.started_at);
        self.meta.ended_at = Some(last.max(self.meta.started_at));
        self.cut = true;
        true
    }
}
