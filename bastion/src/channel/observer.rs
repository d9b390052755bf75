//! What is kept of a session channel's bytes: shells and execs are recorded raw; SFTP and
//! SCP are observed (passively: the relayed bytes are never changed) for their file
//! operations, which go into the recording as notes and, for files that moved, into the
//! audit log as `ssh_file_transfer` records.

use std::sync::Mutex;

use gatehouse_core::audit::{FileProtocol, TransferDirection};

use super::request::Kind;
use crate::scp::{self, ScpOp, ScpTracker};
use crate::sftp::{FileOp, SftpTracker};

/// A file that moved through the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub protocol: FileProtocol,
    pub path: String,
    pub direction: TransferDirection,
    pub bytes: u64,
}

/// Something observed: a line for the recording, and maybe a transfer to audit.
#[derive(Debug)]
pub(crate) struct Seen {
    pub note: String,
    pub transfer: Option<Transfer>,
}

pub(crate) enum Observer {
    /// Raw input and output (shell, exec).
    Plain,
    /// SFTP file operations only.
    Sftp(Mutex<SftpTracker>),
    /// SCP file operations only.
    Scp(Mutex<ScpTracker>),
}

fn lock_ops<T, O>(m: &Mutex<T>, f: impl FnOnce(&mut T) -> Vec<O>) -> Vec<O> {
    match m.lock() {
        Ok(mut g) => f(&mut g),
        Err(_) => Vec::new(),
    }
}

/// The transfers an SFTP close reports: each direction that moved bytes; a file opened for
/// writing and closed empty is an upload of 0 bytes.
fn sftp_transfers(op: &FileOp) -> Vec<Transfer> {
    let FileOp::Close {
        path,
        write,
        read_bytes,
        written_bytes,
    } = op
    else {
        return Vec::new();
    };
    let t = |direction, bytes| Transfer {
        protocol: FileProtocol::Sftp,
        path: path.clone(),
        direction,
        bytes,
    };
    let mut out = Vec::new();
    if *written_bytes > 0 || (*write && *read_bytes == 0) {
        out.push(t(TransferDirection::Upload, *written_bytes));
    }
    if *read_bytes > 0 {
        out.push(t(TransferDirection::Download, *read_bytes));
    }
    out
}

fn sftp_seen(ops: Vec<FileOp>) -> Vec<Seen> {
    let mut seen = Vec::new();
    for op in ops {
        let mut transfers = sftp_transfers(&op).into_iter();
        seen.push(Seen {
            note: op.to_string(),
            transfer: transfers.next(),
        });
        seen.extend(transfers.map(|t| Seen {
            note: String::new(),
            transfer: Some(t),
        }));
    }
    seen
}

fn scp_seen(ops: Vec<ScpOp>) -> Vec<Seen> {
    ops.into_iter()
        .map(|op| {
            let transfer = match &op {
                ScpOp::File {
                    direction,
                    size,
                    name,
                    ..
                } => Some(Transfer {
                    protocol: FileProtocol::Scp,
                    path: name.clone(),
                    direction: match direction {
                        scp::Direction::Upload => TransferDirection::Upload,
                        scp::Direction::Download => TransferDirection::Download,
                    },
                    bytes: *size,
                }),
                _ => None,
            };
            Seen {
                note: op.to_string(),
                transfer,
            }
        })
        .collect()
}

impl Observer {
    pub fn for_kind(kind: &Kind) -> Observer {
        match kind {
            Kind::Sftp => Observer::Sftp(Mutex::new(SftpTracker::new())),
            Kind::Exec(cmd) => match scp::scp_command(cmd) {
                Some((dir, _)) => Observer::Scp(Mutex::new(ScpTracker::new(dir))),
                None => Observer::Plain,
            },
            Kind::Shell => Observer::Plain,
        }
    }

    /// Whether the raw bytes are recorded.
    pub fn is_plain(&self) -> bool {
        matches!(self, Observer::Plain)
    }

    /// Bytes from the client.
    pub fn client_bytes(&self, data: &[u8]) -> Vec<Seen> {
        match self {
            Observer::Plain => Vec::new(),
            Observer::Sftp(t) => sftp_seen(lock_ops(t, |t| t.from_client(data))),
            Observer::Scp(t) => scp_seen(lock_ops(t, |t| {
                if t.direction() == scp::Direction::Upload {
                    t.feed(data)
                } else {
                    Vec::new()
                }
            })),
        }
    }

    /// Bytes from the target.
    pub fn target_bytes(&self, data: &[u8]) -> Vec<Seen> {
        match self {
            Observer::Plain => Vec::new(),
            Observer::Sftp(t) => sftp_seen(lock_ops(t, |t| t.from_server(data))),
            Observer::Scp(t) => scp_seen(lock_ops(t, |t| {
                if t.direction() == scp::Direction::Download {
                    t.feed(data)
                } else {
                    Vec::new()
                }
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sftp_closes_become_transfers_by_direction() {
        let close = |write, read_bytes, written_bytes| FileOp::Close {
            path: "/f".into(),
            write,
            read_bytes,
            written_bytes,
        };
        let dirs = |op: FileOp| -> Vec<(TransferDirection, u64)> {
            sftp_transfers(&op)
                .into_iter()
                .map(|t| (t.direction, t.bytes))
                .collect()
        };
        use TransferDirection::{Download, Upload};
        assert_eq!(dirs(close(true, 0, 10)), [(Upload, 10)]);
        assert_eq!(dirs(close(true, 0, 0)), [(Upload, 0)]);
        assert_eq!(dirs(close(false, 7, 0)), [(Download, 7)]);
        assert_eq!(dirs(close(true, 7, 3)), [(Upload, 3), (Download, 7)]);
        assert_eq!(dirs(close(false, 0, 0)), []);
        assert!(sftp_transfers(&FileOp::Remove { path: "/f".into() }).is_empty());
        let seen = sftp_seen(vec![close(true, 7, 3)]);
        assert_eq!(seen.len(), 2);
        assert!(seen[0].note.contains("sftp close") && seen[1].note.is_empty());
    }
}
