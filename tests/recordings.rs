//! Recorded sessions through the real binary: interactive terminals driven through the
//! bastion by the real OpenSSH client (`ssh -tt`, keys typed as scripted input), typed
//! commands found by `recordings list --command` (a line edited with backspace, one recalled
//! from history), files sent by `scp` and `sftp` found by `--file`, a password typed with the
//! terminal's echo off found nowhere, `export` played by stock `asciinema`, encryption at rest
//! surviving a `kill -9`, `ssh -t target bash` recorded in full after 2 MiB of output and a
//! 2 MiB paste, a line typed across the quiet spell that lets the terminal rest, and a
//! path-traversal id refused.
//!
//! The target sshd runs as root here and sudo is not installed (and would not prompt root),
//! so the password prompt is bash's `read -s`, which turns the terminal's echo off exactly
//! as sudo, su and ssh-keygen do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bastion::Env;
use crate::bastion::sshd::text;
use crate::support::QUICK;

/// How long a step of an interactive session may take (a 2 MiB paste through a debug build).
const STEP: Duration = Duration::from_secs(60);

/// An `ssh -tt` session: keys go in, everything shown is collected by a thread (so the pipe
/// never fills), and steps wait for what the terminal shows.
pub(crate) struct Terminal {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    seen: Arc<Mutex<Vec<u8>>>,
    /// Where the next `wait_for` starts looking.
    mark: usize,
}

