//! Session recordings, shared by both doors: SSH sessions as asciicast v2 (`.cast`, written by
//! [`Recorder`], read back by [`CastReader`]), and the identity and metadata every recording
//! has ([`RecordingId`], [`RecordingMeta`]) — the shape web-session recordings and the
//! recordings index take too. It writes files only; nothing here opens a socket.
//!
//! Threats: a session that runs unrecorded (full disk, unwritable directory, a stalled
//! writer); a recorder that buffers without bound; a crash that leaves an unreadable file; a
//! recording id from a user (CLI argument, reviewer URL) that names a path outside the
//! recordings directory. Mitigations: a recording's file is created and its header written
//! before the session may start, and a write failure cancels [`Recorder::failed`], on which
//! the session ends; events go through a bounded queue (a slow disk slows the session, memory
//! stays bounded); every event is a complete line written as it happens, so a killed process
//! leaves a playable prefix, and the reader tolerates a torn last line; a [`RecordingId`] is
//! 32 lowercase hex digits, checked whenever one is made from text, and the only way a file
//! name is formed.

mod cast;
pub mod crypt;
pub mod echo;
pub mod index;
pub mod live;
mod reader;
pub mod screens;
pub mod sidecar;
mod sink;
mod store;
pub mod typed;
pub mod web;
mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use cast::{
    FileTransfer, Header, Kept, Mode, RECORDING_QUEUE, Recorder, RecordingTask, StreamDirection,
};
pub use crypt::RecordingKey;
pub use index::{
    CommandEntry, CommandSource, FileEntry, IndexedSession, Query, RecordingIndex, parse_when,
};
pub use live::{EndSsh, LiveEvent, LiveHub, LiveSnapshot};
pub use reader::{Cast, CastEvent, CastReader, EventCode, MAX_LINE, read_cast};
pub use screens::{
    Checkpoint, Frame, Frames, Keyframe, LiveScreen, Replay, frames, frames_from, screens,
};
pub use sidecar::Sidecar;
pub use sink::Format;
pub use store::{OpenedRecording, Recordings, RecordingsOptions};
pub use web::{WebRequest, web_timeline, web_timeline_from_log};

pub use crate::error::RecordingError;

/// Length of a recording id: 16 random bytes as lowercase hex.
pub const RECORDING_ID_LEN: usize = 32;

/// The id of one recording: 32 lowercase hex digits. Every file name under the recordings
/// directory is made from one, so no text from outside ever becomes a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordingId(String);

impl RecordingId {
    /// A fresh random id.
    pub fn generate() -> Result<RecordingId, RecordingError> {
        let mut raw = [0u8; RECORDING_ID_LEN / 2];
        crate::secret::random_bytes(&mut raw).map_err(|_| RecordingError::Random)?;
        Ok(RecordingId(crate::secret::hex_lower(raw)))
    }

    /// The id of the recording of web session `session_hash` (the session id's hash, as in
    /// its audit records): derived, so every part of the gateway that sees the session
    /// names its recording without a lookup. Not a secret (the hash is in the audit log).
    pub fn for_web_session(session_hash: &str) -> RecordingId {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"gatehouse/web-recording/v1\0");
        ctx.update(session_hash.as_bytes());
        let digest = ctx.finish();
        let half = digest
            .as_ref()
            .get(..RECORDING_ID_LEN / 2)
            .unwrap_or_default();
        RecordingId(crate::secret::hex_lower(half))
    }

    /// Checks an id given as text (a CLI argument, a URL segment, a file name).
    pub fn parse(text: &str) -> Result<RecordingId, RecordingError> {
        let ok = text.len() == RECORDING_ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(RecordingId(text.to_string()))
        } else {
            Err(RecordingError::InvalidId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The recording's file in `dir`: `<id>.cast` (SSH) or `<id>.jsonl` (web).
    pub fn path_in(&self, dir: &Path, kind: RecordingKind) -> PathBuf {
        dir.join(format!("{}.{}", self.0, kind.extension()))
    }
}

impl std::fmt::Display for RecordingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RecordingId {
    type Error = RecordingError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RecordingId::parse(&s)
    }
}

impl From<RecordingId> for String {
    fn from(id: RecordingId) -> String {
        id.0
    }
}

/// What was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingKind {
    /// An SSH session channel (asciicast v2).
    Ssh,
    /// A web session: one JSON line per request.
    Web,
}

impl RecordingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingKind::Ssh => "ssh",
            RecordingKind::Web => "web",
        }
    }

    /// The file extension of this kind.
    pub fn extension(self) -> &'static str {
        match self {
            RecordingKind::Ssh => "cast",
            RecordingKind::Web => "jsonl",
        }
    }
}

/// What a recordings list shows of one recording (`recordings list --json` prints these).
/// Times are RFC 3339 UTC; `ended_at` is `None` while the recording is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    pub id: RecordingId,
    pub kind: RecordingKind,
    pub user: String,
    /// The SSH target (SSH recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The web app (web recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    #[serde(default, with = "rfc3339_opt")]
    pub ended_at: Option<SystemTime>,
    /// The login on the SSH target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// The session it belongs to: the SSH connection's session id (as in its audit
    /// records), or the web session's id hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// What the SSH channel asked for (`shell`, `exec`, `scp`, `subsystem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The exec command line, or the subsystem's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Every web app a web session used (`app` is the first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
}

impl RecordingMeta {
    /// A recording of an SSH session on `target` by `user`, starting now.
    pub fn ssh(id: RecordingId, user: &str, target: &str) -> RecordingMeta {
        RecordingMeta {
            id,
            kind: RecordingKind::Ssh,
            user: user.to_string(),
            target: Some(target.to_string()),
            app: None,
            started_at: SystemTime::now(),
            ended_at: None,
            login: None,
            session: None,
            request: None,
            command: None,
            apps: Vec::new(),
        }
    }

    /// A recording of a web session on `app` by `user`, starting now.
    pub fn web(id: RecordingId, user: &str, app: &str) -> RecordingMeta {
        RecordingMeta {
            id,
            kind: RecordingKind::Web,
            user: user.to_string(),
            target: None,
            app: Some(app.to_string()),
            started_at: SystemTime::now(),
            ended_at: None,
            login: None,
            session: None,
            request: None,
            command: None,
            apps: vec![app.to_string()],
        }
    }

    /// The recording's file in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        self.id.path_in(dir, self.kind)
    }
}

/// Unix milliseconds of a time (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 text of a time (milliseconds, UTC), as the audit log writes it.
pub fn format_time(t: SystemTime) -> String {
    crate::audit::timestamp(unix_ms(t)).0
}

/// The time of RFC 3339 text written by [`format_time`].
pub fn parse_time(text: &str) -> Option<SystemTime> {
    crate::audit::parse_timestamp(text).map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }
}

mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_time(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => super::parse_time(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time")),
        }
    }
}

/// An error and its causes, one line (for logs).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
