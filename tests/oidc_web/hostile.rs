//! Hostile callbacks through the binary: none yields a session, each ends on a clear page
//! with a request id and leaves an `sso_failure` audit record naming the check.

use super::kit::{
    CALLBACK_PATH, Idp, PUBLIC, Step, Web, assert_failure_page, audit_of, callback_path, gateway,
    provider, sso_failures,
};
use crate::support::oidc_provider::AccountSpec;
use crate::support::sso::query_param;
use crate::support::{Gatehouse, TestDir, Upstream};

async fn setup() -> (
    crate::support::oidc_provider::OidcProvider,
    Upstream,
    TestDir,
    Gatehouse,
) {
    let idp = provider(
        vec![
            AccountSpec::new("alice", &["staff"]),
            AccountSpec::new("mallory", &["staff"]),
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
    (idp, up, secrets, gh)
}

/// Asserts the last `sso_failure` record names `check` and that no SSO user was admitted.
fn refused_as(gh: &Gatehouse, check: &str) {
    let (got, _) = sso_failures(gh).pop().expect("an sso_failure record");
    assert_eq!(got, check);
}

fn nobody_signed_in(gh: &Gatehouse, web: &Web<'_>) {
    assert!(web.session(PUBLIC).is_none(), "a session cookie was set");
    assert!(
        audit_of(gh, "login_success").is_empty(),
        "a login succeeded: {:?}",
        audit_of(gh, "login_success")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_from_another_login_transaction_is_refused_as_login_csrf() {
    let (_idp, _up, _s, gh) = setup().await;
    // The attacker signs in as herself and keeps the callback instead of following it.
    let mut attacker = Web::new(&gh);
    let start = attacker.start("corp", None).await;
    let cb = attacker.at_provider(&start, "mallory").await;

    // Delivered to a victim's browser that holds no login transaction at all.
    let mut victim = Web::new(&gh);
    let Step::Refused(r) = victim.callback(&cb).await else {
        panic!("a foreign callback signed the victim in")
    };
    assert_failure_page(&r, 400, "binding");
    assert!(r.text().contains("another browser"), "{}", r.text());
    refused_as(&gh, "binding");
    nobody_signed_in(&gh, &victim);
    // Refused, the transaction is spent: the attacker cannot use it either.
    let Step::Refused(r) = attacker.callback(&cb).await else {
        panic!("a spent transaction signed in")
    };
    assert_failure_page(&r, 400, "state");
    refused_as(&gh, "state");

    // A victim with a login of her own under way: still not the attacker's transaction.
    let start = attacker.start("corp", None).await;
    let cb = attacker.at_provider(&start, "mallory").await;
    let mut victim = Web::new(&gh);
    let own = victim.start("corp", None).await;
    assert_eq!(own.status, 303);
    let Step::Refused(r) = victim.callback(&cb).await else {
        panic!("a foreign callback signed the victim in")
    };
    assert_failure_page(&r, 400, "binding");
    refused_as(&gh, "binding");
    nobody_signed_in(&gh, &victim);
    assert!(audit_of(&gh, "sso_authenticated").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_replayed_in_a_fresh_browser_or_with_a_tampered_state_is_refused() {
    let (_idp, _up, _s, gh) = setup().await;
    let mut web = Web::new(&gh);
    let start = web.start("corp", None).await;
    let cb = web.at_provider(&start, "alice").await;

    // Tampered state: refused; the genuine transaction is untouched.
    let state = query_param(&format!("https://x{cb}"), "state").unwrap();
    let mut tampered_state = state.clone();
    let last = tampered_state.pop().unwrap();
    tampered_state.push(if last == 'A' { 'B' } else { 'A' });
    let tampered = cb.replace(&state, &tampered_state);
    let Step::Refused(r) = web.callback(&tampered).await else {
        panic!("a tampered state signed in")
    };
    assert_failure_page(&r, 400, "state");
    refused_as(&gh, "state");
    nobody_signed_in(&gh, &web);

    // The login cookie was cleared with that failure: the genuine callback is now from a
    // browser without the transaction's binding, and refused too.
    let Step::Refused(r) = web.callback(&cb).await else {
        panic!("signed in without the binding cookie")
    };
    assert_failure_page(&r, 400, "binding");

    // A genuine login, then its callback replayed in a fresh browser.
    let mut web = Web::new(&gh);
    let start = web.start("corp", None).await;
    let cb = web.at_provider(&start, "alice").await;
    assert!(matches!(web.callback(&cb).await, Step::Enrol));
    let mut fresh = Web::new(&gh);
    let Step::Refused(r) = fresh.callback(&cb).await else {
        panic!("a replayed callback signed in")
    };
    assert_failure_page(&r, 400, "state");
    refused_as(&gh, "state");
    nobody_signed_in(&gh, &fresh);
    // And in the same browser.
    let Step::Refused(r) = web.callback(&cb).await else {
        panic!("a replayed callback signed in")
    };
    assert_failure_page(&r, 400, "state");
    assert!(audit_of(&gh, "login_success").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_and_a_declined_consent_end_on_a_clear_page() {
    let (_idp, _up, _s, gh) = setup().await;
    let mut web = Web::new(&gh);
    let start = web.start("corp", None).await;
    let first = web.at_provider(&start, "alice").await;
    assert!(matches!(web.callback(&first).await, Step::Enrol));

    // A new login of the same browser, called back with the first login's (used) code.
    let start = web.start("corp", None).await;
    let url = start.header("location").unwrap();
    let state = query_param(&url, "state").unwrap();
    let code = query_param(&format!("https://x{first}"), "code").unwrap();
    let iss = query_param(&format!("https://x{first}"), "iss");
    let mut replay = format!(
        "{CALLBACK_PATH}?code={}&state={}",
        crate::support::identity::urlencode(&code),
        crate::support::identity::urlencode(&state)
    );
    if let Some(iss) = iss {
        replay.push_str(&format!(
            "&iss={}",
            crate::support::identity::urlencode(&iss)
        ));
    }
    let Step::Refused(r) = web.callback(&replay).await else {
        panic!("a replayed code signed in")
    };
    assert_failure_page(&r, 401, "token_exchange");
    refused_as(&gh, "token_exchange");

    // Consent declined at the provider.
    let mut web = Web::new(&gh);
    let start = web.start("corp", None).await;
    let reached = web
        .provider
        .sign_in_and_decline(&start.header("location").unwrap(), "alice", "pw-alice")
        .await;
    let cb = callback_path(&reached);
    assert!(cb.contains("error=access_denied"), "{cb}");
    let Step::Refused(r) = web.callback(&cb).await else {
        panic!("a declined login signed in")
    };
    assert_failure_page(&r, 403, "provider_error");
    assert!(r.text().contains("cancelled or refused"));
    refused_as(&gh, "provider_error");
    assert!(audit_of(&gh, "login_success").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_providers_the_sso_routes_do_not_exist() {
    let gh = Gatehouse::start(crate::support::GatehouseSpec::default()).await;
    let mut web = Web::new(&gh);
    for path in [
        format!("{CALLBACK_PATH}?state=x&code=y"),
        "/.gatehouse/oidc/start?provider=corp".to_string(),
    ] {
        let r = web.get(PUBLIC, &path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let login = web.get(PUBLIC, "/.gatehouse/login").await;
    assert!(!login.text().contains("providers"), "{}", login.text());
    assert!(sso_failures(&gh).is_empty());
}
