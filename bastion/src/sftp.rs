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
mod tests {
    use super::*;

    fn pkt(kind: u8, id: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((body.len() + 5) as u32).to_be_bytes());
        v.push(kind);
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn tracks_an_upload_byte_by_byte() {
        let mut t = SftpTracker::new();
        let mut open = s(b"/tmp/f");
        open.extend_from_slice(&(FXF_WRITE | 0x08).to_be_bytes());
        open.extend_from_slice(&0u32.to_be_bytes());
        let mut write = s(b"H1");
        write.extend_from_slice(&0u64.to_be_bytes());
        write.extend_from_slice(&s(&[7u8; 10000]));
        let client: Vec<u8> = [
            pkt(FXP_OPEN, 1, &open),
            pkt(FXP_WRITE, 2, &write),
            pkt(FXP_CLOSE, 3, &s(b"H1")),
        ]
        .concat();
        let mut ops = Vec::new();
        // Response to the open arrives before the write.
        ops.extend(t.from_client(&client[..20]));
        let rest: Vec<u8> = client[20..].to_vec();
        let first_len = 4 + 5 + open.len();
        ops.extend(t.from_client(&rest[..first_len - 20]));
        ops.extend(t.from_server(&pkt(FXP_HANDLE, 1, &s(b"H1"))));
        for b in &rest[first_len - 20..] {
            ops.extend(t.from_client(std::slice::from_ref(b)));
        }
        assert_eq!(
            ops,
            vec![
                FileOp::Open {
                    path: "/tmp/f".into(),
                    read: false,
                    write: true
                },
                FileOp::Close {
                    path: "/tmp/f".into(),
                    write: true,
                    read_bytes: 0,
                    written_bytes: 10000
                },
            ]
        );
    }

    #[test]
    fn tracks_download_rename_remove_mkdir() {
        let mut t = SftpTracker::new();
        let mut open = s(b"/etc/x");
        open.extend_from_slice(&FXF_READ.to_be_bytes());
        open.extend_from_slice(&0u32.to_be_bytes());
        t.from_client(&pkt(FXP_OPEN, 1, &open));
        t.from_server(&pkt(FXP_HANDLE, 1, &s(b"h")));
        let mut read = s(b"h");
        read.extend_from_slice(&0u64.to_be_bytes());
        read.extend_from_slice(&4096u32.to_be_bytes());
        t.from_client(&pkt(FXP_READ, 2, &read));
        t.from_server(&pkt(FXP_DATA, 2, &s(&[1u8; 300])));
        let ops = t.from_client(&pkt(FXP_CLOSE, 3, &s(b"h")));
        assert_eq!(
            ops,
            vec![FileOp::Close {
                path: "/etc/x".into(),
                write: false,
                read_bytes: 300,
                written_bytes: 0
            }]
        );
        let ops = t.from_client(
            &[
                pkt(FXP_RENAME, 4, &[s(b"a"), s(b"b")].concat()),
                pkt(FXP_REMOVE, 5, &s(b"c")),
                pkt(
                    FXP_MKDIR,
                    6,
                    &[s(b"d"), 0u32.to_be_bytes().to_vec()].concat(),
                ),
            ]
            .concat(),
        );
        let ext = t.from_client(&pkt(
            FXP_EXTENDED,
            7,
            &[s(b"posix-rename@openssh.com"), s(b"x"), s(b"y")].concat(),
        ));
        assert_eq!(
            ext,
            vec![FileOp::Rename {
                from: "x".into(),
                to: "y".into()
            }]
        );
        assert_eq!(
            ops,
            vec![
                FileOp::Rename {
                    from: "a".into(),
                    to: "b".into()
                },
                FileOp::Remove { path: "c".into() },
                FileOp::Mkdir { path: "d".into() }
            ]
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut t = SftpTracker::new();
        assert_eq!(
            t.from_client(&[0xff, 0xff, 0xff, 0xff, 1, 2]),
            vec![FileOp::LostSync {
                direction: "client"
            }]
        );
        assert!(t.from_client(b"more").is_empty());
        let mut seed = 0x1234_5678_u32;
        for _ in 0..2000 {
            let mut t = SftpTracker::new();
            let mut buf = Vec::new();
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                buf.push(seed as u8);
            }
            // Small declared lengths so packets complete.
            buf[0] = 0;
            buf[1] = 0;
            buf[2] = 0;
            t.from_client(&buf);
            t.from_server(&buf);
        }
        for kind in [
            FXP_OPEN, FXP_WRITE, FXP_READ, FXP_CLOSE, FXP_RENAME, FXP_HANDLE, FXP_DATA,
        ] {
            let mut t = SftpTracker::new();
            t.from_client(&pkt(kind, 1, &[0xff, 0xff, 0xff]));
            t.from_server(&pkt(kind, 1, &[0xff, 0xff]));
        }
    }
}
