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

/// A terminal state to resume a replay from: the screen after every event at or before
/// `time` (escape sequences drawing it on a `cols` x `rows` terminal). A recording only ever
/// grows, so a checkpoint of it stays true.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub time: f64,
    pub cols: usize,
    pub rows: usize,
    pub dump: String,
}

/// What [`frames_from`] draws and how.
#[derive(Debug, Clone, Copy)]
pub struct Replay<'c> {
    pub from: f64,
    pub to: f64,
    /// Changes less than this many seconds apart are drawn once.
    pub min_gap: f64,
    /// Most frames (capped at [`MAX_KEYFRAMES`]).
    pub max: usize,
    /// A checkpoint before `from` to start at instead of the start of the recording: the
    /// events up to it are read but not drawn (drawing is most of a replay's cost).
    pub resume: Option<&'c Checkpoint>,
    /// Take a checkpoint every this many seconds of recording on the way to `from`.
    pub checkpoint_every: f64,
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
    let replay = Replay {
        from,
        to,
        min_gap,
        max,
        resume: None,
        checkpoint_every: f64::INFINITY,
    };
    frames_from(reader, &replay).map(|(f, _)| f)
}

fn checkpoint(vt: &Terminal, time: f64) -> Checkpoint {
    let (cols, rows) = vt.size();
    Checkpoint {
        time,
        cols,
        rows,
        dump: vt.dump(),
    }
}

/// [`frames`], resumed from a checkpoint when given, and the checkpoints taken on the way.
pub fn frames_from<R: BufRead>(
    reader: &mut CastReader<R>,
    r: &Replay<'_>,
) -> Result<(Frames, Vec<Checkpoint>), RecordingError> {
    let size_err = |_| RecordingError::Malformed {
        line: 1,
        problem: "terminal size".into(),
    };
    let (mut vt, skip) = match r.resume.filter(|c| c.time < r.from) {
        Some(c) => {
            let mut vt = Terminal::new(c.cols.clamp(1, MAX_SIZE), c.rows.clamp(1, MAX_SIZE))
                .map_err(size_err)?;
            vt.feed(c.dump.as_str());
            (vt, Some(c.time))
        }
        None => {
            let h = reader.header();
            let cols = usize::try_from(h.width).unwrap_or(80).clamp(1, MAX_SIZE);
            let rows = usize::try_from(h.height).unwrap_or(24).clamp(1, MAX_SIZE);
            (Terminal::new(cols, rows).map_err(size_err)?, None)
        }
    };
    let (from, to, min_gap) = (r.from, r.to, r.min_gap);
    let max = r.max.clamp(1, MAX_KEYFRAMES);
    let mut out = Frames {
        frames: Vec::new(),
        next: None,
        end: None,
    };
    let mut taken = Vec::new();
    let mut next_cp = skip.unwrap_or(0.0) + r.checkpoint_every;
    let mut fed: Option<f64> = None;
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
            return Ok((out, taken));
        };
        if skip.is_some_and(|s| ev.time <= s) {
            last = ev.time;
            continue;
        }
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
                return Ok((out, taken));
            }
        } else if let Some(f) = fed
            && ev.time > f
            && f >= next_cp
        {
            // Every event at or before `f` is drawn, none after it yet.
            taken.push(checkpoint(&vt, f));
            next_cp = f + r.checkpoint_every;
        }
        last = ev.time;
        if apply(&mut vt, &ev) {
            fed = Some(ev.time);
            if started {
                pending.get_or_insert(ev.time);
            }
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
    fn a_replay_resumed_from_a_checkpoint_draws_what_one_from_the_start_draws() {
        // A longer session: a line a second for 100 s, a resize half way.
        let mut lines: Vec<String> = (1..=100)
            .map(|i| format!(r#"[{i}.0,"o","line {i}\r\n"]"#))
            .collect();
        lines.insert(50, r#"[50.5,"r","30x4"]"#.to_string());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let every = Replay {
            from: 95.0,
            to: 100.0,
            min_gap: 0.01,
            max: 100,
            resume: None,
            checkpoint_every: 10.0,
        };
        let (whole, cps) = frames_from(&mut cast(&refs), &every).unwrap();
        let times: Vec<f64> = cps.iter().map(|c| c.time).collect();
        assert_eq!(
            times,
            [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        for cp in &cps {
            for from in [cp.time + 0.5, 95.0] {
                let plain = frames(&mut cast(&refs), from, from + 5.0, 0.01, 100).unwrap();
                let resumed = Replay {
                    from,
                    to: from + 5.0,
                    resume: Some(cp),
                    ..every
                };
                let (f, _) = frames_from(&mut cast(&refs), &resumed).unwrap();
                assert_eq!(f, plain, "from {from} resumed at {}", cp.time);
            }
        }
        assert_eq!(whole.frames[0].text[2], "line 94");
        assert_eq!(whole.frames[0].cols, 30);
        // A checkpoint at or after `from` is not used.
        let late = Replay {
            resume: cps.last(),
            from: 50.0,
            to: 55.0,
            ..every
        };
        let (f, _) = frames_from(&mut cast(&refs), &late).unwrap();
        assert_eq!(f, frames(&mut cast(&refs), 50.0, 55.0, 0.01, 100).unwrap());
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
