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
use gatehouse_bastion::backend::{AuthFailure, RefusedFeature};
use gatehouse_bastion::{BastionEvent, SshAction};

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

    let events = env.backend.events();
    assert!(events.iter().any(|e| matches!(e, BastionEvent::AuthSucceeded { totp: true, target, .. } if target == "db-prod-1")));
    let started = env
        .backend
        .wait_event(WAIT, |e| matches!(e, BastionEvent::SessionEnded { .. }))
        .await
        .expect("session end audited");
    let BastionEvent::SessionEnded { recording_id, .. } = started else {
        unreachable!()
    };
    let events = env.backend.events();
    assert!(events.iter().any(|e| matches!(e, BastionEvent::SessionStarted { recording_id: r, action: SshAction::Ssh, kind, .. } if *r == recording_id && kind.starts_with("exec: echo hello"))));

    let (path, lines) = env.cast_with_title("exec: echo hello-from-target");
    assert_eq!(path.file_stem().unwrap().to_str().unwrap(), recording_id);
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
    assert!(env.backend.events().iter().any(|e| matches!(
        e,
        BastionEvent::AuthFailed {
            reason: AuthFailure::BadTotp,
            ..
        }
    )));
    assert!(
        !env.backend
            .events()
            .iter()
            .any(|e| matches!(e, BastionEvent::AuthSucceeded { .. }))
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
    assert!(env.backend.events().iter().any(|e| matches!(
        e,
        BastionEvent::AuthFailed {
            reason: AuthFailure::ReplayedTotp,
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
    assert!(env.backend.events().iter().any(|e| matches!(
        e,
        BastionEvent::AuthFailed {
            reason: AuthFailure::UnknownKey,
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
    let events = env.backend.events();
    for object in ["ssh:denied/root", "ssh:no-such-host/root"] {
        let e = events
            .iter()
            .find(|e| matches!(e, BastionEvent::AccessDenied { object: o, .. } if o == object))
            .unwrap_or_else(|| panic!("denial of {object} audited: {events:?}"));
        assert!(e.is_alert());
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
        .backend
        .wait_event(
            WAIT,
            |e| matches!(e, BastionEvent::HostKeyMismatch { target, .. } if target == "badkey"),
        )
        .await
        .expect("mismatch audited");
    assert!(e.is_alert());
    let BastionEvent::HostKeyMismatch { presented, .. } = e else {
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
    env.backend
        .wait_event(WAIT, |e| {
            matches!(
                e,
                BastionEvent::Refused {
                    feature: RefusedFeature::AgentForwarding,
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
    env.backend
        .wait_event(WAIT, |e| {
            matches!(
                e,
                BastionEvent::Refused {
                    feature: RefusedFeature::RemoteForwarding,
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
