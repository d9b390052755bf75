//! Shipping: syslog receives every record once, also after an outage; two instances share a
//! Redis stream, and its copy finds records removed locally.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ev;
use super::key;
use super::signed::Signed;
use crate::audit::ship::redis::{RedisSink, instance_id, read_stream, verify_stream};
use crate::audit::ship::syslog::SyslogSink;
use crate::audit::ship::{ShipMetrics, Shipper};
use crate::config::SyslogTarget;
use crate::testutil::{RedisServer, TempDir};

/// Receives datagrams until `want` distinct records arrived (deadline), returning
/// seq -> how many times it came.
async fn receive(sock: &tokio::net::UnixDatagram, want: usize, seen: &mut BTreeMap<u64, usize>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 70_000];
    while seen.len() < want {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} records arrived", seen.len()))
            .unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        // <PRI>1 TS HOST APP PROCID MSGID SD MSG
        let parts: Vec<&str> = msg.splitn(8, ' ').collect();
        assert!(parts[0] == "<85>1" || parts[0] == "<84>1", "{msg}");
        assert_eq!(parts[3], "gatehouse");
        assert_eq!(parts[6], "-");
        let rec: serde_json::Value = serde_json::from_str(parts[7]).unwrap();
        assert_eq!(parts[1], rec["ts"].as_str().unwrap());
        assert_eq!(parts[5], rec["event"]["event"].as_str().unwrap());
        *seen.entry(rec["seq"].as_u64().unwrap()).or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_gets_every_record_once_and_catches_up_after_an_outage() {
    let s = Signed::new();
    let log = s.open().unwrap();
    let sock_dir = TempDir::new("syslog");
    let path = sock_dir.path().join("log.sock");
    let mut rx = tokio::net::UnixDatagram::bind(&path).unwrap();
    let metrics = ShipMetrics::default();
    let sink = SyslogSink::new(SyslogTarget::Unix(path.clone()), &s.log_dir());
    let shipper = Shipper::spawn(&log, sink, log.written(), metrics.clone());
    for i in 0..100 {
        log.record(ev(i)).await.unwrap();
    }
    let mut seen = BTreeMap::new();
    receive(&rx, 100, &mut seen).await;
    // The daemon goes away: records are refused by the socket and wait in the log.
    drop(rx);
    std::fs::remove_file(&path).unwrap();
    let start = std::time::Instant::now();
    for i in 100..150 {
        log.record(ev(i)).await.unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "shipping slowed the writers"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!shipper.caught_up());
    rx = tokio::net::UnixDatagram::bind(&path).unwrap();
    // The outage was recorded as an alert record too (shipped after it).
    receive(&rx, 151, &mut seen).await;
    assert!(shipper.drain(Duration::from_secs(10)).await);
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..151).collect::<Vec<u64>>()
    );
    assert!(seen.values().all(|&n| n == 1), "duplicates: {seen:?}");
    let text = std::fs::read_to_string(super::segment_files(&s.log_dir()).pop().unwrap()).unwrap();
    assert!(text.contains("\"alert\":\"audit_shipping_failed\""));
    assert!(
        metrics
            .failures
            .get_or_create(&crate::audit::ship::SinkLabels { sink: "syslog" })
            .get()
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_stream_and_its_copy_finds_a_local_cut() {
    let redis = RedisServer::start();
    let a = Signed::new();
    let b = Signed::new();
    let la = a.open().unwrap();
    let lb = b.open().unwrap();
    let ia = instance_id(&a.log_dir()).unwrap();
    let ib = instance_id(&b.log_dir()).unwrap();
    assert_ne!(ia, ib);
    assert_eq!(instance_id(&a.log_dir()).unwrap(), ia, "stable");
    let sa = Shipper::spawn(
        &la,
        RedisSink::new(&redis.url(), ia.clone(), 100_000).unwrap(),
        0,
        ShipMetrics::default(),
    );
    let sb = Shipper::spawn(
        &lb,
        RedisSink::new(&redis.url(), ib.clone(), 100_000).unwrap(),
        0,
        ShipMetrics::default(),
    );
    for i in 0..40 {
        la.record(ev(i)).await.unwrap();
        lb.record(ev(i)).await.unwrap();
    }
    assert!(sa.drain(Duration::from_secs(10)).await && sb.drain(Duration::from_secs(10)).await);
    let entries = read_stream(&redis.url()).await.unwrap();
    let report = verify_stream(&entries, &key(), &a.log_dir(), &ia).unwrap();
    assert_eq!(report.instances.get(&ia), Some(&40));
    assert_eq!(report.instances.get(&ib), Some(&40));
    assert_eq!(report.compared, 40);
    // A retried batch adds nothing twice: ship again from the start.
    let again = Shipper::spawn(
        &la,
        RedisSink::new(&redis.url(), ia.clone(), 100_000).unwrap(),
        0,
        ShipMetrics::default(),
    );
    la.record(ev(99)).await.unwrap();
    assert!(again.drain(Duration::from_secs(10)).await && sa.drain(Duration::from_secs(10)).await);
    assert_eq!(read_stream(&redis.url()).await.unwrap().len(), 81);
    // Records cut from A's local log are still in the stream, which says so.
    la.close();
    drop((la, sa, again));
    let seg = super::segment_files(&a.log_dir()).pop().unwrap();
    let mut l = super::lines(&seg);
    l.truncate(30);
    super::write_lines(&seg, &l);
    let entries = read_stream(&redis.url()).await.unwrap();
    match verify_stream(&entries, &key(), &a.log_dir(), &ia) {
        Err(crate::error::AuditError::Broken { problem, .. }) => {
            assert!(
                problem.contains("11 record(s)") && problem.contains("records 30..40"),
                "{problem}"
            )
        }
        other => panic!("the cut was not found: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_udp_gets_every_record() {
    let s = Signed::new();
    let log = s.open().unwrap();
    let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = rx.local_addr().unwrap().to_string();
    let sink = SyslogSink::new(SyslogTarget::Udp(addr), &s.log_dir());
    let shipper = Shipper::spawn(&log, sink, 0, ShipMetrics::default());
    for i in 0..20 {
        log.record(ev(i)).await.unwrap();
    }
    let mut seqs = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while seqs.len() < 20 {
        let n = tokio::time::timeout(Duration::from_secs(10), rx.recv(&mut buf))
            .await
            .expect("udp syslog datagram")
            .unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        let json = msg.splitn(8, ' ').nth(7).unwrap();
        let rec: serde_json::Value = serde_json::from_str(json).unwrap();
        seqs.push(rec["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (0..20).collect::<Vec<u64>>());
    assert!(shipper.drain(Duration::from_secs(5)).await);
}

/// A command on the test Redis.
async fn redis_cmd<T: redis::FromRedisValue>(url: &url::Url, cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    cmd.query_async(&mut con).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_holds_batches_capped_by_records_and_reads_older_entries_too() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = Signed::new();
    let la = a.open().unwrap();
    let ia = instance_id(&a.log_dir()).unwrap();
    // An entry of one record, as an older version wrote them (an id that is a time).
    let mut old = redis::cmd("XADD");
    old.arg(crate::audit::ship::redis::STREAM_KEY)
        .arg("*")
        .arg("instance")
        .arg("elsewhere")
        .arg("seq")
        .arg(7)
        .arg("record")
        .arg("not a record");
    let _: String = redis_cmd(&url, &old).await;
    let ship = |max_len| {
        Shipper::spawn(
            &la,
            RedisSink::new(&url, ia.clone(), max_len).unwrap(),
            0,
            ShipMetrics::default(),
        )
    };
    let s = ship(1000);
    for i in 0..300 {
        la.record(ev(i)).await.unwrap();
    }
    assert!(s.drain(Duration::from_secs(10)).await);
    let entries = read_stream(&url).await.unwrap();
    assert_eq!(entries.len(), 301, "the older entry and 300 records");
    assert_eq!(
        (entries[0].instance.as_str(), entries[0].seq),
        ("elsewhere", 7)
    );
    let ours: Vec<u64> = entries
        .iter()
        .filter(|e| e.instance == ia)
        .map(|e| e.seq)
        .collect();
    assert_eq!(ours, (0..300).collect::<Vec<u64>>());
    // Fewer stream entries than records: one per batch.
    let xlen: u64 = redis_cmd(
        &url,
        redis::cmd("XLEN").arg(crate::audit::ship::redis::STREAM_KEY),
    )
    .await;
    assert!(xlen < 301, "{xlen} entries for 301 records");
    // The record count is lost: appending goes on after the stream's newest entry.
    let _: i64 = redis_cmd(
        &url,
        redis::cmd("DEL").arg("gatehouse:audit:stream:records"),
    )
    .await;
    for i in 300..3000 {
        la.record(ev(i)).await.unwrap();
    }
    assert!(s.drain(Duration::from_secs(20)).await);
    // The cap counts records: at least the newest 1000 are held, the oldest are gone (Redis
    // trims whole nodes of the stream, so a few more may stay).
    let entries = read_stream(&url).await.unwrap();
    let ours: Vec<u64> = entries
        .iter()
        .filter(|e| e.instance == ia)
        .map(|e| e.seq)
        .collect();
    assert!(ours.len() >= 1000 && ours.len() < 3000, "{}", ours.len());
    let from = 3000 - ours.len() as u64;
    assert_eq!(ours, (from..3000).collect::<Vec<u64>>());
    let report = verify_stream(&entries, &key(), &a.log_dir(), &ia).unwrap();
    assert_eq!(report.compared, ours.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_held_in_part_adds_only_its_rest() {
    use crate::audit::ship::{ShipLine, Sink};
    let redis = RedisServer::start();
    let url = redis.url();
    let a = Signed::new();
    let la = a.open().unwrap();
    for i in 0..15 {
        la.record(ev(i)).await.unwrap();
    }
    la.close();
    let lines: Vec<ShipLine> = super::lines(&super::segment_files(&a.log_dir())[0])
        .into_iter()
        .enumerate()
        .map(|(i, text)| ShipLine {
            seq: i as u64,
            text,
        })
        .collect();
    let mut sink = RedisSink::new(&url, "i1".into(), 100_000).unwrap();
    assert_eq!(sink.send(&lines[..10]).await.0, 10);
    // Another shipper of the same instance got to 9: records 5..=9 are held, 10..15 are not.
    assert_eq!(sink.send(&lines[5..]).await.0, 10);
    assert_eq!(
        sink.send(&lines[..3]).await.0,
        3,
        "held already: nothing added"
    );
    let held: Vec<(u64, String)> = read_stream(&url)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.record))
        .collect();
    let want: Vec<(u64, String)> = lines.iter().map(|l| (l.seq, l.text.clone())).collect();
    assert_eq!(held, want);
    assert_eq!(sink.resume_after().await.unwrap(), Some(14));
    // A crash between an append and the cursor's move sends the batch again: read once.
    let _: i64 = redis_cmd(&url, redis::cmd("DEL").arg("gatehouse:audit:shipped:i1")).await;
    let mut sink = RedisSink::new(&url, "i1".into(), 100_000).unwrap();
    assert_eq!(sink.send(&lines[10..]).await.0, 5);
    let entries: u64 = redis_cmd(
        &url,
        redis::cmd("XLEN").arg(crate::audit::ship::redis::STREAM_KEY),
    )
    .await;
    assert_eq!(entries, 3, "the batch went again");
    let again: Vec<(u64, String)> = read_stream(&url)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.record))
        .collect();
    assert_eq!(again, want);
    let report = verify_stream(
        &read_stream(&url).await.unwrap(),
        &key(),
        &a.log_dir(),
        "i1",
    );
    assert!(report.is_ok(), "{report:?}");
}
