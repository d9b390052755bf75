//! Bastion sessions against a real sshd target and the real OpenSSH client: interactive pty
//! shell, SCP (both protocols) and SFTP with checksums, ControlMaster multiplexing, local port
//! forwarding by policy, revocation of a live session, fail-closed recording, and recordings
//! read back and played by `asciinema`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::harness;

use std::io::{BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, Options, read_until, run_with_deadline, sha256_file, text, write_all};
use gatehouse_core::audit::{AuditEvent, FileProtocol, SshRefusal, SshRequest, TransferDirection};
use gatehouse_core::recording::{EventCode, read_cast};

const WAIT: Duration = Duration::from_secs(10);

fn random_file(path: &std::path::Path, len: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut left = len;
    while left > 0 {
        let chunk: [u8; 4096] = std::array::from_fn(|_| rand::random());
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
}

/// Reads until the terminal has shown `needle`, byte by byte: a prompt ends no line.
fn read_until_shown(reader: &mut impl Read, needle: &str, deadline: Duration) {
    let end = std::time::Instant::now() + deadline;
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(needle.as_bytes()) {
        let n = reader.read(&mut byte).unwrap_or(0);
        assert!(
            n > 0 && std::time::Instant::now() < end,
            "did not see {needle:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
}

fn output_text(lines: &[serde_json::Value], code: &str) -> String {
    lines[1..]
        .iter()
        .filter(|l| l[1] == code)
        .map(|l| l[2].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_shell_through_a_pty_is_recorded_and_playable() {
    let env = Env::start("shell").await;
    let mut c = env.client("ssh", &env.user_key, Some(&env.code()));
    c.arg("-tt")
        .arg(format!("{}@127.0.0.1", env.dest("root@db-prod-1")));
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // As a person would: type once the shell answers (keys sent while its prompt is still
    // on the way are judged not echoed, and rightly kept out of the recording).
    write_all(&mut stdin, "echo ready-$((2*3))\n");
    read_until(&mut stdout, "ready-6", Duration::from_secs(30));
    // The prompt after it (root's ends in "# "; no newline, so not line by line).
    read_until_shown(&mut stdout, "# ", Duration::from_secs(30));
    write_all(&mut stdin, "stty -echo; tty; echo typed-$((6*7))\n");
    let seen = read_until(&mut stdout, "typed-42", Duration::from_secs(30));
    assert!(
        seen.contains("/dev/pts/"),
        "a real pty on the target: {seen}"
    );
    write_all(&mut stdin, "exit 0\n");
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let status = child.wait().unwrap();
    assert!(status.success());

    env.wait_event(WAIT, |e| matches!(e, AuditEvent::SshSessionEnd { .. }))
        .await
        .expect("session end");
    let (path, lines) = env.cast_with_title("shell");
    assert_eq!(lines[0]["version"], 2);
    assert!(lines[0]["width"].as_u64().unwrap() > 0);
    let input = output_text(&lines, "i");
    assert!(
        input.contains("echo typed-$((6*7))"),
        "typed input recorded: {input:?}"
    );
    let output = output_text(&lines, "o");
    assert!(output.contains("typed-42"), "{output:?}");
    for l in &lines[1..] {
        assert!(l[0].as_f64().unwrap() >= 0.0);
    }
    // Core's reader reads it back whole, with the same events.
    let cast = read_cast(&path).unwrap();
    assert!(!cast.torn);
    assert_eq!(cast.events.len(), lines.len() - 1);
    let read_back: String = cast
        .events
        .iter()
        .filter(|e| e.code == EventCode::Output)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(read_back, output);

    assert!(
        std::path::Path::new("/usr/bin/asciinema").exists(),
        "asciinema must be installed"
    );
    // `asciinema cat` wants a terminal: give it one with script(1).
    let played = Command::new("script")
        .args([
            "-qfec",
            &format!("asciinema cat {}", path.display()),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils) must be installed");
    assert!(
        played.status.success(),
        "asciinema cat: {}\n{}",
        text(&played.stderr),
        std::fs::read_to_string(&path).unwrap()
    );
    assert!(text(&played.stdout).contains("typed-42"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_both_ways_and_both_protocols_with_checksums() {
    let env = Env::start("scp").await;
    let dir = env.tmp.path();
    let local = dir.join("up.bin");
    random_file(&local, 3 * 1024 * 1024 + 17);
    let remote = dir.join("remote-scp.bin");
    let remote_legacy = dir.join("remote-legacy.bin");
    let dest = env.dest("root@staging");

    // Default scp (SFTP protocol) and legacy scp (-O, the SCP protocol over exec).
    for (flag, remote) in [(None, &remote), (Some("-O"), &remote_legacy)] {
        let mut c = env.client("scp", &env.user_key, None);
        c.args(flag)
            .arg("-o")
            .arg(format!("User={dest}"))
            .arg(&local)
            .arg(format!("127.0.0.1:{}", remote.display()));
        let out = run_with_deadline(c, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "upload {flag:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(sha256_file(&local), sha256_file(remote));
        let back = dir.join(format!("back{}.bin", flag.unwrap_or("")));
        let mut c = env.client("scp", &env.user_key, None);
        c.args(flag)
            .arg("-o")
            .arg(format!("User={dest}"))
            .arg(format!("127.0.0.1:{}", remote.display()))
            .arg(&back);
        let out = run_with_deadline(c, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "download {flag:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(sha256_file(&local), sha256_file(&back));
    }

    // The legacy SCP recordings name the file, direction and size; no file bytes are kept.
    let size = (3 * 1024 * 1024 + 17).to_string();
    let (_, up) = env.cast_with_title(&format!("scp: scp -t {}", remote_legacy.display()));
    let up_text = output_text(&up, "o");
    assert!(
        up_text.contains("scp upload \"up.bin\"") && up_text.contains(&size),
        "{up_text}"
    );
    let (_, down) = env.cast_with_title(&format!("scp: scp -f {}", remote_legacy.display()));
    let down_text = output_text(&down, "o");
    assert!(
        down_text.contains("scp download \"remote-legacy.bin\"") && down_text.contains(&size),
        "{down_text}"
    );
    assert!(
        up.len() < 50 && down.len() < 50,
        "file contents are not recorded"
    );
    let events = env.events();
    assert!(events.iter().any(|e| matches!(e, AuditEvent::SshSessionStart { action, request: SshRequest::Scp, command: Some(c), .. } if action == "sftp" && c.starts_with("scp "))));
    // Each legacy SCP file is audited with its name, direction and size.
    let size = 3 * 1024 * 1024 + 17;
    for (path, direction) in [
        ("up.bin", TransferDirection::Upload),
        ("remote-legacy.bin", TransferDirection::Download),
    ] {
        assert!(
            events.iter().any(|e| matches!(e, AuditEvent::SshFileTransfer { protocol: FileProtocol::Scp, path: p, direction: d, bytes, .. } if p == path && *d == direction && *bytes == size)),
            "{path} {direction:?}: {events:?}"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_put_get_rename_mkdir_remove_are_recorded() {
    let env = Env::start("sftp").await;
    let dir = env.tmp.path();
    let local = dir.join("put.bin");
    random_file(&local, 1024 * 1024 + 5);
    let rdir = dir.join("remote-dir");
    let batch = dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir {rd}\nput {l} {rd}/a.bin\nrename {rd}/a.bin {rd}/b.bin\nget {rd}/b.bin {d}/got.bin\nrm {rd}/b.bin\n",
            rd = rdir.display(),
            l = local.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    let mut c = env.client("sftp", &env.user_key, None);
    c.arg("-b")
        .arg(&batch)
        .arg("-o")
        .arg(format!("User={}", env.dest("root@staging")))
        .arg("127.0.0.1");
    let out = run_with_deadline(c, Duration::from_secs(60));
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert_eq!(sha256_file(&local), sha256_file(&dir.join("got.bin")));
    assert!(rdir.is_dir() && !rdir.join("b.bin").exists());

    env.wait_event(WAIT, |e| matches!(e, AuditEvent::SshSessionEnd { .. }))
        .await
        .expect("session end");
    let (_, lines) = env.cast_with_title("subsystem: sftp");
    let t = output_text(&lines, "o");
    let rd = rdir.display().to_string();
    let events = env.events();
    for (path, direction) in [
        (format!("{rd}/a.bin"), TransferDirection::Upload),
        (format!("{rd}/b.bin"), TransferDirection::Download),
    ] {
        assert!(
            events.iter().any(|e| matches!(e, AuditEvent::SshFileTransfer { protocol: FileProtocol::Sftp, path: p, direction: d, bytes: 1048581, .. } if *p == path && *d == direction)),
            "{path} {direction:?}: {events:?}"
        );
    }
    for want in [
        format!("sftp mkdir \"{rd}\""),
        format!("sftp open \"{rd}/a.bin\" (write)"),
        format!("sftp close \"{rd}/a.bin\": download 0 bytes, upload 1048581 bytes"),
        format!("sftp rename \"{rd}/a.bin\" -> \"{rd}/b.bin\""),
        format!("sftp close \"{rd}/b.bin\": download 1048581 bytes, upload 0 bytes"),
        format!("sftp remove \"{rd}/b.bin\""),
    ] {
        assert!(t.contains(&want), "missing {want:?} in {t}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_master_multiplexes_sessions_over_one_authentication() {
    let env = Env::start("mux").await;
    let sock = env.tmp.path().join("mux.sock");
    let dest = format!("{}@127.0.0.1", env.dest("root@db-prod-1"));
    let mut master = env.client("ssh", &env.user_key, Some(&env.code()));
    master
        .args(["-M", "-f", "-N", "-o", "ControlPersist=60"])
        .arg("-S")
        .arg(&sock)
        .arg(&dest);
    master.stdout(Stdio::null()).stderr(Stdio::null());
    let st = master.status().unwrap();
    assert!(
        st.success(),
        "master authenticated and went to the background"
    );
    for n in 0..2 {
        let mut c = env.client("ssh", &env.user_key, None);
        c.arg("-S")
            .arg(&sock)
            .arg(&dest)
            .arg(format!("echo mux-{n}"));
        let out = run_with_deadline(c, Duration::from_secs(30));
        assert_eq!(
            text(&out.stdout),
            format!("mux-{n}\n"),
            "{}",
            text(&out.stderr)
        );
    }
    let mut exit = env.client("ssh", &env.user_key, None);
    exit.arg("-S").arg(&sock).args(["-O", "exit"]).arg(&dest);
    let _ = run_with_deadline(exit, Duration::from_secs(30));
    let events = env.events();
    let logins = events
        .iter()
        .filter(|e| matches!(e, AuditEvent::SshConnectionOpen { .. }))
        .count();
    let sessions = events
        .iter()
        .filter(|e| matches!(e, AuditEvent::SshSessionStart { .. }))
        .count();
    assert_eq!(
        logins, 1,
        "one TOTP authentication serves the multiplexed connection"
    );
    assert_eq!(sessions, 2);
    env.stop().await;
}

/// A TCP echo server on the test host, reachable from the target (same machine).
fn echo_server() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

fn forward_roundtrip(
    env: &Env,
    echo: std::net::SocketAddr,
) -> (Option<String>, std::process::Child) {
    let lport = harness::free_port();
    let mut c = env.client("ssh", &env.user_key, None);
    c.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("{lport}:127.0.0.1:{}", echo.port()));
    c.arg(format!("{}@127.0.0.1", env.dest("root@staging")));
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let child = c.spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", lport)) {
            break s;
        }
        assert!(Instant::now() < end, "ssh -L did not listen");
        std::thread::sleep(Duration::from_millis(20));
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"ping-through-forward").unwrap();
    let mut buf = [0u8; 64];
    let got = match stream.read(&mut buf) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    };
    (got, child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_port_forward_follows_policy() {
    let echo = echo_server();
    // Denied: the policy grants ssh and sftp only.
    let env = Env::start("fwd-deny").await;
    let (got, mut child) = forward_roundtrip(&env, echo);
    assert_eq!(got, None, "a denied forward carries nothing");
    let _ = child.kill();
    let _ = child.wait();
    env.wait_event(WAIT, |e| {
        matches!(e, AuditEvent::AccessDenied { action, incident_id, .. } if action == "port-forward" && incident_id.starts_with("inc-"))
    })
    .await
    .expect("denied forward audited");
    let destination = format!("127.0.0.1:{}", echo.port());
    env.wait_event(WAIT, |e| {
        matches!(e, AuditEvent::PortForward { allowed: false, destination: d, .. } if *d == destination)
    })
    .await
    .expect("denied forward audited with its destination");
    env.stop().await;

    let env = Env::start_with(
        "fwd-allow",
        Options {
            port_forward: true,
            ..Options::default()
        },
    )
    .await;
    let (got, mut child) = forward_roundtrip(&env, echo);
    assert_eq!(got.as_deref(), Some("ping-through-forward"));
    let _ = child.kill();
    let _ = child.wait();
    let destination = format!("127.0.0.1:{}", echo.port());
    env.wait_event(WAIT, |e| {
        matches!(e, AuditEvent::PortForward { allowed: true, destination: d, .. } if *d == destination)
    })
    .await
    .expect("forward audited");
    let e = env
        .wait_event(WAIT, |e| matches!(e, AuditEvent::PortForwardEnd { .. }))
        .await
        .expect("forward end audited");
    let AuditEvent::PortForwardEnd {
        bytes_up,
        bytes_down,
        destination: d,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(d, destination);
    let sent = "ping-through-forward".len() as u64;
    assert_eq!((bytes_up, bytes_down), (sent, sent));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_ends_a_live_session() {
    let env = Env::start("revoke").await;
    let mut c = env.client("ssh", &env.user_key, None);
    c.arg(format!("{}@127.0.0.1", env.dest("root@staging")))
        .arg("echo started; sleep 120; echo not-reached");
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut stdout, "started", Duration::from_secs(30));
    assert_eq!(env.registry.list().len(), 1);
    assert_eq!(env.registry.list()[0].user, env.user);
    let t0 = Instant::now();
    assert_eq!(
        env.revoke(&env.user).await,
        1,
        "one store session to revoke"
    );
    let stderr = child.stderr.take().unwrap();
    let out = harness::wait_output_parts(child, stdout, stderr, Duration::from_secs(20));
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert!(!out.0.contains("not-reached"));
    assert!(out.1.contains("session ended by the bastion"), "{}", out.1);
    env.wait_event(
        WAIT,
        |e| matches!(e, AuditEvent::SshConnectionClose { reason, .. } if reason == "revoked"),
    )
    .await
    .expect("revocation audited");
    env.wait_event(WAIT, |e| matches!(e, AuditEvent::SshSessionEnd { reason, .. } if reason.contains("ended by the bastion")))
        .await
        .expect("session end audited with the reason");
    let end = Instant::now() + WAIT;
    while !env.registry.list().is_empty() {
        assert!(Instant::now() < end, "connection left the registry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_recording_dir_refuses_the_session() {
    let env = Env::start("norec").await;
    // Replace the recording directory by a file: creating a recording now fails (even as root).
    std::fs::remove_dir_all(&env.recordings).unwrap();
    std::fs::write(&env.recordings, b"not a directory").unwrap();
    let out = env.ssh(
        &env.dest("root@staging"),
        None,
        "echo reached; touch /tmp/gh-should-not-exist",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("recording cannot be written"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("reached"));
    let events = env.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, AuditEvent::SshSessionStart { .. }))
    );
    assert!(events.iter().any(|e| matches!(
        e,
        AuditEvent::SshRefused {
            reason: SshRefusal::RecordingUnavailable,
            ..
        }
    )));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_both_ways_at_once_flows_through_and_is_recorded_in_full() {
    let env = Env::start("bulk").await;
    let dir = env.tmp.path();
    let input = dir.join("in.txt");
    // Text (the recording is asciicast, text): 24 MiB each way, all of it recorded.
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_\n";
    let body = line.repeat(24 * 1024 * 1024 / line.len());
    std::fs::write(&input, &body).unwrap();
    let mut c = env.client("ssh", &env.user_key, None);
    c.arg(format!("{}@127.0.0.1", env.dest("root@staging")))
        .arg("cat");
    c.stdin(std::fs::File::open(&input).unwrap());
    c.stdout(std::fs::File::create(dir.join("out.bin")).unwrap())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let out = harness::wait_output(child, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sha256_file(&input), sha256_file(&dir.join("out.bin")));
    env.wait_event(WAIT, |e| matches!(e, AuditEvent::SshSessionEnd { .. }))
        .await
        .expect("session end");
    let (p, lines) = env.cast_with_title("exec: cat");
    assert!(p.to_str().unwrap().ends_with(".cast.gz"), "{p:?}");
    assert!(
        std::fs::metadata(&p).unwrap().len() < 8 * 1024 * 1024,
        "compressed in chunks"
    );
    let joined = |code: &str| -> String {
        lines
            .iter()
            .skip(1)
            .filter(|l| l[1] == code)
            .map(|l| l[2].as_str().unwrap())
            // The bastion's own note naming the exec.
            .filter(|d| !d.starts_with("[gatehouse] "))
            .collect()
    };
    let (o, i) = (joined("o"), joined("i"));
    assert!(
        o == body,
        "the output is recorded in full: {} of {} bytes",
        o.len(),
        body.len()
    );
    assert!(
        i == body,
        "the input is recorded in full: {} of {} bytes",
        i.len(),
        body.len()
    );
    assert!(
        !lines
            .iter()
            .any(|l| l[1] == "m" && l[2].as_str().unwrap().contains("truncated")),
        "no cap by default"
    );
    env.stop().await;
}
