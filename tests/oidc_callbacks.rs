//! Hostile callbacks and hostile claims through the provider double: a tampered, replayed,
//! foreign or orphan callback (login CSRF) is refused before any token request; a name that
//! is a local user's or another subject's, an unverified e-mail, userinfo for another
//! subject and a locked user are refused; each is audited and registers nobody.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use gatehouse_core::error::SsoCheck;
use gatehouse_core::identity::oidc::SsoCallback;
use serde_json::{Value, json};

use crate::support::oidc_double::ProviderDouble;
use crate::support::sso::{
    BROWSER, SsoFixture, attempt, double_fixture, query_param, refused, with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callbacks_are_refused_before_any_token_request() {
    let double = ProviderDouble::start().await;
    let fx = double_fixture(&double, &[]);
    let start = fx.sso.start_login("evil", BROWSER, None).await.unwrap();
    let state = query_param(&start.url, "state").unwrap();
    let finish = |q: String, binding: Option<&'static str>| {
        let fx = &fx;
        async move {
            fx.sso
                .finish_login(&SsoCallback::from_query(&q), binding, None)
                .await
        }
    };
    let mut tampered = state.clone();
    tampered.replace_range(0..1, if state.starts_with('A') { "B" } else { "A" });
    refused(
        &fx,
        finish(format!("state={tampered}&code=c"), Some(BROWSER)).await,
        SsoCheck::State,
        "tampered state",
    );
    refused(
        &fx,
        finish("code=c".into(), Some(BROWSER)).await,
        SsoCheck::State,
        "no state",
    );
    // Login CSRF: a callback for a transaction this browser never started.
    refused(
        &fx,
        finish(format!("state={}&code=c", "x".repeat(43)), Some(BROWSER)).await,
        SsoCheck::State,
        "no transaction",
    );
    // The right state, from a fresh browser (no binding, another binding): refused, and spent.
    refused(
        &fx,
        finish(format!("state={state}&code=c"), None).await,
        SsoCheck::Binding,
        "fresh browser",
    );
    refused(
        &fx,
        finish(format!("state={state}&code=c"), Some(BROWSER)).await,
        SsoCheck::State,
        "replayed",
    );
    let next = |fx: &SsoFixture| {
        let fx_sso = fx.sso.clone();
        async move {
            let s = fx_sso.start_login("evil", BROWSER, None).await.unwrap();
            query_param(&s.url, "state").unwrap()
        }
    };
    let s = next(&fx).await;
    refused(
        &fx,
        finish(format!("state={s}&code=c"), Some("another-browser")).await,
        SsoCheck::Binding,
        "other browser",
    );
    let s = next(&fx).await;
    refused(
        &fx,
        finish(
            format!("state={s}&code=c&iss=https%3A%2F%2Fevil.example"),
            Some(BROWSER),
        )
        .await,
        SsoCheck::Iss,
        "mix-up iss",
    );
    let s = next(&fx).await;
    refused(
        &fx,
        finish(
            format!("state={s}&error=access_denied&error_description=no"),
            Some(BROWSER),
        )
        .await,
        SsoCheck::ProviderError,
        "consent denied",
    );
    let s = next(&fx).await;
    refused(
        &fx,
        finish(format!("state={s}"), Some(BROWSER)).await,
        SsoCheck::Code,
        "no code",
    );
    assert!(
        double.token_requests().is_empty(),
        "no hostile callback reached the token endpoint"
    );
    // A code the provider refuses (replayed or expired): the token endpoint says no.
    let s = next(&fx).await;
    refused(
        &fx,
        finish(format!("state={s}&code=replayed"), Some(BROWSER)).await,
        SsoCheck::TokenExchange,
        "refused code",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_emails_userinfo_and_locks_are_enforced() {
    let double = ProviderDouble::start().await;
    // username_claim = "email": only a verified address is a name.
    let fx = double_fixture(&double, &["username_claim = \"email\""]);
    double.set_userinfo(json!({"sub": "subject-1"}));
    for (verified, case) in [
        (json!(false), "unverified"),
        (Value::Null, "no email_verified"),
    ] {
        let r = attempt(&fx, &double, |n| {
            let c = with(
                double.good_claims(n),
                &[
                    ("email", json!("boss@example.com")),
                    ("email_verified", verified),
                ],
            );
            double.key.sign(&c, None)
        })
        .await;
        // Without email_verified in the token, userinfo is asked, and says nothing either.
        refused(&fx, r, SsoCheck::EmailVerified, case);
    }
    // The userinfo endpoint answering for another subject is refused.
    double.set_userinfo(
        json!({"sub": "someone-else", "email": "boss@example.com", "email_verified": true}),
    );
    let r = attempt(&fx, &double, |n| {
        double.key.sign(
            &with(
                double.good_claims(n),
                &[("email", json!("boss@example.com"))],
            ),
            None,
        )
    })
    .await;
    refused(&fx, r, SsoCheck::Userinfo, "userinfo for another subject");

    // A local user's name, another subject's name, a locked SSO user.
    let fx = double_fixture(&double, &[]);
    fx.add_local_user("alice");
    let r = attempt(&fx, &double, |n| {
        double.key.sign(
            &with(
                double.good_claims(n),
                &[("preferred_username", json!("Alice"))],
            ),
            None,
        )
    })
    .await;
    refused(&fx, r, SsoCheck::NameTaken, "local user's name");
    attempt(&fx, &double, |n| {
        double.key.sign(&double.good_claims(n), None)
    })
    .await
    .unwrap();
    let r = attempt(&fx, &double, |n| {
        double.key.sign(
            &with(double.good_claims(n), &[("sub", json!("subject-2"))]),
            None,
        )
    })
    .await;
    assert_eq!(
        r.unwrap_err().check(),
        Some(SsoCheck::NameTaken),
        "another subject's name"
    );
    let mut reg = fx.registry();
    reg.set_locked("mallory", true).unwrap();
    let r = attempt(&fx, &double, |n| {
        double.key.sign(&double.good_claims(n), None)
    })
    .await;
    assert_eq!(r.unwrap_err().check(), Some(SsoCheck::Locked));
    assert_eq!(fx.audit_of("sso_failure").pop().unwrap()["check"], "locked");
}
