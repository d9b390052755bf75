//! The writer task of one recording: takes the relay's events in order, judges keystrokes
//! (terminal sessions), finds typed commands, writes event lines to the file in batches,
//! publishes them to live subscribers and sends commands and files to the index.
//!
//! Markers the writer adds (asciicast `m` events), which a rebuild of the index reads back:
//! `command: TEXT` (typed at a terminal or a script line), `file: DIRECTION PROTOCOL BYTES
//! PATH`, `input not recorded: N bytes ...` (keys the terminal did not show), and the stream
//! cap notices.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cast::{Counts, Ev, Event, FileTransfer, Mode, StreamDirection, Utf8Carry, encode_line};
use super::echo::{EchoJudge, Verdict};
use super::index::{CommandSource, IndexWriter, Op};
use super::live::{FeedState, LiveFeed, LiveHub};
use super::sidecar::Sidecar;
use super::sink::Sink;
use super::typed::ScriptLines;
use super::{RecordingError, RecordingMeta};

/// Most events written in one batch before a flush.
const BATCH: usize = 64;
/// A terminal session with no events for this long lets its virtual terminal rest.
pub const REST_AFTER: Duration = Duration::from_secs(10);
/// Most commands of one session sent to the index, and their total size; beyond, the
/// recording keeps them (markers) and the index says no more.
pub const MAX_INDEXED_COMMANDS: usize = 100_000;
pub const MAX_INDEXED_COMMAND_BYTES: usize = 16 * 1024 * 1024;

/// The text of a command marker.
pub const COMMAND_MARKER: &str = "command: ";
/// The text of a file marker.
pub const FILE_MARKER: &str = "file: ";

pub(super) struct Writer {
    pub sidecar: Sidecar,
    pub dir: std::path::PathBuf,
    pub mode: Mode,
    pub sink: Sink,
    pub feed: Arc<LiveFeed>,
    pub live: LiveHub,
    pub index: Option<IndexWriter>,
    pub counts: Arc<Counts>,
    pub failed: CancellationToken,
    pub judge: EchoJudge,
    pub script: Option<ScriptLines>,
    pub out_carry: Utf8Carry,
    pub in_carry: Utf8Carry,
    pub last_at: f64,
    /// Keys not shown back, not yet reported: when the first was typed, and how many bytes.
    pub redacted: Option<(f64, usize)>,
    pub indexed: (usize, usize),
    /// Found while writing a batch; sent to the index after it.
    pub found: Vec<(f64, CommandSource, String)>,
    pub files: Vec<(f64, FileTransfer)>,
    /// The terminal session's virtual terminal holds its cells (see [`Writer::rest_terminal`]).
    pub terminal_awake: bool,
}

/// Sleeps until `at`; forever when there is no `at`.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Markers must not be mistaken for other markers: keep commands on one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub(super) fn file_marker(t: &FileTransfer) -> String {
    let dir = match t.direction {
        crate::audit::TransferDirection::Upload => "upload",
        crate::audit::TransferDirection::Download => "download",
    };
    let proto = match t.protocol {
        crate::audit::FileProtocol::Scp => "scp",
        crate::audit::FileProtocol::Sftp => "sftp",
    };
    format!(
        "{FILE_MARKER}{dir} {proto} {} {}",
        t.bytes,
        one_line(&t.path)
    )
}

impl Writer {
    /// One line at `at` (never before the last one: players expect time to go forward).
    fn line(
        &mut self,
        state: &mut FeedState,
        at: f64,
        code: &'static str,
        text: &str,
    ) -> Result<(), RecordingError> {
        if text.is_empty() {
            return Ok(());
        }
        if code != "m" || !text.starts_with("input not recorded") {
            self.report_redacted(state)?;
        }
        let at = at.max(self.last_at);
        self.last_at = at;
        encode_line(at, code, text, self.sink.buf())?;
        state.publish(at, code, text);
        Ok(())
    }

