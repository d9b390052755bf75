//! The recordings directory: where recordings are started (SSH) or registered (web), found
//! by id and opened for reading, whatever their format; with its index and live feeds.
//!
//! Threat: a path from a user (a CLI argument, a console URL) reaching the filesystem.
//! Mitigation: everything here takes a [`RecordingId`] (checked 32 hex digits), and every
//! file name is made from one.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cast::{Counts, Event, Header, Mode, RECORDING_QUEUE, Recorder, RecordingTask};
use super::crypt::{Content, FrameEnd, FrameReader, RecordingKey, TolerantGz};
use super::echo::EchoJudge;
use super::index::{CommandSource, IndexWriter, Op, RecordingIndex};
use super::live::{LiveFeed, LiveHub};
use super::reader::CastReader;
use super::sidecar::Sidecar;
use super::sink::{Format, Sink};
use super::typed::{CommandTracker, ScriptLines};
use super::writer::Writer;
use super::{RecordingError, RecordingId, RecordingKind, RecordingMeta};

/// How recordings are written.
#[derive(Debug, Clone, Default)]
pub struct RecordingsOptions {
    /// The key of encrypted recordings (reading them, and writing new ones when `encrypt`).
    pub key: Option<RecordingKey>,
    /// Encrypt new recordings (`[recording] encrypt = true`); needs `key`.
    pub encrypt: bool,
    /// Cap on each direction of a session without a terminal (`[recording] stream_cap`);
    /// `None`: recorded in full. Sessions with a terminal are never capped.
    pub stream_cap: Option<u64>,
}

struct Inner {
    dir: PathBuf,
    options: RecordingsOptions,
    index: RecordingIndex,
    writer: Option<IndexWriter>,
    live: LiveHub,
    /// Serialises read-modify-write of web sessions' metadata files in this process.
    web: std::sync::Mutex<()>,
}

/// The recordings directory; cheap to clone.
#[derive(Clone)]
pub struct Recordings {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn create_dir(dir: &Path) -> Result<(), RecordingError> {
    let err = |source| RecordingError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.is_dir() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir).map_err(err)?;
    }
    Ok(())
}

/// A recording opened for reading: its metadata and its events as plain asciicast.
pub struct OpenedRecording {
    pub sidecar: Sidecar,
    pub reader: CastReader<Box<dyn BufRead + Send>>,
    ends: Ends,
}

enum Ends {
    Plain,
    Gzip(Arc<std::sync::atomic::AtomicBool>),
    Sealed(
        Arc<std::sync::Mutex<FrameEnd>>,
        Arc<std::sync::atomic::AtomicBool>,
    ),
}

impl OpenedRecording {
    /// After reading to the end: whether the file was cut (by a crash) or never got its
    /// clean end; `None` when it is whole.
    pub fn damage(&self) -> Option<&'static str> {
        use std::sync::atomic::Ordering;
        let torn_line = self.reader.torn();
        match &self.ends {
            Ends::Plain if torn_line => {
                Some("the last event was cut short (the writer was killed)")
            }
            Ends::Plain => None,
            Ends::Gzip(torn) if torn.load(Ordering::Relaxed) || torn_line => {
                Some("the last chunk was cut short (the writer was killed)")
            }
            Ends::Gzip(_) => None,
            Ends::Sealed(end, gz) => {
                let end = end.lock().map(|e| *e).unwrap_or_default();
                if end.torn || gz.load(Ordering::Relaxed) || torn_line {
                    Some(
                        "the last frame was cut short (the writer was killed); every finished frame is here",
                    )
                } else if end.incomplete {
                    Some(
                        "no end frame: the session did not end cleanly; every finished frame is here",
                    )
                } else {
                    None
                }
            }
        }
    }
}

/// Shares a reader's end state with [`OpenedRecording::damage`].
struct Watch<R> {
    inner: R,
    on_end: Box<dyn Fn(&R) + Send>,
}

impl<R: Read> Read for Watch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            (self.on_end)(&self.inner);
        }
        Ok(n)
    }
}

