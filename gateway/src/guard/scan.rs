//! Raw HTTP/1 framing scanner.
//!
//! Threat: hyper normalises some ambiguous framings before the handler sees the header map
//! (equal duplicate `Content-Length`s merged; `Content-Length` dropped beside
//! `Transfer-Encoding`), so a header-map check alone cannot refuse them.
//! Mitigation: the connection's read side feeds every byte hyper receives through this
//! scanner, which follows HTTP/1 message boundaries exactly as hyper does (heads, fixed-length
//! and chunked bodies) and flags a hostile head by its request number in [`Verdicts`]. If it
//! ever cannot follow the framing, every later request on the connection is refused
//! (fail closed); hyper itself closes the connection on the inputs where that can happen.

use gatehouse_core::config::defaults::{MAX_HEADER_BYTES, MAX_HEADERS};

use super::{GuardError, Verdicts, is_digits};

/// Heads longer than this are not followed (hyper answers 431 well before).
const HEAD_CAP: usize = MAX_HEADER_BYTES + 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages or inside a head; `eol` tracks the bytes after the last LF.
    Head {
        eol: Eol,
    },
    Fixed(u64),
    ChunkStart,
    ChunkSize(u64),
    ChunkLws(u64),
    ChunkExt(u64),
    ChunkSizeLf(u64),
    ChunkBody(u64),
    ChunkBodyCr,
    ChunkBodyLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    /// Stopped: HTTP/2 preface, CONNECT, a refused request, or framing lost.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    None,
    Lf,
    LfCr,
}

/// Follows one HTTP/1 connection's request stream.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    head: Vec<u8>,
    heads: u64,
    /// Bytes of the next message arrived (leading empty lines included) and its head is not
    /// complete yet: the head deadline runs.
    started: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Head { eol: Eol::None },
            head: Vec::new(),
            heads: 0,
            started: false,
        }
    }
}

impl Scanner {
    /// Request heads completed so far.
    #[cfg(test)]
    pub fn heads_seen(&self) -> u64 {
        self.heads
    }

    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// A request head has begun (any byte of it, even an empty line before the request
    /// line) and is not complete.
    pub fn mid_head(&self) -> bool {
        self.started && matches!(self.state, State::Head { .. })
    }

    /// Stops scanning (after a protocol upgrade: the bytes are no longer HTTP).
    pub fn stop(&mut self) {
        self.state = State::Off;
        self.head = Vec::new();
    }

    /// Feeds bytes as they are read from the client.
    pub fn feed(&mut self, mut data: &[u8], verdicts: &Verdicts) {
        while !data.is_empty() {
            let used = match self.state {
                State::Off => return,
                State::Head { eol } => self.feed_head(data, eol, verdicts),
                State::Fixed(n) => {
                    let take = n.min(data.len() as u64);
                    let left = n - take;
                    self.state = if left == 0 {
                        Self::HEAD
                    } else {
                        State::Fixed(left)
                    };
                    usize::try_from(take).unwrap_or(data.len())
                }
                State::ChunkBody(n) => {
                    let take = n.min(data.len() as u64);
                    let left = n - take;
                    self.state = if left == 0 {
                        State::ChunkBodyCr
                    } else {
                        State::ChunkBody(left)
                    };
                    usize::try_from(take).unwrap_or(data.len())
                }
                _ => {
                    let Some(&b) = data.first() else { return };
                    self.chunk_byte(b, verdicts);
                    1
                }
            };
            data = data.get(used..).unwrap_or_default();
        }
    }

    const HEAD: State = State::Head { eol: Eol::None };

    fn lost(&mut self, verdicts: &Verdicts) {
        verdicts.record(self.heads + 1, GuardError::FramingLost);
        self.stop();
    }

    /// Chunked-body state machine, byte for byte as hyper's decoder.
    fn chunk_byte(&mut self, b: u8, verdicts: &Verdicts) {
        let hexval = |b: u8| (b as char).to_digit(16).map(u64::from);
        let next = match (self.state, b) {
            (State::ChunkStart, b) => hexval(b).map(State::ChunkSize),
            (State::ChunkSize(n), b) if hexval(b).is_some() => n
                .checked_mul(16)
                .and_then(|n| n.checked_add(hexval(b).unwrap_or(0)))
                .map(State::ChunkSize),
            (State::ChunkSize(n) | State::ChunkLws(n), b'\t' | b' ') => Some(State::ChunkLws(n)),
            (State::ChunkSize(n) | State::ChunkLws(n), b';') => Some(State::ChunkExt(n)),
            (State::ChunkSize(n) | State::ChunkLws(n) | State::ChunkExt(n), b'\r') => {
                Some(State::ChunkSizeLf(n))
            }
            (State::ChunkExt(_), b'\n') => None,
            (State::ChunkExt(n), _) => Some(State::ChunkExt(n)),
            (State::ChunkSizeLf(0), b'\n') => Some(State::EndCr),
            (State::ChunkSizeLf(n), b'\n') => Some(State::ChunkBody(n)),
            (State::ChunkBodyCr, b'\r') => Some(State::ChunkBodyLf),
            (State::ChunkBodyLf, b'\n') => Some(State::ChunkStart),
            (State::EndCr, b'\r') => Some(State::EndLf),
            (State::Trailer, b'\r') => Some(State::TrailerLf),
            (State::EndCr | State::Trailer, _) => Some(State::Trailer),
            (State::TrailerLf, b'\n') => Some(State::EndCr),
            (State::EndLf, b'\n') => Some(Self::HEAD),
            _ => None,
        };
        match next {
            Some(s) => self.state = s,
            None => self.lost(verdicts),
        }
    }

