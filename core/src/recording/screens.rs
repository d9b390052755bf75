//! Screens of a recording at chosen times, drawn by the same virtual terminal as the typed
//! commands, for the reviewer console's player: it fetches keyframes for a time range and
//! the events between them, and seeks by jumping to a keyframe. The recording is read as a
//! stream from its start up to the end of the range, never held whole, so a 100 MB
//! recording opens and seeks in bounded memory (time grows with the position, not the
//! size); the number of keyframes and events per call is capped.

use std::io::BufRead;

use avt::Terminal;
use serde::Serialize;

use super::RecordingError;
use super::reader::{CastEvent, CastReader, EventCode};
use super::typed::MAX_SIZE;

/// Most keyframes returned by one call.
pub const MAX_KEYFRAMES: usize = 600;
/// Most events returned by one call.
pub const MAX_EVENTS: usize = 100_000;

/// The screen at a moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Keyframe {
    /// Seconds from the start.
    pub time: f64,
    pub cols: usize,
    pub rows: usize,
    /// Escape sequences that draw this screen on a `cols` x `rows` terminal.
    pub screen: String,
    /// The screen's text, one string per row (search, accessibility, tests).
    pub text: Vec<String>,
}

fn size_of(data: &str) -> Option<(usize, usize)> {
    let (c, r) = data.split_once('x')?;
    let c: usize = c.trim().parse().ok()?;
    let r: usize = r.trim().parse().ok()?;
    Some((c.clamp(1, MAX_SIZE), r.clamp(1, MAX_SIZE)))
}

fn frame(vt: &Terminal, time: f64) -> Keyframe {
    let (cols, rows) = vt.size();
    Keyframe {
        time,
        cols,
        rows,
        screen: vt.dump(),
        text: vt
            .screen()
            .visible_lines()
            .map(|l| l.text().trim_end().to_string())
            .collect(),
    }
}

/// Keyframes every `step` seconds from `from` to `to` (at most [`MAX_KEYFRAMES`]), and the
/// events between `from` and `to` (at most [`MAX_EVENTS`]).
pub fn screens<R: BufRead>(
    reader: &mut CastReader<R>,
    from: f64,
    to: f64,
    step: f64,
) -> Result<(Vec<Keyframe>, Vec<CastEvent>), RecordingError> {
    let h = reader.header();
    let cols = usize::try_from(h.width).unwrap_or(80).clamp(1, MAX_SIZE);
    let rows = usize::try_from(h.height).unwrap_or(24).clamp(1, MAX_SIZE);
    let mut vt = Terminal::new(cols, rows).map_err(|_| RecordingError::Malformed {
        line: 1,
        problem: "terminal size".into(),
    })?;
    let step = if step.is_finite() && step > 0.0 {
        step
    } else {
        to - from
    };
    let mut next = from;
    let mut frames = Vec::new();
    let mut events = Vec::new();
    let emit = |vt: &Terminal, upto: f64, next: &mut f64, frames: &mut Vec<Keyframe>| {
        while *next <= upto && *next <= to && frames.len() < MAX_KEYFRAMES {
            frames.push(frame(vt, *next));
            if step <= 0.0 {
                *next = f64::INFINITY;
            } else {
                *next += step;
            }
        }
    };
    while let Some(ev) = reader.next_event()? {
        // The screen just before this event is the screen at every keyframe time before it.
        emit(&vt, ev.time - f64::EPSILON, &mut next, &mut frames);
        if ev.time > to {
            break;
        }
        match ev.code {
            EventCode::Output => vt.feed(ev.data.as_str()),
            EventCode::Resize => {
                if let Some((c, r)) = size_of(&ev.data) {
                    vt.resize(c, r);
                }
            }
            EventCode::Input | EventCode::Marker => {}
        }
        if ev.time >= from && events.len() < MAX_EVENTS {
            events.push(ev);
        }
    }
    emit(&vt, to, &mut next, &mut frames);
    Ok((frames, events))
}

/// The screen as the reviewer console's player draws it: text rows and the cursor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frame {
    /// Seconds from the start.
    pub time: f64,
    pub cols: usize,
    pub rows: usize,
    /// The screen's text, one string per row (trailing blanks trimmed).
    pub text: Vec<String>,
    /// Column and row of the cursor, when it is shown.
    pub cursor: Option<(usize, usize)>,
}

fn text_frame(vt: &Terminal, time: f64) -> Frame {
    let (cols, rows) = vt.size();
    Frame {
        time,
        cols,
        rows,
        text: vt
            .screen()
            .visible_lines()
            .map(|l| l.text().trim_end().to_string())
            .collect(),
        cursor: vt.cursor().position(),
    }
}

/// What [`frames`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frames {
    /// The screen at `from`, then after each change up to `to`.
    pub frames: Vec<Frame>,
    /// Where to ask again when the frame cap cut the range short.
    pub next: Option<f64>,
    /// The time of the last event, when the recording was read to its end.
    pub end: Option<f64>,
}

fn apply(vt: &mut Terminal, ev: &CastEvent) -> bool {
    match ev.code {
        EventCode::Output => {
            vt.feed(ev.data.as_str());
            true
        }
        EventCode::Resize => match size_of(&ev.data) {
            Some((c, r)) => {
                vt.resize(c, r);
                true
            }
            None => false,
        },
        EventCode::Input | EventCode::Marker => false,
    }
}