impl Recordings {
    /// Opens (creating it owner-only) the recordings directory and its index (rebuilt from
    /// the recordings if missing or broken). `writer`: this process writes recordings (the
    /// server): start the index writer and end recordings a crash left live.
    pub fn open(
        dir: &Path,
        options: RecordingsOptions,
        writer: bool,
    ) -> Result<Recordings, RecordingError> {
        create_dir(dir)?;
        let recovered = if writer { recover(dir) } else { Vec::new() };
        let (index, _) = RecordingIndex::open(dir, options.key.as_ref())?;
        index.upsert_now(&recovered)?;
        let writer = if writer { Some(index.writer()?) } else { None };
        Ok(Recordings {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                options,
                index,
                writer,
                live: LiveHub::default(),
                web: std::sync::Mutex::new(()),
            }),
        })
    }

    /// Reads recordings in `dir` without opening (or rebuilding) the index.
    pub(super) fn reader(dir: &Path, options: RecordingsOptions) -> Recordings {
        Recordings {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                options,
                index: RecordingIndex::at(dir),
                writer: None,
                live: LiveHub::default(),
                web: std::sync::Mutex::new(()),
            }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn index(&self) -> &RecordingIndex {
        &self.inner.index
    }

    /// The recordings being written now, and their live feeds.
    pub fn live(&self) -> &LiveHub {
        &self.inner.live
    }

    /// Whether new recordings are encrypted.
    pub fn encrypted(&self) -> bool {
        self.inner.options.encrypt
    }

    pub(super) fn web_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .web
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn index_writer(&self) -> Option<&IndexWriter> {
        self.inner.writer.as_ref()
    }

    /// Starts the recording of an SSH session channel: its file (header on disk), its
    /// metadata file and its index entry exist when this returns; an error must refuse the
    /// session.
    pub async fn start(
        &self,
        meta: RecordingMeta,
        header: &Header,
        mode: Mode,
    ) -> Result<(Recorder, RecordingTask), RecordingError> {
        let dir = self.inner.dir.clone();
        let mut header = header.clone();
        header.timestamp = meta
            .started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut line = serde_json::to_vec(&header).map_err(RecordingError::Encode)?;
        line.push(b'\n');
        let gzip = matches!(mode, Mode::Stream { .. });
        let key = self
            .inner
            .options
            .key
            .as_ref()
            .filter(|_| self.inner.options.encrypt);
        let (sink, format) = Sink::create(&dir, &meta.id, gzip, key, &line).await?;
        let sidecar = Sidecar {
            meta: meta.clone(),
            format: Some(format),
            pty: matches!(mode, Mode::Terminal { .. }),
            cut: false,
        };
        let to_write = sidecar.clone();
        let d = dir.clone();
        tokio::task::spawn_blocking(move || to_write.write(&d))
            .await
            .map_err(|_| RecordingError::Closed)??;
        if let Some(index) = self.index_writer() {
            index.send(Op::Upsert(Box::new(sidecar.clone()))).await;
            let started = match meta.request.as_deref() {
                Some("subsystem") => Some(CommandSource::Subsystem),
                Some("exec" | "scp") => Some(CommandSource::Exec),
                _ => None,
            };
            if let (Some(source), Some(cmd)) = (started, &meta.command) {
                index
                    .send(Op::Command {
                        id: meta.id.clone(),
                        at_ms: 0,
                        source,
                        text: cmd.clone(),
                    })
                    .await;
            }
        }
        let tracker = match mode {
            Mode::Terminal { cols, rows } => CommandTracker::new(cols, rows),
            _ => None,
        };
        let feed = Arc::new(LiveFeed::new(meta.clone(), tracker));
        self.inner.live.add(feed.clone());
        let counts = Arc::new(Counts {
            cap: match mode {
                Mode::Stream { .. } => self.inner.options.stream_cap,
                _ => None,
            },
            ..Counts::default()
        });
        let (tx, rx) = mpsc::channel::<Event>(RECORDING_QUEUE);
        let failed = CancellationToken::new();
        let writer = Writer {
            sidecar,
            dir,
            mode,
            sink,
            feed,
            live: self.inner.live.clone(),
            index: self.inner.writer.clone(),
            counts: counts.clone(),
            failed: failed.clone(),
            judge: EchoJudge::new(),
            script: match mode {
                Mode::Stream { script: true } => Some(ScriptLines::default()),
                _ => None,
            },
            out_carry: Default::default(),
            in_carry: Default::default(),
            last_at: 0.0,
            redacted: None,
            indexed: (0, 0),
            found: Vec::new(),
            files: Vec::new(),
            terminal_awake: matches!(mode, Mode::Terminal { .. }),
        };
        let join = tokio::spawn(writer.run(rx));
        let rec = Recorder {
            id: meta.id.clone(),
            start: Instant::now(),
            tx,
            failed,
            capped: counts.cap.is_some(),
            counts,
        };
        Ok((rec, RecordingTask { join, meta }))
    }

    /// The metadata of a recording.
    pub fn meta(&self, id: &RecordingId) -> Result<Sidecar, RecordingError> {
        match Sidecar::read(&self.inner.dir, id) {
            Ok(s) => Ok(s),
            Err(RecordingError::Sidecar { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                // A recording from before metadata files: found by its file alone.
                legacy_sidecar(&self.inner.dir, id)
                    .ok_or_else(|| RecordingError::NotFound(id.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// Opens an SSH recording for reading, as plain asciicast (decrypted, decompressed).
    pub fn open_cast(&self, id: &RecordingId) -> Result<OpenedRecording, RecordingError> {
        let sidecar = self.meta(id)?;
        if sidecar.meta.kind != RecordingKind::Ssh {
            return Err(RecordingError::NotFound(id.to_string()));
        }
        let format = sidecar
            .format
            .ok_or_else(|| RecordingError::NotFound(id.to_string()))?;
        let (reader, ends) =
            open_file(&self.inner.dir, id, format, self.inner.options.key.as_ref())?;
        Ok(OpenedRecording {
            sidecar,
            reader: CastReader::new(reader)?,
            ends,
        })
    }
}

/// The plain asciicast stream of a recording file.
fn open_file(
    dir: &Path,
    id: &RecordingId,
    format: Format,
    key: Option<&RecordingKey>,
) -> Result<(Box<dyn BufRead + Send>, Ends), RecordingError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let path = format.path(dir, id);
    let file = std::fs::File::open(&path).map_err(|source| RecordingError::Open {
        path: path.clone(),
        source,
    })?;
    Ok(match format {
        Format::Plain => (Box::new(BufReader::new(file)), Ends::Plain),
        Format::Gzip => {
            let torn = Arc::new(AtomicBool::new(false));
            let t = torn.clone();
            let gz = Watch {
                inner: TolerantGz::new(BufReader::new(file)),
                on_end: Box::new(move |g: &TolerantGz<BufReader<std::fs::File>>| {
                    t.store(g.torn(), Ordering::Relaxed)
                }),
            };
            (Box::new(BufReader::new(gz)), Ends::Gzip(torn))
        }
        Format::Sealed => {
            let key = key.ok_or_else(|| RecordingError::NoKey(id.to_string()))?;
            let frames = FrameReader::new(BufReader::new(file), key, id)
                .map_err(RecordingError::ReadCast)?;
            let content = frames.content();
            let end = Arc::new(std::sync::Mutex::new(FrameEnd::default()));
            let e = end.clone();
            let watched = Watch {
                inner: frames,
                on_end: Box::new(move |f: &FrameReader<BufReader<std::fs::File>>| {
                    if let Ok(mut g) = e.lock() {
                        *g = f.end();
                    }
                }),
            };
            let gz_torn = Arc::new(AtomicBool::new(false));
            let reader: Box<dyn BufRead + Send> = match content {
                Content::Cast => Box::new(BufReader::new(watched)),
                Content::Gzip => {
                    let t = gz_torn.clone();
                    Box::new(BufReader::new(Watch {
                        inner: TolerantGz::new(BufReader::new(watched)),
                        on_end: Box::new(
                            move |g: &TolerantGz<
                                BufReader<Watch<FrameReader<BufReader<std::fs::File>>>>,
                            >| { t.store(g.torn(), Ordering::Relaxed) },
                        ),
                    }))
                }
            };
            (reader, Ends::Sealed(end, gz_torn))
        }
    })
}

/// Metadata of a recording written before metadata files existed: from its cast header
/// (title `USER:LOGIN@TARGET ...`, timestamp) and its file's last write.
pub(super) fn legacy_sidecar(dir: &Path, id: &RecordingId) -> Option<Sidecar> {
    let path = Format::Plain.path(dir, id);
    let file = std::fs::File::open(&path).ok()?;
    let reader = CastReader::new(BufReader::new(file)).ok()?;
    let h = reader.header();
    let who = h.title.split_whitespace().next().unwrap_or("");
    let (user, rest) = who.split_once(':')?;
    let (login, target) = rest.split_once('@')?;
    let started = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(h.timestamp);
    let ended = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let mut meta = RecordingMeta::ssh(id.clone(), user, target);
    meta.started_at = started;
    meta.ended_at = ended.map(|e| e.max(started));
    meta.login = Some(login.to_string());
    meta.command = h.command.clone();
    Some(Sidecar {
        meta,
        format: Some(Format::Plain),
        pty: false,
        cut: false,
    })
}

/// Ends the SSH recordings a crash left live (their metadata still says so).
fn recover(dir: &Path) -> Vec<Sidecar> {
    let mut recovered = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return recovered;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".meta.json"))
            .and_then(|n| RecordingId::parse(n).ok())
        else {
            continue;
        };
        let Ok(mut s) = Sidecar::read(dir, &id) else {
            continue;
        };
        // A web session outlives the process with a shared store (Redis): the gateway ends
        // its entry when the store no longer has the session (see the gateway's sweep).
        if s.meta.kind == RecordingKind::Web {
            continue;
        }
        if s.recover(dir) {
            if let Err(e) = s.write(dir) {
                tracing::warn!(recording = %id, error = %super::error_chain(&e), "cannot mark a cut recording as ended");
            } else {
                tracing::warn!(recording = %id, "recording cut by a crash: marked ended at its last write");
            }
            recovered.push(s);
        }
    }
    recovered
}
