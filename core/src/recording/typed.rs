//! Typed commands, taken from what the terminal showed when Enter was pressed.
//!
//! A virtual terminal (asciinema's `avt`, the engine its player uses) is fed the session's
//! output. When the user presses Enter, the line the cursor is on as the terminal's line
//! feed comes back is the command as run: backspaces, history recall, tab completion and
//! line editing have already been applied by the shell's line editor on the screen. The
//! prompt is whatever the line held left of the cursor when the first key of the line was
//! typed; it is cut off. Soft-wrapped rows are joined. Nothing is taken from the alternate
//! screen (full-screen programs: editors, pagers).
//!
//! Only what the terminal displayed can become a command: keys typed with echo off
//! (passwords) never reach the screen, so never the index (see `echo`).
//!
//! For sessions without a terminal whose program is a shell reading a script on its input
//! (`ssh target bash -s < script`, `ssh target < script`), [`ScriptLines`] takes the input's
//! lines as the commands.

use avt::observer::{Observation, Observer};
use avt::parser::Function;
use avt::{Operation, ScreenKind, Terminal};

/// Longest command kept (characters); longer ones are cut.
pub const MAX_COMMAND: usize = 4096;
/// Most Enters waiting for their line feed (a paste of many lines); beyond, they are
/// counted no more.
const MAX_PENDING_ENTERS: u32 = 100_000;
/// Enters still waiting this long (seconds) after the last one was typed are forgotten when
/// the next key comes: their lines never came back as expected (a program that changed its
/// prompt, input the terminal discarded).
const STALE_ENTERS: f64 = 5.0;
/// Largest terminal the tracker keeps (a hostile size request must not allocate without
/// bound).
pub const MAX_SIZE: usize = 1000;

fn clamp(n: u32, default: usize) -> usize {
    match usize::try_from(n) {
        Ok(0) | Err(_) => default,
        Ok(n) => n.min(MAX_SIZE),
    }
}

/// A virtual terminal and the typed commands found on it.
pub struct CommandTracker {
    vt: Vt,
    state: LineState,
}

/// The virtual terminal, awake or at rest. Awake it holds both screens' cells (about 60 KiB
/// at 80x24); an idle session's terminal rests as what redraws it (avt's dump: both screens,
/// cursor, modes, tab stops and an unfinished escape sequence), a few hundred bytes, and
/// wakes when the session next writes, types or is watched.
enum Vt {
    Awake(Box<Terminal>),
    Resting {
        cols: usize,
        rows: usize,
        dump: String,
    },
}

impl Vt {
    /// The terminal, woken if it rested. `None` never happens: a rested terminal had a size
    /// the terminal accepts.
    fn wake(&mut self) -> Option<&mut Terminal> {
        if let Vt::Resting { cols, rows, dump } = self {
            let mut vt = Terminal::new(*cols, *rows).ok()?;
            vt.feed(dump.as_str());
            *self = Vt::Awake(Box::new(vt));
        }
        match self {
            Vt::Awake(vt) => Some(vt),
            Vt::Resting { .. } => None,
        }
    }
}

#[derive(Default)]
struct LineState {
    /// Enters typed whose line feed has not come back yet.
    enters: u32,
    /// The first of them was typed with no other Enter pending (interactive typing): its
    /// line feed submits whatever line the cursor is on. The others (a pasted script, keys
    /// typed ahead) submit only a line that starts with the prompt, so the output of the
    /// commands between them is not taken for commands; with no prompt (lines pasted into a
    /// program reading its input: data, not commands), each line feed takes one Enter and
    /// records nothing.
    direct: bool,
    /// When the last Enter was typed.
    last_enter: f64,
    /// The prompt: the line's text left of the cursor when its first key was typed.
    prompt: Option<String>,
    found: Vec<String>,
}

