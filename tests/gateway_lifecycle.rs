//! Process lifecycle: graceful shutdown on SIGTERM (in-flight requests finish, new connections
//! are refused, exit 0).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use std::time::{Duration, Instant};

use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_connections_and_exits_0() {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        upstream_timeout: "15s".into(),
        shutdown_grace: "15s".into(),
        ..Default::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let mut gh = Gatehouse::start_signed_in(spec).await;
    let mut idle = gh.h1(&host("echo")).await;
    assert_eq!(
        within(QUICK, "idle keep-alive conn", idle.get("/"))
            .await
            .status,
        200
    );
    let mut c = gh.h1(&host("echo")).await;
    let slow = tokio::spawn(async move { c.get("/slow/4000").await });
    up.wait_for_count(2, QUICK).await;
    let signalled = Instant::now();
    gh.signal("TERM");

    // New connections are refused while the slow request is still in flight.
    let refused_at = loop {
        match tokio::net::TcpStream::connect(gh.gateway).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                break signalled.elapsed();
            }
            _ if signalled.elapsed() > Duration::from_millis(3000) => {
                panic!(
                    "new connections still accepted {:?} after SIGTERM",
                    signalled.elapsed()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(
        !slow.is_finished(),
        "the slow request ended before the listener closed ({refused_at:?})"
    );

    let r = within(
        Duration::from_secs(10),
        "in-flight request during drain",
        slow,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "in-flight request: {}", r.text());
    assert_eq!(r.text(), "slow done");
    let done = Instant::now();
    let status = tokio::task::block_in_place(|| gh.wait_exit(Duration::from_secs(10)))
        .expect("gatehouse did not exit after draining");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        done.elapsed() < Duration::from_secs(5),
        "exit {:?} after the last request finished: idle connections held the drain open",
        done.elapsed()
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_http2_stream() {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        upstream_timeout: "15s".into(),
        shutdown_grace: "15s".into(),
        ..Default::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let mut gh = Gatehouse::start_signed_in(spec).await;
    let mut c = gh.h2(&host("echo")).await;
    let slow = tokio::spawn(async move { c.get("/slow/2500").await });
    up.wait_for_count(1, QUICK).await;
    gh.signal("TERM");
    let r = within(
        Duration::from_secs(10),
        "in-flight h2 stream during drain",
        slow,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "in-flight h2 stream: {}", r.text());
    assert_eq!(r.text(), "slow done");
    let status = tokio::task::block_in_place(|| gh.wait_exit(Duration::from_secs(10)))
        .expect("gatehouse did not exit after draining");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_0_when_shutdown_grace_ends_with_a_request_still_running() {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        upstream_timeout: "30s".into(),
        shutdown_grace: "1s".into(),
        ..Default::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), &up.url()));
    let mut gh = Gatehouse::start_signed_in(spec).await;
    let mut c = gh.h1(&host("echo")).await;
    let stuck = tokio::spawn(async move {
        let req = c.request("GET", "/slow/20000", &[], support::client::empty());
        c.send_head(req).await.map(|r| r.status())
    });
    up.wait_for_count(1, QUICK).await;
    let signalled = Instant::now();
    gh.signal("TERM");
    let status = tokio::task::block_in_place(|| gh.wait_exit(Duration::from_secs(8)))
        .expect("gatehouse did not exit after shutdown_grace (1s)");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        took < Duration::from_secs(5),
        "exit {took:?} after SIGTERM, want shutdown_grace (1s) + margin"
    );
    // The cut request got an error or a 5xx, never a success.
    let outcome = within(QUICK, "cut request", stuck).await.unwrap();
    assert!(
        outcome.as_ref().map_or(true, |s| s.is_server_error()),
        "request cut by shutdown answered {outcome:?}"
    );
}
