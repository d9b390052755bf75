//! The asciicast v2 recorder: a header line, then `[time, code, data]` event lines (`o`
//! output, `i` input, `r` resize, `m` marker), written as they happen by one writer task per
//! recording (see `writer`). This is the send side the relay calls; see the module above
//! for the threats.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{RecordingError, RecordingId, RecordingMeta};
use crate::audit::{FileProtocol, TransferDirection};

/// Events queued per recording. When full, the relay waits (backpressure), nothing is dropped.
pub const RECORDING_QUEUE: usize = 256;

/// Header fields of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u8,
    pub width: u32,
    pub height: u32,
    /// Unix seconds of the start.
    #[serde(default)]
    pub timestamp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

impl Header {
    pub fn new(
        width: u32,
        height: u32,
        title: String,
        command: Option<String>,
        term: Option<String>,
    ) -> Self {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut env = std::collections::BTreeMap::new();
        env.insert(
            "TERM".to_string(),
            term.unwrap_or_else(|| "xterm".to_string()),
        );
        env.insert("SHELL".to_string(), "/bin/sh".to_string());
        // A client without a terminal reports 0x0; players need a size.
        let width = if width == 0 { 80 } else { width.min(1000) };
        let height = if height == 0 { 24 } else { height.min(1000) };
        Self {
            version: 2,
            width,
            height,
            timestamp,
            command,
            title,
            env,
        }
    }
}

/// How a session is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A session with a terminal (pty), interactive or exec: recorded in full, always, never
    /// capped; keystrokes pass the echo judge; typed commands come from a virtual terminal.
    Terminal { cols: u32, rows: u32 },
    /// A session without a terminal (a script piped to a shell, `cat` of a dump): input and
    /// output in full by default, compressed in chunks; `script`: the program is a shell
    /// reading its input, whose lines are indexed as commands.
    Stream { script: bool },
    /// SCP or SFTP: the file operations observed (notes, transfers), not the raw bytes.
    Files,
}

/// A file moved through SCP or SFTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTransfer {
    pub protocol: FileProtocol,
    pub direction: TransferDirection,
    pub path: String,
    pub bytes: u64,
}

/// Which way bytes went, for caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamDirection {
    Output,
    Input,
}

impl StreamDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamDirection::Output => "output",
            StreamDirection::Input => "input",
        }
    }
}

/// What became of relayed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Recorded.
    All,
    /// This call crossed the `[recording] stream_cap`: the part under it is recorded, the
    /// rest is not. The caller must audit it (an alert) — once per direction.
    CapReached {
        direction: StreamDirection,
        cap: u64,
    },
    /// Beyond the cap: counted, not recorded.
    Beyond,
}

pub(super) enum Ev {
    Output(Bytes),
    Input(Bytes),
    Resize(u32, u32),
    Marker(String),
    Note(String),
    Transfer(FileTransfer),
    Cap(StreamDirection, u64),
}

pub(super) struct Event {
    pub at: f64,
    pub ev: Ev,
}

/// Byte counts of a stream recording against its cap (shared by the recorder's clones and
/// the writer, which reports the totals at the end).
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub cap: Option<u64>,
    pub output: AtomicU64,
    pub input: AtomicU64,
    pub output_capped: AtomicBool,
    pub input_capped: AtomicBool,
}

impl Counts {
    /// Counts `len` more bytes; how many of them are under the cap, and whether this call
    /// crossed it.
    fn take(&self, dir: StreamDirection, len: usize) -> (usize, bool) {
        let (count, capped) = match dir {
            StreamDirection::Output => (&self.output, &self.output_capped),
            StreamDirection::Input => (&self.input, &self.input_capped),
        };
        let len64 = len as u64;
        let before = count.fetch_add(len64, Ordering::Relaxed);
        let Some(cap) = self.cap else {
            return (len, false);
        };
        if before >= cap {
            return (0, false);
        }
        let room = usize::try_from(cap - before).unwrap_or(usize::MAX);
        if room >= len {
            return (len, false);
        }
        let first = !capped.swap(true, Ordering::Relaxed);
        (room, first)
    }
}

/// A live recording; cheap to clone, one writer task behind it.
#[derive(Clone)]
pub struct Recorder {
    pub(super) id: RecordingId,
    pub(super) start: Instant,
    pub(super) tx: mpsc::Sender<Event>,
    pub(super) failed: CancellationToken,
    pub(super) counts: Arc<Counts>,
    pub(super) capped: bool,
}

/// Owns the writer task; `finish` waits for everything to reach the file.
pub struct RecordingTask {
    pub(super) join: JoinHandle<Result<RecordingMeta, RecordingError>>,
    pub(super) meta: RecordingMeta,
}

impl Recorder {
    pub fn id(&self) -> &RecordingId {
        &self.id
    }

    /// Cancelled when the recording can no longer be written: the session must end.
    pub fn failed(&self) -> CancellationToken {
        self.failed.clone()
    }

