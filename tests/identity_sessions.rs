//! End-to-end tests of web sessions with the in-process store: idle timeout and absolute
//! lifetime, logout (CSRF-protected, never by GET), forged/garbled/duplicated/ended cookies,
//! and session fixation. Each test runs its own `gatehouse` process; users are made with the
//! real CLI. Every refused session is checked to reach nothing upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use std::time::{Duration, Instant};

use crate::support::client::echoed_headers;
use crate::support::identity::{
    LOGIN_PATH, LOGOUT_PATH, PORTAL_PATH, SESSION_COOKIE, csrf_in, form, fresh_totp_window,
    h1_with, session_pair, set_cookie, set_cookie_line,
};
use crate::support::scenario::{assert_unauthenticated, wiki};
use crate::support::{GatehouseSpec, QUICK, host, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_refused_after_the_idle_timeout() {
    let (gh, up) = wiki(GatehouseSpec {
        session_idle: "3s".into(),
        ..Default::default()
    })
    .await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let cookie = gh.login(&host("wiki"), &alice).await;
    let mut c = h1_with(&gh, &host("wiki"), &cookie).await;
    assert_eq!(within(QUICK, "fresh", c.get("/a")).await.status, 200);
    // The timeout is what is under test: wait it out once.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_unauthenticated(&gh, Some(&cookie), "idle session").await;
    assert_eq!(
        up.count(),
        1,
        "idle session reached the upstream: {:?}",
        up.paths()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_session_still_ends_at_its_absolute_lifetime() {
    let (gh, up) = wiki(GatehouseSpec {
        session_idle: "4s".into(),
        session_ttl: "4s".into(),
        ..Default::default()
    })
    .await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let cookie = gh.login(&host("wiki"), &alice).await;
    let start = Instant::now();
    let mut c = h1_with(&gh, &host("wiki"), &cookie).await;
    for t in [1500u64, 3000] {
        tokio::time::sleep_until((start + Duration::from_millis(t)).into()).await;
        assert_eq!(
            within(QUICK, "busy", c.get("/busy")).await.status,
            200,
            "at {t} ms"
        );
    }
    tokio::time::sleep_until((start + Duration::from_millis(5000)).into()).await;
    assert_unauthenticated(&gh, Some(&cookie), "session past its ttl").await;
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_needs_csrf_ends_the_session_and_clears_the_cookie() {
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let h = host("wiki");
    let cookie = gh.login(&h, &alice).await;
    let mut c = h1_with(&gh, &h, &cookie).await;
    let portal = within(QUICK, "portal", c.get(PORTAL_PATH)).await;
    assert_eq!(portal.status, 200, "portal: {}", portal.text());
    let csrf = csrf_in(&portal.text()).expect("portal has a logout form with a csrf field");
    // Without the token (a cross-site post): refused, session intact.
    let r = gh
        .post_form(&h, LOGOUT_PATH, Some(&cookie), String::new())
        .await;
    assert_eq!(r.status, 403, "logout without csrf: {}", r.text());
    let forged = "A".repeat(43);
    let r = gh
        .post_form(&h, LOGOUT_PATH, Some(&cookie), form(&[("csrf", &forged)]))
        .await;
    assert_eq!(r.status, 403, "logout with a forged csrf: {}", r.text());
    assert_eq!(within(QUICK, "still in", c.get("/x")).await.status, 200);
    // A GET never logs out.
    let r = within(QUICK, "GET logout", c.get(LOGOUT_PATH)).await;
    assert_ne!(r.status, 200, "GET logout answered 200");
    assert_eq!(within(QUICK, "still in", c.get("/y")).await.status, 200);

    let r = gh
        .post_form(&h, LOGOUT_PATH, Some(&cookie), form(&[("csrf", &csrf)]))
        .await;
    assert!(
        matches!(r.status.as_u16(), 200 | 303),
        "logout: {} {}",
        r.status,
        r.text()
    );
    let cleared = set_cookie_line(&r, SESSION_COOKIE).expect("logout clears the cookie");
    let v = set_cookie(&r, SESSION_COOKIE).unwrap();
    assert!(
        v.is_empty() || cleared.to_ascii_lowercase().contains("max-age=0"),
        "cookie not cleared: {cleared}"
    );
    gh.expect_audit("logout", |e| e["user"] == "alice").await;
    assert_unauthenticated(&gh, Some(&cookie), "after logout").await;
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_garbled_duplicated_and_ended_cookies_are_refused() {
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let h = host("wiki");
    let good = gh.login(&h, &alice).await;
    let value = good.strip_prefix("__Host-gatehouse=").unwrap().to_string();
    // An ended session: bob logs in and out.
    let bob = gh.create_user("bob", &["staff"]).await;
    let ended = gh.login(&h, &bob).await;
    let mut b = h1_with(&gh, &h, &ended).await;
    let csrf = csrf_in(&within(QUICK, "portal", b.get(PORTAL_PATH)).await.text()).unwrap();
    let r = gh
        .post_form(&h, LOGOUT_PATH, Some(&ended), form(&[("csrf", &csrf)]))
        .await;
    assert!(
        matches!(r.status.as_u16(), 200 | 303),
        "bob's logout: {}",
        r.status
    );

    let mut flipped = value.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let cases = [
        ("forged", session_pair(&"Q".repeat(value.len()))),
        (
            "one character changed",
            session_pair(&String::from_utf8(flipped).unwrap()),
        ),
        ("truncated", session_pair(&value[..value.len() / 2])),
        ("garbled", session_pair("!!not a cookie!!")),
        (
            "over-long",
            session_pair(&format!("{value}{}", "A".repeat(4000))),
        ),
        ("empty", session_pair("")),
        (
            "valid one plus a forged duplicate",
            format!("{good}; {}", session_pair(&"Q".repeat(43))),
        ),
        ("wrong case name", format!("__host-gatehouse={value}")),
        ("ended session", ended.clone()),
    ];
    for (what, cookie) in &cases {
        assert_unauthenticated(&gh, Some(cookie), what).await;
    }
    assert_eq!(
        up.count(),
        0,
        "refused cookies reached the upstream: {:?}",
        up.paths()
    );
    // The good cookie itself still works (the refusals were about the cookies).
    let mut c = h1_with(&gh, &h, &good).await;
    assert_eq!(within(QUICK, "good cookie", c.get("/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_planted_before_login_is_not_the_session_after() {
    let (gh, _up) = wiki(GatehouseSpec::default()).await;
    let h = host("wiki");
    let mallory = gh.create_user("mallory", &["staff"]).await;
    let planted_valid = gh.login(&h, &mallory).await;
    let planted_random = session_pair(&"R".repeat(43));
    for (name, planted) in [("alice", &planted_valid), ("carol", &planted_random)] {
        let user = gh.create_user(name, &["staff"]).await;
        fresh_totp_window(2).await;
        let f = gh.login_form(&h, None).await;
        let cookie = format!("{}; {planted}", f.login_cookie);
        let body = form(&[
            ("csrf", &f.csrf),
            ("user", &user.name),
            ("password", &user.password),
            ("code", &user.code()),
        ]);
        let r = gh.post_form(&h, LOGIN_PATH, Some(&cookie), body).await;
        assert_eq!(
            r.status,
            303,
            "{name}: login with a planted cookie: {}",
            r.text()
        );
        let fresh = session_pair(&set_cookie(&r, SESSION_COOKIE).expect("a new session cookie"));
        assert_ne!(&fresh, planted, "{name}: the planted session id was kept");
        let mut c = h1_with(&gh, &h, &fresh).await;
        let echo = within(QUICK, "fresh session", c.get("/who")).await.json();
        assert_eq!(
            echoed_headers(&echo, "x-gatehouse-user"),
            vec![name.to_string()]
        );
    }
    // mallory's planted session never became alice's: it is ended (the login replaced it)
    // or still mallory's. The random one is nobody's.
    let mut c = h1_with(&gh, &h, &planted_valid).await;
    let r = within(QUICK, "mallory", c.get("/who")).await;
    match r.status.as_u16() {
        200 => assert_eq!(
            echoed_headers(&r.json(), "x-gatehouse-user"),
            vec!["mallory"]
        ),
        401 | 303 => {}
        s => panic!("planted session after the victim's login: {s} {}", r.text()),
    }
    assert_unauthenticated(&gh, Some(&planted_random), "planted random id").await;
}

/// Opens a WebSocket-style upgrade to the echo upstream's `/ws` with `cookie`.
async fn open_ws(
    gh: &support::Gatehouse,
    cookie: Option<&str>,
) -> Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, u16> {
    let mut c = gh.h1_anon(&host("wiki")).await;
    let headers: Vec<(&str, &str)> = cookie.map(|ck| ("cookie", ck)).into_iter().collect();
    let req = c.upgrade_request("/ws", &headers);
    let resp = within(QUICK, "upgrade", c.send_head(req)).await.unwrap();
    if resp.status() != 101 {
        return Err(resp.status().as_u16());
    }
    let up = within(QUICK, "upgraded", hyper::upgrade::on(resp))
        .await
        .unwrap();
    Ok(hyper_util::rt::TokioIo::new(up))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_needs_a_session_and_logout_closes_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let refused = open_ws(&gh, None).await.err();
    assert!(
        matches!(refused, Some(401 | 303)),
        "anonymous upgrade: {refused:?}"
    );
    assert_eq!(up.count(), 0, "an anonymous upgrade reached the upstream");
    let alice = gh.create_user("alice", &["staff"]).await;
    let cookie = gh.login(&host("wiki"), &alice).await;
    let mut ws = open_ws(&gh, Some(&cookie))
        .await
        .unwrap_or_else(|s| panic!("upgrade with a session: {s}"));
    ws.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    within(QUICK, "echo", ws.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(&back, b"hello");
    let mut c = h1_with(&gh, &host("wiki"), &cookie).await;
    let portal = within(QUICK, "portal", c.get(PORTAL_PATH)).await;
    let csrf = csrf_in(&portal.text()).expect("logout csrf");
    let r = gh
        .post_form(
            &host("wiki"),
            LOGOUT_PATH,
            Some(&cookie),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert!(
        matches!(r.status.as_u16(), 200 | 303),
        "logout: {}",
        r.status
    );
    let mut buf = [0u8; 16];
    within(QUICK, "websocket closed after logout", async {
        loop {
            match ws.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
