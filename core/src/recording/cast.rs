//! The asciicast v2 writer: a header line, then `[time, code, data]` event lines (`o` output,
//! `i` input, `r` resize, `m` marker), written as they happen and flushed batch by batch, so
//! a killed process leaves a prefix `asciinema` plays. See the module above for the threats.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{RecordingError, RecordingMeta};

/// Events queued per recording. When full, the relay waits (backpressure), nothing is dropped.
pub const RECORDING_QUEUE: usize = 256;
/// Most events written in one batch before a flush.
const BATCH: usize = 64;

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
    id: super::RecordingId,
    path: PathBuf,
    start: Instant,
    tx: mpsc::Sender<Event>,
    failed: CancellationToken,
}

/// Owns the writer task; `finish` waits for everything to reach the file.
pub struct RecordingTask {
    join: JoinHandle<Result<(), RecordingError>>,
    meta: RecordingMeta,
}

impl Recorder {
    /// Creates the recording's file in `dir` (`<id>.cast`, never overwriting one) and writes
    /// the header, timestamped with `meta.started_at`; an error must refuse the session.
    pub async fn create(
        dir: &Path,
        meta: RecordingMeta,
        header: &Header,
        caps: Caps,
    ) -> Result<(Recorder, RecordingTask), RecordingError> {
        let path = meta.path_in(dir);
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|source| RecordingError::Create {
                path: path.clone(),
                source,
            })?;
        let mut header = header.clone();
        header.timestamp = meta
            .started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut line = serde_json::to_vec(&header).map_err(RecordingError::Encode)?;
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
            id: meta.id.clone(),
            path,
            start: Instant::now(),
            tx,
            failed,
        };
        Ok((rec, RecordingTask { join, meta }))
    }

    pub fn id(&self) -> &super::RecordingId {
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
    /// The recording being written.
    pub fn meta(&self) -> &RecordingMeta {
        &self.meta
    }

    /// Waits for the writer to drain (all [`Recorder`] clones must be dropped first); the
    /// metadata of the finished recording, `ended_at` set.
    pub async fn finish(self) -> Result<RecordingMeta, RecordingError> {
        match self.join.await {
            Ok(Ok(())) => Ok(RecordingMeta {
                ended_at: Some(SystemTime::now()),
                ..self.meta
            }),
            Ok(Err(e)) => Err(e),
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
}
