//! A passive observer of the legacy SCP protocol (`scp -O`): from the exec command it learns
//! the direction (`scp -t` receives = upload, `scp -f` sends = download), then reads the
//! sender's control lines (`C0644 SIZE NAME`, `D0755 0 NAME`, `E`, `T...`) and skips file
//! contents by count, reporting each file with its name and size for the recording.
//!
//! Threat: hostile bytes crashing the bastion or growing memory. Mitigation: control lines are
//! capped at [`MAX_LINE`]; an unparsable line stops observation (reported once); never panics.

/// Longest control line kept.
pub const MAX_LINE: usize = 4096;

/// Which way files move, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `scp -t` on the target: the client sends files.
    Upload,
    /// `scp -f` on the target: the target sends files.
    Download,
}

/// Recognises an SCP exec command: `scp [options] -t|-f PATH`.
pub fn scp_command(command: &str) -> Option<(Direction, String)> {
    let mut words = command.split_whitespace();
    let prog = words.next()?;
    if prog != "scp" && !prog.ends_with("/scp") {
        return None;
    }
    let mut dir = None;
    let mut path = None;
    for w in words {
        match w {
            "-t" => dir = Some(Direction::Upload),
            "-f" => dir = Some(Direction::Download),
            "--" => {}
            w if w.starts_with('-') && path.is_none() => {
                if w.contains('t') && !w.contains('f') && w.len() <= 5 {
                    dir = dir.or(Some(Direction::Upload));
                } else if w.contains('f') && w.len() <= 5 {
                    dir = dir.or(Some(Direction::Download));
                }
            }
            w => path = Some(w.to_string()),
        }
    }
    Some((dir?, path.unwrap_or_default()))
}

/// An SCP file event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScpOp {
    File {
        direction: Direction,
        mode: String,
        size: u64,
        name: String,
    },
    EnterDir {
        name: String,
    },
    LeaveDir,
    LostSync,
}

impl std::fmt::Display for ScpOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScpOp::File {
                direction,
                mode,
                size,
                name,
            } => {
                let d = match direction {
                    Direction::Upload => "upload",
                    Direction::Download => "download",
                };
                write!(f, "scp {d} {name:?} mode {mode} size {size} bytes")
            }
            ScpOp::EnterDir { name } => write!(f, "scp directory {name:?}"),
            ScpOp::LeaveDir => write!(f, "scp end of directory"),
            ScpOp::LostSync => write!(f, "scp observation stopped: malformed control line"),
        }
    }
}

/// Reads the sending side's stream.
pub struct ScpTracker {
    direction: Direction,
    line: Vec<u8>,
    /// File bytes still to skip, plus the trailing status byte.
    skip: u64,
    dead: bool,
}

impl ScpTracker {
    pub fn new(direction: Direction) -> Self {
        Self {
            direction,
            line: Vec::new(),
            skip: 0,
            dead: false,
        }
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Feeds bytes of the sending side (client for uploads, target for downloads).
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<ScpOp> {
        let mut ops = Vec::new();
        while !data.is_empty() && !self.dead {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.skip -= n as u64;
                data = data.get(n..).unwrap_or(&[]);
                continue;
            }
            let Some((&b, rest)) = data.split_first() else {
                break;
            };
            data = rest;
            if self.line.is_empty() && b == 0 {
                continue; // a stray status byte
            }
            if b != b'\n' {
                if self.line.len() >= MAX_LINE {
                    self.dead = true;
                    ops.push(ScpOp::LostSync);
                    break;
                }
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
            match self.control(&line) {
                Some(op) => ops.extend(op),
                None => {
                    self.dead = true;
                    ops.push(ScpOp::LostSync);
                }
            }
        }
        ops
    }

    fn control(&mut self, line: &str) -> Option<Option<ScpOp>> {
        let (kind, rest) = (line.get(..1)?, line.get(1..)?);
        match kind {
            "C" | "D" => {
                let mut parts = rest.splitn(3, ' ');
                let mode = parts.next()?;
                let size: u64 = parts.next()?.parse().ok()?;
                let name = parts.next()?.to_string();
                if mode.len() != 4 || !mode.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
                    return None;
                }
                if kind == "D" {
                    return Some(Some(ScpOp::EnterDir { name }));
                }
                self.skip = size.saturating_add(1);
                Some(Some(ScpOp::File {
                    direction: self.direction,
                    mode: mode.to_string(),
                    size,
                    name,
                }))
            }
            "E" => Some(Some(ScpOp::LeaveDir)),
            "T" => Some(None),
            // Warnings/errors (\x01, \x02) travel as lines too.
            "\u{1}" | "\u{2}" => Some(None),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_commands() {
        assert_eq!(
            scp_command("scp -t /tmp/x"),
            Some((Direction::Upload, "/tmp/x".into()))
        );
        assert_eq!(
            scp_command("scp -v -f -- /etc/hosts"),
            Some((Direction::Download, "/etc/hosts".into()))
        );
        assert_eq!(
            scp_command("/usr/bin/scp -r -t ."),
            Some((Direction::Upload, ".".into()))
        );
        assert_eq!(scp_command("ls -t"), None);
        assert_eq!(scp_command("scp"), None);
    }

    #[test]
    fn parses_a_stream_in_pieces() {
        let mut t = ScpTracker::new(Direction::Upload);
        let mut stream =
            b"T1700000000 0 1700000000 0\nC0644 5 a b.txt\nhello\0D0755 0 dir\nC0600 0 e\n\0E\n"
                .to_vec();
        stream.extend_from_slice(b"C0644 3 z\nxyz\0");
        let mut ops = Vec::new();
        for chunk in stream.chunks(3) {
            ops.extend(t.feed(chunk));
        }
        assert_eq!(
            ops,
            vec![
                ScpOp::File {
                    direction: Direction::Upload,
                    mode: "0644".into(),
                    size: 5,
                    name: "a b.txt".into()
                },
                ScpOp::EnterDir { name: "dir".into() },
                ScpOp::File {
                    direction: Direction::Upload,
                    mode: "0600".into(),
                    size: 0,
                    name: "e".into()
                },
                ScpOp::LeaveDir,
                ScpOp::File {
                    direction: Direction::Upload,
                    mode: "0644".into(),
                    size: 3,
                    name: "z".into()
                },
            ]
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut t = ScpTracker::new(Direction::Download);
        assert_eq!(t.feed(b"Cxyz\n"), vec![ScpOp::LostSync]);
        assert!(t.feed(b"C0644 1 a\n").is_empty());
        let mut t = ScpTracker::new(Direction::Download);
        assert_eq!(t.feed(&vec![b'a'; MAX_LINE + 10]), vec![ScpOp::LostSync]);
        let mut t = ScpTracker::new(Direction::Download);
        assert_eq!(
            t.feed(b"C0644 99999999999999999999999 x\n"),
            vec![ScpOp::LostSync]
        );
        let mut t = ScpTracker::new(Direction::Download);
        assert!(!t.feed(b"C0644 18446744073709551615 x\n").is_empty());
        for b in 0..=255u8 {
            let mut t = ScpTracker::new(Direction::Upload);
            t.feed(&[b, b'\n', b, 0xff, b'\n']);
        }
    }
}
