//! Reads an asciicast v2 file back: the header, then the events one by one.
//!
//! A process killed while writing (kill -9, power loss) can leave the last line cut short;
//! that torn line is dropped and reported by [`CastReader::torn`], everything before it is
//! read. A malformed line anywhere else is an error (the file was damaged or is not a cast).
//! Lines are read with a length cap, so a hostile file cannot make the reader hold more than
//! [`MAX_LINE`] bytes at once.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{Header, RecordingError};

/// Longest line read (an event is at most one relayed packet, escaped: far below this).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// The kind of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventCode {
    /// `o`: terminal output (also the bastion's own notes).
    Output,
    /// `i`: keyboard input.
    Input,
    /// `r`: a resize, data `COLSxROWS`.
    Resize,
    /// `m`: a marker.
    Marker,
}

impl EventCode {
    fn parse(code: &str) -> Option<EventCode> {
        match code {
            "o" => Some(EventCode::Output),
            "i" => Some(EventCode::Input),
            "r" => Some(EventCode::Resize),
            "m" => Some(EventCode::Marker),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventCode::Output => "o",
            EventCode::Input => "i",
            EventCode::Resize => "r",
            EventCode::Marker => "m",
        }
    }
}

/// One event: seconds since the start, its kind and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct CastEvent {
    pub time: f64,
    pub code: EventCode,
    pub data: String,
}

/// A whole recording read into memory (see [`read_cast`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub header: Header,
    pub events: Vec<CastEvent>,
    /// The last line was cut short (the writer was killed) and was dropped.
    pub torn: bool,
}

/// Reads a cast from any buffered reader, event by event.
pub struct CastReader<R> {
    inner: R,
    header: Header,
    /// Lines read so far (the header is line 1).
    line: usize,
    torn: bool,
    done: bool,
    buf: Vec<u8>,
}

/// One line, without its newline; `complete` is false when the input ended before one.
fn read_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    line: usize,
) -> Result<Option<bool>, RecordingError> {
    buf.clear();
    let limit = u64::try_from(MAX_LINE)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let n = r
        .by_ref()
        .take(limit)
        .read_until(b'\n', buf)
        .map_err(RecordingError::ReadCast)?;
    if n == 0 {
        return Ok(None);
    }
    let complete = buf.last() == Some(&b'\n');
    if complete {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(malformed(line, "line too long"));
    }
    Ok(Some(complete))
}

fn malformed(line: usize, problem: &str) -> RecordingError {
    RecordingError::Malformed {
        line,
        problem: problem.to_string(),
    }
}

fn parse_event(bytes: &[u8]) -> Option<CastEvent> {
    let (time, code, data): (f64, String, String) = serde_json::from_slice(bytes).ok()?;
    let code = EventCode::parse(&code)?;
    (time.is_finite() && time >= 0.0).then_some(CastEvent { time, code, data })
}

impl<R: BufRead> CastReader<R> {
    /// Reads and checks the header line (version 2).
    pub fn new(mut inner: R) -> Result<CastReader<R>, RecordingError> {
        let mut buf = Vec::new();
        match read_line(&mut inner, &mut buf, 1)? {
            Some(true) => {}
            Some(false) => return Err(malformed(1, "header line is incomplete")),
            None => return Err(malformed(1, "empty recording")),
        }
        let header: Header =
            serde_json::from_slice(&buf).map_err(|_| malformed(1, "header is not JSON"))?;
        if header.version != 2 {
            return Err(malformed(1, "not asciicast version 2"));
        }
        Ok(CastReader {
            inner,
            header,
            line: 1,
            torn: false,
            done: false,
            buf,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// True once a torn last line was found (and dropped).
    pub fn torn(&self) -> bool {
        self.torn
    }

    /// The next event, `None` at the end.
    pub fn next_event(&mut self) -> Result<Option<CastEvent>, RecordingError> {
        while !self.done {
            self.line += 1;
            let complete = match read_line(&mut self.inner, &mut self.buf, self.line) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            };
            if let Some(ev) = parse_event(&self.buf) {
                return Ok(Some(ev));
            }
            if !complete {
                // Only the last line can lack its newline: the writer was cut off.
                self.torn = true;
                break;
            }
            if !self.buf.is_empty() {
                self.done = true;
                return Err(malformed(self.line, "not an asciicast event"));
            }
            // An empty line: skipped.
        }
        self.done = true;
        Ok(None)
    }
}

impl<R: BufRead> Iterator for CastReader<R> {
    type Item = Result<CastEvent, RecordingError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// Reads a whole `.cast` file into memory.
pub fn read_cast(path: &Path) -> Result<Cast, RecordingError> {
    let file = std::fs::File::open(path).map_err(|source| RecordingError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_from(BufReader::new(file))
}

/// Reads a whole cast from `reader` into memory.
pub(crate) fn read_from(reader: impl Read) -> Result<Cast, RecordingError> {
    let mut r = CastReader::new(BufReader::new(reader))?;
    let mut events = Vec::new();
    while let Some(ev) = r.next_event()? {
        events.push(ev);
    }
    Ok(Cast {
        header: r.header.clone(),
        events,
        torn: r.torn,
    })
}
