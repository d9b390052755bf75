//! Pre-authentication slots of the bastion, from outside: hundreds of connections from one
//! source address (127.0.0.1) that send a banner and stall, while a real `ssh` from another
//! loopback address (127.0.0.2) logs in; the flood's refusals are counted in the metrics and
//! audited (one record per source and window, not one per refusal), and the stalled
//! connections are cut at the handshake deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::bastion::Env;
use crate::bastion::sshd::text;
use crate::bastion_throttle::ssh_from;
use crate::support::client::{plain_get, read_until_close};
use crate::support::identity::fresh_totp_window;

/// Connections the flood opens from its one address.
const FLOOD: usize = 300;

async fn stalled_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    let mut tcp = s.connect(to).await.unwrap();
    // A banner, then nothing: no key exchange ever.
    let _ = tcp.write_all(b"SSH-2.0-stall\r\n").await;
    tcp
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_flood_from_one_address_never_locks_out_a_login_from_another() {
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    let alice = env.add_user("alice", "sre");
    let client = env.client();
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(stalled_from("127.0.0.1", env.bastion).await);
    }
    // Beyond its share, the flood's connections are closed at once (as fast as the accept
    // loop reaches them).
    let mut closed = vec![false; FLOOD];
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        for (tcp, done) in flood.iter_mut().zip(closed.iter_mut()) {
            if !*done && read_until_close(tcp, Duration::from_millis(5)).await.closed {
                *done = true;
            }
        }
        let n = closed.iter().filter(|c| **c).count();
        if n >= FLOOD - 16 || Instant::now() > deadline {
            break n;
        }
    };
    assert!(
        (FLOOD - 16..FLOOD).contains(&refused),
        "{refused} of {FLOOD} stalled connections refused at once"
    );
    // A real login from 127.0.0.2 while the flood holds its slots.
    fresh_totp_window(5).await;
    let t0 = Instant::now();
    let out = tokio::task::block_in_place(|| {
        ssh_from(&client, "127.0.0.2", &alice.code(0), "echo through")
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through\n");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the login took {:?}",
        t0.elapsed()
    );
    // Counted and audited, rate-limited.
    let metrics = plain_get(env.admin, "localhost", "/metrics").await.text();
    let counted = metric(
        &metrics,
        "gatehouse_ssh_preauth_refused_total{reason=\"per_source\"}",
    );
    assert!(counted >= refused as u64, "{counted} counted:\n{metrics}");
    let record = tokio::task::block_in_place(|| {
        env.expect_audit("preauth_refused ssh", |e| {
            e["event"] == "preauth_refused"
                && e["door"] == "ssh"
                && e["client_addr"] == "127.0.0.1"
                && e["reason"] == "per_source"
        })
    });
    assert!(record["refused"].as_u64().unwrap() >= 1, "{record}");
    let records = env
        .audit()
        .iter()
        .filter(|e| e["event"] == "preauth_refused")
        .count();
    assert!(records <= 3, "{records} records for one flood");
    // The slots the flood holds are given back at the handshake deadline.
    for (tcp, _) in flood.iter_mut().zip(closed).filter(|(_, c)| !c) {
        assert!(
            read_until_close(tcp, Duration::from_secs(15)).await.closed,
            "a stalled connection outlived the handshake deadline"
        );
    }
}
