use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// What the test receiver saw: (idempotency key, body) of every call, and how many calls it
/// still answers 503.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, serde_json::Value)>,
    fail_next: usize,
}

/// A minimal HTTP/1.1 receiver (keep-alive, content-length bodies).
async fn receiver(seen: Arc<Mutex<Seen>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                            .map(str::to_string)
                    };
                    let len: usize = header("content-length").unwrap().trim().parse().unwrap();
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        let n = s.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap();
                    buf.drain(..head_end + len);
                    let status = {
                        let mut g = seen.lock().unwrap();
                        g.calls
                            .push((header("idempotency-key").unwrap_or_default(), body));
                        if g.fail_next > 0 {
                            g.fail_next -= 1;
                            503
                        } else {
                            200
                        }
                    };
                    let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn alert(id: &str) -> Alert {
    Alert {
        incident_id: id.to_string(),
        kind: "access_denied".into(),
        user: Some("mallory".into()),
        client: Some("192.0.2.9".into()),
        time: now_rfc3339(),
        seq: Some(7),
        detail: serde_json::json!({"event": "access_denied"}),
    }
}

#[tokio::test]
async fn an_alert_is_posted_with_its_incident_id_and_retried_until_accepted() {
    let seen = Arc::new(Mutex::new(Seen {
        fail_next: 2,
        ..Seen::default()
    }));
    let addr = receiver(seen.clone()).await;
    let url = url::Url::parse(&format!("http://{addr}/hook")).unwrap();
    let alerter = Alerter::start(url, HttpClient::new(None).unwrap());
    let start = std::time::Instant::now();
    alerter.raise(alert("inc-1"));
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "raise never waits"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alerter.metrics().delivered.get() < 1 {
        assert!(std::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let g = seen.lock().unwrap();
    assert_eq!(g.calls.len(), 3, "two 503s, then accepted");
    for (key, body) in &g.calls {
        assert_eq!(key, "inc-1");
        assert_eq!(body["incident_id"], "inc-1");
        assert_eq!(body["kind"], "access_denied");
        assert_eq!(body["user"], "mallory");
        assert_eq!(body["client"], "192.0.2.9");
        assert!(body["time"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(alerter.metrics().retries.get(), 2);
    assert_eq!(alerter.metrics().pending.get(), 0);
}

#[tokio::test]
async fn a_dead_receiver_never_slows_raise_and_a_full_queue_is_counted() {
    // Nothing listens on this port: every call fails at once and is retried later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
    let alerter = Alerter::start(url, HttpClient::new(None).unwrap());
    let start = std::time::Instant::now();
    for i in 0..(ALERT_QUEUE + IN_FLIGHT + 100) {
        alerter.raise(alert(&format!("inc-{i}")));
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "raising {} alerts took {:?}",
        ALERT_QUEUE + IN_FLIGHT + 100,
        start.elapsed()
    );
    assert!(alerter.metrics().dropped.get() >= 100);
    assert_eq!(
        alerter.metrics().raised.get(),
        (ALERT_QUEUE + IN_FLIGHT + 100) as u64
    );
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    assert_eq!(backoff(1), RETRY_FIRST);
    assert_eq!(backoff(2), RETRY_FIRST * 2);
    assert_eq!(backoff(40), RETRY_MAX);
}
