//! Which keystrokes of a terminal session may be stored: only those the terminal showed back.
//!
//! Threat: a password typed at a `sudo`, `su` or passphrase prompt (the program turned the
//! terminal's echo off) kept in the recording, the index or the reviewer console. The
//! bastion cannot see the target's terminal modes (they change on the target without a
//! message), so it judges from what the terminal shows back, with a rule that is bounded in
//! memory and time and keeps nothing when in doubt:
//!
//! - Keystrokes arrive in chunks (one SSH data message each: a key, or a paste). A chunk's
//!   *text* is its printable characters; control keys (Enter, Backspace, Tab, Ctrl-keys) and
//!   escape sequences (arrows, function keys) are not text: they hold no secret, and the
//!   output they cause (a redrawn line, a completion, `^C`) is unknown in advance.
//! - A chunk with text is held back (not written) until the output that follows it shows
//!   its text, character for character, as the very next printable characters of output
//!   (escape sequences and control characters of the output are skipped; a line feed is not
//!   skipped). Only after a control key held in the same run may up to [`SLACK`] other
//!   output characters (what that key drew) come first. A chunk typed when nothing was held
//!   starts fresh: output that arrived before it never counts as its echo.
//! - It is judged *not echoed* when the output shows anything else first (and with it every
//!   text chunk held at that moment: the output no longer follows the keys), when an Enter
//!   is typed while nothing of it has come back [`ECHO_WAIT`] passes without any of it
//!   coming back (an Enter counts only against keystrokes: chunks of fewer than
//!   [`SHORT`] characters; a paste is judged by its characters), when more than [`HOLD_MAX`] bytes are held, or when the session ends
//!   before it came back whole.
//! - A chunk not echoed is never written: the recording gets a marker saying that N bytes
//!   were typed and not recorded. A password typed with echo off is followed by a line feed
//!   (or nothing) rather than its own characters, so it is never written, whatever comes
//!   after the Enter.
//!
//! Typed commands are taken from the virtual terminal's screen (see `typed`), which only
//! ever holds what the terminal displayed, so unechoed keys cannot reach the index either.

use std::collections::VecDeque;

use bytes::Bytes;

/// Output characters a control key may draw before the next typed character must show.
pub const SLACK: usize = 256;
/// Longest time a chunk waits for the first of its characters to come back (seconds).
pub const ECHO_WAIT: f64 = 2.0;
/// Chunks with fewer characters than this are keystrokes: an Enter typed before anything of
/// them came back judges them not echoed. Longer ones (pastes) may travel ahead of their
/// echo across several chunks and Enters.
pub const SHORT: usize = 16;
/// Most keystroke bytes held back at once (a paste travelling ahead of its echo); beyond,
/// the oldest are judged not echoed.
pub const HOLD_MAX: usize = 8 * 1024 * 1024;

/// What an input chunk expects to see in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Char(char),
    /// A control key or escape sequence: its output is unknown.
    Any,
}

/// What to do with an input chunk, in the order the chunks were typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Shown back: store it (typed at `at`).
    Keep { at: f64, data: Bytes },
    /// Not shown back: store only that `len` bytes were typed at `at`.
    Redact { at: f64, len: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Echoed,
    Redacted,
}

struct Held {
    at: f64,
    data: Bytes,
    toks: Vec<Tok>,
    /// Index of the next token to see in the output.
    pos: usize,
    /// Characters of its text that came back so far.
    matched: usize,
    /// Length, kept when a chunk dropped for the hold limit gives its bytes back.
    len: usize,
    text: bool,
    /// Characters of its text.
    chars: usize,
    state: State,
}

/// Escape-sequence state of a byte or character stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Esc {
    #[default]
    Ground,
    /// After ESC.
    Escape,
    /// CSI: until a final byte 0x40..=0x7e.
    Csi,
    /// OSC, DCS, SOS, PM, APC: until BEL or ESC \.
    String,
    /// ESC inside a string (a possible ST).
    StrEscape,
    /// ESC followed by intermediates (0x20..=0x2f): until a final byte.
    Intermediate,
    /// SS3 (`ESC O`): one more character.
    Ss3,
}

/// One step of the escape-sequence machine: whether `c` is plain (outside any sequence).
fn step(esc: &mut Esc, c: char) -> bool {
    match *esc {
        Esc::Ground => {
            if c == '\u{1b}' {
                *esc = Esc::Escape;
                false
            } else {
                true
            }
        }
        Esc::Escape => {
            *esc = match c {
                '[' => Esc::Csi,
                ']' | 'P' | 'X' | '^' | '_' => Esc::String,
                'O' => Esc::Ss3,
                '\u{20}'..='\u{2f}' => Esc::Intermediate,
                _ => Esc::Ground,
            };
            false
        }
        Esc::Csi => {
            if ('\u{40}'..='\u{7e}').contains(&c) {
                *esc = Esc::Ground;
            }
            false
        }
        Esc::String => {
            if c == '\u{7}' {
                *esc = Esc::Ground;
            } else if c == '\u{1b}' {
                *esc = Esc::StrEscape;
            }
            false
        }
        Esc::StrEscape => {
            *esc = if c == '\\' { Esc::Ground } else { Esc::String };
            false
        }
        Esc::Intermediate => {
            if !('\u{20}'..='\u{2f}').contains(&c) {
                *esc = Esc::Ground;
            }
            false
        }
        Esc::Ss3 => {
            *esc = Esc::Ground;
            false
        }
    }
}

/// An output token: a printable character or a line feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Char(char),
    Newline,
}

