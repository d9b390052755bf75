//! SSO against a hostile provider (the double in `support::oidc_double`, which signs whatever
//! a test asks for) and hostile callbacks: every forged or broken ID token and every bad
//! callback is refused with the check it fails named, audited as `sso_failure`, and leaves
//! no identity, no registered user and no second-factor proof behind. Positive controls
//! show the same harness does sign users in when nothing is wrong.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine;
use gatehouse_core::SsoError;
use gatehouse_core::error::SsoCheck;
use gatehouse_core::identity::oidc::{SsoCallback, SsoLogin, SsoStep};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::oidc_double::{
    CLIENT_ID, CLIENT_SECRET, ProviderDouble, SigningKey, hs256, unsigned,
};
use crate::support::sso::{ProviderConf, SsoFixture, query_param};

const BROWSER: &str = "the-browser";

fn fixture(double: &ProviderDouble, extra: &[&str]) -> SsoFixture {
    let mut c = ProviderConf::new("evil", &double.issuer, CLIENT_ID, CLIENT_SECRET);
    for line in extra {
        c = c.with(line);
    }
    SsoFixture::new(&[c])
}

/// One login through the double: start, queue the token `make(nonce)` crafts, call back.
async fn attempt(
    fx: &SsoFixture,
    double: &ProviderDouble,
    make: impl FnOnce(&str) -> String,
) -> Result<SsoLogin, SsoError> {
    let start = fx.sso.start_login("evil", BROWSER, None).await.unwrap();
    let state = query_param(&start.url, "state").unwrap();
    let nonce = query_param(&start.url, "nonce").unwrap();
    double.next_id_token(make(&nonce));
    let cb = SsoCallback::from_query(&format!("state={state}&code=the-code"));
    fx.sso.finish_login(&cb, Some(BROWSER), None).await
}

