//! The web login, sessions, authorization, audit and revocation, end to end over real TLS
//! against the real services (memory store, users file, casbin policy, audit log).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::*;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The value of `Set-Cookie: NAME=value; ...` in a response.
fn set_cookie(resp: &Response<()>, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
}

fn hidden(body: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let pat = format!("name=\"{name}\" value=\"");
    let start = text
        .find(&pat)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        + pat.len();
    text[start..].split('"').next().unwrap().to_string()
}

fn form(path: &str, cookie: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", HOST)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// GET the login page: (login cookie header, csrf token).
async fn login_page(h: &Harness, next: &str) -> (String, String) {
    let (resp, body) = h
        .h1(get_anonymous(
            &format!("/.gatehouse/login?next={}", enc(next)),
            None,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let tx = set_cookie(&resp, "__Host-gatehouse-login").expect("login cookie");
    (
        format!("__Host-gatehouse-login={tx}"),
        hidden(&body, "csrf"),
    )
}

async fn submit(
    h: &Harness,
    user: &str,
    password: &str,
    code: &str,
    next: &str,
) -> (Response<()>, Bytes) {
    let (cookie, csrf) = login_page(h, next).await;
    let body = format!(
        "csrf={csrf}&user={user}&password={}&code={code}&next={}",
        enc(password),
        enc(next)
    );
    h.h1(form("/.gatehouse/login", &cookie, &body)).await
}

fn code(h: &Harness, user: &str) -> String {
    h.users.current_totp_code(user, &h.cipher).unwrap()
}

fn audit_text(h: &Harness) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(h.dir.0.join("data/audit")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            out.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn login_with_both_factors_then_proxy_with_identity() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    // Wrong password: 401, the form again with one generic message, no session.
    let (resp, body) = submit(&h, OTHER, "wrong-password-123", &code(&h, OTHER), "/x").await;
    assert_eq!(resp.status(), 401);
    assert!(String::from_utf8_lossy(&body).contains("Wrong user name, password or code."));
    assert!(set_cookie(&resp, "__Host-gatehouse").is_none());
    // Right password, wrong code: the same answer.
    let (resp, body2) = submit(&h, OTHER, PASSWORD, "000000", "/x").await;
    assert_eq!(resp.status(), 401);
    assert!(String::from_utf8_lossy(&body2).contains("Wrong user name, password or code."));
    // Both right: 303 to next, a fresh session cookie, the login cookie cleared.
    let c = code(&h, OTHER);
    let (resp, _) = submit(&h, OTHER, PASSWORD, &c, "/x?y=1").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/x?y=1");
    let session = set_cookie(&resp, "__Host-gatehouse").expect("session cookie");
    assert_eq!(
        set_cookie(&resp, "__Host-gatehouse-login").as_deref(),
        Some("")
    );
    let sc = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .find(|v| v.to_str().unwrap().starts_with("__Host-gatehouse="))
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(sc.contains(attr), "{sc}");
    }
    // The same code again (also on a fresh form) is a replay: refused.
    let (resp, _) = submit(&h, OTHER, PASSWORD, &c, "/x").await;
    assert_eq!(resp.status(), 401);
    // The session reaches the app, with identity headers from the session.
    let req = Request::get("/x?y=1")
        .header("host", HOST)
        .header("cookie", format!("__Host-gatehouse={session}"))
        .header("x-gatehouse-user", "root")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (resp, _) = h.h1(req).await;
    assert_eq!(resp.status(), 200);
    let s = seen.recv().await.unwrap();
    assert_eq!(s.headers["x-gatehouse-user"], OTHER);
    assert_eq!(s.headers["x-gatehouse-groups"], "staff");
    assert!(!s.headers.contains_key("cookie"));
    let a1 = s.headers["x-gatehouse-assertion"].clone();
    // The assertion is reused for the same session and app (signed once, not per request).
    let (resp, _) = h.h1(get_with(&session, "/again")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        seen.recv().await.unwrap().headers["x-gatehouse-assertion"],
        a1
    );
    let audit = audit_text(&h);
    for ev in [
        "login_success",
        "login_failure",
        "totp_failure",
        "access_allowed",
    ] {
        assert!(
            audit.contains(&format!("\"event\":\"{ev}\"")),
            "{ev} not audited"
        );
    }
    // JWKS and stylesheet are public.
    let (resp, body) = h.h1(get_anonymous("/.gatehouse/jwks.json", None)).await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&body).contains("\"ES256\""));
    let (resp, _) = h
        .h1(get_anonymous("/.gatehouse/static/style.css", None))
        .await;
    assert_eq!(resp.status(), 200);
}

