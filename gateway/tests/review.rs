//! The reviewer console on web sessions, in-process: a web session's entry in the recordings
//! index (made here as the gateway's sign-in wiring makes it) is listed live, its page shows
//! its HTTP requests (allowed and denied) from the audit log, its export is the requests as
//! JSON lines, and a reviewer holding `gatehouse:terminate` revokes it: the user's next
//! request has no session. Before the policy names the reviewer, the console is a 403.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::support::{
    DEADLINE, HOST, OTHER, PASSWORD, USER, audit_lines, get, session_cookie, start, upstream,
};

const PUBLIC: &str = "gatehouse.localhost";

fn on_public(method: Method, path: &str, cookie: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", PUBLIC)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn hidden(body: &str, name: &str) -> Option<String> {
    let pat = format!("name=\"{name}\" value=\"");
    let start = body.find(&pat)? + pat.len();
    body[start..].split('"').next().map(str::to_string)
}

#[tokio::test]
async fn a_web_session_is_listed_with_its_requests_exported_and_revoked() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("wiki", HOST, up)]).await;
    let rec = &h.services.recordings;
    // Alice's web session on the app host, registered as at sign-in, and its requests.
    let raw = h.cookie.strip_prefix("__Host-gatehouse=").unwrap();
    let hash = gatehouse_core::store::session_id_hash(raw).unwrap();
    let id = rec.web_session_started(USER, &hash).await.unwrap();
    rec.web_app_used(&id, "wiki").await.unwrap();
    assert_eq!(h.h1(get("/docs/page-one")).await.0.status(), 200);
    assert_eq!(h.h1(get("/denied/secret")).await.0.status(), 403);

    // Bob, signed in on the public host, is no reviewer yet.
    let code = h.users.current_totp_code(OTHER, &h.cipher).unwrap();
    let bob = h
        .services
        .authenticator
        .verify_password_and_totp(OTHER, PASSWORD, &code, None)
        .await
        .unwrap();
    let bob = session_cookie(&h.services, &bob, PUBLIC).await;
    let list = "/.gatehouse/review";
    let (r, _) = h.h1(on_public(Method::GET, list, &bob, "")).await;
    assert_eq!(r.status(), 403);
    let file = h.dir.0.join("policy.csv");
    let mut policy = std::fs::read_to_string(&file).unwrap();
    policy.push_str(&format!(
        "p, {OTHER}, gatehouse:review, *, allow\np, {OTHER}, gatehouse:terminate, *, allow\n"
    ));
    std::fs::write(&file, policy).unwrap();
    h.policy_reloader.reload().await.unwrap();

    // Listed as live (the index is written by its own thread: wait for it).
    let start = std::time::Instant::now();
    loop {
        let (r, body) = h.h1(on_public(Method::GET, list, &bob, "")).await;
        assert_eq!(r.status(), 200);
        let body = String::from_utf8_lossy(&body).into_owned();
        let live = body.split("Recorded sessions").next().unwrap_or_default();
        if live.contains(id.as_str()) {
            assert!(live.contains("wiki") && live.contains(USER), "{live}");
            break;
        }
        assert!(start.elapsed() < DEADLINE, "not listed: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let page = format!("{list}/s/{id}");
    let (r, body) = h.h1(on_public(Method::GET, &page, &bob, "")).await;
    assert_eq!(r.status(), 200);
    let body = String::from_utf8_lossy(&body).into_owned();
    for needle in [
        "HTTP requests",
        "/docs/page-one",
        "/denied/secret",
        "deny",
        "access_denied",
    ] {
        assert!(body.contains(needle), "{needle}: {body}");
    }
    let (r, export) = h
        .h1(on_public(Method::GET, &format!("{page}/export"), &bob, ""))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paths: Vec<&str> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/docs/page-one", "/denied/secret"]);

    // Ended by the reviewer: alice's next request has no session.
    let csrf = hidden(&body, "csrf").expect("a terminate form");
    let form = format!("csrf={csrf}&reason=shared+account");
    let end = format!("{page}/terminate");
    let (r, done) = h.h1(on_public(Method::POST, &end, &bob, &form)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&done));
    assert!(String::from_utf8_lossy(&done).contains("was ended"));
    let (r, _) = h.h1(get("/docs/page-one")).await;
    assert_ne!(r.status(), 200, "the revoked session still works");
    let audit = audit_lines(&h);
    assert!(
        audit
            .iter()
            .any(|e| e.contains("\"event\":\"session_terminated\"")
                && e.contains("\"kind\":\"web\"")
                && e.contains("\"reason\":\"shared account\"")
                && e.contains(&hash)),
        "{audit:#?}"
    );
    // The reviewer's own session is untouched.
    let (r, _) = h.h1(on_public(Method::GET, list, &bob, "")).await;
    assert_eq!(r.status(), 200);
}
