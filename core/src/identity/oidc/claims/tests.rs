//! Names, groups and `amr`, table by table.

use secrecy::SecretString;
use serde_json::json;

use super::*;
use crate::config::SecretSource;

fn cfg(username_claim: &str) -> OidcConfig {
    OidcConfig {
        name: "corp".into(),
        issuer: "https://idp".into(),
        insecure_loopback: false,
        client_id: "gh".into(),
        client_secret_source: SecretSource::Env("X".into()),
        client_secret: SecretString::from("s"),
        groups_claim: "groups".into(),
        username_claim: username_claim.into(),
        trust_mfa: false,
        ca: None,
        scopes: vec!["openid".into()],
    }
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn names_and_groups_table() {
    let many: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
    // (username claim, ID token claims, userinfo claims, expected: Ok(name, groups) or Err(check))
    type Case = (
        &'static str,
        Value,
        Option<Value>,
        Result<(&'static str, Vec<&'static str>), SsoCheck>,
    );
    let cases: Vec<Case> = vec![
        (
            "preferred_username",
            json!({"preferred_username": "Alice", "groups": ["Staff", "sre", "staff"]}),
            None,
            Ok(("alice", vec!["staff", "sre"])),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "alice", "groups": "staff"}),
            None,
            Ok(("alice", vec!["staff"])),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "alice"}),
            None,
            Ok(("alice", vec![])),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "alice", "groups": null}),
            None,
            Ok(("alice", vec![])),
        ),
        (
            "preferred_username",
            json!({"sub": "x"}),
            Some(json!({"preferred_username": "bob", "groups": ["ops"]})),
            Ok(("bob", vec!["ops"])),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "carol", "groups": ["a"]}),
            Some(json!({"preferred_username": "mallory", "groups": ["admin"]})),
            Ok(("carol", vec!["a"])),
        ),
        (
            "email",
            json!({"email": "Dan@Example.com", "email_verified": true}),
            None,
            Ok(("dan@example.com", vec![])),
        ),
        (
            "email",
            json!({"email": "dan@example.com", "email_verified": false}),
            None,
            Err(SsoCheck::EmailVerified),
        ),
        (
            "email",
            json!({"email": "dan@example.com", "email_verified": "true"}),
            None,
            Err(SsoCheck::EmailVerified),
        ),
        (
            "email",
            json!({"email": "dan@example.com"}),
            None,
            Err(SsoCheck::EmailVerified),
        ),
        (
            "email",
            json!({"email": "dan@example.com"}),
            Some(json!({"email_verified": true})),
            Err(SsoCheck::EmailVerified),
        ),
        (
            "email",
            json!({"sub": "x"}),
            Some(json!({"email": "dan@example.com", "email_verified": true})),
            Ok(("dan@example.com", vec![])),
        ),
        (
            "preferred_username",
            json!({"sub": "x"}),
            None,
            Err(SsoCheck::Name),
        ),
        (
            "preferred_username",
            json!({"preferred_username": 42}),
            None,
            Err(SsoCheck::Name),
        ),
        (
            "preferred_username",
            json!({"preferred_username": ""}),
            None,
            Err(SsoCheck::Name),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "a:b"}),
            None,
            Err(SsoCheck::Name),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "a b"}),
            None,
            Err(SsoCheck::Name),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "a,b"}),
            None,
            Err(SsoCheck::Name),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "a@b@c"}),
            None,
            Err(SsoCheck::Name),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "-a"}),
            None,
            Err(SsoCheck::Name),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "x".repeat(MAX_NAME_LEN + 1)}),
            None,
            Err(SsoCheck::Name),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "alice", "groups": {"a": 1}}),
            None,
            Err(SsoCheck::Groups),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "alice", "groups": ["ok", 3]}),
            None,
            Err(SsoCheck::Groups),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "alice", "groups": ["/staff"]}),
            None,
            Err(SsoCheck::Groups),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "alice", "groups": ["Domain Users"]}),
            None,
            Err(SsoCheck::Groups),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "alice", "groups": ["x".repeat(65)]}),
            None,
            Err(SsoCheck::Groups),
        ),
        (
            "preferred_username",
            json!({"preferred_username": "alice", "groups": many}),
            None,
            Err(SsoCheck::Groups),
        ),
    ];
    for (claim, id, ui, want) in cases {
        let c = cfg(claim);
        let ui = ui.map(map);
        let got = extract(&c, &map(id.clone()), ui.as_ref());
        match (&got, &want) {
            (Ok(e), Ok((name, groups))) => {
                assert_eq!(&e.name, name, "{id}");
                assert_eq!(&e.groups, groups, "{id}");
            }
            (Err((check, _)), Err(w)) => assert_eq!(check, w, "{id}"),
            _ => panic!("{id}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn userinfo_is_needed_only_for_missing_claims() {
    let c = cfg("preferred_username");
    assert!(!needs_userinfo(
        &c,
        &map(json!({"preferred_username": "a", "groups": []}))
    ));
    assert!(needs_userinfo(&c, &map(json!({"preferred_username": "a"}))));
    assert!(needs_userinfo(&c, &map(json!({"groups": []}))));
    let e = cfg("email");
    assert!(needs_userinfo(
        &e,
        &map(json!({"email": "a@b", "groups": []}))
    ));
    assert!(!needs_userinfo(
        &e,
        &map(json!({"email": "a@b", "email_verified": false, "groups": []}))
    ));
}

#[test]
fn amr_is_read_bounded_from_the_id_token_only() {
    let c = cfg("preferred_username");
    let e = extract(
        &c,
        &map(json!({"preferred_username": "a", "amr": ["pwd", "otp", 7, "x y", "z".repeat(40)]})),
        Some(&map(json!({"amr": ["mfa"]}))),
    )
    .unwrap();
    assert_eq!(e.amr, ["pwd", "otp"]);
    let e = extract(
        &c,
        &map(json!({"preferred_username": "a", "amr": "mfa"})),
        None,
    )
    .unwrap();
    assert!(e.amr.is_empty(), "amr is an array");
}

#[test]
fn mfa_needs_two_factor_classes_or_mfa() {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for (amr, mfa) in [
        (v(&["mfa"]), true),
        (v(&["pwd", "otp"]), true),
        (v(&["hwk", "fpt"]), true),
        (v(&["pwd", "hwk"]), true),
        (v(&["otp"]), false),
        (v(&["pwd"]), false),
        (v(&["pwd", "pin"]), false),
        (v(&["otp", "sms"]), false),
        (v(&[]), false),
        (v(&["MFA"]), false),
    ] {
        assert_eq!(proves_mfa(&amr), mfa, "{amr:?}");
    }
}
