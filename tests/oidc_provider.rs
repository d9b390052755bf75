//! SSO against a real OpenID Connect provider nobody here wrote (panva's oidc-provider), at
//! the core's level (the gateway's pages come later): discovery, the authorization URL (PKCE
//! S256, state, nonce), the provider's own login and consent pages completed by a scripted
//! client, the callback, the code exchange, the validated identity, then Gatehouse's TOTP
//! (enrolled at the first login) or its skip with `trust_mfa` and a two-factor `amr`; logout
//! at the provider; two providers side by side with a name collision; a provider that is
//! down at start and comes back; an https provider trusted by `ca_file` only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use gatehouse_core::SsoError;
use gatehouse_core::error::SsoCheck;
use gatehouse_core::identity::AuthMethod;
use gatehouse_core::identity::oidc::{ProviderStatus, SsoCallback, SsoLogin, SsoStep};
use serde_json::json;

use crate::support::identity::{totp_from_base32, unix_now};
use crate::support::oidc_browser::ProviderBrowser;
use crate::support::oidc_provider::{AccountSpec, ClientSpec, OidcProvider, ProviderSpec};
use crate::support::sso::{PUBLIC_URL, ProviderConf, SsoFixture, callback_url, query_param};
use crate::support::{Pki, TestDir};

const SCOPES: &str = "scopes = [\"openid\", \"profile\", \"email\", \"groups\"]";

fn client(id: &str) -> ClientSpec {
    let mut c = ClientSpec::new(id, &format!("secret-of-{id}"), &callback_url());
    c.post_logout_redirect_uris = vec![format!("{PUBLIC_URL}/")];
    c
}

fn conf(name: &str, p: &OidcProvider, client_id: &str) -> ProviderConf {
    ProviderConf::new(
        name,
        &p.issuer,
        client_id,
        &format!("secret-of-{client_id}"),
    )
    .with(SCOPES)
}