impl CommandTracker {
    /// A tracker for a `cols` x `rows` terminal (0 means the usual 80x24; sizes are capped at
    /// [`MAX_SIZE`]). `None` only if the terminal refuses the size, which clamping prevents.
    pub fn new(cols: u32, rows: u32) -> Option<CommandTracker> {
        let vt = Terminal::new(clamp(cols, 80), clamp(rows, 24)).ok()?;
        Some(CommandTracker {
            vt: Vt::Awake(Box::new(vt)),
            state: LineState::default(),
        })
    }

    /// The terminal's size (columns, rows).
    pub fn size(&self) -> (usize, usize) {
        match &self.vt {
            Vt::Awake(vt) => vt.size(),
            Vt::Resting { cols, rows, .. } => (*cols, *rows),
        }
    }

    /// Escape sequences that draw the terminal as it is now on a terminal of its size (the
    /// live console's first screen).
    pub fn dump(&self) -> String {
        match &self.vt {
            Vt::Awake(vt) => vt.dump(),
            Vt::Resting { dump, .. } => dump.clone(),
        }
    }

    /// Lets the terminal rest (see [`Vt`]) until it is next used.
    pub fn rest(&mut self) {
        if let Vt::Awake(vt) = &self.vt {
            let (cols, rows) = vt.size();
            let mut dump = vt.dump();
            dump.shrink_to_fit();
            self.vt = Vt::Resting { cols, rows, dump };
        }
    }

    /// Whether the terminal is awake (holds its cells).
    pub fn is_awake(&self) -> bool {
        matches!(self.vt, Vt::Awake(_))
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        if let Some(vt) = self.vt.wake() {
            vt.resize(clamp(cols, 80), clamp(rows, 24));
        }
    }

    /// Keys typed (as they were judged shown back or not: only the Enters and the moment of
    /// the first key of a line matter here, never the characters).
    pub fn input(&mut self, at: f64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        // Ctrl-C flushes what was typed ahead, Ctrl-D ends the program reading it; Enters
        // long unanswered are void too.
        if data.iter().any(|b| *b == 0x03 || *b == 0x04) {
            // The next line starts afresh (its prompt is taken at its first key).
            self.state.enters = 0;
            self.state.prompt = None;
            return;
        }
        if self.state.enters > 0 && at - self.state.last_enter > STALE_ENTERS {
            self.state.enters = 0;
            self.state.prompt = None;
        }
        let Some(vt) = self.vt.wake() else { return };
        if self.state.prompt.is_none() {
            self.state.prompt = Some(left_of_cursor(vt));
        }
        if vt.active_screen_kind() == ScreenKind::Alternate {
            return;
        }
        let mut prev = 0u8;
        for &b in data {
            if b == b'\r' || (b == b'\n' && prev != b'\r') {
                if self.state.enters == 0 {
                    self.state.direct = true;
                }
                self.state.last_enter = at;
                self.state.enters = (self.state.enters + 1).min(MAX_PENDING_ENTERS);
            }
            prev = b;
        }
    }

    /// Terminal output; the commands submitted in it, in order.
    pub fn output(&mut self, text: &str) -> Vec<String> {
        let Some(vt) = self.vt.wake() else {
            return Vec::new();
        };
        let mut watch = Submits {
            state: &mut self.state,
        };
        vt.feed_with(text, &mut watch);
        std::mem::take(&mut self.state.found)
    }
}

/// Watches line feeds: the one following an Enter submits the cursor's line.
struct Submits<'a> {
    state: &'a mut LineState,
}

impl Observer for Submits<'_> {
    type Output = ();

    fn end(&mut self, _: &mut Observation<'_>) {}

    fn before(&mut self, cx: &mut Observation<'_>, op: &Operation) {
        if !matches!(op, Operation::Function(Function::Lf | Function::Nel)) {
            return;
        }
        if self.state.enters == 0 {
            return;
        }
        let vt = cx.terminal();
        let line = logical_line(vt);
        let prompt = self.state.prompt.as_deref().unwrap_or("").trim_end();
        let rest = line.strip_prefix(prompt);
        let direct = std::mem::take(&mut self.state.direct);
        if !direct && !prompt.is_empty() && rest.is_none() {
            // Output between the lines of a paste: not a submitted line.
            return;
        }
        self.state.enters -= 1;
        let data_line = !direct && prompt.is_empty();
        if vt.active_screen_kind() == ScreenKind::Primary && !data_line {
            let command = rest.unwrap_or(&line).trim();
            if !command.is_empty() && !masked(command) {
                self.state
                    .found
                    .push(command.chars().take(MAX_COMMAND).collect());
            }
        }
        if self.state.enters == 0 {
            // The next line's prompt is taken at its first key.
            self.state.prompt = None;
        }
    }
}