fn get_with(session: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", HOST)
        .header("cookie", format!("__Host-gatehouse={session}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn csrf_and_origin_are_required_and_next_is_checked() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let (cookie, csrf) = login_page(&h, "/").await;
    let c = code(&h, OTHER);
    let good = format!("user={OTHER}&password={}&code={c}", enc(PASSWORD));
    // No token, a wrong token, no login cookie: 403, and nothing was checked (no failure).
    let (resp, _) = h.h1(form("/.gatehouse/login", &cookie, &good)).await;
    assert_eq!(resp.status(), 403);
    let (resp, _) = h
        .h1(form(
            "/.gatehouse/login",
            &cookie,
            &format!(
                "csrf={}{}&{good}",
                &csrf[..42],
                if csrf.ends_with('A') { 'B' } else { 'A' }
            ),
        ))
        .await;
    assert_eq!(resp.status(), 403);
    let (resp, _) = h
        .h1(form(
            "/.gatehouse/login",
            "a=b",
            &format!("csrf={csrf}&{good}"),
        ))
        .await;
    assert_eq!(resp.status(), 403);
    // A foreign Origin is refused even with a valid token.
    let mut req = form("/.gatehouse/login", &cookie, &format!("csrf={csrf}&{good}"));
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(h.h1(req).await.0.status(), 403);
    // An off-site next is replaced by the portal.
    let body = format!("csrf={csrf}&{good}&next={}", enc("https://evil.example/"));
    let (resp, _) = h.h1(form("/.gatehouse/login", &cookie, &body)).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/.gatehouse/");
}

#[tokio::test]
async fn unauthenticated_requests_go_to_login_or_get_401() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let (resp, _) = h
        .h1(get_anonymous(
            "/a/b?c=1",
            Some("text/html,application/xhtml+xml"),
        ))
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        "/.gatehouse/login?next=%2Fa%2Fb%3Fc%3D1"
    );
    let (resp, _) = h.h1(get_anonymous("/api", Some("application/json"))).await;
    assert_eq!(resp.status(), 401);
    let (resp, _) = h.h1(get_anonymous("/api", None)).await;
    assert_eq!(resp.status(), 401);
    // A forged or unknown session cookie is no session (and the cookie is cleared).
    let (resp, _) = h.h1(get_with(&"a".repeat(64), "/")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(set_cookie(&resp, "__Host-gatehouse").as_deref(), Some(""));
    let post = Request::post("/form")
        .header("host", HOST)
        .header("accept", "text/html")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h.h1(post).await.0.status(), 401);
    assert!(seen.try_recv().is_err(), "nothing reached the upstream");
}

#[tokio::test]
async fn denied_requests_get_403_with_incident_and_audit() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    // Path tricks are normalised before the decision.
    for path in ["/denied/x", "/ok/../denied/x", "/%64enied/x", "//denied//x"] {
        let (resp, body) = h.h1(get(path)).await;
        assert_eq!(resp.status(), 403, "{path}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("inc-"), "{text}");
    }
    assert!(
        seen.try_recv().is_err(),
        "a denied request reached the upstream"
    );
    let audit = audit_text(&h);
    assert!(audit.contains("\"event\":\"access_denied\""));
    assert!(audit.contains("app:app/denied/x"));
}