/// The screen at `from`, then the screen after each change until `to` (changes less than
/// `min_gap` seconds apart are drawn once), at most `max` frames (capped at
/// [`MAX_KEYFRAMES`]). Streams the recording from its start up to `to`, never more.
pub fn frames<R: BufRead>(
    reader: &mut CastReader<R>,
    from: f64,
    to: f64,
    min_gap: f64,
    max: usize,
) -> Result<Frames, RecordingError> {
    let h = reader.header();
    let cols = usize::try_from(h.width).unwrap_or(80).clamp(1, MAX_SIZE);
    let rows = usize::try_from(h.height).unwrap_or(24).clamp(1, MAX_SIZE);
    let mut vt = Terminal::new(cols, rows).map_err(|_| RecordingError::Malformed {
        line: 1,
        problem: "terminal size".into(),
    })?;
    let max = max.clamp(1, MAX_KEYFRAMES);
    let mut out = Frames {
        frames: Vec::new(),
        next: None,
        end: None,
    };
    let mut started = false;
    let mut last = from;
    // The time of a change not drawn yet.
    let mut pending: Option<f64> = None;
    loop {
        let Some(ev) = reader.next_event()? else {
            if !started {
                out.frames.push(text_frame(&vt, from));
            }
            if let Some(p) = pending {
                out.frames.push(text_frame(&vt, p));
            }
            out.end = Some(last.max(from));
            return Ok(out);
        };
        if !started && ev.time >= from {
            started = true;
            out.frames.push(text_frame(&vt, from));
        }
        if started {
            if let Some(p) = pending
                && ev.time - p >= min_gap
            {
                out.frames.push(text_frame(&vt, p));
                pending = None;
            }
            if ev.time > to || out.frames.len() >= max {
                if let Some(p) = pending {
                    out.frames.push(text_frame(&vt, p));
                }
                out.next = (ev.time <= to).then_some(ev.time);
                return Ok(out);
            }
        }
        last = ev.time;
        if apply(&mut vt, &ev) && started {
            pending.get_or_insert(ev.time);
        }
    }
}

/// A live session's screen on the server, for a reviewer watching it: started from the
/// feed's snapshot, advanced by its events, drawn as [`Frame`]s.
pub struct LiveScreen {
    vt: Terminal,
}

impl LiveScreen {
    /// The screen of a snapshot (`dump`: escape sequences drawing it on `cols` x `rows`).
    pub fn new(cols: usize, rows: usize, dump: &str) -> Option<LiveScreen> {
        let mut vt = Terminal::new(cols.clamp(1, MAX_SIZE), rows.clamp(1, MAX_SIZE)).ok()?;
        vt.feed(dump);
        Some(LiveScreen { vt })
    }

    /// Applies one live event (`o`, `r`; others change nothing); whether the screen changed.
    pub fn apply(&mut self, code: &str, data: &str) -> bool {
        let code = match code {
            "o" => EventCode::Output,
            "r" => EventCode::Resize,
            _ => return false,
        };
        apply(
            &mut self.vt,
            &CastEvent {
                time: 0.0,
                code,
                data: data.to_string(),
            },
        )
    }

    pub fn frame(&self, time: f64) -> Frame {
        text_frame(&self.vt, time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cast(lines: &[&str]) -> CastReader<std::io::Cursor<Vec<u8>>> {
        let mut text = String::from("{\"version\":2,\"width\":20,\"height\":3}\n");
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        CastReader::new(std::io::Cursor::new(text.into_bytes())).unwrap()
    }

    const SESSION: &[&str] = &[
        r#"[0.5,"o","$ "]"#,
        r#"[1.0,"i","l"]"#,
        r#"[1.0,"o","l"]"#,
        r#"[1.01,"o","s"]"#,
        r#"[2.0,"o","\r\nfile-a\r\n$ "]"#,
        r#"[3.0,"m","command: ls"]"#,
        r#"[4.0,"o","exit"]"#,
    ];

    #[test]
    fn frames_start_at_from_and_follow_each_change() {
        let f = frames(&mut cast(SESSION), 0.0, 10.0, 0.05, 100).unwrap();
        let times: Vec<f64> = f.frames.iter().map(|f| f.time).collect();
        // `l` and `s` 10 ms apart are one frame; input and markers draw nothing.
        assert_eq!(times, [0.0, 0.5, 1.0, 2.0, 4.0]);
        assert_eq!(f.frames[3].text[0], "$ ls");
        assert_eq!(f.frames[3].text[1], "file-a");
        assert_eq!(f.frames[4].text[2], "$ exit");
        assert_eq!((f.next, f.end), (None, Some(4.0)));
    }

    #[test]
    fn a_seek_draws_the_screen_as_it_was_then_and_a_cap_says_where_to_go_on() {
        let f = frames(&mut cast(SESSION), 2.5, 10.0, 0.05, 100).unwrap();
        assert_eq!(f.frames[0].time, 2.5);
        assert_eq!(f.frames[0].text[1], "file-a");
        let f = frames(&mut cast(SESSION), 0.0, 10.0, 0.05, 2).unwrap();
        assert_eq!(f.frames.len(), 2);
        assert_eq!(f.next, Some(1.0));
        assert_eq!(f.end, None);
        let f = frames(&mut cast(SESSION), 0.0, 1.5, 0.05, 100).unwrap();
        assert_eq!(f.frames.last().unwrap().time, 1.0);
        assert_eq!((f.next, f.end), (None, None));
    }

    #[test]
    fn a_live_screen_starts_from_the_snapshot() {
        let mut vt = Terminal::new(20, 3).unwrap();
        vt.feed("$ echo hi\r\nhi\r\n$ ");
        let mut live = LiveScreen::new(20, 3, &vt.dump()).unwrap();
        assert_eq!(live.frame(0.0).text[1], "hi");
        assert!(live.apply("o", "whoami"));
        assert!(!live.apply("i", "x"));
        assert_eq!(live.frame(1.0).text[2], "$ whoami");
    }
}
