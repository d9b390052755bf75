//! A passive SFTP (v3) observer: it reads the packets relayed in both directions and reports
//! file operations (open, close with bytes read/written, remove, rename, mkdir, rmdir) for the
//! recording. It never changes the relayed bytes.
//!
//! Threat: hostile bytes from either side crashing the bastion or growing its memory.
//! Mitigation: only the first [`HEAD_MAX`] bytes of each packet are kept; a packet longer than
//! [`MAX_PACKET`] stops observation (reported once, the relay goes on); tables of open handles
//! and pending requests are capped; parsing never indexes out of bounds or panics.

use std::collections::HashMap;

/// Bytes of each packet kept for parsing (type, id, handle and path fit in it).
pub const HEAD_MAX: usize = 8 * 1024;
/// Largest SFTP packet accepted (OpenSSH's own limit is 256 KiB).
pub const MAX_PACKET: u32 = 1024 * 1024;
/// Open handles and pending requests tracked at most.
pub const MAX_TRACKED: usize = 4096;

const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_OPENDIR: u8 = 11;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_RENAME: u8 = 18;
const FXP_EXTENDED: u8 = 200;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;

const FXF_READ: u32 = 0x01;
const FXF_WRITE: u32 = 0x02;

/// A file operation seen in an SFTP session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    Open {
        path: String,
        read: bool,
        write: bool,
    },
    Close {
        path: String,
        /// Whether the file was opened for writing.
        write: bool,
        read_bytes: u64,
        written_bytes: u64,
    },
    Remove {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
    /// Observation stopped (malformed or oversized packet); the session continues.
    LostSync {
        direction: &'static str,
    },
}

impl std::fmt::Display for FileOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileOp::Open { path, read, write } => {
                let mode = match (read, write) {
                    (true, true) => "read-write",
                    (false, true) => "write",
                    _ => "read",
                };
                write!(f, "sftp open {path:?} ({mode})")
            }
            FileOp::Close {
                path,
                read_bytes,
                written_bytes,
                ..
            } => {
                write!(
                    f,
                    "sftp close {path:?}: download {read_bytes} bytes, upload {written_bytes} bytes"
                )
            }
            FileOp::Remove { path } => write!(f, "sftp remove {path:?}"),
            FileOp::Rename { from, to } => write!(f, "sftp rename {from:?} -> {to:?}"),
            FileOp::Mkdir { path } => write!(f, "sftp mkdir {path:?}"),
            FileOp::Rmdir { path } => write!(f, "sftp rmdir {path:?}"),
            FileOp::LostSync { direction } => {
                write!(f, "sftp observation stopped: malformed {direction} stream")
            }
        }
    }
}

/// Splits a byte stream into SFTP packets, keeping only each packet's head.
#[derive(Default)]
struct Framer {
    len_buf: Vec<u8>,
    remaining: u32,
    total: u32,
    head: Vec<u8>,
    dead: bool,
}

enum Framed {
    /// A complete packet: its head and its full length.
    Packet(Vec<u8>, u32),
    Broken,
}

impl Framer {
    fn feed(&mut self, mut data: &[u8], out: &mut Vec<Framed>) {
        while !data.is_empty() && !self.dead {
            if self.remaining == 0 {
                let need = 4 - self.len_buf.len();
                let (a, b) = data.split_at(need.min(data.len()));
                self.len_buf.extend_from_slice(a);
                data = b;
                if self.len_buf.len() == 4 {
                    let len = be_u32(&self.len_buf).unwrap_or(0);
                    self.len_buf.clear();
                    if len == 0 || len > MAX_PACKET {
                        self.dead = true;
                        out.push(Framed::Broken);
                        return;
                    }
                    self.remaining = len;
                    self.total = len;
                    self.head.clear();
                }
                continue;
            }
            let take = (self.remaining as usize).min(data.len());
            let (a, b) = data.split_at(take);
            let room = HEAD_MAX.saturating_sub(self.head.len());
            self.head
                .extend_from_slice(a.get(..room.min(a.len())).unwrap_or(&[]));
            data = b;
            self.remaining -= take as u32;
            if self.remaining == 0 {
                out.push(Framed::Packet(std::mem::take(&mut self.head), self.total));
            }
        }
    }
}

fn be_u32(b: &[u8]) -> Option<u32> {
    let arr: [u8; 4] = b.try_into().ok()?;
    Some(u32::from_be_bytes(arr))
}

