//! SSO against a hostile provider (the double in `support::oidc_double`, which signs whatever
//! a test asks for): every forged or broken ID token is refused with the check it fails
//! named, audited as `sso_failure`, and leaves no identity, no registered user and no
//! second-factor proof behind. Positive controls show the same harness does sign users in
//! when nothing is wrong. Hostile callbacks and claims: `oidc_callbacks.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine;
use gatehouse_core::error::SsoCheck;
use gatehouse_core::identity::oidc::{SsoCallback, SsoStep};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::oidc_double::{
    CLIENT_ID, CLIENT_SECRET, ProviderDouble, SigningKey, hs256, unsigned,
};
use crate::support::sso::{BROWSER, attempt, double_fixture, now, query_param, refused, with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_id_tokens_are_refused_by_the_check_they_fail() {
    let double = ProviderDouble::start().await;
    let fx = double_fixture(&double, &[]);
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
    let fx = double_fixture(&double, &[]);
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
    let fx = double_fixture(&double, &[]);
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
    let fx = double_fixture(&double, &[]);
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