    /// Accumulates a head until its empty line, then judges it. Returns bytes consumed.
    fn feed_head(&mut self, data: &[u8], mut eol: Eol, verdicts: &Verdicts) -> usize {
        self.started |= !data.is_empty();
        let mut start = 0;
        if self.head.is_empty() {
            // Empty lines before a request line are skipped, as httparse does.
            start = data
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(data.len());
            if start == data.len() {
                return start;
            }
        }
        let rest = data.get(start..).unwrap_or_default();
        // The head ends at a LF that follows a LF, or a LF then CR (as httparse reads it);
        // `eol` carries what the previous read ended in. Only LFs are looked at.
        let at = |i: usize| rest.get(i).copied();
        let ends_head = |i: usize| match i.checked_sub(1).map(at) {
            None => matches!(eol, Eol::Lf | Eol::LfCr),
            Some(Some(b'\n')) => true,
            Some(Some(b'\r')) => match i.checked_sub(2) {
                Some(p) => at(p) == Some(b'\n'),
                None => eol == Eol::Lf,
            },
            Some(_) => false,
        };
        let end = memchr::memchr_iter(b'\n', rest)
            .find(|&i| ends_head(i))
            .map(|i| i + 1);
        if end.is_none() {
            let n = rest.len();
            eol = match (n.checked_sub(1).and_then(at), n.checked_sub(2).and_then(at)) {
                (None, _) => eol,
                (Some(b'\n'), _) => Eol::Lf,
                (Some(b'\r'), Some(b'\n')) => Eol::LfCr,
                (Some(b'\r'), None) if eol == Eol::Lf => Eol::LfCr,
                _ => Eol::None,
            };
        }
        let take = end.unwrap_or(rest.len());
        self.head
            .extend_from_slice(rest.get(..take).unwrap_or_default());
        if end.is_none() {
            // Near hyper's head limit: hyper will answer 431 itself.
            if self.head.len() + 1024 > MAX_HEADER_BYTES {
                verdicts.arm();
            }
            if self.head.len() > HEAD_CAP {
                self.lost(verdicts);
            } else {
                self.state = State::Head { eol };
            }
            return start + take;
        }
        self.heads += 1;
        self.started = false;
        let head = std::mem::take(&mut self.head);
        // More fields than hyper accepts: hyper will answer 431 itself.
        if memchr::memchr_iter(b'\n', &head).count() > MAX_HEADERS {
            verdicts.arm();
        }
        self.state = match judge(&head) {
            Ok(framing) => framing,
            Err(why) => {
                verdicts.record(self.heads, why);
                State::Off
            }
        };
        self.head = head;
        self.head.clear();
        if self.state == State::Off {
            self.head = Vec::new();
        }
        start + take
    }
}

/// Judges a complete head: refused, or the state for its body.
fn judge(head: &[u8]) -> Result<State, GuardError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    if request_line.ends_with(b" HTTP/2.0") {
        // HTTP/2 prior-knowledge preface: served by the HTTP/2 codec, no HTTP/1 framing.
        return Ok(State::Off);
    }
    let http10 = request_line.ends_with(b" HTTP/1.0");
    let connect = request_line.starts_with(b"CONNECT ");
    let (mut cl_count, mut te_count) = (0u32, 0u32);
    let mut cl_value: &[u8] = b"";
    let mut te_value: &[u8] = b"";
    for line in lines {
        // Only Content-Length and Transfer-Encoding matter here.
        if !matches!(line.first(), Some(b'c' | b'C' | b't' | b'T')) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default();
        let value = trim(line.get(colon + 1..).unwrap_or_default());
        if name.eq_ignore_ascii_case(b"content-length") {
            cl_count += 1;
            cl_value = value;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_count += 1;
            te_value = value;
        }
    }
    if te_count > 0 && http10 {
        return Err(GuardError::TransferEncodingOnHttp10);
    }
    if cl_count > 1 {
        return Err(GuardError::DuplicateContentLength);
    }
    if cl_count > 0 && te_count > 0 {
        return Err(GuardError::ContentLengthWithTransferEncoding);
    }
    if te_count > 1 {
        return Err(GuardError::DuplicateTransferEncoding);
    }
    if te_count == 1 && !te_value.eq_ignore_ascii_case(b"chunked") {
        return Err(GuardError::UnsupportedTransferEncoding);
    }
    if cl_count == 1 && !is_digits(cl_value) {
        return Err(GuardError::BadContentLength);
    }
    if connect {
        // hyper treats CONNECT as an upgrade; the handler refuses it and closes.
        return Ok(State::Off);
    }
    if te_count == 1 {
        return Ok(State::ChunkStart);
    }
    let len = std::str::from_utf8(cl_value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(if len == 0 {
        Scanner::HEAD
    } else {
        State::Fixed(len)
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}