/// A cursor over a packet head; every read is checked.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        let v = be_u32(self.0.get(..4)?)?;
        self.0 = self.0.get(4..)?;
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Some((hi << 32) | lo)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let v = self.0.get(..n)?;
        self.0 = self.0.get(n..)?;
        Some(v)
    }
    fn string(&mut self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

struct OpenFile {
    path: String,
    write: bool,
    read_bytes: u64,
    written_bytes: u64,
}

enum Pending {
    Open { path: String, flags: u32 },
    OpenDir,
    Read { handle: Vec<u8> },
}

/// Tracks one SFTP session; feed it both directions.
#[derive(Default)]
pub struct SftpTracker {
    client: Framer,
    server: Framer,
    pending: HashMap<u32, Pending>,
    handles: HashMap<Vec<u8>, OpenFile>,
}

impl SftpTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes from the client (requests).
    pub fn from_client(&mut self, data: &[u8]) -> Vec<FileOp> {
        let mut frames = Vec::new();
        self.client.feed(data, &mut frames);
        let mut ops = Vec::new();
        for f in frames {
            match f {
                Framed::Broken => ops.push(FileOp::LostSync {
                    direction: "client",
                }),
                Framed::Packet(head, total) => self.request(&head, total, &mut ops),
            }
        }
        ops
    }

    /// Bytes from the target (responses).
    pub fn from_server(&mut self, data: &[u8]) -> Vec<FileOp> {
        let mut frames = Vec::new();
        self.server.feed(data, &mut frames);
        let mut ops = Vec::new();
        for f in frames {
            match f {
                Framed::Broken => ops.push(FileOp::LostSync {
                    direction: "server",
                }),
                Framed::Packet(head, _) => self.response(&head, &mut ops),
            }
        }
        ops
    }

    fn pend(&mut self, id: u32, p: Pending) {
        if self.pending.len() < MAX_TRACKED {
            self.pending.insert(id, p);
        }
    }

    fn request(&mut self, head: &[u8], total: u32, ops: &mut Vec<FileOp>) {
        let mut r = Rd(head);
        let (Some(kind), Some(id)) = (r.u8(), r.u32()) else {
            return;
        };
        match kind {
            FXP_OPEN => {
                if let (Some(path), Some(flags)) = (r.string(), r.u32()) {
                    self.pend(id, Pending::Open { path, flags });
                }
            }
            FXP_OPENDIR => self.pend(id, Pending::OpenDir),
            FXP_READ => {
                if let Some(h) = r.bytes() {
                    self.pend(id, Pending::Read { handle: h.to_vec() });
                }
            }
            FXP_WRITE => {
                // type(1) id(4) handle(4+n) offset(8) len(4) data: the data length is what is
                // left of the packet, whether or not its bytes fit in the head.
                if let Some(h) = r.bytes() {
                    let header = 1 + 4 + 4 + h.len() + 8 + 4;
                    let len = (total as usize).saturating_sub(header) as u64;
                    if let (Some(_), Some(f)) = (r.u64(), self.handles.get_mut(h)) {
                        f.written_bytes = f.written_bytes.saturating_add(len);
                    }
                }
            }
            FXP_CLOSE => {
                if let Some(f) = r.bytes().and_then(|h| self.handles.remove(h)) {
                    ops.push(FileOp::Close {
                        path: f.path,
                        write: f.write,
                        read_bytes: f.read_bytes,
                        written_bytes: f.written_bytes,
                    });
                }
            }
            FXP_REMOVE => ops.extend(r.string().map(|path| FileOp::Remove { path })),
            FXP_MKDIR => ops.extend(r.string().map(|path| FileOp::Mkdir { path })),
            FXP_RMDIR => ops.extend(r.string().map(|path| FileOp::Rmdir { path })),
            FXP_RENAME => {
                if let (Some(from), Some(to)) = (r.string(), r.string()) {
                    ops.push(FileOp::Rename { from, to });
                }
            }
            // OpenSSH's sftp renames with this extension.
            FXP_EXTENDED if r.bytes() == Some(b"posix-rename@openssh.com".as_slice()) => {
                if let (Some(from), Some(to)) = (r.string(), r.string()) {
                    ops.push(FileOp::Rename { from, to });
                }
            }
            _ => {}
        }
    }

    fn response(&mut self, head: &[u8], ops: &mut Vec<FileOp>) {
        let mut r = Rd(head);
        let (Some(kind), Some(id)) = (r.u8(), r.u32()) else {
            return;
        };
        let pending = self.pending.remove(&id);
        match (kind, pending) {
            (FXP_HANDLE, Some(Pending::Open { path, flags })) => {
                if let Some(h) = r.bytes()
                    && self.handles.len() < MAX_TRACKED
                {
                    ops.push(FileOp::Open {
                        path: path.clone(),
                        read: flags & FXF_READ != 0,
                        write: flags & FXF_WRITE != 0,
                    });
                    self.handles.insert(
                        h.to_vec(),
                        OpenFile {
                            path,
                            write: flags & FXF_WRITE != 0,
                            read_bytes: 0,
                            written_bytes: 0,
                        },
                    );
                }
            }
            (FXP_DATA, Some(Pending::Read { handle })) => {
                if let (Some(len), Some(f)) = (r.u32(), self.handles.get_mut(&handle)) {
                    f.read_bytes = f.read_bytes.saturating_add(u64::from(len));
                }
            }
            (FXP_STATUS, _) | (_, _) => {}
        }
    }
}

#[cfg(test)]
mod tests;
