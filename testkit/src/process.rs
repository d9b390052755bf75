//! Child processes under a deadline: run a client to completion (its output captured), or
//! spawn a server and wait for the stdout line that says it is ready, keeping its stdout and
//! stderr for the failure message. Nothing here sleeps as synchronisation: the waits poll a
//! process state or a pipe, each under its deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often a wait on a child's exit looks again.
const POLL: Duration = Duration::from_millis(20);

/// Runs `c` to completion within `deadline`, capturing its output.
pub fn run_with_deadline(mut c: Command, deadline: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", c.get_program()));
    wait_output(child, deadline)
}

/// Waits for `child` (stdout/stderr piped) within `deadline`; kills it and fails after.
pub fn wait_output(mut child: Child, deadline: Duration) -> Output {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let ((status, stdout), stderr) = wait_pipes(child, stdout, stderr, deadline);
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Waits for a child whose stdout is already wrapped; returns (stdout rest, stderr).
pub fn wait_output_parts(
    child: Child,
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
    deadline: Duration,
) -> (String, String) {
    let ((_, out), err) = wait_pipes(child, Some(stdout), Some(stderr), deadline);
    (text(&out), text(&err))
}

/// Drains both pipes on threads while waiting for the exit (a full pipe must not stall the
/// child); kills the child and fails the test after `deadline`.
fn wait_pipes(
    mut child: Child,
    stdout: Option<impl Read + Send + 'static>,
    stderr: Option<impl Read + Send + 'static>,
    deadline: Duration,
) -> ((std::process::ExitStatus, Vec<u8>), Vec<u8>) {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out_t = drain(stdout.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_t = drain(stderr.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client did not finish within {deadline:?}");
        }
        std::thread::sleep(POLL);
    };
    ((status, out_t.join().unwrap()), err_t.join().unwrap())
}

/// Runs `cmd` to completion with stdout and stderr captured and `stdin` written to its
/// standard input (then closed; nothing given: closed at once).
pub fn output_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {:?}: {e}", cmd.get_program()));
    {
        let mut pipe = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// A finished command's stdout then stderr, as text (for assertions and their messages).
pub fn output_text(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sha256sum FILE`'s hash.
pub fn sha256_file(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Reads lines from a child's stdout until one contains `needle` (with a deadline).
pub fn read_until(reader: &mut impl BufRead, needle: &str, deadline: Duration) -> String {
    let end = Instant::now() + deadline;
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap_or(0);
        all.push_str(&line);
        if all.contains(needle) {
            return all;
        }
        assert!(
            n > 0 && Instant::now() < end,
            "did not see {needle:?}; got {all:?}"
        );
    }
}

pub fn write_all(w: &mut impl Write, s: &str) {
    w.write_all(s.as_bytes()).unwrap();
    w.flush().unwrap();
}

/// What a spawned server printed so far (filled by reader threads until its pipes close).
#[derive(Clone, Default)]
pub struct Captured {
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Captured {
    pub fn stdout(&self) -> String {
        lock(&self.stdout).clone()
    }

    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// `--- NAME stdout ---` and `--- NAME stderr ---` sections, for a failure message.
    pub fn report(&self, name: &str) -> String {
        format!(
            "--- {name} stdout ---\n{}\n--- {name} stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

/// A poisoned buffer still holds what was printed: a failing test must still see it.
fn lock(m: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Spawns `cmd` (stdin null, stdout and stderr piped into `out`) and waits up to `deadline`
/// for a stdout line `ready` accepts. Err (with `what`'s output) when the process exits first
/// or the deadline passes (then it is killed).
pub fn spawn_until_line<T: Send + 'static>(
    mut cmd: Command,
    what: &str,
    deadline: Duration,
    ready: impl Fn(&str) -> Option<T> + Send + 'static,
    out: &Captured,
) -> Result<(Child, T), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what} ({:?}): {e}", cmd.get_program()));
    let mut err_pipe = child.stderr.take().unwrap();
    let err_buf = out.stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = err_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            lock(&err_buf).push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let out_pipe = child.stdout.take().unwrap();
    let out_buf = out.stdout.clone();
    let (tx, rx) = mpsc::channel::<T>();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out_pipe).lines() {
            let Ok(line) = line else { break };
            lock(&out_buf).push_str(&format!("{line}\n"));
            if !sent && let Some(r) = ready(&line) {
                sent = true;
                let _ = tx.send(r);
            }
        }
    });
    let start = Instant::now();
    loop {
        if let Ok(r) = rx.recv_timeout(Duration::from_millis(100)) {
            return Ok((child, r));
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Give the reader threads a moment to drain the pipes (they end at EOF).
            let _ = rx.recv_timeout(Duration::from_millis(300));
            return Err(format!(
                "{what} exited ({status}) before printing its ready line\n{}",
                out.report(what)
            ));
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{what} printed no ready line within {deadline:?}\n{}",
                out.report(what)
            ));
        }
    }
}