/// A line of only mask characters (`****`): a password prompt that shows stars.
fn masked(command: &str) -> bool {
    command.chars().all(|c| matches!(c, '*' | '•' | '●'))
}

/// The rows of the cursor's logical line: up through soft wraps, then down through them.
fn rows_of_cursor_line(vt: &Terminal) -> (usize, usize) {
    let screen = vt.screen();
    let row = vt.cursor().row;
    let wrapped = |r: usize| screen.line(r).is_some_and(|l| l.is_wrapped());
    let mut first = row;
    while first > 0 && wrapped(first - 1) {
        first -= 1;
    }
    let mut last = row;
    while wrapped(last) && screen.line(last + 1).is_some() {
        last += 1;
    }
    (first, last)
}

fn row_text(vt: &Terminal, row: usize, upto: Option<usize>) -> String {
    let Some(line) = vt.screen().line(row) else {
        return String::new();
    };
    let cells = line.cells();
    let end = upto.unwrap_or(cells.len()).min(cells.len());
    cells
        .iter()
        .take(end)
        .filter(|c| c.width() > 0)
        .map(|c| c.char())
        .collect()
}

/// The cursor's logical line (soft-wrapped rows joined), trailing blanks trimmed.
fn logical_line(vt: &Terminal) -> String {
    let (first, last) = rows_of_cursor_line(vt);
    let mut text = String::new();
    for r in first..=last {
        let row = row_text(vt, r, None);
        if r == last {
            text.push_str(row.trim_end());
        } else {
            text.push_str(&row);
        }
    }
    text
}

/// The cursor's logical line up to the cursor.
fn left_of_cursor(vt: &Terminal) -> String {
    let (first, _) = rows_of_cursor_line(vt);
    let cursor = vt.cursor();
    let mut text = String::new();
    for r in first..cursor.row {
        text.push_str(&row_text(vt, r, None));
    }
    text.push_str(&row_text(vt, cursor.row, Some(cursor.col)));
    text
}

/// Lines of a script fed to a shell on its input (no terminal).
#[derive(Default)]
pub struct ScriptLines {
    line: Vec<u8>,
    /// The current line is longer than [`MAX_COMMAND`] bytes: the rest is dropped.
    overlong: bool,
}

impl ScriptLines {
    /// Input bytes; the complete lines in them.
    pub fn input(&mut self, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                self.flush(&mut out);
            } else if self.line.len() < MAX_COMMAND {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
        out
    }

    /// The last line, if the input ended without a newline.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.flush(&mut out);
        out
    }

    fn flush(&mut self, out: &mut Vec<String>) {
        let line = std::mem::take(&mut self.line);
        self.overlong = false;
        // Binary data is not a script: only text lines are commands.
        if let Ok(text) = std::str::from_utf8(&line) {
            let t = text.trim();
            if !t.is_empty() && !t.starts_with('#') && !t.chars().any(|c| c.is_control()) {
                out.push(t.to_string());
            }
        }
    }
}

/// Whether an exec command runs a shell that reads its commands from its input.
pub fn is_shell_reading_input(command: &str) -> bool {
    let mut words = command.split_whitespace();
    let Some(program) = words.next() else {
        return false;
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    let shell = matches!(
        name,
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "ash" | "fish"
    );
    // `bash -c '...'` runs its argument, not its input.
    shell && words.all(|w| !(w.starts_with('-') && !w.starts_with("--") && w.contains('c')))
}

#[cfg(test)]
mod tests;