#[tokio::test]
async fn logout_ends_the_session_and_portal_lists_apps() {
    let (up, _seen) = upstream(None).await;
    let h = start(
        "",
        &[
            ("app", HOST, up),
            ("hidden", "hidden.gatehouse.localhost", up),
        ],
    )
    .await;
    let (resp, body) = h.h1(get("/.gatehouse/")).await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        text.contains(USER) && text.contains("https://app.gatehouse.localhost:8443/"),
        "{text}"
    );
    let csrf = hidden(&body, "csrf");
    // Logout needs the token.
    let (resp, _) = h.h1(form("/.gatehouse/logout", &h.cookie, "csrf=x")).await;
    assert_eq!(resp.status(), 403);
    let (resp, _) = h
        .h1(form(
            "/.gatehouse/logout",
            &h.cookie,
            &format!("csrf={csrf}"),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(set_cookie(&resp, "__Host-gatehouse").as_deref(), Some(""));
    assert_eq!(h.h1(get("/x")).await.0.status(), 401);
    assert!(audit_text(&h).contains("\"event\":\"logout\""));
}

#[tokio::test]
async fn repeated_failures_are_slowed_with_429() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    for _ in 0..3 {
        let (resp, _) = submit(&h, OTHER, "wrong-password-123", "123456", "/").await;
        assert_eq!(resp.status(), 401);
    }
    // After three failures, the next guess waits (refused at once, before any check).
    let (resp, body) = submit(&h, OTHER, PASSWORD, &code(&h, OTHER), "/").await;
    assert_eq!(resp.status(), 429, "{}", String::from_utf8_lossy(&body));
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    assert!(audit_text(&h).contains("slowed: this user at this address"));
}

#[tokio::test]
async fn revocation_closes_live_websockets_and_sessions() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let mut s = h.tls(&[b"http/1.1"]).await;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nCookie: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        h.cookie
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(DEADLINE, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"));
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.services.store.revoke_user(USER).await.unwrap(), 1);
    // The tunnel is closed by the gateway: the read ends (EOF or error) within the deadline.
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
        .await
        .expect("tunnel not closed after revocation")
        .ok();
    assert_eq!(h.h1(get("/x")).await.0.status(), 401);
}

#[tokio::test]
async fn policy_reload_keeps_running_policy_on_error() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let file = h.dir.0.join("policy.csv");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        "p, group:staff, app:app/*, GET, allow, extra, junk\n",
    )
    .unwrap();
    assert!(h.policy_reloader.reload().await.is_err());
    assert_eq!(h.h1(get("/x")).await.0.status(), 200, "running policy kept");
    std::fs::write(
        &file,
        good.replace("app:app/*, *, allow", "app:app/*, POST, allow"),
    )
    .unwrap();
    h.policy_reloader.reload().await.unwrap();
    assert_eq!(h.h1(get("/x")).await.0.status(), 403, "new policy in force");
    let audit = audit_text(&h);
    assert!(
        audit.contains("\"event\":\"policy_reload\",\"ok\":false")
            || audit.contains("\"ok\":false")
    );
}

