//! Transport and session limits: weak algorithms refused with the real OpenSSH client, strict
//! key exchange, partial success bound to one user name (driven with russh's client, which can
//! change the name mid-authentication as OpenSSH cannot), attempt cap, idle timeout, maximum
//! session length and graceful shutdown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::harness;

use std::io::BufReader;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{Env, Options, read_until, text};
use gatehouse_bastion::Limits;
use gatehouse_core::audit::AuditEvent;
use russh::client::{self, KeyboardInteractiveAuthResponse};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{MethodKind, client::AuthResult};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_algorithms_are_refused_and_strict_kex_is_used() {
    let env = Env::start("algos").await;
    let dest = format!("{}@127.0.0.1", env.dest("root@staging"));
    for (opt, why) in [
        (
            "KexAlgorithms=diffie-hellman-group14-sha256",
            "no matching key exchange",
        ),
        (
            "KexAlgorithms=diffie-hellman-group-exchange-sha256",
            "no matching key exchange",
        ),
        (
            "KexAlgorithms=ecdh-sha2-nistp256",
            "no matching key exchange",
        ),
        ("Ciphers=aes128-cbc", "no matching cipher"),
        ("Ciphers=aes128-ctr", "no matching cipher"),
        (
            "HostKeyAlgorithms=ecdsa-sha2-nistp256",
            "no matching host key",
        ),
    ] {
        let mut c = env.client_opts("ssh", &env.user_key, None, &["LogLevel=INFO"]);
        c.arg("-o").arg(opt).arg(&dest).arg("true");
        let out = harness::run_with_deadline(c, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(255), "{opt} must be refused");
        assert!(
            text(&out.stderr).contains(why),
            "{opt}: {}",
            text(&out.stderr)
        );
    }
    for mac in ["hmac-sha1", "hmac-sha2-256", "umac-64@openssh.com"] {
        let mut c = env.client("ssh", &env.user_key, None);
        c.args([
            "-o",
            "Ciphers=aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
        ]);
        c.arg("-o")
            .arg(format!("MACs={mac}"))
            .arg(&dest)
            .arg("echo aead-ok");
        let out = harness::run_with_deadline(c, Duration::from_secs(30));
        // AEAD ciphers carry their own integrity: the MAC list does not matter then.
        assert_eq!(
            text(&out.stdout),
            "aead-ok\n",
            "{mac}: {}",
            text(&out.stderr)
        );
    }
    let mut c = env.client_opts(
        "ssh",
        &env.user_key,
        None,
        &["LogLevel=DEBUG3", "Ciphers=aes128-gcm@openssh.com"],
    );
    c.arg(&dest).arg("true");
    let out = harness::run_with_deadline(c, Duration::from_secs(30));
    assert!(out.status.success());
    let log = text(&out.stderr);
    assert!(log.contains("kex: algorithm: curve25519-sha256"), "{log}");
    assert!(
        log.contains("strict KEX"),
        "Terrapin countermeasure negotiated: {log}"
    );
    env.stop().await;
}

struct AnyHostKey;
impl client::Handler for AnyHostKey {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_is_bound_to_the_user_name_and_attempts_are_capped() {
    let env = Env::start("partial").await;
    let key = Arc::new(russh::keys::load_secret_key(&env.user_key, None).unwrap());
    let name = env.dest("root@db-prod-1");
    let mut h = client::connect(Arc::new(client::Config::default()), env.addr, AnyHostKey)
        .await
        .unwrap();
    let r = h
        .authenticate_publickey(&name, PrivateKeyWithHashAlg::new(key.clone(), None))
        .await
        .unwrap();
    match r {
        AuthResult::Failure {
            partial_success,
            remaining_methods,
        } => {
            assert!(partial_success);
            assert_eq!(&remaining_methods[..], &[MethodKind::KeyboardInteractive]);
        }
        AuthResult::Success => panic!("a key alone must not open a TOTP target"),
    }
    // Same user, other target, or another user: the key's partial success does not carry over.
    for other in [
        env.dest("root@staging"),
        "mallory:root@db-prod-1".to_string(),
    ] {
        let r = h
            .authenticate_keyboard_interactive_start(other.clone(), None)
            .await
            .unwrap();
        assert!(
            matches!(r, KeyboardInteractiveAuthResponse::Failure { .. }),
            "{other}: {r:?}"
        );
    }
    // And the original name must start over with the key too.
    let r = h
        .authenticate_keyboard_interactive_start(name.clone(), None)
        .await
        .unwrap();
    assert!(
        matches!(r, KeyboardInteractiveAuthResponse::Failure { .. }),
        "{r:?}"
    );
    // Starting over works.
    let r = h
        .authenticate_publickey(&name, PrivateKeyWithHashAlg::new(key.clone(), None))
        .await
        .unwrap();
    assert!(matches!(
        r,
        AuthResult::Failure {
            partial_success: true,
            ..
        }
    ));
    let r = h
        .authenticate_keyboard_interactive_start(name.clone(), None)
        .await
        .unwrap();
    assert!(
        matches!(r, KeyboardInteractiveAuthResponse::InfoRequest { .. }),
        "{r:?}"
    );
    let r = h
        .authenticate_keyboard_interactive_respond(vec![env.code()])
        .await
        .unwrap();
    assert!(
        matches!(r, KeyboardInteractiveAuthResponse::Success),
        "{r:?}"
    );
    drop(h);