    fn report_redacted(&mut self, state: &mut FeedState) -> Result<(), RecordingError> {
        if let Some((at, n)) = self.redacted.take() {
            let text = format!(
                "input not recorded: {n} bytes typed that the terminal did not show (echo off)"
            );
            self.line(state, at, "m", &text)?;
        }
        Ok(())
    }

    fn verdicts(
        &mut self,
        state: &mut FeedState,
        verdicts: Vec<Verdict>,
    ) -> Result<(), RecordingError> {
        for v in verdicts {
            match v {
                Verdict::Keep { at, data } => {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    self.line(state, at, "i", &text)?;
                }
                Verdict::Redact { at, len } => {
                    let (first, n) = self.redacted.unwrap_or((at, 0));
                    self.redacted = Some((first, n.saturating_add(len)));
                }
            }
        }
        Ok(())
    }

    fn command(
        &mut self,
        state: &mut FeedState,
        at: f64,
        source: CommandSource,
        text: String,
    ) -> Result<(), RecordingError> {
        let text = one_line(&text);
        self.line(state, at, "m", &format!("{COMMAND_MARKER}{text}"))?;
        self.found.push((at, source, text));
        Ok(())
    }

    /// One event, written into the batch buffer.
    fn event(&mut self, ev: Event) -> Result<(), RecordingError> {
        let feed = self.feed.clone();
        let mut state = feed
            .state
            .lock()
            .map_err(|_| RecordingError::IndexState("live feed lock poisoned".into()))?;
        let at = ev.at;
        match ev.ev {
            Ev::Output(data) => {
                let text = self.out_carry.push(&data);
                if matches!(self.mode, Mode::Terminal { .. }) {
                    let v = self.judge.output(at, &text);
                    self.verdicts(&mut state, v)?;
                    let cmds = state
                        .tracker
                        .as_mut()
                        .map(|t| t.output(&text))
                        .unwrap_or_default();
                    self.line(&mut state, at, "o", &text)?;
                    for c in cmds {
                        self.command(&mut state, at, CommandSource::Typed, c)?;
                    }
                } else {
                    self.line(&mut state, at, "o", &text)?;
                }
            }
            Ev::Input(data) => match self.mode {
                Mode::Terminal { .. } => {
                    if let Some(t) = state.tracker.as_mut() {
                        t.input(at, &data);
                    }
                    let v = self.judge.input(at, data);
                    self.verdicts(&mut state, v)?;
                }
                Mode::Stream { .. } | Mode::Files => {
                    let text = self.in_carry.push(&data);
                    self.line(&mut state, at, "i", &text)?;
                    let lines = self
                        .script
                        .as_mut()
                        .map(|s| s.input(&data))
                        .unwrap_or_default();
                    for l in lines {
                        self.command(&mut state, at, CommandSource::Script, l)?;
                    }
                }
            },
            Ev::Resize(cols, rows) => {
                if let Some(t) = state.tracker.as_mut() {
                    t.resize(cols, rows);
                }
                self.line(&mut state, at, "r", &format!("{cols}x{rows}"))?;
            }
            Ev::Marker(text) => self.line(&mut state, at, "m", &text)?,
            Ev::Note(text) => self.line(&mut state, at, "o", &text)?,
            Ev::Transfer(t) => {
                self.line(&mut state, at, "m", &file_marker(&t))?;
                self.files.push((at, t));
            }
            Ev::Cap(dir, cap) => {
                let text = format!(
                    "{} beyond {cap} bytes is not recorded ([recording] stream_cap); the session goes on",
                    dir.as_str()
                );
                self.line(&mut state, at, "m", &text)?;
            }
        }
        Ok(())
    }