#[tokio::test]
async fn user_without_totp_enrols_with_a_first_code() {
    let (up, _seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    let path = h.dir.0.join("data/users.toml");
    let mut users = gatehouse_core::identity::Users::load(&path).unwrap();
    users.clear_totp(OTHER).unwrap();
    // What the watcher does within a second of the change.
    h.services.authenticator.reload_users().await.unwrap();
    // The password alone never logs in: it leads to the enrolment page.
    let (cookie, csrf) = login_page(&h, "/after").await;
    let body = format!(
        "csrf={csrf}&user={OTHER}&password={}&code=&next=%2Fafter",
        enc(PASSWORD)
    );
    let (resp, _) = h.h1(form("/.gatehouse/login", &cookie, &body)).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/.gatehouse/enrol");
    assert!(set_cookie(&resp, "__Host-gatehouse").is_none());
    let mut req = get_anonymous("/.gatehouse/enrol", None);
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (resp, page) = h.h1(req).await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8_lossy(&page).into_owned();
    assert!(text.contains("<svg"), "QR code shown");
    let secret: String = text
        .split("<code class=\"secret\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .replace(' ', "");
    let csrf = hidden(&page, "csrf");
    let (resp, _) = h
        .h1(form(
            "/.gatehouse/enrol",
            &cookie,
            &format!("csrf={csrf}&code=000000"),
        ))
        .await;
    assert_eq!(resp.status(), 401);
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(&secret).unwrap())
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .build()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = totp.generate(now).to_string();
    let (resp, _) = h
        .h1(form(
            "/.gatehouse/enrol",
            &cookie,
            &format!("csrf={csrf}&code={c}"),
        ))
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/after");
    assert!(set_cookie(&resp, "__Host-gatehouse").is_some_and(|v| !v.is_empty()));
    let stored = gatehouse_core::identity::Users::load(&path).unwrap();
    assert!(!stored.get(OTHER).unwrap().totp_secret.is_empty());
    assert!(audit_text(&h).contains("totp enrol"));
}

#[tokio::test]
async fn handoff_carries_the_public_session_to_an_app_host_once() {
    let (up, mut seen) = upstream(None).await;
    let h = start("", &[("app", HOST, up)]).await;
    const PUBLIC: &str = "gatehouse.localhost";
    let next = format!("https://{HOST}:8443/x?y=1");
    let on_public = |cookie: Option<&str>, next: &str| {
        let mut b =
            Request::get(format!("/.gatehouse/handoff?next={}", enc(next))).header("host", PUBLIC);
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    // Not signed in on the public host: log in there first, then come back.
    let (resp, _) = h.h1(on_public(None, &next)).await;
    assert_eq!(resp.status(), 303);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with("/.gatehouse/login?next=%2F.gatehouse%2Fhandoff"),
        "{loc}"
    );
    // Tickets only for app hosts.
    let (resp, _) = h
        .h1(on_public(
            Some(&h.cookie),
            "https://gatehouse.localhost:8443/",
        ))
        .await;
    assert_eq!(resp.status(), 400);
    let (resp, _) = h
        .h1(on_public(Some(&h.cookie), "https://evil.example/"))
        .await;
    assert_eq!(resp.status(), 400);
    // The app host's session is not a session of the public host: log in there.
    let (resp, _) = h.h1(on_public(Some(&h.cookie), &next)).await;
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/.gatehouse/login?next=%2F.gatehouse%2Fhandoff")
    );
    // Signed in: a page that posts a one-time ticket to the app host (no secret in a URL).
    let public_cookie = h.cookie_for(PUBLIC).await;
    let (resp, page) = h.h1(on_public(Some(&public_cookie), &next)).await;
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains(&format!("form-action https://{HOST}:8443")),
        "{csp}"
    );
    let text = String::from_utf8_lossy(&page).into_owned();
    assert!(
        text.contains(&format!(
            "action=\"https://{HOST}:8443/.gatehouse/handoff\""
        )),
        "{text}"
    );
    assert!(text.contains("src=\"/.gatehouse/static/handoff.js\"") && !text.contains("<script>"));
    let ticket = hidden(&page, "ticket");
    assert_eq!(hidden(&page, "next"), "/x?y=1");
    let redeem = |origin: Option<&str>, ticket: &str| {
        let mut b = Request::post("/.gatehouse/handoff")
            .header("host", HOST)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(Full::new(Bytes::from(format!(
            "ticket={ticket}&next=%2Fx%3Fy%3D1"
        ))))
        .unwrap()
    };
    // Another site cannot make a browser redeem a ticket (login CSRF).
    let (resp, _) = h.h1(redeem(Some("https://evil.example"), &ticket)).await;
    assert_eq!(resp.status(), 403);
    let (resp, _) = h.h1(redeem(None, &ticket)).await;
    assert_eq!(resp.status(), 403);
    let (resp, _) = h
        .h1(redeem(Some("https://gatehouse.localhost:8443"), &ticket))
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/x?y=1");
    let session = set_cookie(&resp, "__Host-gatehouse").unwrap();
    assert_ne!(
        format!("__Host-gatehouse={session}"),
        h.cookie,
        "a new session on the app host"
    );
    assert_eq!(h.h1(get_with(&session, "/x")).await.0.status(), 200);
    assert_eq!(seen.recv().await.unwrap().headers["x-gatehouse-user"], USER);
    // Once only.
    let (resp, _) = h
        .h1(redeem(Some("https://gatehouse.localhost:8443"), &ticket))
        .await;
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/.gatehouse/login")
    );
    assert!(set_cookie(&resp, "__Host-gatehouse").is_none());
    // The app host's login page links to the public host's handoff.
    let (_, page) = h
        .h1(get_anonymous("/.gatehouse/login?next=%2Fx", None))
        .await;
    assert!(String::from_utf8_lossy(&page).contains(
        "https://gatehouse.localhost:8443/.gatehouse/handoff?next=https%3A%2F%2Fapp.gatehouse.localhost%3A8443%2Fx"
    ));
    let (resp, js) = h
        .h1(get_anonymous("/.gatehouse/static/handoff.js", None))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&js).contains("submit()"));
}