impl Terminal {
    pub(crate) fn open(env: &Env, dest: &str, command: Option<&str>) -> Terminal {
        let client = env.client();
        let mut c = client.command("ssh", None, &[]);
        c.arg("-tt").arg(format!("{dest}@127.0.0.1"));
        if let Some(cmd) = command {
            c.arg(cmd);
        }
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("starting ssh -tt");
        let stdin = child.stdin.take();
        let mut out = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            stdin,
            seen,
            mark: 0,
        }
    }

    pub(crate) fn send(&mut self, keys: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(keys).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the terminal shows `needle` after the last mark; moves the mark past it.
    /// Fails when the terminal shows nothing new for [`STEP`] (a long paste still echoing
    /// is progress, not a hang), or after five [`STEP`]s in all.
    pub(crate) fn wait_for(&mut self, needle: &str) {
        let began = Instant::now();
        let mut start = began;
        let mut last_len = 0;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                if seen.len() > last_len {
                    last_len = seen.len();
                    start = Instant::now();
                }
                let from = self.mark.min(seen.len());
                if let Some(i) = seen[from..]
                    .windows(needle.len())
                    .position(|w| w == needle.as_bytes())
                {
                    self.mark = from + i + needle.len();
                    return;
                }
                assert!(
                    start.elapsed() < STEP && began.elapsed() < 5 * STEP,
                    "the terminal never showed {needle:?}; last output: {:?}",
                    String::from_utf8_lossy(&seen[seen.len().saturating_sub(600)..])
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types a line and waits for the prompt after it.
    pub(crate) fn run(&mut self, line: &str, shows: &str) {
        self.send(format!("{line}\r").as_bytes());
        self.wait_for(shows);
        if shows != PROMPT {
            self.wait_for(PROMPT);
        }
    }

    pub(crate) fn exit(mut self) {
        self.send(b"exit\r");
        self.stdin.take();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < QUICK, "ssh did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The prompt the sessions set (`\u` expands, so the typed line never shows it).
pub(crate) const PROMPT: &str = "root-ready> ";
pub(crate) const SET_PROMPT: &str = "unset HISTFILE; PS1='\\u-ready> '";

/// `recordings list ARGS --json`, parsed; the command must succeed.
pub(crate) fn list(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["recordings", "list"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = env.cli(&all, None);
    assert!(
        out.status.success(),
        "recordings list {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect()
}

/// Waits (the index is updated as the session runs) until `list` finds something.
pub(crate) fn find(env: &Env, args: &[&str]) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let found = list(env, args);
        if !found.is_empty() {
            return found;
        }
        assert!(
            start.elapsed() < QUICK,
            "recordings list {args:?} found nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `asciinema cat FILE` (under script(1): it wants a terminal); what it printed.
fn asciinema_cat(path: &std::path::Path) -> String {
    let played = Command::new("script")
        .args([
            "-qfec",
            &format!("asciinema cat {}", path.display()),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils) and asciinema must be installed");
    assert!(
        played.status.success(),
        "asciinema cat: {}{}",
        text(&played.stdout),
        text(&played.stderr)
    );
    text(&played.stdout)
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_commands_as_run_are_found_and_an_unechoed_password_is_nowhere() {
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    env.add_user("alice", "sre");
    tokio::task::block_in_place(|| {
        let mut t = Terminal::open(&env, "alice:root@staging", None);
        t.wait_for("# ");
        t.run(SET_PROMPT, PROMPT);
        // A line edited with backspace: the keys say `helo`, the command is `hello-world`.
        t.run("echo helo\x7f\x7fllo-world", "hello-world");
        // One recalled from history (two up-arrows) and extended.
        t.run("echo first-$((1+1))", "first-2");
        t.run("echo other", "other");
        t.send(b"\x1b[A\x1b[A");
        t.wait_for("first-$((1+1))");
        t.run(" recalled", "first-2 recalled");
        // A password prompt with echo off (what sudo does).
        t.send(b"read -s -p 'Password: ' pw; echo; echo \"got ${#pw} chars\"\r");
        t.wait_for("Password: ");
        t.send(b"hunter2-Secret\r");
        t.wait_for("got 14 chars");
        t.wait_for(PROMPT);
        t.exit();
    });
    let found = find(&env, &["--command", "echo hello-world"]);
    assert_eq!(found.len(), 1, "{found:?}");
    let s = &found[0];
    assert_eq!(
        (s["kind"].as_str(), s["user"].as_str(), s["target"].as_str()),
        (Some("ssh"), Some("alice"), Some("staging"))
    );
    assert!(s["started_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let id = s["id"].as_str().unwrap().to_string();
    for needle in ["first-$((1+1)) recalled", "ECHO HELLO", "read -s"] {
        let f = find(&env, &["--command", needle]);
        assert_eq!(f[0]["id"], id.as_str(), "{needle}");
    }
    // The raw keys are not the command; the password is no command at all (searched by a
    // part of it: a reviewer's search is itself audited, filter included).
    for absent in ["helo", "Secret"] {
        assert!(list(&env, &["--command", absent]).is_empty(), "{absent}");
    }
    assert!(list(&env, &["--user", "nobody"]).is_empty());
    assert_eq!(
        list(
            &env,
            &["--user", "alice", "--target", "staging", "--since", "1h"]
        )
        .len(),
        1
    );
    assert!(list(&env, &["--until", "2000-01-01T00:00:00Z"]).is_empty());
    let out = env.cli(
        &[
            "recordings",
            "list",
            "--command",
            "no-such-command-anywhere",
        ],
        None,
    );
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "nothing found: nothing printed, exit 0"
    );

    // Export: a plain asciicast that stock asciinema plays, with the commands as markers.
    let cast = env.dir.join("session.cast");
    let out = env.cli(
        &["recordings", "export", &id, "-o", cast.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = std::fs::read_to_string(&cast).unwrap();
    assert!(exported.contains("command: echo hello-world"), "{exported}");
    assert!(exported.contains("input not recorded: "), "{exported}");
    let played = asciinema_cat(&cast);
    assert!(
        played.contains("hello-world") && played.contains("first-2 recalled"),
        "{played}"
    );

    // The password is nowhere: not in the recording, its metadata, the index, the export,
    // the audit log.
    let mut everything = files_under(&env.dir.join("data/recordings"));
    everything.extend(files_under(&env.dir.join("data/audit")));
    everything.push((cast.clone(), exported.into_bytes()));
    for (path, bytes) in &everything {
        assert!(
            !contains(bytes, "hunter2"),
            "the password is in {}",
            path.display()
        );
        let audit = path.starts_with(env.dir.join("data/audit"));
        assert!(
            audit || !contains(bytes, "Secret"),
            "the password is in {}",
            path.display()
        );
    }
    // Each read was audited.
    for action in ["list", "export"] {
        env.expect_audit(action, |e| {
            e["event"] == "recording_access" && e["action"] == action
        });
    }
    env.expect_audit("export of this id", |e| {
        e["event"] == "recording_access" && e["recording_id"] == id.as_str()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sent_by_scp_and_sftp_are_found_by_name() {
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    env.add_user("alice", "sre");
    tokio::task::block_in_place(|| {
        let client = env.client();
        let local = env.dir.join("quarterly-payroll-export.csv");
        std::fs::write(&local, "id,salary\n1,100\n").unwrap();
        let remote = env.dir.join("on-target");
        std::fs::create_dir_all(&remote).unwrap();
        // scp and sftp split `USER@HOST:PATH` at the first colon: the user goes in -o User.
        let user = "User=alice:root@staging";
        let mut scp = client.command("scp", None, &[user]);
        // -O: the legacy SCP protocol (an exec of `scp -t`), not SFTP.
        scp.arg("-O")
            .arg(&local)
            .arg(format!("127.0.0.1:{}/scp-copy.csv", remote.display()));
        let out = crate::bastion::sshd::run(scp, crate::bastion::sshd::CLIENT_DEADLINE);
        assert!(out.status.success(), "scp: {}", text(&out.stderr));
        let batch = env.dir.join("sftp.batch");
        std::fs::write(
            &batch,
            format!(
                "put {} {}/hr-reviews-2026.pdf\n",
                local.display(),
                remote.display()
            ),
        )
        .unwrap();
        let mut sftp = client.command("sftp", None, &[user]);
        sftp.arg("-b").arg(&batch).arg("127.0.0.1");
        let out = crate::bastion::sshd::run(sftp, crate::bastion::sshd::CLIENT_DEADLINE);
        assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    });
    // SCP: by the name it travelled under and by its place on the target.
    let scp = find(&env, &["--file", "scp-copy"]);
    let sftp = find(&env, &["--file", "HR-REVIEWS-2026"]);
    assert_eq!((scp.len(), sftp.len()), (1, 1));
    assert_ne!(scp[0]["id"], sftp[0]["id"]);
    let by_name = find(&env, &["--file", "quarterly-payroll"]);
    assert!(
        by_name.iter().any(|s| s["id"] == scp[0]["id"]),
        "{by_name:?}"
    );
    assert!(list(&env, &["--file", "not-a-file-name"]).is_empty());
    // The exec of scp is a command too.
    assert_eq!(find(&env, &["--command", "scp -t"])[0]["id"], scp[0]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_recording_cut_by_kill_9_still_exports_its_finished_chunks() {
    let mut env = tokio::task::spawn_blocking(|| Env::start_with(false, "encrypt = true"))
        .await
        .unwrap();
    env.add_user("alice", "sre");
    let id = tokio::task::block_in_place(|| {
        let mut t = Terminal::open(&env, "alice:root@staging", None);
        t.wait_for("# ");
        t.run(SET_PROMPT, PROMPT);
        t.run("echo encrypted-$((20+22))", "encrypted-42");
        // Indexed after the batch holding it was sealed and written.
        let found = find(&env, &["--command", "encrypted-$((20+22))"]);
        assert!(found[0]["ended_at"].is_null(), "still live: {found:?}");
        env.child.kill().unwrap();
        env.child.wait().unwrap();
        drop(t);
        found[0]["id"].as_str().unwrap().to_string()
    });
    let dir = env.dir.join("data/recordings");
    let raw = std::fs::read(dir.join(format!("{id}.cast.enc"))).unwrap();
    assert!(!contains(&raw, "encrypted-42"), "ciphertext at rest");
    let cast = env.dir.join("cut.cast");
    let out = tokio::task::block_in_place(|| {
        env.cli(
            &["recordings", "export", &id, "-o", cast.to_str().unwrap()],
            None,
        )
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("did not end cleanly")
            || text(&out.stderr).contains("cut short"),
        "{}",
        text(&out.stderr)
    );
    let played = asciinema_cat(&cast);
    assert!(played.contains("encrypted-42"), "{played}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_typed_across_a_quiet_spell_is_found_after_the_terminal_rested() {
    // A session quiet for 10 s lets its recording's virtual terminal rest (README: typed
    // commands); the next key wakes it with the screen and the half-typed line intact.
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    env.add_user("alice", "sre");
    tokio::task::block_in_place(|| {
        let mut t = Terminal::open(&env, "alice:root@staging", None);
        t.wait_for("# ");
        t.run(SET_PROMPT, PROMPT);
        t.run("echo before-$((2+3))", "before-5");
        t.send(b"echo after-");
        t.wait_for("echo after-");
        // The quiet spell is the behaviour under test: nothing to wait on but the clock.
        std::thread::sleep(Duration::from_secs(12));
        t.run("rest-$((5+5))", "after-rest-10");
        t.exit();
    });
    let before = find(&env, &["--command", "echo before-$((2+3))"]);
    let after = find(&env, &["--command", "echo after-rest-$((5+5))"]);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], before[0]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_as_recording_id_is_refused() {
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    let secret = std::fs::read(env.dir.join("data/secret.key")).unwrap_or_default();
    tokio::task::block_in_place(|| {
        for cmd in ["export", "play"] {
            for bad in [
                "../../data/secret.key",
                "/etc/passwd",
                "0123456789abcdef0123456789abcdef.meta.json",
                "0123456789ABCDEF0123456789ABCDEF",
            ] {
                let out_file = env.dir.join("leak.out");
                let mut args = vec!["recordings", cmd, bad];
                if cmd == "export" {
                    args.extend(["-o", out_file.to_str().unwrap()]);
                }
                let out = env.cli(&args, None);
                assert_eq!(out.status.code(), Some(1), "{cmd} {bad}");
                assert!(
                    text(&out.stderr).contains("is not a recording id"),
                    "{}",
                    text(&out.stderr)
                );
                assert!(out.stdout.is_empty() && !out_file.exists());
                if !secret.is_empty() {
                    assert!(!contains(&out.stderr, &String::from_utf8_lossy(&secret)));
                }
            }
        }
        let out = env.cli(
            &["recordings", "export", "0123456789abcdef0123456789abcdef"],
            None,
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("no recording"),
            "{}",
            text(&out.stderr)
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_t_bash_is_recorded_in_full_after_big_output_and_a_big_paste() {
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    env.add_user("alice", "sre");
    let paste: String = (0..21_000)
        .map(|i| format!("pasted line {i:06} {}\n", "p".repeat(80)))
        .collect();
    assert!(paste.len() > 2 * 1024 * 1024);
    tokio::task::block_in_place(|| {
        let mut t = Terminal::open(&env, "alice:root@staging", Some("bash"));
        t.send(format!("{SET_PROMPT}\r").as_bytes());
        t.wait_for(PROMPT);
        // 2 MiB of output (base64 of random bytes, 100 columns).
        t.run(
            "head -c 1600000 /dev/urandom | base64 -w 100; echo output-$((1+1))-done",
            "output-2-done",
        );
        t.run("echo after-output-$((3*3))", "after-output-9");
        // A 2 MiB paste into a program reading lines, then Ctrl-D; it counts what it got.
        // The wait is on the count, not on the echo of the last line: Linux's terminal
        // discards echoes it cannot write while its reader is slow (n_tty's echo
        // overrun), so on a loaded machine a paste's echo can have gaps, its input none.
        t.send(b"wc -l | sed 's/^/count=/'\r");
        t.wait_for("sed 's/^/count=/'");
        t.send(paste.as_bytes());
        t.send(b"\x04");
        t.wait_for("count=21000");
        t.wait_for(PROMPT);
        t.run("echo after-paste-$((4*4))", "after-paste-16");
        t.exit();
    });
    let after_output = find(&env, &["--command", "echo after-output-$((3*3))"]);
    let after_paste = find(&env, &["--command", "echo after-paste-$((4*4))"]);
    assert_eq!(after_output[0]["id"], after_paste[0]["id"]);
    let id = after_paste[0]["id"].as_str().unwrap().to_string();
    let out = env.cli(&["recordings", "export", &id], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = text(&out.stdout);
    for needle in [
        "output-2-done",
        "after-output-9",
        "count=21000",
        "after-paste-16",
    ] {
        assert!(
            exported.contains(needle),
            "{needle} is not in the recording"
        );
    }
    assert!(!exported.contains("truncated"), "never capped");
}