/// Starts a login at `provider`, signs in at the provider as `login`, finishes the callback.
async fn sso_login(
    fx: &SsoFixture,
    provider: &str,
    login: &str,
) -> (Result<SsoLogin, SsoError>, String) {
    let binding = format!("browser-{login}-{}", unix_now());
    let start = fx
        .sso
        .start_login(provider, &binding, Some("/wiki/page"))
        .await
        .unwrap();
    let mut browser = ProviderBrowser::new(PUBLIC_URL, None);
    let reached = browser
        .sign_in(&start.url, login, &format!("pw-{login}"))
        .await;
    let query = reached.query();
    let r = fx
        .sso
        .finish_login(&SsoCallback::from_query(&query), Some(&binding), None)
        .await;
    (r, query)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_provider_login_enrols_totp_then_asks_for_it_and_logs_out() {
    let provider = OidcProvider::start_async(ProviderSpec {
        clients: vec![client("gatehouse")],
        accounts: vec![
            AccountSpec::new("alice", &["staff", "SRE"])
                .sub("sub-alice")
                .amr(&["pwd"]),
        ],
        ..ProviderSpec::default()
    })
    .await;
    let fx = SsoFixture::new(&[conf("corp", &provider, "gatehouse")]);
    assert_eq!(
        fx.sso.providers()[0].status,
        ProviderStatus::Unknown,
        "nothing fetched at start"
    );

    // The authorization URL: code flow, PKCE S256, our redirect URI, state and nonce.
    let start = fx
        .sso
        .start_login("corp", "browser-1", Some("/wiki/page"))
        .await
        .unwrap();
    assert_eq!(fx.sso.providers()[0].status, ProviderStatus::Available);
    assert!(
        start.url.starts_with(&format!("{}/auth?", provider.issuer)),
        "{}",
        start.url
    );
    for (k, v) in [
        ("response_type", Some("code")),
        ("client_id", Some("gatehouse")),
        ("code_challenge_method", Some("S256")),
        ("redirect_uri", Some(callback_url().as_str())),
    ] {
        assert_eq!(query_param(&start.url, k).as_deref(), v, "{k}");
    }
    for k in ["state", "nonce", "code_challenge"] {
        assert!(
            query_param(&start.url, k).is_some_and(|v| v.len() >= 43),
            "{k}"
        );
    }
    assert!(query_param(&start.url, "scope").unwrap().contains("groups"));

    // The provider's own pages, then the callback: a first login asks for enrolment.
    let reached = ProviderBrowser::new(PUBLIC_URL, None)
        .sign_in(&start.url, "alice", "pw-alice")
        .await;
    let query = reached.query();
    let login = fx
        .sso
        .finish_login(&SsoCallback::from_query(&query), Some("browser-1"), None)
        .await
        .unwrap();
    assert_eq!(login.return_to.as_deref(), Some("/wiki/page"));
    let SsoStep::Enrol(pending) = login.step else {
        panic!("first login enrols: {:?}", login.step)
    };
    assert_eq!(pending.user(), "alice");
    let rec = fx.registry().get("alice").cloned().unwrap();
    assert_eq!(
        (rec.issuer.as_str(), rec.subject.as_str()),
        (provider.issuer.as_str(), "sub-alice")
    );
    assert_eq!(
        rec.groups,
        ["staff", "sre"],
        "groups from userinfo, lowercased"
    );
    let ev = &fx.audit_of("sso_authenticated")[0];
    assert_eq!(ev["user"], "alice");
    assert_eq!(ev["subject"], "sub-alice");
    assert_eq!(ev["second_factor"], "totp-enrolment");
    assert_eq!(ev["amr"], json!(["pwd"]));

    // The callback cannot be used twice.
    let again = fx
        .sso
        .finish_login(&SsoCallback::from_query(&query), Some("browser-1"), None)
        .await
        .unwrap_err();
    assert_eq!(again.check(), Some(SsoCheck::State));

    // Enrolment: a wrong code keeps no secret, the right one signs in.
    let (enrolment, secret) = fx.sso.start_enrolment(&pending).unwrap();
    assert!(
        fx.sso
            .complete_enrolment(&pending, &secret, "000000")
            .await
            .is_err()
    );
    assert!(!fx.registry().has_totp("alice"));
    let totp = totp_from_base32(&enrolment.secret_base32);
    let now = unix_now();
    let id = fx
        .sso
        .complete_enrolment(&pending, &secret, &totp.generate(now).to_string())
        .await
        .unwrap();
    assert_eq!((id.user(), id.method()), ("alice", AuthMethod::OidcTotp));
    assert_eq!(id.groups(), ["staff", "sre"]);
    assert!(fx.registry().has_totp("alice"));

    // The next login asks for the enrolled TOTP (a code of another step: no replay).
    let (r, _) = sso_login(&fx, "corp", "alice").await;
    let login = r.unwrap();
    let SsoStep::Totp(pending) = login.step else {
        panic!("enrolled user gets the TOTP step: {:?}", login.step)
    };
    let code = totp.generate(now + 30).to_string();
    assert!(
        fx.sso
            .verify_totp(&pending, &totp.generate(now + 3600).to_string())
            .await
            .is_err()
    );
    let id = fx.sso.verify_totp(&pending, &code).await.unwrap();
    assert_eq!(id.user(), "alice");
    assert!(
        fx.sso.verify_totp(&pending, &code).await.is_err(),
        "a code is used once"
    );
    let successes = fx.audit_of("login_success");
    assert_eq!(successes.len(), 2);
    assert!(
        successes
            .iter()
            .all(|e| e["method"] == "oidc+totp" && e["user"] == "alice")
    );

    // Logout at the provider: end_session_endpoint with id_token_hint, back to Gatehouse.
    let end = fx
        .sso
        .end_session_url(&login.logout, &format!("{PUBLIC_URL}/"))
        .unwrap();
    assert!(
        end.starts_with(&format!("{}/session/end?", provider.issuer)),
        "{end}"
    );
    assert!(query_param(&end, "id_token_hint").is_some_and(|t| t.split('.').count() == 3));
    let back = ProviderBrowser::new(PUBLIC_URL, None).sign_out(&end).await;
    assert_eq!(
        back.query(),
        "",
        "the provider sends the browser back to the public URL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_mfa_with_a_two_factor_amr_skips_totp_and_says_why() {
    let provider = OidcProvider::start_async(ProviderSpec {
        clients: vec![client("trusting"), client("strict")],
        accounts: vec![
            AccountSpec::new("bob", &["ops"]).amr(&["pwd", "otp"]),
            AccountSpec::new("carol", &["ops"]).amr(&["pwd"]),
        ],
        claims_in_id_token: true,
        auto_consent: true,
        ..ProviderSpec::default()
    })
    .await;
    let fx = SsoFixture::new(&[
        conf("trusting", &provider, "trusting").with("trust_mfa = true"),
        conf("strict", &provider, "strict"),
    ]);
    let (r, _) = sso_login(&fx, "trusting", "bob").await;
    let SsoStep::Verified(id) = r.unwrap().step else {
        panic!("amr [pwd, otp] with trust_mfa signs in")
    };
    assert_eq!((id.user(), id.method()), ("bob", AuthMethod::OidcMfa));
    assert_eq!(id.groups(), ["ops"]);
    let ev = fx.audit_of("sso_authenticated").pop().unwrap();
    assert!(
        ev["second_factor"]
            .as_str()
            .unwrap()
            .starts_with("skipped:"),
        "{ev}"
    );
    assert!(
        fx.audit_of("login_success")
            .iter()
            .any(|e| e["method"] == "oidc+idp-mfa")
    );
    // One factor at the provider, or a provider not trusted for MFA: Gatehouse's TOTP.
    let (r, _) = sso_login(&fx, "trusting", "carol").await;
    assert!(matches!(r.unwrap().step, SsoStep::Enrol(_)));
    let (r, _) = sso_login(&fx, "strict", "bob").await;
    assert!(
        matches!(r.unwrap().step, SsoStep::Enrol(_)),
        "same user, provider without trust_mfa"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_side_by_side_and_a_taken_name_is_refused() {
    let spec = |sub: &str| ProviderSpec {
        clients: vec![client("gatehouse")],
        accounts: vec![
            AccountSpec::new("dave", &["staff"]).sub(sub),
            AccountSpec::new("erin", &[]).sub(&format!("{sub}-erin")),
            AccountSpec::new("frank", &[])
                .claim("email", json!("Frank@Example.com"))
                .claim("email_verified", json!(false)),
        ],
        auto_consent: true,
        ..ProviderSpec::default()
    };
    let corp = OidcProvider::start_async(spec("corp-dave")).await;
    let partner = OidcProvider::start_async(spec("partner-dave")).await;
    let fx = SsoFixture::new(&[
        conf("corp", &corp, "gatehouse"),
        conf("partner", &partner, "gatehouse"),
        conf("mail", &partner, "gatehouse").with("username_claim = \"email\""),
    ]);
    fx.add_local_user("erin");
    let names: Vec<String> = fx.sso.providers().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["corp", "partner", "mail"]);
    let (r, _) = sso_login(&fx, "corp", "dave").await;
    assert!(matches!(r.unwrap().step, SsoStep::Enrol(_)));
    // The same name from the other provider (another subject) is refused, and audited.
    let (r, _) = sso_login(&fx, "partner", "dave").await;
    assert_eq!(r.unwrap_err().check(), Some(SsoCheck::NameTaken));
    // A local user's name is refused too.
    let (r, _) = sso_login(&fx, "corp", "erin").await;
    assert_eq!(r.unwrap_err().check(), Some(SsoCheck::NameTaken));
    // `email` as the name only when verified.
    let (r, _) = sso_login(&fx, "mail", "frank").await;
    assert_eq!(r.unwrap_err().check(), Some(SsoCheck::EmailVerified));
    let fails: Vec<_> = fx.audit_of("sso_failure");
    let checks: Vec<&str> = fails.iter().map(|e| e["check"].as_str().unwrap()).collect();
    assert_eq!(checks, ["name_taken", "name_taken", "email_verified"]);
    assert_eq!(fails[0]["user"], "dave");
    assert_eq!(fails[0]["provider"], "partner");
    let reg = fx.registry();
    assert_eq!(reg.list().len(), 1, "refused logins record nobody");
    assert_eq!(reg.get("dave").unwrap().subject, "corp-dave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_declined_ends_the_login_with_an_audited_provider_error() {
    let provider = OidcProvider::start_async(ProviderSpec {
        clients: vec![client("gatehouse")],
        accounts: vec![AccountSpec::new("gina", &[])],
        ..ProviderSpec::default()
    })
    .await;
    let fx = SsoFixture::new(&[conf("corp", &provider, "gatehouse")]);
    let start = fx.sso.start_login("corp", "b", None).await.unwrap();
    let reached = ProviderBrowser::new(PUBLIC_URL, None)
        .sign_in_and_decline(&start.url, "gina", "pw-gina")
        .await;
    let cb = SsoCallback::from_query(&reached.query());
    assert_eq!(cb.error.as_deref(), Some("access_denied"));
    let err = fx.sso.finish_login(&cb, Some("b"), None).await.unwrap_err();
    assert_eq!(err.check(), Some(SsoCheck::ProviderError));
    assert_eq!(fx.audit_of("sso_failure")[0]["check"], "provider_error");
    assert!(fx.registry().list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_at_start_is_unavailable_then_comes_back() {
    let mut provider = OidcProvider::start_async(ProviderSpec {
        clients: vec![client("gatehouse")],
        accounts: vec![AccountSpec::new("hank", &[])],
        auto_consent: true,
        ..ProviderSpec::default()
    })
    .await;
    tokio::task::block_in_place(|| provider.stop());
    let fx = SsoFixture::new(&[conf("corp", &provider, "gatehouse")]);
    let t = Instant::now();
    let err = fx.sso.start_login("corp", "b", None).await.unwrap_err();
    assert!(matches!(err, SsoError::Unavailable { .. }), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a refused connection fails fast"
    );
    assert_eq!(fx.sso.providers()[0].status, ProviderStatus::Unavailable);
    // While backing off, the answer is immediate and fetches nothing.
    let t = Instant::now();
    assert!(fx.sso.start_login("corp", "b", None).await.is_err());
    assert!(t.elapsed() < Duration::from_millis(200));
    tokio::task::block_in_place(|| provider.restart());
    let deadline = Instant::now() + Duration::from_secs(20);
    while fx.sso.providers()[0].status != ProviderStatus::Available {
        assert!(Instant::now() < deadline, "provider not rediscovered");
        fx.sso.refresh().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (r, _) = sso_login(&fx, "corp", "hank").await;
    assert!(matches!(r.unwrap().step, SsoStep::Enrol(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_provider_is_trusted_through_its_ca_file_only() {
    let dir = TestDir::new("oidc-tls");
    let pki = Pki::new(&dir.join("certs"));
    let provider = OidcProvider::start_async(ProviderSpec {
        clients: vec![client("gatehouse")],
        accounts: vec![AccountSpec::new("ivy", &["staff"])],
        auto_consent: true,
        tls: Some((pki.cert_path.clone(), pki.key_path.clone())),
        ..ProviderSpec::default()
    })
    .await;
    assert!(provider.issuer.starts_with("https://"));
    let fx = SsoFixture::new(&[
        conf("corp", &provider, "gatehouse")
            .with(&format!("ca_file = \"{}\"", pki.ca_path.display())),
        conf("roots", &provider, "gatehouse"),
    ]);
    let err = fx.sso.start_login("roots", "b", None).await.unwrap_err();
    assert!(
        matches!(err, SsoError::Unavailable { .. }),
        "web roots do not trust the test CA"
    );
    let start = fx.sso.start_login("corp", "b", None).await.unwrap();
    let reached = ProviderBrowser::new(PUBLIC_URL, Some(pki.client_config(&[b"http/1.1"], None)))
        .sign_in(&start.url, "ivy", "pw-ivy")
        .await;
    let login = fx
        .sso
        .finish_login(&SsoCallback::from_query(&reached.query()), Some("b"), None)
        .await
        .unwrap();
    assert!(matches!(login.step, SsoStep::Enrol(ref p) if p.user() == "ivy"));
}
