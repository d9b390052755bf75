//! Streaming through the gateway: a 100 MiB upload and a 100 MiB download must pass with the
//! gateway's memory flat (its peak RSS, VmHWM, may grow by far less than the body).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use std::time::Duration;

use crate::support::client::H1Conn;
use crate::support::upstream::{MIB, PatternBody, hex, pattern_sha256};
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host, within};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

const SIZE: u64 = 100 * MIB;
/// Allowed growth of the gateway's peak RSS while 100 MiB pass through it.
const MAX_GROWTH_KIB: u64 = 40 * 1024;
const TRANSFER_LIMIT: Duration = Duration::from_secs(90);

async fn gateway() -> (Gatehouse, Upstream) {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        upstream_timeout: "30s".into(),
        idle_timeout: "60s".into(),
        ..Default::default()
    }
    .with_app(AppSpec::new("files", &host("files"), &up.url()));
    (Gatehouse::start_signed_in(spec).await, up)
}

/// Warms the proxy path up (first connection, pools, buffers) so the baseline is fair.
async fn warm_up(c: &mut H1Conn) {
    let r = within(QUICK, "warm-up download", c.get("/download/1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len() as u64, MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_100_mib_streams_with_flat_memory() {
    let (gh, _up) = gateway().await;
    let mut c = gh.h1(&host("files")).await;
    warm_up(&mut c).await;
    let (hwm_before, rss_before) = gh.memory_kib();
    let resp = within(
        QUICK,
        "download head",
        c.send_head(c.request("GET", "/download/100", &[], support::client::empty())),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    within(TRANSFER_LIMIT, "100 MiB download", async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("download body broke").into_data() {
                total += data.len() as u64;
                hasher.update(&data);
            }
        }
    })
    .await;
    let (hwm_after, rss_after) = gh.memory_kib();
    assert_eq!(total, SIZE, "downloaded bytes");
    assert_eq!(
        hex(&hasher.finalize()),
        pattern_sha256(SIZE),
        "downloaded content"
    );
    let growth = hwm_after.saturating_sub(hwm_before);
    eprintln!(
        "download: VmHWM {hwm_before} -> {hwm_after} KiB (+{growth}), VmRSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "gateway peak RSS grew by {growth} KiB during a 100 MiB download (VmHWM {hwm_before} -> {hwm_after} KiB, VmRSS {rss_before} -> {rss_after} KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_100_mib_streams_with_flat_memory() {
    let (gh, up) = gateway().await;
    let mut c = gh.h1(&host("files")).await;
    warm_up(&mut c).await;
    let (hwm_before, rss_before) = gh.memory_kib();
    let body = PatternBody::new(SIZE).map_err(|e| match e {}).boxed();
    let req = c.request(
        "POST",
        "/upload",
        &[("content-type", "application/octet-stream")],
        body,
    );
    let r = within(TRANSFER_LIMIT, "100 MiB upload", c.send(req)).await;
    let (hwm_after, rss_after) = gh.memory_kib();
    assert_eq!(r.status, 200, "body: {}", r.text());
    let echo = r.json();
    assert_eq!(echo["bytes"], SIZE, "bytes the upstream received");
    assert_eq!(
        echo["sha256"],
        pattern_sha256(SIZE),
        "content the upstream received"
    );
    assert_eq!(up.count(), 2);
    let growth = hwm_after.saturating_sub(hwm_before);
    eprintln!(
        "upload: VmHWM {hwm_before} -> {hwm_after} KiB (+{growth}), VmRSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "gateway peak RSS grew by {growth} KiB during a 100 MiB upload (VmHWM {hwm_before} -> {hwm_after} KiB, VmRSS {rss_before} -> {rss_after} KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_download_of_100_mib_streams_with_flat_memory() {
    let (gh, _up) = gateway().await;
    let mut c = gh.h2(&host("files")).await;
    let r = within(QUICK, "warm-up", c.get("/download/1")).await;
    assert_eq!(r.body.len() as u64, MIB);
    let (hwm_before, _) = gh.memory_kib();
    let req = c.request("GET", "/download/100", &[], support::client::empty());
    c.send.ready().await.unwrap();
    let resp = within(QUICK, "h2 download head", c.send.send_request(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    within(TRANSFER_LIMIT, "100 MiB h2 download", async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("h2 download body broke").into_data() {
                total += data.len() as u64;
                hasher.update(&data);
            }
        }
    })
    .await;
    let (hwm_after, _) = gh.memory_kib();
    assert_eq!(total, SIZE);
    assert_eq!(hex(&hasher.finalize()), pattern_sha256(SIZE));
    let growth = hwm_after.saturating_sub(hwm_before);
    eprintln!("h2 download: VmHWM {hwm_before} -> {hwm_after} KiB (+{growth})");
    assert!(
        growth < MAX_GROWTH_KIB,
        "gateway peak RSS grew by {growth} KiB during a 100 MiB HTTP/2 download"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_without_content_length_reaches_the_upstream_intact() {
    let (gh, _up) = gateway().await;
    let mut c = gh.h1(&host("files")).await;
    let size = 20 * MIB + 3;
    let body = PatternBody::chunked(size).map_err(|e| match e {}).boxed();
    let req = c.request("POST", "/upload", &[], body);
    assert!(req.headers().get("content-length").is_none());
    let r = within(TRANSFER_LIMIT, "chunked upload", c.send(req)).await;
    assert_eq!(r.status, 200, "body: {}", r.text());
    assert_eq!(r.json()["bytes"], size);
    assert_eq!(r.json()["sha256"], pattern_sha256(size));
}
