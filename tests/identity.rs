//! End-to-end tests of web login with the in-process store: password + TOTP through to the
//! upstream, wrong and replayed factors, CSRF, open redirects (sessions themselves:
//! identity_sessions.rs; the login throttle: identity_throttle.rs). Each test runs
//! its own `gatehouse` process; users are made with the real CLI and codes computed with
//! totp-rs. Every refusal checks that nothing reached the upstream and, where something is
//! denied to a known user, the audit record.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use crate::support::client::echoed_headers;
use crate::support::identity::{
    LOGIN_PATH, SESSION_COOKIE, csrf_in, form, fresh_totp_window, h1_with, session_pair,
    set_cookie, set_cookie_line,
};
use crate::support::scenario::{assert_unauthenticated, wiki};
use crate::support::{GatehouseSpec, QUICK, Resp, host, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_password_and_totp_reaches_the_upstream_with_identity_headers() {
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff", "ops"]).await;
    assert_unauthenticated(&gh, None, "no cookie").await;
    assert_eq!(
        up.count(),
        0,
        "unauthenticated requests reached the upstream"
    );

    fresh_totp_window(3).await;
    let r = gh
        .try_login(
            &host("wiki"),
            &alice,
            &alice.password,
            &alice.code(),
            Some("/page?x=1"),
        )
        .await;
    assert_eq!(r.status, 303, "login: {}", r.text());
    let loc = r.header("location").unwrap_or_default();
    assert!(
        loc == "/page?x=1" || loc.ends_with(&format!("{}/page?x=1", host("wiki"))),
        "login redirects to next: {loc:?}"
    );
    let line = set_cookie_line(&r, SESSION_COOKIE).expect("session cookie set");
    let attrs = line.to_ascii_lowercase();
    for a in ["secure", "httponly", "samesite", "path=/"] {
        assert!(attrs.contains(a), "session cookie lacks {a}: {line}");
    }
    assert!(
        !attrs.contains("domain="),
        "__Host- cookie with a Domain: {line}"
    );
    let value = set_cookie(&r, SESSION_COOKIE).unwrap();
    assert!(
        value.len() >= 22,
        "session id too short to be random: {value:?}"
    );
    gh.expect_audit("login_success", |e| e["user"] == "alice")
        .await;

    let mut c = h1_with(&gh, &host("wiki"), &session_pair(&value)).await;
    let r = within(QUICK, "proxied", c.get("/page?x=1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["path"], "/page");
    assert_eq!(echoed_headers(&echo, "x-gatehouse-user"), vec!["alice"]);
    let groups = echoed_headers(&echo, "x-gatehouse-groups");
    assert_eq!(groups.len(), 1, "one groups header: {groups:?}");
    assert!(
        groups[0].contains("staff") && groups[0].contains("ops"),
        "groups header {groups:?}"
    );
    assert_eq!(echoed_headers(&echo, "x-gatehouse-assertion").len(), 1);
    // The gateway's cookies never reach the upstream.
    for v in echoed_headers(&echo, "cookie") {
        assert!(
            !v.contains("__Host-gatehouse"),
            "session cookie forwarded: {v}"
        );
    }
    assert_eq!(up.count(), 1);
}

/// The 401 page of a failed login, with the per-form parts (CSRF token, echoed user name)
/// blanked, so failures of different kinds can be compared.
fn generic(r: &Resp, user: &str) -> String {
    let mut t = r.text();
    if let Some(csrf) = csrf_in(&t) {
        t = t.replace(&csrf, "CSRF");
    }
    t.replace(user, "USER")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_wrong_code_and_unknown_user_get_one_generic_401_and_are_audited() {
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let h = host("wiki");
    fresh_totp_window(3).await;
    let bad_pw = gh
        .try_login(&h, &alice, "not-the-password", &alice.code(), None)
        .await;
    let bad_code = gh
        .try_login(&h, &alice, &alice.password, &alice.wrong_code(), None)
        .await;
    let mut ghost = gh.create_user("ghost", &["staff"]).await;
    ghost.name = "nobody-here".into();
    let unknown = gh
        .try_login(&h, &ghost, &ghost.password, &ghost.code(), None)
        .await;
    for (what, r) in [
        ("wrong password", &bad_pw),
        ("wrong code", &bad_code),
        ("unknown user", &unknown),
    ] {
        assert_eq!(r.status, 401, "{what}: {} {}", r.status, r.text());
        assert!(
            set_cookie(r, SESSION_COOKIE).is_none_or(|v| v.is_empty()),
            "{what}: a session cookie was set"
        );
    }
    assert_eq!(
        generic(&bad_pw, "alice"),
        generic(&bad_code, "alice"),
        "wrong password and wrong code are told apart"
    );
    assert_eq!(
        generic(&bad_pw, "alice"),
        generic(&unknown, "nobody-here"),
        "wrong password and unknown user are told apart"
    );
    let failures = gh.count_audit("login_failure", |e| e["user"] == "alice")
        + gh.count_audit("totp_failure", |e| e["user"] == "alice");
    assert!(
        failures >= 2,
        "audit failures for alice: {:#?}",
        gh.audit_events()
    );
    gh.expect_audit("login_failure", |e| e["user"] == "nobody-here")
        .await;
    assert_eq!(gh.count_audit("login_success", |_| true), 0);
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_code_cannot_be_replayed_and_of_two_raced_logins_exactly_one_wins() {
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let bob = gh.create_user("bob", &["staff"]).await;
    let h = host("wiki");
    // All of this must happen within one 30 s step, so the replayed code is still "valid".
    fresh_totp_window(15).await;
    let step = support::identity::unix_now() / 30;
    let code = alice.code();
    let first = gh.try_login(&h, &alice, &alice.password, &code, None).await;
    assert_eq!(first.status, 303, "first use of the code: {}", first.text());
    let again = gh.try_login(&h, &alice, &alice.password, &code, None).await;
    assert_eq!(
        again.status,
        401,
        "replayed code: {} {}",
        again.status,
        again.text()
    );
    assert!(set_cookie(&again, SESSION_COOKIE).is_none_or(|v| v.is_empty()));

    // Two logins of bob with one code, raced.
    let code = bob.code();
    let f1 = gh.login_form(&h, None).await;
    let f2 = gh.login_form(&h, None).await;
    let body = |csrf: &str| {
        form(&[
            ("csrf", csrf),
            ("user", "bob"),
            ("password", &bob.password),
            ("code", &code),
        ])
    };
    let (r1, r2) = tokio::join!(
        gh.post_form(&h, LOGIN_PATH, Some(&f1.login_cookie), body(&f1.csrf)),
        gh.post_form(&h, LOGIN_PATH, Some(&f2.login_cookie), body(&f2.csrf)),
    );
    let mut statuses = [r1.status.as_u16(), r2.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [303, 401], "raced logins with one code");
    assert_eq!(
        support::identity::unix_now() / 30,
        step,
        "the TOTP step changed during the test: the replay checks above proved nothing"
    );
    let failures = gh.count_audit("login_failure", |e| e["user"] == "bob")
        + gh.count_audit("totp_failure", |e| e["user"] == "bob");
    assert!(
        failures >= 1,
        "no audit record of bob's refused login: {:#?}",
        gh.audit_events()
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_or_with_a_forged_csrf_token_is_403() {
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let h = host("wiki");
    fresh_totp_window(8).await;
    let code = alice.code();
    let f = gh.login_form(&h, None).await;
    let other = gh.login_form(&h, None).await;
    let creds = |csrf: Option<&str>| {
        let mut fields = vec![
            ("user", "alice"),
            ("password", alice.password.as_str()),
            ("code", code.as_str()),
        ];
        if let Some(c) = csrf {
            fields.push(("csrf", c));
        }
        form(&fields)
    };
    let forged = "A".repeat(43);
    let cases = [
        ("no csrf field", Some(f.login_cookie.as_str()), creds(None)),
        ("empty csrf", Some(f.login_cookie.as_str()), creds(Some(""))),
        (
            "forged csrf",
            Some(f.login_cookie.as_str()),
            creds(Some(&forged)),
        ),
        (
            "csrf of another form",
            Some(f.login_cookie.as_str()),
            creds(Some(&other.csrf)),
        ),
        ("no login cookie", None, creds(Some(&f.csrf))),
    ];
    for (what, cookie, body) in cases {
        let r = gh.post_form(&h, LOGIN_PATH, cookie, body).await;
        assert_eq!(r.status, 403, "{what}: {} {}", r.status, r.text());
        assert!(
            set_cookie(&r, SESSION_COOKIE).is_none_or(|v| v.is_empty()),
            "{what}: session cookie set"
        );
    }
    assert_eq!(
        gh.count_audit("login_success", |_| true),
        0,
        "a CSRF-refused login succeeded"
    );
    assert_eq!(up.count(), 0);
}

/// True when `location` (relative or absolute) keeps the browser on a Gatehouse host.
fn on_gatehouse_host(location: &str) -> bool {
    if location.contains('\\')
        || location
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return false;
    }
    if let Some(rest) = location.strip_prefix('/') {
        return !rest.starts_with('/')
            && !rest.to_ascii_lowercase().starts_with("%2f")
            && !rest.to_ascii_lowercase().starts_with("%5c");
    }
    let Some(rest) = location.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = authority
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    host == "gatehouse.localhost" || host.ends_with(".gatehouse.localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_attempts_all_land_on_a_gatehouse_host() {
    let (gh, _up) = wiki(GatehouseSpec::default()).await;
    let h = host("wiki");
    let attempts = [
        "//evil.com",
        "/\\evil.com",
        "https://evil.com",
        "%2f%2fevil.com",
        "/%2f%2fevil.com",
        "javascript:alert(1)",
        "https://wiki.gatehouse.localhost@evil.com/",
        "https://evil.com\\@wiki.gatehouse.localhost/",
        "/page?ok=1",
    ];
    for (i, next) in attempts.iter().enumerate() {
        // One user per login: each login spends the user's current TOTP step.
        let u = gh.create_user(&format!("redir{i}"), &["staff"]).await;
        fresh_totp_window(2).await;
        let r = gh
            .try_login(&h, &u, &u.password, &u.code(), Some(next))
            .await;
        assert_eq!(r.status, 303, "login with next={next:?}: {}", r.text());
        let loc = r.header("location").unwrap_or_default();
        assert!(
            on_gatehouse_host(&loc),
            "next={next:?} redirected to {loc:?}"
        );
        if *next == "/page?ok=1" {
            assert!(loc.ends_with("/page?ok=1"), "a safe next is kept: {loc:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_pages_work_on_every_host_and_a_post_body_is_limited() {
    let (gh, _up) = wiki(GatehouseSpec::default()).await;
    for h in [host("wiki"), "gatehouse.localhost".to_string()] {
        let f = gh.login_form(&h, None).await;
        assert!(!f.csrf.is_empty(), "{h}");
    }
    let f = gh.login_form(&host("wiki"), None).await;
    let big = format!(
        "csrf={}&user=alice&password={}",
        f.csrf,
        "x".repeat(64 * 1024)
    );
    let head = format!(
        "POST {LOGIN_PATH} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        host("wiki"),
        f.login_cookie,
        big.len()
    );
    let mut raw = gh.raw(&host("wiki")).await;
    // The gateway may answer and close before the whole body is written.
    let _ = raw.send(format!("{head}{big}").as_bytes()).await;
    let out = raw.read_until_close(QUICK).await;
    assert!(
        matches!(out.status(), Some(400 | 413)),
        "64 KiB login form: {}",
        out.text()
    );
}
