//! SSO logins through the binary, from the login page's button to the upstream app.

use std::time::Duration;

use serde_json::json;

use super::kit::{
    Idp, PUBLIC, Step, Web, assert_failure_page, attr, audit_of, gateway, login_page_until,
    provider, sso_failures,
};
use crate::support::client::echoed_headers;
use crate::support::identity::{SESSION_COOKIE, csrf_in, unix_now};
use crate::support::oidc_provider::AccountSpec;
use crate::support::{TestDir, Upstream, host};

/// Signs `login` in at `provider` for the first time from the wiki's login page (asking for
/// `/docs`): enrolment, then the handoff to the wiki. Returns the TOTP generator.
async fn first_login_to_wiki(web: &mut Web<'_>, provider: &str, login: &str) -> totp_rs::Totp {
    // The wiki's login page links to the start on the public host, coming back through the
    // handoff to the wiki.
    let page = web
        .get(&host("wiki"), "/.gatehouse/login?next=%2Fdocs")
        .await;
    assert_eq!(page.status, 200);
    let html = page.text();
    let href = attr(&html, "<a class=\"button provider\"", "href").expect("a provider button");
    let start = url::Url::parse(&href).unwrap();
    assert_eq!(start.host_str(), Some(PUBLIC), "{href}");
    assert!(html.contains(&format!("Sign in with {provider}")), "{html}");
    let path = format!("{}?{}", start.path(), start.query().unwrap());
    let r = web.get(PUBLIC, &path).await;
    let cb = web.at_provider(&r, login).await;
    assert!(matches!(web.callback(&cb).await, Step::Enrol));
    let (totp, r) = web.enrol().await;
    assert_eq!(r.status, 303, "enrolment: {}", r.text());
    let to_handoff = r.header("location").unwrap();
    assert!(
        to_handoff.starts_with("/.gatehouse/handoff?next=https"),
        "{to_handoff}"
    );
    let r = web.handoff(&to_handoff).await;
    assert_eq!(r.status, 303, "redeem: {}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/docs"));
    totp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_user_reaches_the_app_named_by_its_groups_then_logs_in_with_totp() {
    let idp = provider(
        vec![
            AccountSpec::new("alice", &["staff"]).sub("sub-alice"),
            AccountSpec::new("carol", &["staff", "contractors"]).sub("sub-carol"),
        ],
        None,
    )
    .await;
    let up = Upstream::start().await;
    let secrets = TestDir::new("sso-secrets");
    let gh = gateway(
        &up,
        &secrets,
        &[Idp {
            name: "corp",
            issuer: &idp.issuer,
            extra: "",
        }],
    )
    .await;

    // Full login from the app's login page through the provider's pages to the app.
    let mut web = Web::new(&gh);
    let totp = first_login_to_wiki(&mut web, "corp", "alice").await;
    let r = web.wiki("/docs").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echoed_headers(&echo, "x-gatehouse-user"), ["alice"]);
    assert_eq!(echoed_headers(&echo, "x-gatehouse-groups"), ["staff"]);
    // The groups live in the server-side session; the cookie is an opaque id.
    let cookie = web.session(&host("wiki")).unwrap();
    assert!(cookie.len() >= 43 && !cookie.contains("staff") && !cookie.contains("alice"));
    // A deny rule of her group wins.
    let r = web.wiki("/admin/users").await;
    assert_eq!(r.status, 403, "{}", r.text());
    gh.expect_audit("access_denied", |e| e["user"] == "alice")
        .await;
    let ev = &audit_of(&gh, "sso_authenticated")[0];
    assert_eq!(
        (&ev["user"], &ev["groups"], &ev["second_factor"]),
        (&json!("alice"), &json!(["staff"]), &json!("totp-enrolment"))
    );

    // Another user whose groups include one the policy denies: refused by the deny.
    let mut other = Web::new(&gh);
    first_login_to_wiki(&mut other, "corp", "carol").await;
    let r = other.wiki("/docs").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(up.paths().iter().filter(|p| *p == "/docs").count(), 1);
    gh.expect_audit("access_denied", |e| e["user"] == "carol")
        .await;

    // The next login (a fresh browser) asks for the enrolled TOTP: a wrong code is
    // refused, the right one (of another step than the enrolment's) signs in.
    let mut again = Web::new(&gh);
    let step = again.sso("corp", "alice", Some("/.gatehouse/")).await;
    assert!(matches!(step, Step::Totp), "{step:?}");
    let page = again.get(PUBLIC, "/.gatehouse/login/totp").await;
    assert!(
        page.text()
            .contains("<strong>corp</strong> as <strong>alice</strong>")
    );
    let wrong = again.totp("000000").await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(again.session(PUBLIC).is_none());
    let r = again
        .totp(&totp.generate(unix_now() + 30).to_string())
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/.gatehouse/"));
    let portal = again.get(PUBLIC, "/.gatehouse/").await;
    assert!(
        portal
            .text()
            .contains("<strong>alice</strong>; groups: staff")
    );
    let methods: Vec<_> = audit_of(&gh, "login_success")
        .iter()
        .filter(|e| e["user"] == "alice" && !e["method"].as_str().unwrap().contains("handoff"))
        .map(|e| e["method"].clone())
        .collect();
    assert_eq!(methods, [json!("oidc+totp"), json!("oidc+totp")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_mfa_with_a_two_factor_amr_skips_totp_and_the_audit_says_why() {
    let idp = provider(
        vec![
            AccountSpec::new("dave", &["staff"]).amr(&["pwd", "otp"]),
            AccountSpec::new("erin", &["staff"]).amr(&["pwd"]),
        ],
        None,
    )
    .await;
    let up = Upstream::start().await;
    let secrets = TestDir::new("sso-secrets");
    let gh = gateway(
        &up,
        &secrets,
        &[Idp {
            name: "corp",
            issuer: &idp.issuer,
            extra: "trust_mfa = true",
        }],
    )
    .await;
    let mut web = Web::new(&gh);
    let step = web.sso("corp", "dave", None).await;
    let Step::SignedIn { location } = step else {
        panic!("two factors at the provider: signed in at once: {step:?}")
    };
    assert_eq!(location, "/.gatehouse/");
    let ev = gh
        .expect_audit("sso_authenticated", |e| e["user"] == "dave")
        .await;
    let why = ev["second_factor"].as_str().unwrap();
    assert!(
        why.starts_with("skipped") && why.contains("amr") && why.contains("trust_mfa"),
        "{why}"
    );
    gh.expect_audit("login_success", |e| {
        e["user"] == "dave" && e["method"] == "oidc+idp-mfa"
    })
    .await;
    // One factor at the provider: Gatehouse's own TOTP (here its first enrolment).
    let mut web = Web::new(&gh);
    let step = web.sso("corp", "erin", None).await;
    assert!(matches!(step, Step::Enrol), "{step:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_side_by_side_never_take_over_another_users_name() {
    let corp = provider(
        vec![
            AccountSpec::new("alice", &["staff"]).sub("corp-alice"),
            AccountSpec::new("bob", &["staff"]).sub("corp-bob"),
        ],
        None,
    )
    .await;
    let partner = provider(
        vec![
            AccountSpec::new("alice", &["staff"]).sub("partner-alice"),
            AccountSpec::new("frank", &["staff"]).sub("partner-frank"),
        ],
        None,
    )
    .await;
    let up = Upstream::start().await;
    let secrets = TestDir::new("sso-secrets");
    let gh = gateway(
        &up,
        &secrets,
        &[
            Idp {
                name: "corp",
                issuer: &corp.issuer,
                extra: "",
            },
            Idp {
                name: "partner",
                issuer: &partner.issuer,
                extra: "",
            },
        ],
    )
    .await;
    gh.create_user("bob", &["staff"]).await;
    let html = login_page_until(&gh, Duration::from_secs(20), "both providers", |h| {
        h.contains(">Sign in with corp</a>") && h.contains(">Sign in with partner</a>")
    })
    .await;
    assert!(html.contains("type=\"password\""), "the local form stays");

    // Each provider signs its own users in.
    for (p, user) in [("corp", "alice"), ("partner", "frank")] {
        let mut web = Web::new(&gh);
        assert!(matches!(web.sso(p, user, None).await, Step::Enrol));
        let (_, r) = web.enrol().await;
        assert_eq!(r.status, 303, "{p}/{user}: {}", r.text());
        assert!(web.session(PUBLIC).is_some());
    }

    // `alice` at the partner is another subject than corp's alice; `bob` is a local user.
    for (p, user) in [("partner", "alice"), ("corp", "bob")] {
        let mut web = Web::new(&gh);
        let step = web.sso(p, user, None).await;
        let Step::Refused(r) = step else {
            panic!("{p}/{user} took over a name: {step:?}")
        };
        assert_failure_page(&r, 403, "name_taken");
        assert!(
            r.text()
                .contains("already belongs to another Gatehouse account")
        );
        assert!(web.session(PUBLIC).is_none());
    }
    assert_eq!(
        sso_failures(&gh),
        [
            ("name_taken".to_string(), "partner".to_string()),
            ("name_taken".to_string(), "corp".to_string())
        ]
    );
    let users = gh.cli(&["user", "list"], None);
    let users = String::from_utf8_lossy(&users.stdout);
    assert!(
        users.contains("partner") && users.contains("frank"),
        "{users}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_at_start_is_shown_unavailable_and_works_once_back() {
    let mut idp = provider(vec![AccountSpec::new("alice", &["staff"])], None).await;
    let issuer = idp.issuer.clone();
    tokio::task::block_in_place(|| idp.stop());
    let up = Upstream::start().await;
    let secrets = TestDir::new("sso-secrets");
    // Ready although its provider is down.
    let gh = gateway(
        &up,
        &secrets,
        &[Idp {
            name: "corp",
            issuer: &issuer,
            extra: "",
        }],
    )
    .await;
    let html = login_page_until(&gh, Duration::from_secs(20), "corp unavailable", |h| {
        h.contains("disabled>Sign in with corp <strong class=\"status\">— unavailable</strong>")
    })
    .await;
    assert!(!html.contains("/.gatehouse/oidc/start"), "{html}");
    // Local logins go on.
    let local = gh.create_user("lou", &["staff"]).await;
    let cookie = gh.login(PUBLIC, &local).await;
    assert!(cookie.starts_with(SESSION_COOKIE));
    // A click anyway: a clear page, audited.
    let mut web = Web::new(&gh);
    let r = web.start("corp", None).await;
    assert_failure_page(&r, 503, "unreachable");
    assert!(r.text().contains("cannot be reached"));
    assert_eq!(
        sso_failures(&gh),
        [("unreachable".to_string(), "corp".to_string())]
    );

    // Back on the same address: the button comes back and the login works.
    tokio::task::block_in_place(|| idp.restart());
    login_page_until(&gh, Duration::from_secs(60), "corp available", |h| {
        h.contains(">Sign in with corp</a>")
    })
    .await;
    let mut web = Web::new(&gh);
    assert!(matches!(web.sso("corp", "alice", None).await, Step::Enrol));
    let (_, r) = web.enrol().await;
    assert_eq!(r.status, 303, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_everywhere_and_at_the_provider() {
    let idp = provider(vec![AccountSpec::new("alice", &["staff"])], None).await;
    let up = Upstream::start().await;
    let secrets = TestDir::new("sso-secrets");
    let gh = gateway(
        &up,
        &secrets,
        &[Idp {
            name: "corp",
            issuer: &idp.issuer,
            extra: "",
        }],
    )
    .await;
    let mut web = Web::new(&gh);
    first_login_to_wiki(&mut web, "corp", "alice").await;
    assert_eq!(web.wiki("/docs").await.status, 200);
    let public_cookie = web.cookies(PUBLIC).unwrap();
    let wiki_cookie = web.cookies(&host("wiki")).unwrap();

    // Sign out on the app host.
    let portal = web.get(&host("wiki"), "/.gatehouse/").await;
    let csrf = csrf_in(&portal.text()).unwrap();
    let r = web
        .post(
            &host("wiki"),
            "/.gatehouse/logout",
            format!("csrf={}", crate::support::identity::urlencode(&csrf)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(web.session(&host("wiki")).is_none(), "cookie cleared");
    // The page posts the ID token to the provider's end_session_endpoint (never in a URL).
    let html = r.text();
    let action = attr(&html, "<form id=\"handoff\"", "action").unwrap();
    assert!(action.starts_with(&idp.issuer), "{action}");
    assert!(!action.contains('?'), "{action}");
    let field = |n: &str| crate::support::handoff::hidden_field(&html, n);
    let hint = field("id_token_hint").expect("id_token_hint");
    assert_eq!(hint.split('.').count(), 3, "a JWT");
    assert_eq!(field("client_id").as_deref(), Some("gatehouse"));
    assert_eq!(
        field("post_logout_redirect_uri").as_deref(),
        Some("https://gatehouse.localhost/.gatehouse/signed-out")
    );
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains(&format!("form-action {}", idp.issuer)),
        "{csp}"
    );

    // Both sessions of the sign-in are gone, each with its audit record.
    for (h, c) in [
        (PUBLIC.to_string(), public_cookie),
        (host("wiki"), wiki_cookie),
    ] {
        let mut conn = gh.h1_anon(&h).await;
        let req = conn.request(
            "GET",
            "/.gatehouse/",
            &[("cookie", c.as_str()), ("accept", "text/html")],
            crate::support::client::empty(),
        );
        let r = conn.send(req).await;
        assert_eq!(r.status, 303, "{h}: still signed in");
        assert_eq!(r.header("location").as_deref(), Some("/.gatehouse/login"));
    }
    assert_eq!(
        audit_of(&gh, "logout")
            .iter()
            .filter(|e| e["user"] == "alice")
            .count(),
        2
    );

    // The provider ends its session and sends the browser back to the signed-out page.
    let fields: Vec<(String, String)> = ["id_token_hint", "client_id", "post_logout_redirect_uri"]
        .iter()
        .map(|n| (n.to_string(), field(n).unwrap().replace("&amp;", "&")))
        .collect();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&fields)
        .finish();
    let back = web.provider.sign_out(&format!("{action}?{query}")).await;
    let crate::support::oidc_browser::Reached::Gatehouse(url) = back else {
        panic!("the provider did not send the browser back: {back:?}")
    };
    assert!(
        url.starts_with("https://gatehouse.localhost/.gatehouse/signed-out"),
        "{url}"
    );
    let page = web.get(PUBLIC, "/.gatehouse/signed-out").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("You are signed out"));
}
