//! Session recording as asciicast v2 (`.cast`): a header line, then `[time, code, data]` event
//! lines (`o` output, `i` input, `r` resize, `m` marker), written as they happen and flushed,
//! so a killed process leaves a prefix `asciinema` plays.
//!
//! Threat: a session that runs unrecorded (full disk, unwritable directory, a stalled writer)
//! or a recorder that buffers without bound. Mitigation: the file is created and its header
//! flushed before the session is allowed to start; events go through a bounded channel (a slow
//! disk slows the session instead of growing memory); a write failure cancels
//! [`Recorder::failed`], which ends the session.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::RecordingError;

/// Events queued per recording. When full, the relay waits (backpressure), nothing is dropped.
pub const RECORDING_QUEUE: usize = 256;
/// Most events written in one batch before a flush.
const BATCH: usize = 64;

/// Header fields of a recording.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub version: u8,
    pub width: u32,
    pub height: u32,
    pub timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub title: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Output,
    Input,
    Resize,
    Marker,
    /// Bastion-written text shown as output; never counted against the caps.
    Note,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::Output | Code::Note => "o",
            Code::Input => "i",
            Code::Resize => "r",
            Code::Marker => "m",
        }
    }
}

struct Event {
    at: f64,
    code: Code,
    data: Bytes,
}

/// Byte caps for bulk sessions (exec, SCP): beyond them only the count is kept.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub output: Option<u64>,
    pub input: Option<u64>,
}

impl Caps {
    pub const NONE: Caps = Caps {
        output: None,
        input: None,
    };
}

/// A live recording; cheap to clone, one writer task behind it.
#[derive(Clone)]
pub struct Recorder {
    id: String,
    path: PathBuf,
    start: Instant,
    tx: mpsc::Sender<Event>,
    failed: CancellationToken,
}

/// Owns the writer task; `finish` waits for everything to reach the file.
pub struct RecordingTask {
    join: JoinHandle<Result<(), RecordingError>>,
}

