//! The login throttle from outside: a real HTTPS client logging in to the real binary from
//! several loopback source addresses (any 127/8 address works on Linux). Both sides of the
//! trade-off the README states: guessing is stopped (delays grow, then a lockout, an alert),
//! and an attacker elsewhere cannot lock a user out at an address that has not failed; a
//! replayed code is refused as used and never counted as a guess.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::support::client::{H1, H1Conn, Resp, empty, full};
use crate::support::identity::{
    LOGIN_COOKIE, LOGIN_PATH, SESSION_COOKIE, TestUser, csrf_in, form, fresh_totp_window,
    set_cookie, unix_now,
};
use crate::support::scenario::wiki;
use crate::support::{Gatehouse, GatehouseSpec, QUICK, host, within};

/// What the login page says after a replayed code.
const CODE_USED: &str = "Code already used, wait for the next one.";

/// An HTTP/1.1 connection to the gateway from source address `from`.
async fn h1_from(gh: &Gatehouse, from: &str, host: &str) -> H1Conn {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let tcp = socket.connect(gh.gateway).await.unwrap();
    let name = ServerName::try_from(host.to_string()).unwrap();
    let tls = TlsConnector::from(gh.client_config(&[H1]))
        .connect(name, tcp)
        .await
        .unwrap();
    H1Conn::over(tls, host).await
}

/// The whole login flow (form, then POST) from `from`.
async fn login_from(gh: &Gatehouse, from: &str, user: &str, password: &str, code: &str) -> Resp {
    let h = host("wiki");
    let mut c = h1_from(gh, from, &h).await;
    let req = c.request("GET", LOGIN_PATH, &[("accept", "text/html")], empty());
    let page = within(QUICK, "GET login form", c.send(req)).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let cookie = format!(
        "{LOGIN_COOKIE}={}",
        set_cookie(&page, LOGIN_COOKIE).expect("login cookie")
    );
    let csrf = csrf_in(&page.text()).expect("csrf field");
    let body = form(&[
        ("csrf", &csrf),
        ("user", user),
        ("password", password),
        ("code", code),
    ]);
    let req = c.request(
        "POST",
        LOGIN_PATH,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookie),
        ],
        full(body),
    );
    within(QUICK, "POST login", c.send(req)).await
}

fn retry_after(r: &Resp) -> u64 {
    r.header("retry-after")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {:?}", r.headers))
}

fn logged_in(r: &Resp) -> bool {
    r.status == 303 && set_cookie(r, SESSION_COOKIE).is_some_and(|v| !v.is_empty())
}

