//! The login throttle at the bastion, from outside: the real `ssh` client against the real
//! binary (its users made with the CLI), from several loopback source addresses. Guessing
//! codes is slowed, then locked out at that address only (and says so in the audit log);
//! the web login shares the counters; two honest connections in one TOTP step both log in.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Output;
use std::time::{Duration, Instant};

use crate::bastion::Env;
use crate::bastion::sshd::{self, Client, text};
use crate::support::identity::{fresh_totp_window, unix_now};

/// `ssh` with `code` from source address `from` (`BindAddress`).
pub(crate) fn ssh_from(client: &Client, from: &str, code: &str, cmd: &str) -> Output {
    let mut c = client.command("ssh", Some(code), &[&format!("BindAddress={from}")]);
    c.arg("alice:root@db-prod-1@127.0.0.1").arg(cmd);
    sshd::run(c, sshd::CLIENT_DEADLINE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_over_ssh_are_slowed_then_locked_out_at_that_address_only() {
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    let alice = env.add_user("alice", "sre");
    let client = env.client();
    let good: Vec<String> = (-2..=2).map(|o| alice.code(o)).collect();
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{:06}", (n * 7919 + 123_457) % 1_000_000))
        .find(|c| !good.contains(c))
        .unwrap();
    let counted = || {
        env.audit()
            .iter()
            .filter(|e| e["event"] == "totp_failure" && e["reason"] == "invalid code")
            .count()
    };
    // Eight counted failures from 127.0.0.1. A code sent while a delay runs is refused
    // without being counted (the prompt said how long to wait); the web login at the same
    // address shares the counters.
    let mut web_checked = false;
    let deadline = Instant::now() + Duration::from_secs(150);
    while counted() < 8 {
        assert!(
            Instant::now() < deadline,
            "only {} failures counted",
            counted()
        );
        let before = counted();
        let out = tokio::task::block_in_place(|| ssh_from(&client, "127.0.0.1", &wrong, "echo no"));
        assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
        if counted() == before {
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else if counted() == 5 && !web_checked {
            // Five failures: a 4 s delay, over the web too.
            fresh_totp_window(3).await;
            let status = env.web_login(&alice, &alice.code(0)).await;
            assert_eq!(status, 429, "the web login is not slowed by ssh failures");
            web_checked = true;
        }
    }
    assert!(web_checked);
    env.expect_audit("ssh_auth throttled", |e| {
        e["event"] == "ssh_auth"
            && e["step"] == "throttled"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("slowed: this user at this address"))
    });
    env.expect_audit("lockout alert", |e| {
        e["event"] == "lockout"
            && e["key"] == "user:alice@127.0.0.1"
            && e["incident_id"].as_str().is_some()
    });
    fresh_totp_window(5).await;
    tokio::task::block_in_place(|| {
        // The right code from 127.0.0.1 is refused at the key already, and the record says
        // it is a lockout (an alert).
        let out = ssh_from(&client, "127.0.0.1", &alice.code(0), "echo in");
        assert_eq!(out.status.code(), Some(255));
        assert!(!text(&out.stdout).contains("in"));
        let refused = env.expect_audit("ssh_auth locked_out", |e| {
            e["event"] == "ssh_auth" && e["step"] == "locked_out" && e["user"] == "alice"
        });
        assert!(
            refused["incident_id"]
                .as_str()
                .is_some_and(|i| i.starts_with("inc-")),
            "{refused}"
        );
        assert!(
            refused["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("locked out: this user at this address")),
            "{refused}"
        );
        assert_eq!(refused["client_addr"], "127.0.0.1");
        // From an address that has not failed, alice logs in.
        let out = ssh_from(
            &client,
            "127.0.0.2",
            &alice.code(0),
            "echo in-from-elsewhere",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "in-from-elsewhere\n");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_honest_ssh_connections_in_one_step_both_log_in_and_the_replay_is_not_counted() {
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    let alice = env.add_user("alice", "sre");
    let client = env.client();
    fresh_totp_window(20).await;
    let step = unix_now() / 30;
    let (current, next) = (alice.code(0), alice.code(1));
    tokio::task::block_in_place(|| {
        let out = client.ssh("alice:root@db-prod-1", Some(&current), "echo first");
        assert!(out.status.success(), "{}", text(&out.stderr));
        // The second connection types the code on the screen again (OpenSSH asks up to three
        // times); told that it is used, it answers with the next one.
        let log = env.dir.join("prompts.log");
        let askpass = env.dir.join("askpass-honest.sh");
        std::fs::write(
            &askpass,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{log}'\ncase \"$1\" in\n  \
                 *\"already used\"*) echo '{next}' ;;\n  *) echo '{current}' ;;\nesac\n",
                log = log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = client.command("ssh", Some(&current), &[]);
        c.env("SSH_ASKPASS", &askpass)
            .arg("alice:root@db-prod-1@127.0.0.1")
            .arg("echo second");
        let out = sshd::run(c, sshd::CLIENT_DEADLINE);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "second\n");
        let prompts = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = prompts.lines().collect();
        assert_eq!(lines.len(), 2, "{prompts}");
        assert!(lines[0].contains("TOTP code"), "{prompts}");
        assert!(
            lines[1].contains("Code already used, wait for the next one."),
            "{prompts}"
        );
    });
    assert_eq!(
        unix_now() / 30,
        step,
        "the step changed: nothing was replayed"
    );
    env.expect_audit("ssh_auth totp_replayed", |e| {
        e["event"] == "ssh_auth" && e["step"] == "totp_replayed"
    });
    let events = env.audit();
    assert!(
        events.iter().any(|e| e["event"] == "totp_failure"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not counted as a guess"))),
        "the replay is audited"
    );
    for e in &events {
        assert!(
            e["event"] != "lockout" && e["step"] != "throttled" && e["step"] != "locked_out",
            "an honest replay tripped the throttle: {e}"
        );
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "login_success" && e["method"] == "ssh-key+totp")
            .count(),
        2
    );
}
