use super::*;

#[test]
fn https_everywhere_plain_http_only_to_loopback_where_allowed() {
    let loose = HttpClient::with(Trust::WebRoots { extra_ca: None }, PlainHttp::Loopback).unwrap();
    let strict = HttpClient::with(Trust::WebRoots { extra_ca: None }, PlainHttp::Never).unwrap();
    for (url, loose_ok, strict_ok) in [
        ("https://hooks.example.com/x", true, true),
        ("https://idp.example.com/token", true, true),
        ("http://127.0.0.1:9/x", true, false),
        ("http://[::1]:9/x", true, false),
        ("http://localhost:9/x", true, false),
        ("http://hooks.example.com/x", false, false),
        ("http://10.0.0.1/x", false, false),
        ("ftp://127.0.0.1/x", false, false),
    ] {
        let u = url::Url::parse(url).unwrap();
        assert_eq!(url_allowed(&u), loose_ok, "{url}");
        assert_eq!(loose.allows(&u), loose_ok, "{url}");
        assert_eq!(strict.allows(&u), strict_ok, "{url}");
    }
    assert_eq!(
        redacted(&url::Url::parse("https://u:p@h.example:8443/a?token=1").unwrap()),
        "https://h.example:8443"
    );
}

#[tokio::test]
async fn a_refused_url_sends_nothing_and_names_no_path() {
    let strict = HttpClient::with(Trust::WebRoots { extra_ca: None }, PlainHttp::Never).unwrap();
    let req = http::Request::get("http://127.0.0.1:1/cb?code=secret")
        .body(Vec::new())
        .unwrap();
    match strict.execute(req, Duration::from_secs(1), 1024).await {
        Err(OutboundError::Scheme(u)) => assert_eq!(u, "http://127.0.0.1:1"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_empty_or_unreadable_extra_ca_file_is_an_error() {
    let dir = std::env::temp_dir().join(format!("gh-outbound-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        HttpClient::new(Some(&empty)),
        Err(OutboundError::CaCert { source: None, .. })
    ));
    assert!(matches!(
        HttpClient::new(Some(&dir.join("missing.pem"))),
        Err(OutboundError::CaFile { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_silent_peer_times_out_and_a_big_body_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut n = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if n == 1 {
                    // Never answers.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                } else {
                    let body = "x".repeat(2000);
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
                }
            });
        }
    });
    let client = HttpClient::new(None).unwrap();
    let url = url::Url::parse(&format!("http://{addr}/hook")).unwrap();
    let start = std::time::Instant::now();
    let r = client
        .send(OutboundRequest::post_json(
            url.clone(),
            b"{}".to_vec(),
            Duration::from_millis(300),
        ))
        .await;
    assert!(matches!(r, Err(OutboundError::Timeout { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    let mut req = OutboundRequest::post_json(url.clone(), b"{}".to_vec(), Duration::from_secs(5));
    req.max_body = 100;
    let r = client.send(req).await;
    assert!(matches!(r, Err(OutboundError::Body { .. })), "{r:?}");
    let mut req = OutboundRequest::post_json(url, b"{}".to_vec(), Duration::from_secs(5));
    req.max_body = 4096;
    let ok = client.send(req).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body.len(), 2000);
    let plain = url::Url::parse("http://hooks.example.com/x").unwrap();
    assert!(matches!(
        client
            .send(OutboundRequest::post_json(
                plain,
                vec![],
                Duration::from_secs(1)
            ))
            .await,
        Err(OutboundError::Scheme(_))
    ));
}
