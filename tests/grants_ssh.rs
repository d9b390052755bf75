//! A grant for an SSH target ends what it alone allowed: a live session (the real `ssh`
//! client sees it close, with the reason) and a port forward through it, within two seconds
//! of the grant's expiry, with `grant_session_ended` and `grant_expired` on record; after
//! it, the target is refused again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Read;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bastion::sshd::{self, Client, Sshd, keygen, pub_path};
use crate::support::identity::random_password;
use crate::support::{Gatehouse, GatehouseSpec, QUICK};

/// How long the grant lasts: time enough to log in and open both before it ends.
const GRANT_FOR: &str = "8s";

fn unix_ms(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i128
}

/// Reads until EOF (or the deadline): true when the peer closed.
fn closed_within(mut s: &TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_grant_ends_the_live_ssh_session_and_forward_it_allowed() {
    let gh = tokio::task::spawn_blocking(|| {
        let dir = crate::support::TestDir::new("grant-ssh-keys");
        let cred = dir.join("target_cred");
        let cred_pub = keygen(&cred);
        let sshd = Sshd::start(dir.path(), &[&cred_pub]);
        let toml = format!(
            "\n[[targets]]\nname = \"staging\"\naddress = \"{}\"\nhost_key = \"{}\"\n\
             logins = [\"root\"]\ncredential = \"{}\"\nrequire_totp = false\n",
            sshd.addr,
            sshd.pinned,
            cred.display()
        );
        let spec = GatehouseSpec {
            bastion: true,
            policy_csv: Some("p, group:sre, ssh:staging/root, ssh, allow\n".into()),
            extra_toml: toml,
            ..GatehouseSpec::default()
        };
        (Gatehouse::start_blocking(spec), sshd, dir)
    })
    .await
    .unwrap();
    let (gh, sshd, _keys) = gh;
    let bastion = gh.bastion_addr().expect("bastion on the ready line");
    sshd::wait_ssh_banner(bastion, sshd::BANNER_DEADLINE, "bastion");
    let key = gh.path("dave_ed25519");
    keygen(&key);
    let pubkey = pub_path(&key);
    let pw = format!("{}\n", random_password());
    let out = tokio::task::block_in_place(|| {
        gh.cli(
            &[
                "user",
                "add",
                "dave",
                "--groups",
                "contractors",
                "--ssh-key",
                pubkey.to_str().unwrap(),
                "--password-stdin",
            ],
            Some(&pw),
        )
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = Client::new(gh.dir.path(), bastion, &key);

    let id = tokio::task::block_in_place(|| {
        // Not allowed by the policy.
        let denied = client.ssh("dave:root@staging", None, "true");
        assert!(!denied.status.success());
        assert!(sshd::text(&denied.stderr).contains("access denied"));

        let out = gh.cli(
            &[
                "grant",
                "add",
                "dave",
                "ssh:staging/root",
                "--action",
                "ssh|port-forward",
                "--for",
                GRANT_FOR,
                "--reason",
                "INC-77: restart the stuck job",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let listed = String::from_utf8(gh.cli(&["grant", "list", "--json"], None).stdout).unwrap();
        let grant: serde_json::Value =
            serde_json::from_str(listed.lines().next().unwrap()).unwrap();
        let expires = gatehouse_core::audit::parse_timestamp(grant["expires_at"].as_str().unwrap())
            .unwrap() as i128;

        // A live session: a command that would run for a minute.
        let mut c = client.command("ssh", None, &[]);
        c.arg("dave:root@staging@127.0.0.1")
            .arg("echo started; sleep 60")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut session = c.spawn().unwrap();
        // A forward: `-L` through the bastion to the target's own sshd.
        let local = sshd::free_port();
        let mut f = client.command("ssh", None, &["ExitOnForwardFailure=yes"]);
        f.arg("-N")
            .arg("-L")
            .arg(format!("127.0.0.1:{local}:{}", sshd.addr))
            .arg("dave:root@staging@127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut forward_client = f.spawn().unwrap();
        let start = Instant::now();
        let tunnel = loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", local)) {
                s.set_read_timeout(Some(QUICK)).unwrap();
                let mut banner = [0u8; 8];
                if s.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0") {
                    break s;
                }
            }
            assert!(start.elapsed() < QUICK, "the forward never worked");
            std::thread::sleep(Duration::from_millis(50));
        };
        let now = unix_ms(SystemTime::now());
        assert!(
            now < expires,
            "set-up took longer than the grant ({GRANT_FOR})"
        );

        // The grant expires: both end within two seconds, and the client is told why.
        let start = Instant::now();
        let status = loop {
            if let Some(st) = session.try_wait().unwrap() {
                break st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the session outlived its grant"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let ended = unix_ms(SystemTime::now());
        let late = ended - expires;
        eprintln!("the session ended {late} ms after the grant's expiry");
        assert!(
            (0..=2000).contains(&late),
            "session ended {late} ms after the grant's expiry"
        );
        let mut stdout = String::new();
        let mut stderr = String::new();
        session
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        session
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(stdout.contains("started"), "{stdout}");
        assert!(!status.success());
        assert!(
            stderr.contains(&format!("access grant {id} expired")),
            "the client is told why: {stderr}"
        );
        assert!(
            closed_within(&tunnel, Duration::from_millis(2500)),
            "the forward outlived its grant"
        );
        let _ = forward_client.kill();
        let _ = forward_client.wait();

        // Refused again afterwards.
        let again = client.ssh("dave:root@staging", None, "true");
        assert!(!again.status.success());
        assert!(sshd::text(&again.stderr).contains("access denied"));
        id
    });
    for action in ["ssh", "port-forward"] {
        let e = gh
            .expect_audit("grant_session_ended", |e| e["action"] == action)
            .await;
        assert_eq!(e["grant_id"], id.as_str());
        assert_eq!(e["user"], "dave");
        assert_eq!(e["object"], "ssh:staging/root");
        assert_eq!(e["ended"], "expired");
    }
    gh.expect_audit("ssh_session_end", |e| e["reason"] == "access grant expired")
        .await;
    gh.expect_audit("grant_expired", |e| e["grant_id"] == id.as_str())
        .await;
    // Refused before the grant and after its expiry, both on record.
    assert_eq!(
        gh.count_audit("access_denied", |e| e["user"] == "dave"
            && e["object"] == "ssh:staging/root"),
        2
    );
    let started = gh
        .expect_audit("access_allowed", |e| e["action"] == "ssh")
        .await;
    assert_eq!(started["grant_id"], id.as_str());
    assert_eq!(started["grant_reason"], "INC-77: restart the stuck job");
}
