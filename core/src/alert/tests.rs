use gatehouse_testkit::Webhook;

use super::*;

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
    let hook = Webhook::start().await;
    hook.fail_next(2);
    let url = url::Url::parse(&hook.url()).unwrap();
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
    let calls = hook.calls();
    assert_eq!(calls.len(), 3, "two 503s, then accepted");
    for call in &calls {
        let body = &call.body;
        assert_eq!(call.idempotency_key.as_deref(), Some("inc-1"));
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
    let port = gatehouse_testkit::net::free_port();
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
