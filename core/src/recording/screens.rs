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