    // Attempts per connection are capped: the connection is closed after six.
    let other = Arc::new(russh::keys::load_secret_key(&env.other_key, None).unwrap());
    let mut h = client::connect(Arc::new(client::Config::default()), env.addr, AnyHostKey)
        .await
        .unwrap();
    let mut closed_after = None;
    let mut took = Vec::new();
    for n in 1..=10 {
        let t0 = Instant::now();
        match h
            .authenticate_publickey(&name, PrivateKeyWithHashAlg::new(other.clone(), None))
            .await
        {
            Ok(AuthResult::Success) => panic!("unregistered key accepted"),
            Ok(AuthResult::Failure { .. }) => took.push(t0.elapsed()),
            Err(_) => {
                closed_after = Some(n);
                break;
            }
        }
    }
    let n = closed_after.expect("connection closed after too many attempts");
    // Six rejections, then the next request is answered by a disconnect.
    assert!(
        n <= gatehouse_bastion::server::MAX_AUTH_ATTEMPTS + 2,
        "closed only after {n} attempts"
    );
    // Each of the six rejections takes the constant rejection time; then the server hangs up
    // (russh's client reports that last answer as one more failure).
    let slow = took
        .iter()
        .filter(|t| {
            **t >= gatehouse_bastion::server::AUTH_REJECTION_TIME - Duration::from_millis(50)
        })
        .count();
    assert_eq!(
        slow,
        gatehouse_bastion::server::MAX_AUTH_ATTEMPTS,
        "{took:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_and_long_sessions_are_closed() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(2),
        max_session: Duration::from_secs(3600),
    };
    let env = Env::start_with(
        "idle",
        Options {
            limits,
            ..Options::default()
        },
    )
    .await;
    let t0 = Instant::now();
    let out = env.ssh(
        &env.dest("root@staging"),
        None,
        "sleep 30; echo not-reached",
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "{:?} {}",
        t0.elapsed(),
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("not-reached"));
    assert!(
        text(&out.stderr).contains("closed after inactivity"),
        "{}",
        text(&out.stderr)
    );
    env.wait_event(
        WAIT,
        |e| matches!(e, AuditEvent::SshSessionEnd { reason, .. } if reason == "idle timeout"),
    )
    .await
    .expect("idle end audited");
    env.stop().await;

    let limits = Limits {
        idle_timeout: Duration::from_secs(600),
        max_session: Duration::from_secs(3),
    };
    let env = Env::start_with(
        "maxlen",
        Options {
            limits,
            ..Options::default()
        },
    )
    .await;
    let t0 = Instant::now();
    let out = env.ssh(
        &env.dest("root@staging"),
        None,
        "while true; do echo tick; sleep 0.3; done",
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert!(text(&out.stdout).contains("tick"));
    assert!(
        text(&out.stderr).contains("session ended by the bastion"),
        "{}",
        text(&out.stderr)
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_and_finishes_recordings() {
    let mut env = Env::start("shutdown").await;
    let mut c = env.client("ssh", &env.user_key, None);
    c.arg(format!("{}@127.0.0.1", env.dest("root@staging")))
        .arg("echo started; sleep 60");
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut stdout, "started", Duration::from_secs(30));
    let recordings = env.recordings.clone();
    let t0 = Instant::now();
    env.drain().await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    let stderr = child.stderr.take().unwrap();
    let (_, err) = harness::wait_output_parts(child, stdout, stderr, Duration::from_secs(20));
    assert!(err.contains("session ended by the bastion"), "{err}");
    assert!(
        env.events()
            .iter()
            .any(|e| matches!(e, AuditEvent::SshSessionEnd { .. }))
    );
    let _ = recordings;
    let casts = env.cast_files();
    assert_eq!(casts.len(), 1, "{casts:?}");
    // An exec without a terminal: a compressed stream, finished (every chunk complete).
    let lines = env.cast_lines(&casts[0]);
    assert!(
        lines
            .iter()
            .any(|l| l[2].as_str().is_some_and(|d| d.contains("started")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_authenticate_is_closed_at_the_deadline() {
    use std::io::{Read, Write};
    let env = Env::start("deadline").await;
    let mut s = std::net::TcpStream::connect(env.addr).unwrap();
    s.write_all(b"SSH-2.0-slowpoke\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let waited = t0.elapsed();
    assert!(
        waited >= gatehouse_bastion::server::AUTH_DEADLINE - Duration::from_secs(1),
        "{waited:?}"
    );
    assert!(
        waited < gatehouse_bastion::server::AUTH_DEADLINE + Duration::from_secs(10),
        "{waited:?}"
    );
    env.stop().await;
}
