//! Bastion access control against a real sshd target and the real OpenSSH client:
//! key + TOTP, refusals (wrong/replayed TOTP, unknown key, passwords, unknown or denied target,
//! wrong pinned host key) and refused features (agent and remote forwarding).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::harness;

use std::time::Duration;

use crate::harness::{Env, text};
use gatehouse_core::audit::{AuditEvent, SshAuthStep, SshRefusal, SshRequest};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_totp_login_runs_exec_with_exit_status_and_records_it() {
    let env = Env::start("totp-exec").await;
    let out = env.ssh(
        &env.dest("root@db-prod-1"),
        Some(&env.code()),
        "echo hello-from-target; echo to-stderr >&2; exit 3",
    );
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello-from-target\n");
    assert!(text(&out.stderr).contains("to-stderr"));

    let ended = env
        .wait_event(WAIT, |e| matches!(e, AuditEvent::SshSessionEnd { .. }))
        .await
        .expect("session end audited");
    let AuditEvent::SshSessionEnd {
        recording_id,
        exit_status,
        ..
    } = ended
    else {
        unreachable!()
    };
    assert_eq!(exit_status, Some(3), "the exit status is in the end record");
    let events = env.events();
    assert!(events.iter().any(|e| matches!(e, AuditEvent::SshConnectionOpen { method, target, .. } if method == "ssh-key+totp" && target == "db-prod-1")));
    assert!(
        events.iter().any(
            |e| matches!(e, AuditEvent::LoginSuccess { method, .. } if method == "ssh-key+totp")
        )
    );
    assert!(events.iter().any(|e| matches!(e, AuditEvent::AccessAllowed { object, action, .. } if object == "ssh:db-prod-1/root" && action == "ssh")));
    assert!(events.iter().any(|e| matches!(e, AuditEvent::SshSessionStart { recording_id: r, action, request: SshRequest::Exec, command: Some(c), .. } if *r == recording_id && action == "ssh" && c.starts_with("echo hello"))));

    let (path, lines) = env.cast_with_title("exec: echo hello-from-target");
    let name = path.file_name().unwrap().to_str().unwrap();
    assert_eq!(name.split('.').next().unwrap(), recording_id);
    assert_eq!(lines[0]["version"], 2);
    assert!(
        lines[0]["command"]
            .as_str()
            .unwrap()
            .contains("echo hello-from-target")
    );
    let output: String = lines[1..]
        .iter()
        .filter(|l| l[1] == "o")
        .map(|l| l[2].as_str().unwrap().to_string())
        .collect();
    assert!(output.contains("hello-from-target"), "{output}");
    assert!(output.contains("to-stderr"), "{output}");
    assert!(lines.iter().any(|l| l[1] == "m" && l[2] == "exit status 3"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_totp_is_refused_and_audited() {
    let env = Env::start("totp-wrong").await;
    let good = env.code();
    let wrong = if good == "000000" { "111111" } else { "000000" };
    let out = env.ssh(
        &env.dest("root@db-prod-1"),
        Some(wrong),
        "echo should-not-run",
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("should-not-run"));
    let events = env.events();
    assert!(events.iter().any(|e| matches!(
        e,
        AuditEvent::SshAuth {
            step: SshAuthStep::TotpFailed,
            ..
        }
    )));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AuditEvent::TotpFailure { .. })),
        "the failure is counted by core"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, AuditEvent::SshConnectionOpen { .. }))
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_totp_is_refused() {
    let env = Env::start("totp-replay").await;
    let code = env.code();
    let first = env.ssh(&env.dest("root@db-prod-1"), Some(&code), "true");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = env.ssh(&env.dest("root@db-prod-1"), Some(&code), "echo replayed");
    assert_eq!(second.status.code(), Some(255));
    assert!(!text(&second.stdout).contains("replayed"));
    assert!(env.events().iter().any(|e| matches!(
        e,
        AuditEvent::SshAuth {
            step: SshAuthStep::TotpReplayed,
            ..
        }
    )));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_key_and_passwords_are_refused() {
    let env = Env::start("badkey-user").await;
    let mut c = env.client("ssh", &env.other_key, None);
    c.arg(format!("{}@127.0.0.1", env.dest("root@staging")))
        .arg("echo in");
    let out = harness::run_with_deadline(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey"),
        "{}",
        text(&out.stderr)
    );
    assert!(env.events().iter().any(|e| matches!(
        e,
        AuditEvent::SshAuth {
            step: SshAuthStep::KeyRefused,
            ..
        }
    )));

    // Passwords are not even offered.
    let mut c = env.client("ssh", &env.user_key, Some("123456"));
    c.args(["-o", "PreferredAuthentications=password"])
        .arg(format!("{}@127.0.0.1", env.dest("root@staging")))
        .arg("echo in");
    let out = harness::run_with_deadline(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(
        err.contains("Permission denied") && !err.contains("password"),
        "{err}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_target_and_denied_target_get_the_same_refusal() {
    let env = Env::start("deny").await;
    let denied = env.ssh(&env.dest("root@denied"), None, "echo reached");
    let unknown = env.ssh(
        &env.dest("root@no-such-host"),
        Some(&env.code()),
        "echo reached",
    );
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied.stderr));
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown.stderr));
    assert_eq!(text(&denied.stderr), text(&unknown.stderr));
    assert!(text(&denied.stderr).contains("access denied"));
    assert!(
        !text(&denied.stdout).contains("reached") && !text(&unknown.stdout).contains("reached")
    );
    let events = env.events();
    for object in ["ssh:denied/root", "ssh:no-such-host/root"] {
        let e = events
            .iter()
            .find(|e| matches!(e, AuditEvent::AccessDenied { object: o, .. } if o == object))
            .unwrap_or_else(|| panic!("denial of {object} audited: {events:?}"));
        assert!(e.incident_id().is_some(), "a denial is an alert");
    }
    // Nothing was recorded for refused sessions.
    assert!(env.cast_files().is_empty());

    // USER:TARGET works for a one-login target, not for a target with several logins.
    let one = env.ssh(&env.dest("staging"), None, "echo one-login");
    assert_eq!(text(&one.stdout), "one-login\n", "{}", text(&one.stderr));
    let several = env.ssh(&env.dest("multi"), None, "echo ambiguous");
    assert_eq!(several.status.code(), Some(1));
    assert_eq!(text(&several.stderr), text(&denied.stderr));
    let explicit = env.ssh(&env.dest("root@multi"), None, "echo explicit");
    assert_eq!(text(&explicit.stdout), "explicit\n");
    // Malformed names never authenticate.
    for bad in ["root@staging", "x:y:z@staging", "-x:root@staging"] {
        let mut c = env.client("ssh", &env.user_key, None);
        c.arg("-l").arg(bad).arg("127.0.0.1").arg("true");
        let out = harness::run_with_deadline(c, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(255), "{bad}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pinned_host_key_is_refused_audited_and_alerted() {
    let env = Env::start("pin").await;
    let out = env.ssh(&env.dest("root@badkey"), None, "echo reached");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("host key does not match the pinned key"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("reached"));
    let e = env
        .wait_event(
            WAIT,
            |e| matches!(e, AuditEvent::SshHostKeyMismatch { target, .. } if target == "badkey"),
        )
        .await
        .expect("mismatch audited");
    assert!(e.incident_id().is_some(), "a mismatch is an alert");
    let AuditEvent::SshHostKeyMismatch { presented, .. } = e else {
        unreachable!()
    };
    assert!(presented.starts_with("ssh-ed25519 SHA256:"), "{presented}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_remote_forwarding_are_refused_and_audited() {
    let env = Env::start("refuse").await;
    // A real agent, so the client asks to forward it.
    let sock = env.tmp.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < end,
            "ssh-agent socket did not appear"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = env.client("ssh", &env.user_key, None);
    c.env("SSH_AUTH_SOCK", &sock);
    c.arg("-A")
        .arg(format!("{}@127.0.0.1", env.dest("root@staging")))
        .arg("echo ran; test -z \"$SSH_AUTH_SOCK\" && echo no-agent");
    let out = harness::run_with_deadline(c, Duration::from_secs(30));
    assert_eq!(
        text(&out.stdout),
        "ran\nno-agent\n",
        "{}",
        text(&out.stderr)
    );
    env.wait_event(WAIT, |e| {
        matches!(
            e,
            AuditEvent::SshRefused {
                reason: SshRefusal::AgentForwarding,
                ..
            }
        )
    })
    .await
    .expect("agent forwarding refusal audited");
    let _ = agent.kill();
    let _ = agent.wait();

    let mut c = env.client("ssh", &env.user_key, None);
    c.args(["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"])
        .arg(format!("{}@127.0.0.1", env.dest("root@staging")))
        .arg("echo ran");
    let out = harness::run_with_deadline(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("ran"));
    env.wait_event(WAIT, |e| {
        matches!(
            e,
            AuditEvent::SshRefused {
                reason: SshRefusal::RemoteForwarding,
                ..
            }
        )
    })
    .await
    .expect("remote forwarding refusal audited");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_is_allow_listed_and_exit_signals_are_relayed() {
    let env = Env::start("envsig").await;
    let dest = format!("{}@127.0.0.1", env.dest("root@staging"));
    let mut c = env.client("ssh", &env.user_key, None);
    c.args(["-o", "SetEnv=LANG=C.UTF-8 LC_TIME=C GH_SECRET=leak"])
        .arg(&dest)
        .arg("echo \"$LANG|$LC_TIME|${GH_SECRET:-unset}\"");
    let out = harness::run_with_deadline(c, Duration::from_secs(30));
    assert_eq!(
        text(&out.stdout),
        "C.UTF-8|C|unset\n",
        "{}",
        text(&out.stderr)
    );

    let mut c = env.client_opts("ssh", &env.user_key, None, &["LogLevel=DEBUG1"]);
    c.arg(&dest).arg("kill -TERM $$");
    let out = harness::run_with_deadline(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("rtype exit-signal"),
        "{}",
        text(&out.stderr)
    );
    env.stop().await;
}

/// The `client_addr` and `session` of an event, as its record has them.
fn context_of(e: &AuditEvent) -> (Option<String>, Option<String>) {
    let v = serde_json::to_value(e).unwrap();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    (s("client_addr"), s("session"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_sessions_audit_records_carry_the_client_address_and_the_session_id() {
    let env = Env::start("context").await;
    // One connection with a second factor, one with the key alone.
    for (n, (dest, code)) in [("root@db-prod-1", Some(env.code())), ("root@staging", None)]
        .into_iter()
        .enumerate()
    {
        let out = env.ssh(&env.dest(dest), code.as_deref(), "echo ctx; exit 4");
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
        let end = std::time::Instant::now() + WAIT;
        while env
            .events()
            .iter()
            .filter(|e| matches!(e, AuditEvent::SshConnectionClose { .. }))
            .count()
            <= n
        {
            assert!(
                std::time::Instant::now() < end,
                "connection {n} close audited"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let events = env.events();
    let ssh: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                AuditEvent::SshAuth { .. }
                    | AuditEvent::SshConnectionOpen { .. }
                    | AuditEvent::AccessAllowed { .. }
                    | AuditEvent::SshSessionStart { .. }
                    | AuditEvent::SshSessionEnd { .. }
                    | AuditEvent::SshConnectionClose { .. }
            )
        })
        .collect();
    let mut sessions = Vec::new();
    for e in &ssh {
        let (client, session) = context_of(e);
        assert_eq!(client.as_deref(), Some("127.0.0.1"), "{e:?}");
        let session = session.unwrap_or_else(|| panic!("no session id in {e:?}"));
        assert_eq!(session.len(), 32, "{session}");
        if !sessions.contains(&session) {
            sessions.push(session);
        }
    }
    assert_eq!(
        sessions.len(),
        2,
        "one session id per connection: {sessions:?}"
    );
    let kinds_of = |id: &String| -> Vec<&str> {
        ssh.iter()
            .filter(|e| context_of(e).1.as_ref() == Some(id))
            .map(|e| e.kind())
            .collect()
    };
    let tail = [
        "ssh_connection_open",
        "access_allowed",
        "ssh_session_start",
        "ssh_session_end",
        "ssh_connection_close",
    ];
    let with_totp: Vec<&str> = ["ssh_auth", "ssh_auth"].into_iter().chain(tail).collect();
    let key_only: Vec<&str> = ["ssh_auth"].into_iter().chain(tail).collect();
    assert_eq!(kinds_of(&sessions[0]), with_totp);
    assert_eq!(kinds_of(&sessions[1]), key_only);
    let end = events
        .iter()
        .find_map(|e| match e {
            AuditEvent::SshSessionEnd { exit_status, .. } => Some(*exit_status),
            _ => None,
        })
        .unwrap();
    assert_eq!(end, Some(4));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_that_cannot_be_written_refuses_logins_and_sessions() {
    let env = Env::start("noaudit").await;
    let reached = env.tmp.path().join("reached");
    let cmd = format!("touch {}; echo reached", reached.display());
    // A connection authenticated while the log worked.
    let sock = env.tmp.path().join("mux.sock");
    let dest = format!("{}@127.0.0.1", env.dest("root@staging"));
    let mut master = env.client("ssh", &env.user_key, None);
    master
        .args(["-M", "-f", "-N", "-o", "ControlPersist=60"])
        .arg("-S")
        .arg(&sock)
        .arg(&dest);
    master
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    assert!(master.status().unwrap().success(), "master authenticated");

    // The log directory is replaced by a file: nothing can be recorded any more.
    std::fs::remove_dir_all(&env.audit_dir).unwrap();
    std::fs::write(&env.audit_dir, b"not a directory").unwrap();

    let mut c = env.client("ssh", &env.user_key, None);
    c.arg("-S").arg(&sock).arg(&dest).arg(&cmd);
    let out = harness::run_with_deadline(c, Duration::from_secs(30));
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("reached"));
    let fresh = env.ssh(&env.dest("root@staging"), None, &cmd);
    assert_eq!(fresh.status.code(), Some(255), "{}", text(&fresh.stderr));
    assert!(!text(&fresh.stdout).contains("reached"));
    assert!(!reached.exists(), "nothing ran on the target");
    assert!(env.cast_files().is_empty(), "no session started");
    let mut exit = env.client("ssh", &env.user_key, None);
    exit.arg("-S").arg(&sock).args(["-O", "exit"]).arg(&dest);
    let _ = harness::run_with_deadline(exit, Duration::from_secs(30));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_locked_after_login_opens_no_new_session_on_the_live_connection() {
    let env = Env::start("locked").await;
    let sock = env.tmp.path().join("mux.sock");
    let dest = format!("{}@127.0.0.1", env.dest("root@staging"));
    let mut master = env.client("ssh", &env.user_key, None);
    master
        .args(["-M", "-f", "-N", "-o", "ControlPersist=60"])
        .arg("-S")
        .arg(&sock)
        .arg(&dest);
    master
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    assert!(master.status().unwrap().success(), "master authenticated");
    let over_master = |cmd: &str| {
        let mut c = env.client("ssh", &env.user_key, None);
        c.arg("-S").arg(&sock).arg(&dest).arg(cmd);
        harness::run_with_deadline(c, Duration::from_secs(30))
    };
    assert_eq!(text(&over_master("echo before").stdout), "before\n");
    gatehouse_core::identity::Users::load(&env.users_file)
        .unwrap()
        .set_locked(&env.user, true)
        .unwrap();
    let out = over_master("echo after");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("access denied"));
    assert!(!text(&out.stdout).contains("after"));
    env.wait_event(WAIT, |e| {
        matches!(
            e,
            AuditEvent::SshRefused {
                reason: SshRefusal::AccountLocked,
                ..
            }
        )
    })
    .await
    .expect("refusal audited");
    let mut exit = env.client("ssh", &env.user_key, None);
    exit.arg("-S").arg(&sock).args(["-O", "exit"]).arg(&dest);
    let _ = harness::run_with_deadline(exit, Duration::from_secs(30));
    env.stop().await;
}