fn with(mut claims: Value, edits: &[(&str, Value)]) -> Value {
    for (k, v) in edits {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(*k);
        } else {
            claims[*k] = v.clone();
        }
    }
    claims
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts `r` was refused by `check`, audited, and registered nobody.
fn refused(fx: &SsoFixture, r: Result<SsoLogin, SsoError>, check: SsoCheck, case: &str) {
    match r {
        Err(e) => assert_eq!(e.check(), Some(check), "{case}: {e}"),
        Ok(l) => panic!("{case}: signed in: {:?}", l.step),
    }
    let last = fx
        .audit_of("sso_failure")
        .pop()
        .unwrap_or_else(|| panic!("{case}: no audit"));
    assert_eq!(last["check"], check.as_str(), "{case}: {last}");
    assert!(
        fx.registry().list().is_empty(),
        "{case}: a user was recorded"
    );
    assert!(fx.audit_of("sso_authenticated").is_empty(), "{case}");
    assert!(fx.audit_of("login_success").is_empty(), "{case}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_id_tokens_are_refused_by_the_check_they_fail() {
    let double = ProviderDouble::start().await;
    let fx = fixture(&double, &[]);
    let other = SigningKey::new("key-1"); // the published kid, other key material
    let t = now();
    type Make<'a> = Box<dyn FnOnce(&str) -> String + 'a>;
    let d = &double;
    let cases: Vec<(&str, SsoCheck, Make<'_>)> = vec![
        (
            "alg none",
            SsoCheck::Alg,
            Box::new(|n| unsigned(&d.good_claims(n))),
        ),
        (
            "hs256 keyed with the public key",
            SsoCheck::Alg,
            Box::new(|n| hs256(&d.good_claims(n), &d.key.public_bytes(), "key-1")),
        ),
        (
            "hs256 keyed with the key set",
            SsoCheck::Alg,
            Box::new(|n| {
                hs256(
                    &d.good_claims(n),
                    d.key.jwk().to_string().as_bytes(),
                    "key-1",
                )
            }),
        ),
        (
            "hs256 keyed with the client secret",
            SsoCheck::Alg,
            Box::new(|n| hs256(&d.good_claims(n), CLIENT_SECRET.as_bytes(), "key-1")),
        ),
        (
            "wrong iss",
            SsoCheck::Iss,
            Box::new(|n| {
                d.key.sign(
                    &with(d.good_claims(n), &[("iss", json!("https://evil.example"))]),
                    None,
                )
            }),
        ),
        (
            "wrong aud",
            SsoCheck::Aud,
            Box::new(|n| {
                d.key.sign(
                    &with(d.good_claims(n), &[("aud", json!("someone-else"))]),
                    None,
                )
            }),
        ),
        (
            "extra audience, no azp",
            SsoCheck::Azp,
            Box::new(|n| {
                d.key.sign(
                    &with(
                        d.good_claims(n),
                        &[("aud", json!([CLIENT_ID, "other-app"]))],
                    ),
                    None,
                )
            }),
        ),
        (
            "extra audience, azp of another",
            SsoCheck::Azp,
            Box::new(|n| {
                d.key.sign(
                    &with(
                        d.good_claims(n),
                        &[
                            ("aud", json!([CLIENT_ID, "other-app"])),
                            ("azp", json!("other-app")),
                        ],
                    ),
                    None,
                )
            }),
        ),
        (
            "expired",
            SsoCheck::Exp,
            Box::new(move |n| {
                d.key.sign(
                    &with(
                        d.good_claims(n),
                        &[("exp", json!(t - 600)), ("iat", json!(t - 900))],
                    ),
                    None,
                )
            }),
        ),
        (
            "iat in the future",
            SsoCheck::Iat,
            Box::new(move |n| {
                d.key.sign(
                    &with(
                        d.good_claims(n),
                        &[("iat", json!(t + 3600)), ("exp", json!(t + 7200))],
                    ),
                    None,
                )
            }),
        ),
        (
            "iat long ago",
            SsoCheck::Iat,
            Box::new(move |n| {
                d.key
                    .sign(&with(d.good_claims(n), &[("iat", json!(t - 7200))]), None)
            }),
        ),
        (
            "missing nonce",
            SsoCheck::Nonce,
            Box::new(|n| {
                d.key
                    .sign(&with(d.good_claims(n), &[("nonce", Value::Null)]), None)
            }),
        ),
        (
            "wrong nonce",
            SsoCheck::Nonce,
            Box::new(|n| {
                d.key.sign(
                    &with(d.good_claims(n), &[("nonce", json!(format!("{n}x")))]),
                    None,
                )
            }),
        ),
        (
            "known kid, other key",
            SsoCheck::Signature,
            Box::new(|n| other.sign(&d.good_claims(n), None)),
        ),
        (
            "tampered payload",
            SsoCheck::Signature,
            Box::new(|n| {
                let good = d.key.sign(&d.good_claims(n), None);
                let parts: Vec<&str> = good.split('.').collect();
                let forged = with(d.good_claims(n), &[("preferred_username", json!("admin"))]);
                let body =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
                format!("{}.{body}.{}", parts[0], parts[2])
            }),
        ),
        (
            "not a jwt",
            SsoCheck::Malformed,
            Box::new(|_| "not.a.jwt".into()),
        ),
        (
            "groups not names",
            SsoCheck::Groups,
            Box::new(|n| {
                d.key.sign(
                    &with(d.good_claims(n), &[("groups", json!(["Domain Users"]))]),
                    None,
                )
            }),
        ),
        (
            "name with a colon",
            SsoCheck::Name,
            Box::new(|n| {
                d.key.sign(
                    &with(
                        d.good_claims(n),
                        &[("preferred_username", json!("root:deploy"))],
                    ),
                    None,
                )
            }),
        ),
    ];
    for (case, check, make) in cases {
        let r = attempt(&fx, &double, make).await;
        refused(&fx, r, check, case);
    }
    // The same harness signs in a good token: the refusals above were the checks'.
    let ok = attempt(&fx, &double, |n| {
        let c = with(
            double.good_claims(n),
            &[
                ("aud", json!([CLIENT_ID, "other-app"])),
                ("azp", json!(CLIENT_ID)),
            ],
        );
        double.key.sign(&c, None)
    })
    .await
    .unwrap();
    assert!(matches!(ok.step, SsoStep::Enrol(ref p) if p.user() == "mallory"));
    assert_eq!(fx.registry().get("mallory").unwrap().subject, "subject-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_the_key_set_once_then_is_rate_limited() {
    let double = ProviderDouble::start().await;
    let fx = fixture(&double, &[]);
    let stranger = SigningKey::new("key-unknown");
    let r = attempt(&fx, &double, |n| {
        stranger.sign(&double.good_claims(n), None)
    })
    .await;
    assert_eq!(
        double.jwks_fetches(),
        2,
        "discovery's fetch, then one refetch for the kid"
    );
    refused(&fx, r, SsoCheck::Kid, "unknown kid");
    let r = attempt(&fx, &double, |n| {
        stranger.sign(&double.good_claims(n), Some("key-other"))
    })
    .await;
    assert_eq!(
        double.jwks_fetches(),
        2,
        "no second refetch within the interval"
    );
    refused(&fx, r, SsoCheck::Kid, "unknown kid again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_found_by_one_refetch() {
    let double = ProviderDouble::start().await;
    let fx = fixture(&double, &[]);
    let r = attempt(&fx, &double, |n| {
        double.key.sign(&double.good_claims(n), None)
    })
    .await;
    assert!(r.is_ok());
    let rotated = SigningKey::new("key-2");
    double.publish(&rotated);
    let r = attempt(&fx, &double, |n| rotated.sign(&double.good_claims(n), None)).await;
    assert!(
        matches!(r.unwrap().step, SsoStep::Enrol(_)),
        "first login was not completed"
    );
    assert_eq!(double.jwks_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_is_exchanged_with_pkce_s256_and_the_client_secret() {
    let double = ProviderDouble::start().await;
    let fx = fixture(&double, &[]);
    let start = fx.sso.start_login("evil", BROWSER, None).await.unwrap();
    let challenge = query_param(&start.url, "code_challenge").unwrap();
    let nonce = query_param(&start.url, "nonce").unwrap();
    let state = query_param(&start.url, "state").unwrap();
    assert!(!start.url.contains("code_verifier"));
    double.next_id_token(double.key.sign(&double.good_claims(&nonce), None));
    let cb = SsoCallback::from_query(&format!("state={state}&code=the-code"));
    fx.sso.finish_login(&cb, Some(BROWSER), None).await.unwrap();
    let (form, authz) = double.token_requests().pop().unwrap();
    let fields: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(fields["grant_type"], "authorization_code");
    assert_eq!(fields["code"], "the-code");
    let verifier = &fields["code_verifier"];
    let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    assert_eq!(
        digest, challenge,
        "S256(verifier) is the challenge sent before"
    );
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    assert_eq!(authz, format!("Basic {basic}"));
    assert!(
        !fields.contains_key("client_secret"),
        "the secret travels in the header only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callbacks_are_refused_before_any_token_request() {
    let double = ProviderDouble::start().await;
    let fx = fixture(&double, &[]);
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
    let fx = fixture(&double, &["username_claim = \"email\""]);
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
    let fx = fixture(&double, &[]);
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
