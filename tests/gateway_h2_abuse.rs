//! HTTP/2 protocol attacks leave a (rate-limited) audit trace: rapid reset, CONTINUATION
//! floods and stream floods, sent as raw frames over real TLS to the real binary. Each is
//! cut off by the server (the connection closes) and recorded once as a typed
//! `protocol_abuse` record with the client address; the same attack again from the same
//! address within the window is not recorded again (the trace cannot become the flood).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::client::{read_until_close, tls_connect};
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host, within};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A GET / header block for `authority`: static-table :method, :scheme, :path, then
/// :authority as a literal without indexing (so every stream's block is the same).
fn get_block(authority: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87, 0x84, 0x01, authority.len() as u8];
    b.extend_from_slice(authority.as_bytes());
    b
}

/// The attacks, as the bytes a client sends after the preface and its SETTINGS.
fn attack(name: &str, authority: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let block = get_block(authority);
    match name {
        // Open a stream and cancel it at once, far more often than the server allows.
        "rapid reset" => {
            for i in 0..400u32 {
                let id = 1 + 2 * i;
                frame(&mut out, HEADERS, END_HEADERS | END_STREAM, id, &block);
                frame(&mut out, RST_STREAM, 0, id, &8u32.to_be_bytes());
            }
        }
        // One header block that never ends: endless CONTINUATION frames.
        "continuation flood" => {
            frame(&mut out, HEADERS, 0, 1, &block[..2]);
            for _ in 0..2000 {
                frame(&mut out, CONTINUATION, 0, 1, &[]);
            }
        }
        // Far more open streams than allowed at once (their requests never end).
        "stream flood" => {
            for i in 0..2000u32 {
                frame(&mut out, HEADERS, END_HEADERS, 1 + 2 * i, &block);
            }
        }
        other => panic!("unknown attack {other}"),
    }
    out
}

/// Sends `bytes` on a fresh HTTP/2 connection and waits for the server to close it.
async fn run_attack(gh: &Gatehouse, name: &str) {
    let mut tls = tls_connect(gh.gateway, &host("echo"), gh.client_config(&[b"h2"]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut bytes = PREFACE.to_vec();
    frame(&mut bytes, SETTINGS, 0, 0, &[]);
    bytes.extend_from_slice(&attack(name, &host("echo")));
    // The server may close before it read everything: a failed write is part of the attack.
    let _ = tokio::time::timeout(QUICK, tls.write_all(&bytes)).await;
    let _ = tokio::time::timeout(QUICK, tls.flush()).await;
    let out = within(
        QUICK + Duration::from_secs(5),
        name,
        read_until_close(&mut tls, QUICK),
    )
    .await;
    assert!(out.closed, "{name}: the server kept the connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_attacks_are_cut_off_and_traced_once_per_address_and_kind() {
    let up = Upstream::start().await;
    let gh = Gatehouse::start(GatehouseSpec::default().with_app(AppSpec::new(
        "echo",
        &host("echo"),
        &up.url(),
    )))
    .await;
    let cases = [
        ("rapid reset", "http2_rapid_reset"),
        ("continuation flood", "http2_continuation_flood"),
        ("stream flood", "http2_stream_flood"),
    ];
    for (name, kind) in cases {
        run_attack(&gh, name).await;
        let record = gh
            .expect_audit("protocol_abuse", |e| e["kind"] == kind)
            .await;
        assert_eq!(record["client_addr"], "127.0.0.1", "{name}: {record}");
        assert_eq!(record["suppressed"], 0, "{name}: {record}");
        gh.expect_log_line(&format!("the {name} warning"), |l| {
            l.contains("WARN") && l.contains("protocol abuse") && l.contains(kind)
        })
        .await;
    }
    // The same attacks again: cut off again, not recorded again within the window.
    for (name, _) in cases {
        run_attack(&gh, name).await;
    }
    for (name, kind) in cases {
        assert_eq!(
            gh.count_audit("protocol_abuse", |e| e["kind"] == kind),
            1,
            "{name} recorded more than once"
        );
    }
    // Honest HTTP/2 traffic is not abuse.
    let mut c = gh.h2_anon(&host("echo")).await;
    assert_eq!(within(QUICK, "honest", c.get("/")).await.status, 401);
    assert_eq!(gh.count_audit("protocol_abuse", |_| true), cases.len());
}