async fn wrong(gh: &Gatehouse, from: &str, user: &TestUser) -> Resp {
    login_from(gh, from, &user.name, "wrong-password-0", &user.code()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_at_one_address_waits_ever_longer_then_is_locked_out_with_an_alert() {
    let (gh, up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let at = "127.0.0.1";
    // Three failures answered at once (OpenSSH asks three times; people mistype).
    for i in 0..3 {
        let r = wrong(&gh, at, &alice).await;
        assert_eq!(r.status, 401, "failure {i}: {}", r.text());
    }
    // Then every guess must wait, longer after each failure; a guess that comes too early is
    // refused (429, Retry-After) and not counted.
    let mut waits = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let locked = loop {
        assert!(
            Instant::now() < deadline,
            "no lockout; waits so far {waits:?}"
        );
        let r = wrong(&gh, at, &alice).await;
        if r.status == 401 {
            continue;
        }
        assert_eq!(r.status, 429, "{}", r.text());
        let secs = retry_after(&r);
        if r.text().contains("locked") {
            break (secs, r);
        }
        assert!(r.text().contains("Try again in"), "{}", r.text());
        if waits.last() != Some(&secs) {
            waits.push(secs);
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
    };
    // 1 s, 2 s, 4 s, 8 s, 16 s (each rounded up from what was left), then the lock.
    assert!(waits.len() >= 4, "delays {waits:?}");
    assert!(
        waits.windows(2).all(|w| w[1] > w[0]),
        "delays must grow: {waits:?}"
    );
    let (secs, page) = locked;
    assert!(
        (600..=900).contains(&secs),
        "lock of {secs} s: {}",
        page.text()
    );
    // Locked: the right password and code are refused too, and it is an alert.
    fresh_totp_window(3).await;
    let r = login_from(&gh, at, "alice", &alice.password, &alice.code()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let lockout = gh
        .expect_audit("lockout", |e| e["key"] == "user:alice@127.0.0.1")
        .await;
    assert_eq!(lockout["failures"], 8, "{lockout}");
    let incident = lockout["incident_id"].as_str().unwrap_or_default();
    assert!(incident.starts_with("inc-"), "{lockout}");
    gh.expect_log_line(&format!("WARN and incident {incident}"), |l| {
        l.contains(incident) && l.contains("WARN")
    })
    .await;
    gh.expect_audit("login_failure", |e| {
        e["user"] == "alice"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("locked out: this user at this address"))
    })
    .await;
    // The same user at an address that has not failed is not locked out.
    let r = login_from(&gh, "127.0.0.2", "alice", &alice.password, &alice.code()).await;
    assert!(logged_in(&r), "alice elsewhere: {} {}", r.status, r.text());
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_at_other_addresses_cannot_lock_the_user_out_and_is_slowed_per_user() {
    let (gh, _up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    // Twenty attacker addresses, each guessing until it is refused: the first address gets
    // its three free failures, then the user's failures elsewhere slow every address that
    // has failed for her — but each fresh address still gets its answer.
    let mut answered = 0;
    for i in 2..=21 {
        let from = format!("127.0.0.{i}");
        let mut here = 0;
        loop {
            let r = wrong(&gh, &from, &alice).await;
            match r.status.as_u16() {
                401 => here += 1,
                429 => break,
                other => panic!("{from}: {other} {}", r.text()),
            }
            assert!(here <= 3, "{from} was never slowed");
        }
        assert!(here >= 1, "{from}, a fresh address, was refused at once");
        answered += here;
    }
    assert!(answered >= 20, "{answered} failures");
    // An alert, naming the user.
    let alert = gh
        .expect_audit("user_throttled", |e| e["user"] == "alice")
        .await;
    assert!(
        alert["incident_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("inc-"))
    );
    // (Its own delay, a second after three failures, has long passed.)
    let r = wrong(&gh, "127.0.0.2", &alice).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let wait = retry_after(&r);
    assert!(
        (1..=60).contains(&wait),
        "the user's delay at a failed address: {wait} s"
    );
    // A fresh attacker address gets one answer, then the user's full (capped) delay.
    let r = wrong(&gh, "127.0.0.30", &alice).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = wrong(&gh, "127.0.0.30", &alice).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!((30..=60).contains(&retry_after(&r)));
    gh.expect_audit("login_failure", |e| {
        e["user"] == "alice"
            && e["client_addr"] == "127.0.0.30"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("slowed: this user, failing from several"))
    })
    .await;
    // Alice at her own address, which has not failed, is not refused nor delayed.
    fresh_totp_window(3).await;
    let r = login_from(&gh, "127.0.0.1", "alice", &alice.password, &alice.code()).await;
    assert!(logged_in(&r), "alice at home: {} {}", r.status, r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_is_refused_as_used_and_never_counted_as_a_guess() {
    let (gh, _up) = wiki(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    fresh_totp_window(12).await;
    let step = unix_now() / 30;
    let code = alice.code();
    let r = login_from(&gh, "127.0.0.1", "alice", &alice.password, &code).await;
    assert!(logged_in(&r), "{} {}", r.status, r.text());
    // More replays than the lockout needs (8): each one told, none counted.
    for i in 0..10 {
        let r = login_from(&gh, "127.0.0.1", "alice", &alice.password, &code).await;
        assert_eq!(r.status, 401, "replay {i}: {}", r.text());
        assert!(r.text().contains(CODE_USED), "replay {i}: {}", r.text());
        assert!(set_cookie(&r, SESSION_COOKIE).is_none_or(|v| v.is_empty()));
    }
    assert_eq!(
        unix_now() / 30,
        step,
        "the step changed: the replays proved nothing"
    );
    // The next code logs in at once.
    let next = alice.code_at(unix_now() + 30);
    let r = login_from(&gh, "127.0.0.1", "alice", &alice.password, &next).await;
    assert!(
        logged_in(&r),
        "the next code after replays: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(gh.count_audit("lockout", |_| true), 0);
    let replays = gh.count_audit("totp_failure", |e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not counted as a guess"))
    });
    assert_eq!(replays, 10, "every replay is audited");
    // A wrong password keeps the generic message (which factor was wrong is never said).
    let r = wrong(&gh, "127.0.0.1", &alice).await;
    assert_eq!(r.status, 401);
    assert!(!r.text().contains(CODE_USED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_spread_over_users_slow_the_client_address() {
    let (gh, _up) = wiki(GatehouseSpec::default()).await;
    let victim = gh.create_user("victim", &["staff"]).await;
    let mut sprayed = Vec::new();
    for i in 0..12 {
        sprayed.push(gh.create_user(&format!("spray{i}"), &["staff"]).await);
    }
    // One failure each from one address: twelve for the address (ten are free, then it
    // waits 1 s, 2 s, ...).
    for u in &sprayed {
        loop {
            let r = wrong(&gh, "127.0.0.3", u).await;
            match r.status.as_u16() {
                401 => break,
                429 => tokio::time::sleep(Duration::from_secs(retry_after(&r))).await,
                other => panic!("{}: {other} {}", u.name, r.text()),
            }
        }
    }
    // Now a 4 s delay for anyone at that address.
    // (Refused before any factor is looked at: the code need not be fresh.)
    let r = login_from(&gh, "127.0.0.3", "victim", &victim.password, &victim.code()).await;
    assert_eq!(r.status, 429, "address throttled: {}", r.text());
    assert!(retry_after(&r) >= 1);
    gh.expect_audit("login_failure", |e| {
        e["user"] == "victim"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("slowed: this address"))
    })
    .await;
    // The victim from another address is served.
    fresh_totp_window(3).await;
    let r = login_from(&gh, "127.0.0.4", "victim", &victim.password, &victim.code()).await;
    assert!(logged_in(&r), "{} {}", r.status, r.text());
}