impl Recorder {
    /// Creates `<dir>/<id>.cast` and flushes the header; an error must refuse the session.
    pub async fn create(
        dir: &Path,
        id: &str,
        header: &Header,
        caps: Caps,
    ) -> Result<(Recorder, RecordingTask), RecordingError> {
        let path = dir.join(format!("{id}.cast"));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|source| RecordingError::Create {
                path: path.clone(),
                source,
            })?;
        let mut line = serde_json::to_vec(header).map_err(RecordingError::Encode)?;
        line.push(b'\n');
        let write = async {
            file.write_all(&line).await?;
            file.flush().await
        };
        write.await.map_err(|source| RecordingError::Write {
            path: path.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(RECORDING_QUEUE);
        let failed = CancellationToken::new();
        let join = tokio::spawn(writer(file, path.clone(), rx, caps, failed.clone()));
        let rec = Recorder {
            id: id.to_string(),
            path,
            start: Instant::now(),
            tx,
            failed,
        };
        Ok((rec, RecordingTask { join }))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Cancelled when the recording can no longer be written: the session must end.
    pub fn failed(&self) -> CancellationToken {
        self.failed.clone()
    }

    async fn send(&self, code: Code, data: Bytes) -> Result<(), RecordingError> {
        let at = self.start.elapsed().as_secs_f64();
        self.tx
            .send(Event { at, code, data })
            .await
            .map_err(|_| RecordingError::Closed)
    }

    pub async fn output(&self, data: Bytes) -> Result<(), RecordingError> {
        self.send(Code::Output, data).await
    }

    pub async fn input(&self, data: Bytes) -> Result<(), RecordingError> {
        self.send(Code::Input, data).await
    }

    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), RecordingError> {
        self.send(Code::Resize, Bytes::from(format!("{cols}x{rows}")))
            .await
    }

    pub async fn marker(&self, text: String) -> Result<(), RecordingError> {
        self.send(Code::Marker, Bytes::from(text)).await
    }

    /// A line of text shown in playback (file operations of SFTP/SCP, notices).
    pub async fn note(&self, text: &str) -> Result<(), RecordingError> {
        self.send(Code::Note, Bytes::from(format!("[gatehouse] {text}\r\n")))
            .await
    }
}

impl RecordingTask {
    /// Waits for the writer to drain (all [`Recorder`] clones must be dropped first).
    pub async fn finish(self) -> Result<(), RecordingError> {
        match self.join.await {
            Ok(r) => r,
            Err(_) => Err(RecordingError::Closed),
        }
    }
}

/// Turns bytes into text without splitting a UTF-8 sequence across events.
#[derive(Default)]
struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    fn push(&mut self, data: &[u8]) -> String {
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

struct Counter {
    cap: Option<u64>,
    seen: u64,
    carry: Utf8Carry,
}

impl Counter {
    fn new(cap: Option<u64>) -> Self {
        Self {
            cap,
            seen: 0,
            carry: Utf8Carry::default(),
        }
    }

    /// The part of `data` still under the cap.
    fn take<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let before = self.seen;
        self.seen = self.seen.saturating_add(data.len() as u64);
        match self.cap {
            None => data,
            Some(cap) if before >= cap => &[],
            Some(cap) => {
                let room = usize::try_from(cap - before).unwrap_or(usize::MAX);
                data.get(..room.min(data.len())).unwrap_or(data)
            }
        }
    }

    /// The text of the part of `data` still under the cap.
    fn text(&mut self, data: &[u8]) -> String {
        let kept = self.take(data);
        self.carry.push(kept)
    }

    fn truncated(&self) -> Option<u64> {
        self.cap.filter(|c| self.seen > *c).map(|_| self.seen)
    }
}

fn encode_line(at: f64, code: &str, text: &str, out: &mut Vec<u8>) -> Result<(), RecordingError> {
    let v = (at, code, text);
    serde_json::to_writer(&mut *out, &v).map_err(RecordingError::Encode)?;
    out.push(b'\n');
    Ok(())
}

async fn writer(
    mut file: tokio::fs::File,
    path: PathBuf,
    mut rx: mpsc::Receiver<Event>,
    caps: Caps,
    failed: CancellationToken,
) -> Result<(), RecordingError> {
    let mut out_count = Counter::new(caps.output);
    let mut in_count = Counter::new(caps.input);
    let mut last_at = 0.0_f64;
    let mut buf = Vec::with_capacity(8192);
    let result = async {
        while let Some(first) = rx.recv().await {
            buf.clear();
            let mut next = Some(first);
            let mut n = 0;
            while let Some(ev) = next.take() {
                last_at = ev.at;
                let text = match ev.code {
                    Code::Output => out_count.text(&ev.data),
                    Code::Input => in_count.text(&ev.data),
                    Code::Resize | Code::Marker | Code::Note => {
                        String::from_utf8_lossy(&ev.data).into_owned()
                    }
                };
                if !text.is_empty() {
                    encode_line(ev.at, ev.code.as_str(), &text, &mut buf)?;
                }
                n += 1;
                if n < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !buf.is_empty() {
                file.write_all(&buf)
                    .await
                    .map_err(|source| RecordingError::Write {
                        path: path.clone(),
                        source,
                    })?;
                file.flush().await.map_err(|source| RecordingError::Write {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        buf.clear();
        for (what, c) in [("output", &out_count), ("input", &in_count)] {
            if let Some(total) = c.truncated() {
                encode_line(
                    last_at,
                    "m",
                    &format!("{what} truncated in this recording; {total} bytes in total"),
                    &mut buf,
                )?;
            }
        }
        if !buf.is_empty() {
            file.write_all(&buf)
                .await
                .map_err(|source| RecordingError::Write {
                    path: path.clone(),
                    source,
                })?;
        }
        file.flush().await.map_err(|source| RecordingError::Write {
            path: path.clone(),
            source,
        })?;
        file.sync_data()
            .await
            .map_err(|source| RecordingError::Write {
                path: path.clone(),
                source,
            })
    }
    .await;
    if result.is_err() {
        failed.cancel();
    }
    result
}

/// A fresh random recording (or session) id: 16 random bytes as hex.
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    fn counter_caps_and_counts() {
        let mut c = Counter::new(Some(4));
        assert_eq!(c.take(b"abc"), b"abc");
        assert_eq!(c.take(b"def"), b"d");
        assert_eq!(c.take(b"ghi"), b"");
        assert_eq!(c.truncated(), Some(9));
    }

    #[tokio::test]
    async fn writes_a_valid_cast() {
        let dir = std::env::temp_dir().join(format!("gh-rec-{}", new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header = Header::new(80, 24, "t".into(), Some("ls".into()), None);
        let (rec, task) = Recorder::create(
            &dir,
            "x",
            &header,
            Caps {
                output: Some(3),
                input: None,
            },
        )
        .await
        .unwrap();
        rec.output(Bytes::from_static(b"hello")).await.unwrap();
        rec.input(Bytes::from_static(b"ls\r")).await.unwrap();
        rec.resize(100, 40).await.unwrap();
        drop(rec);
        task.finish().await.unwrap();
        let text = std::fs::read_to_string(dir.join("x.cast")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hel");
        assert_eq!(lines[2][2], "ls\r");
        assert_eq!(lines[3][2], "100x40");
        assert_eq!(lines[4][1], "m");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