/// The echo judge of one terminal session.
#[derive(Default)]
pub struct EchoJudge {
    /// Chunks not yet written, in the order typed; the front one is waiting (decided
    /// chunks at the front move to `out` at once).
    held: VecDeque<Held>,
    held_bytes: usize,
    /// Output characters that may still be skipped (after a control key).
    slack: usize,
    in_esc: Esc,
    out_esc: Esc,
    out: Vec<Verdict>,
}

impl EchoJudge {
    pub fn new() -> EchoJudge {
        EchoJudge::default()
    }

    /// Bytes held back now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    fn tokens(&mut self, data: &[u8]) -> (Vec<Tok>, bool) {
        let mut toks = Vec::new();
        let mut enter = false;
        let text = String::from_utf8_lossy(data);
        for c in text.chars() {
            let plain = step(&mut self.in_esc, c);
            let tok = if plain && !c.is_control() {
                Tok::Char(c)
            } else {
                if c == '\r' || c == '\n' {
                    enter = true;
                }
                Tok::Any
            };
            if !(tok == Tok::Any && toks.last() == Some(&Tok::Any)) {
                toks.push(tok);
            }
        }
        (toks, enter)
    }

    /// Keystrokes typed at `at`.
    pub fn input(&mut self, at: f64, data: Bytes) -> Vec<Verdict> {
        let (toks, enter) = self.tokens(&data);
        self.expire(at);
        if enter {
            // An Enter while nothing of a held chunk came back: that chunk was not shown.
            for h in self.held.iter_mut() {
                if h.state == State::Waiting && h.text && h.matched == 0 && h.chars < SHORT {
                    h.state = State::Redacted;
                }
            }
        }
        self.pop_decided();
        let fresh = self.held.is_empty();
        let chars = toks.iter().filter(|t| matches!(t, Tok::Char(_))).count();
        let text = chars > 0;
        if fresh {
            // Output before this chunk is never its echo; a control key alone may draw
            // anything.
            self.slack = if text { 0 } else { SLACK };
        }
        self.held_bytes = self.held_bytes.saturating_add(data.len());
        let len = data.len();
        self.held.push_back(Held {
            at,
            data,
            toks,
            pos: 0,
            matched: 0,
            len,
            text,
            chars,
            state: if text { State::Waiting } else { State::Echoed },
        });
        while self.held_bytes > HOLD_MAX {
            let Some(h) = self.held.iter_mut().find(|h| h.state == State::Waiting) else {
                break;
            };
            h.state = State::Redacted;
            self.held_bytes = self.held_bytes.saturating_sub(h.data.len());
            h.data = Bytes::new();
        }
        self.pop_decided();
        std::mem::take(&mut self.out)
    }

    /// Terminal output at `at` (text, escape sequences included).
    pub fn output(&mut self, at: f64, text: &str) -> Vec<Verdict> {
        self.expire(at);
        self.pop_decided();
        for c in text.chars() {
            let plain = step(&mut self.out_esc, c);
            let tok = match c {
                '\n' | '\u{b}' | '\u{c}' if plain => Out::Newline,
                _ if plain && !c.is_control() => Out::Char(c),
                _ => continue,
            };
            self.feed(tok);
        }
        std::mem::take(&mut self.out)
    }

    /// The session ended: whatever is still held was not shown back whole.
    pub fn finish(&mut self) -> Vec<Verdict> {
        for h in self.held.iter_mut() {
            if h.state == State::Waiting {
                h.state = State::Redacted;
            }
        }
        self.pop_decided();
        std::mem::take(&mut self.out)
    }

    /// Chunks waiting longer than [`ECHO_WAIT`] with nothing shown back are not echoed.
    fn expire(&mut self, now: f64) {
        for h in self.held.iter_mut() {
            if h.state == State::Waiting && h.matched == 0 && now - h.at > ECHO_WAIT {
                h.state = State::Redacted;
            }
        }
    }

    fn feed(&mut self, tok: Out) {
        loop {
            let slack = self.slack;
            let Some(head) = self.held.front_mut() else {
                self.slack = slack.saturating_sub(1);
                return;
            };
            match head.toks.get(head.pos).copied() {
                None => {
                    head.state = State::Echoed;
                    self.pop_decided();
                }
                Some(Tok::Any) => {
                    head.pos += 1;
                    self.slack = SLACK;
                    if head.pos >= head.toks.len() {
                        head.state = State::Echoed;
                        self.pop_decided();
                    }
                }
                Some(Tok::Char(c)) => {
                    if tok == Out::Char(c) {
                        head.pos += 1;
                        head.matched += 1;
                        self.slack = 0;
                        if head.pos >= head.toks.len() {
                            head.state = State::Echoed;
                            self.pop_decided();
                        }
                        return;
                    }
                    if slack > 0 {
                        self.slack = slack - 1;
                        return;
                    }
                    // Something else came back: nothing held is being echoed now.
                    for h in self.held.iter_mut() {
                        if h.state == State::Waiting && h.text {
                            h.state = State::Redacted;
                        }
                    }
                    self.pop_decided();
                    return;
                }
            }
        }
    }

    /// Moves the decided chunks at the front to `out`, in order.
    fn pop_decided(&mut self) {
        while self.held.front().is_some_and(|h| h.state != State::Waiting) {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            self.held_bytes = self.held_bytes.saturating_sub(h.data.len());
            if !h.text {
                // A control key reached: what it draws may come before the next text.
                self.slack = SLACK;
            }
            self.out.push(match h.state {
                State::Echoed => Verdict::Keep {
                    at: h.at,
                    data: h.data,
                },
                _ => Verdict::Redact {
                    at: h.at,
                    len: h.len,
                },
            });
        }
    }
}

#[cfg(test)]
mod tests;