    async fn send(&self, ev: Ev) -> Result<(), RecordingError> {
        let at = self.start.elapsed().as_secs_f64();
        self.tx
            .send(Event { at, ev })
            .await
            .map_err(|_| RecordingError::Closed)
    }

    async fn bytes(&self, dir: StreamDirection, data: Bytes) -> Result<Kept, RecordingError> {
        if !self.capped {
            self.send(match dir {
                StreamDirection::Output => Ev::Output(data),
                StreamDirection::Input => Ev::Input(data),
            })
            .await?;
            return Ok(Kept::All);
        }
        let (room, crossed) = self.counts.take(dir, data.len());
        if room == 0 && !crossed {
            return Ok(Kept::Beyond);
        }
        let kept = data.slice(..room.min(data.len()));
        if !kept.is_empty() {
            self.send(match dir {
                StreamDirection::Output => Ev::Output(kept),
                StreamDirection::Input => Ev::Input(kept),
            })
            .await?;
        }
        if crossed {
            let cap = self.counts.cap.unwrap_or_default();
            self.send(Ev::Cap(dir, cap)).await?;
            return Ok(Kept::CapReached {
                direction: dir,
                cap,
            });
        }
        Ok(Kept::All)
    }

    /// Output of the session (target to client).
    pub async fn output(&self, data: Bytes) -> Result<Kept, RecordingError> {
        self.bytes(StreamDirection::Output, data).await
    }

    /// Input of the session (client to target). In a terminal session it is stored only if
    /// the terminal shows it back (see `echo`).
    pub async fn input(&self, data: Bytes) -> Result<Kept, RecordingError> {
        self.bytes(StreamDirection::Input, data).await
    }

    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), RecordingError> {
        self.send(Ev::Resize(cols, rows)).await
    }

    pub async fn marker(&self, text: String) -> Result<(), RecordingError> {
        self.send(Ev::Marker(text)).await
    }

    /// A line of text shown in playback (file operations of SFTP/SCP, notices).
    pub async fn note(&self, text: &str) -> Result<(), RecordingError> {
        self.send(Ev::Note(format!("[gatehouse] {text}\r\n"))).await
    }

    /// A file moved (SCP/SFTP): a marker in the recording, an entry in the index.
    pub async fn transfer(&self, t: FileTransfer) -> Result<(), RecordingError> {
        self.send(Ev::Transfer(t)).await
    }
}

impl RecordingTask {
    /// The recording being written.
    pub fn meta(&self) -> &RecordingMeta {
        &self.meta
    }

    /// Waits for the writer to drain (all [`Recorder`] clones must be dropped first); the
    /// metadata of the finished recording, `ended_at` set (also in its metadata file and the
    /// index).
    pub async fn finish(self) -> Result<RecordingMeta, RecordingError> {
        match self.join.await {
            Ok(r) => r,
            Err(_) => Err(RecordingError::Closed),
        }
    }
}

/// Turns bytes into text without splitting a UTF-8 sequence across events.
#[derive(Default)]
pub(super) struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    pub fn push(&mut self, data: &[u8]) -> String {
        self.pending.extend_from_slice(data);
        let buf = std::mem::take(&mut self.pending);
        match std::str::from_utf8(&buf) {
            Ok(s) => s.to_string(),
            Err(e) if e.error_len().is_none() => {
                // Incomplete sequence at the end: keep at most its 3 bytes for the next event.
                let (head, tail) = buf.split_at(e.valid_up_to());
                self.pending = tail.to_vec();
                String::from_utf8_lossy(head).into_owned()
            }
            Err(_) => String::from_utf8_lossy(&buf).into_owned(),
        }
    }
}

/// One event line, appended to `out`.
pub(super) fn encode_line(
    at: f64,
    code: &str,
    text: &str,
    out: &mut Vec<u8>,
) -> Result<(), RecordingError> {
    let v = (at, code, text);
    serde_json::to_writer(&mut *out, &v).map_err(RecordingError::Encode)?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_carry_keeps_split_sequences() {
        let mut c = Utf8Carry::default();
        let e = "é".as_bytes();
        assert_eq!(c.push(&[b'a', e[0]]), "a");
        assert_eq!(c.push(&[e[1], b'b']), "éb");
        assert_eq!(c.push(&[0xff, b'c']), "\u{fffd}c");
    }

    #[test]
    fn counts_cap_each_direction_once() {
        let c = Counts {
            cap: Some(4),
            ..Counts::default()
        };
        assert_eq!(c.take(StreamDirection::Output, 3), (3, false));
        assert_eq!(c.take(StreamDirection::Output, 3), (1, true));
        assert_eq!(c.take(StreamDirection::Output, 3), (0, false));
        assert_eq!(c.output.load(Ordering::Relaxed), 9);
        assert_eq!(c.take(StreamDirection::Input, 10), (4, true));
        let none = Counts::default();
        assert_eq!(none.take(StreamDirection::Input, 1 << 20), (1 << 20, false));
    }
}
