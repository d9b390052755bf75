//! A real browser (Debian's Chromium, driven by playwright-core through
//! `tests/browser/login.mjs`) against the real binary: an app URL leads to the login page on
//! the same host, password + TOTP lead back to the URL first asked for with the identity the
//! upstream received, the session cookie has the attributes the browser must enforce, the
//! pages raise no CSP or script errors, and sign-out ends the session; and an SSO login
//! (`tests/browser/sso.mjs`): the provider's button, the provider's own login and consent
//! pages, Gatehouse's TOTP page, and the app through the handoff, with screenshots of the
//! login and TOTP pages. `./test.sh` installs Chromium and the npm packages; a missing one
//! fails this test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::identity::{SESSION_COOKIE, fresh_totp_window};
use crate::support::scenario::wiki;
use crate::support::{GatehouseSpec, host};

/// Runs the browser script `script` with `input` on stdin; what it saw.
pub(crate) fn browse(script: &str, input: &serde_json::Value) -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in tests/browser: run ./test.sh"
    );
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is needed for the browser test: run ./test.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "browser script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "browser script printed no result ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_reaches_the_app_and_signs_out() {
    // The browser's Origin carries the port: the gateway must know its public one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (gh, up) = wiki(GatehouseSpec {
        gateway_port: Some(port),
        ..GatehouseSpec::default()
    })
    .await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let origin = format!("https://{}:{}", host("wiki"), gh.gateway.port());
    let url = format!("{origin}/docs/page?x=1");
    fresh_totp_window(20).await;
    let input = serde_json::json!({
        "url": url,
        "user": alice.name,
        "password": alice.password,
        "code": alice.code(),
    });
    let seen = tokio::task::spawn_blocking(move || browse("login.mjs", &input))
        .await
        .unwrap();
    assert!(seen.get("error").is_none(), "browser: {seen:#}");

    // The app URL leads to the login page on the same host, remembering where to go.
    let landed = seen["landed"]["url"].as_str().unwrap();
    assert!(
        landed.starts_with(&format!("{origin}/.gatehouse/login?next=")),
        "landed on {landed}"
    );
    assert_eq!(seen["landed"]["status"], 200);

    // Signed in: back at the URL first asked for, with the identity the upstream received.
    assert_eq!(seen["after"]["url"], url.as_str());
    let body = seen["after"]["body"].as_str().unwrap();
    assert!(body.contains("x-gatehouse-user"), "upstream page: {body}");
    assert!(body.contains("\"alice\""), "upstream page: {body}");
    assert!(up.count() >= 2, "the upstream was not reached");

    // The session cookie as the browser stored it: host-only, Secure, HttpOnly, Lax.
    let cookies = seen["cookies"].as_array().unwrap();
    let session: Vec<_> = cookies
        .iter()
        .filter(|c| c["name"] == SESSION_COOKIE)
        .collect();
    assert_eq!(session.len(), 1, "cookies: {cookies:?}");
    let c = session[0];
    assert_eq!(c["domain"], host("wiki").as_str());
    assert_eq!(c["path"], "/");
    assert_eq!(c["secure"], true);
    assert_eq!(c["httpOnly"], true);
    assert_eq!(c["sameSite"], "Lax");

    // The portal lists the app; sign-out ends the session: the app asks for a login again.
    let portal = seen["portal"]["body"].as_str().unwrap();
    assert!(portal.contains("alice"), "portal: {portal}");
    assert!(portal.contains("wiki"), "portal: {portal}");
    let again = seen["again"]["url"].as_str().unwrap();
    assert!(
        again.starts_with(&format!("{origin}/.gatehouse/login")),
        "after sign-out the app URL led to {again}"
    );

    // Gatehouse's pages need no script and break none of their own CSP rules.
    let console = seen["console"].as_array().unwrap();
    assert!(
        console.iter().all(|m| {
            let m = m.as_str().unwrap_or_default();
            !m.contains("Content Security Policy") && !m.starts_with("pageerror")
        }),
        "browser console: {console:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_with_sso_through_the_totp_page_to_the_app() {
    use crate::oidc_web::kit::{self, Idp, Step, Web};
    use crate::support::oidc_provider::AccountSpec;
    use crate::support::{TestDir, Upstream};

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let idp = kit::provider(vec![AccountSpec::new("alice", &["staff"])], Some(port)).await;
    let dead = format!("http://{}", crate::support::upstream::closed_port());
    let up = Upstream::start().await;
    let secrets = TestDir::new("sso-secrets");
    let gh = kit::gateway_with(
        &up,
        &secrets,
        &[
            Idp {
                name: "corp",
                issuer: &idp.issuer,
                extra: "",
            },
            Idp {
                name: "partner",
                issuer: &dead,
                extra: "",
            },
        ],
        GatehouseSpec {
            gateway_port: Some(port),
            ..GatehouseSpec::default()
        },
    )
    .await;
    kit::login_page_until(
        &gh,
        std::time::Duration::from_secs(20),
        "partner unavailable",
        |h| h.contains("partner <strong class=\"status\">— unavailable"),
    )
    .await;

    // Alice enrolled at an earlier login, so this one asks for her TOTP code.
    fresh_totp_window(25).await;
    let mut web = Web::new(&gh);
    assert!(matches!(web.sso("corp", "alice", None).await, Step::Enrol));
    let (totp, r) = web.enrol().await;
    assert_eq!(r.status, 303, "{}", r.text());
    let code = totp
        .generate(crate::support::identity::unix_now() + 30)
        .to_string();

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let (login_png, totp_png) = (shots.join("sso-login.png"), shots.join("sso-totp.png"));
    for f in [&login_png, &totp_png] {
        let _ = std::fs::remove_file(f);
    }
    let url = format!("https://{}:{port}/docs/page?x=1", host("wiki"));
    let input = serde_json::json!({
        "url": url,
        "provider": "corp",
        "login": "alice",
        "password": "pw-alice",
        "code": code,
        "shots": { "login": login_png, "totp": totp_png },
    });
    let seen = tokio::task::spawn_blocking(move || browse("sso.mjs", &input))
        .await
        .unwrap();
    assert!(seen.get("error").is_none(), "browser: {seen:#}");

    // The app host's login page offers both providers, the one that is down disabled.
    let landed = seen["landed"]["url"].as_str().unwrap();
    assert!(
        landed.starts_with(&format!(
            "https://{}:{port}/.gatehouse/login?next=",
            host("wiki")
        )),
        "{landed}"
    );
    let providers: Vec<&str> = seen["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().trim())
        .collect();
    assert_eq!(
        providers,
        ["Sign in with corp", "Sign in with partner — unavailable"]
    );
    // The provider's own pages, then Gatehouse's TOTP page on the public host.
    assert!(
        seen["provider_login"]["url"]
            .as_str()
            .unwrap()
            .starts_with(&idp.issuer)
    );
    assert!(
        seen["consent"]["url"]
            .as_str()
            .unwrap()
            .starts_with(&idp.issuer)
    );
    assert_eq!(
        seen["totp"]["url"],
        format!("https://gatehouse.localhost:{port}/.gatehouse/login/totp")
    );
    assert!(
        seen["totp"]["body"]
            .as_str()
            .unwrap()
            .contains("Signed in with corp as alice")
    );
    // Back at the URL first asked for, with the SSO user's identity at the upstream.
    assert_eq!(seen["after"]["url"], url.as_str());
    let body = seen["after"]["body"].as_str().unwrap();
    assert!(
        body.contains("x-gatehouse-user") && body.contains("\"alice\""),
        "{body}"
    );
    let cookies = seen["cookies"].as_array().unwrap();
    let wiki_session = cookies
        .iter()
        .find(|c| c["name"] == SESSION_COOKIE && c["domain"] == host("wiki").as_str())
        .unwrap_or_else(|| panic!("no session on the wiki: {cookies:?}"));
    assert_eq!(
        (
            &wiki_session["secure"],
            &wiki_session["httpOnly"],
            &wiki_session["sameSite"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!("Lax")
        )
    );
    // Nothing from elsewhere than Gatehouse and the provider; no CSP or script errors.
    let idp_host = url::Url::parse(&idp.issuer).unwrap();
    let idp_host = format!("{}:{}", idp_host.host_str().unwrap(), idp.port);
    for h in seen["requests"].as_array().unwrap() {
        let h = h.as_str().unwrap();
        assert!(
            h.ends_with(&format!("gatehouse.localhost:{port}")) || h == idp_host,
            "the browser fetched from {h}"
        );
    }
    let console = seen["console"].as_array().unwrap();
    assert!(
        console.iter().all(|m| {
            let m = m.as_str().unwrap_or_default();
            !m.contains("gatehouse.localhost")
                || (!m.contains("Content Security Policy") && !m.starts_with("pageerror"))
        }),
        "browser console: {console:?}"
    );
    for f in [&login_png, &totp_png] {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", f.display());
    }
}