    /// The end: keys still held, the last script line, cap totals.
    fn closing(&mut self) -> Result<(), RecordingError> {
        let feed = self.feed.clone();
        let mut state = feed
            .state
            .lock()
            .map_err(|_| RecordingError::IndexState("live feed lock poisoned".into()))?;
        let v = self.judge.finish();
        self.verdicts(&mut state, v)?;
        let at = self.last_at;
        let lines = self
            .script
            .as_mut()
            .map(ScriptLines::finish)
            .unwrap_or_default();
        for l in lines {
            self.command(&mut state, at, CommandSource::Script, l)?;
        }
        self.report_redacted(&mut state)?;
        let counts = self.counts.clone();
        for (dir, count, capped) in [
            (
                StreamDirection::Output,
                &counts.output,
                &counts.output_capped,
            ),
            (StreamDirection::Input, &counts.input, &counts.input_capped),
        ] {
            if capped.load(Ordering::Relaxed) {
                let total = count.load(Ordering::Relaxed);
                let cap = counts.cap.unwrap_or_default();
                let text = format!(
                    "{}: {total} bytes in total, the first {cap} recorded",
                    dir.as_str()
                );
                self.line(&mut state, at, "m", &text)?;
            }
        }
        Ok(())
    }

    /// Sends what the batch found to the index.
    async fn index_found(&mut self) {
        let Some(index) = self.index.clone() else {
            self.found.clear();
            self.files.clear();
            return;
        };
        let id = self.sidecar.meta.id.clone();
        for (at, source, text) in std::mem::take(&mut self.found) {
            let (n, bytes) = self.indexed;
            if n >= MAX_INDEXED_COMMANDS
                || bytes.saturating_add(text.len()) > MAX_INDEXED_COMMAND_BYTES
            {
                continue;
            }
            self.indexed = (n + 1, bytes + text.len());
            index
                .send(Op::Command {
                    id: id.clone(),
                    at_ms: (at * 1000.0) as u64,
                    source,
                    text,
                })
                .await;
        }
        for (at, transfer) in std::mem::take(&mut self.files) {
            index
                .send(Op::File {
                    id: id.clone(),
                    at_ms: (at * 1000.0) as u64,
                    transfer,
                })
                .await;
        }
    }

    async fn batches(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<(), RecordingError> {
        let mut quiet_since = Instant::now();
        loop {
            let rest_at = self.terminal_awake.then(|| quiet_since + REST_AFTER);
            let first = tokio::select! {
                ev = rx.recv() => ev,
                () = until(self.sink.due()) => {
                    self.sink.close_due().await?;
                    continue;
                }
                () = until(rest_at) => {
                    self.rest_terminal();
                    continue;
                }
            };
            let Some(first) = first else {
                return Ok(());
            };
            quiet_since = Instant::now();
            self.terminal_awake = matches!(self.mode, Mode::Terminal { .. });
            let mut next = Some(first);
            let mut n = 0;
            while let Some(ev) = next.take() {
                self.event(ev)?;
                n += 1;
                if n < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.sink.batch_end().await?;
            self.index_found().await;
        }
    }

    /// Lets the virtual terminal of a quiet session rest (about 60 KiB less per idle
    /// session); the next event or watcher wakes it.
    fn rest_terminal(&mut self) {
        if let Ok(mut state) = self.feed.state.lock()
            && let Some(t) = state.tracker.as_mut()
        {
            t.rest();
        }
        self.terminal_awake = false;
    }

    /// Runs until every [`super::Recorder`] is dropped; the finished recording's metadata.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
    ) -> Result<RecordingMeta, RecordingError> {
        let mut result = self.batches(&mut rx).await;
        if result.is_ok() {
            result = self.closing();
        }
        if result.is_ok() {
            result = self.sink.finish().await;
        }
        self.index_found().await;
        self.live.remove(&self.sidecar.meta.id);
        if let Err(e) = result {
            self.failed.cancel();
            return Err(e);
        }
        self.sidecar.meta.ended_at = Some(SystemTime::now());
        let sidecar = self.sidecar.clone();
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || sidecar.write(&dir))
            .await
            .map_err(|_| RecordingError::Closed)
            .and_then(|r| r);
        if let Some(index) = &self.index {
            index.send(Op::Upsert(Box::new(self.sidecar.clone()))).await;
        }
        written?;
        Ok(self.sidecar.meta)
    }
}
