use std::os::unix::fs::PermissionsExt;

use jsonwebtoken::jwk::{JwkSet, ThumbprintHash};
use jsonwebtoken::{DecodingKey, Validation};

use gatehouse_testkit::TestDir;

use super::*;
use crate::web::cookie::CookieValue;

fn public_url() -> url::Url {
    url::Url::parse("https://gatehouse.localhost:8443").unwrap()
}

fn signer() -> AssertionSigner {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    AssertionSigner::from_key_pair(&pair, &public_url()).unwrap()
}

/// Verifies `token` the way an upstream would: with only the published JWKS.
fn verify_with_jwks(jwks: &str, token: &str, app: &str) -> AssertionClaims {
    let set: JwkSet = serde_json::from_str(jwks).unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = set.find(&kid).expect("kid published in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[app]);
    v.set_issuer(&["https://gatehouse.localhost:8443"]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    jsonwebtoken::decode::<AssertionClaims>(token, &key, &v)
        .unwrap()
        .claims
}

/// alice's request to grafana in `session`.
fn alice_at_grafana<'a>(session: &'a SessionHash, groups: &'a [String]) -> AssertionRequest<'a> {
    AssertionRequest {
        session,
        app: "grafana",
        user: "alice",
        groups,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn upstream_verifies_with_only_the_jwks() {
    let s = signer();
    let session = CookieValue::generate().unwrap();
    let groups = vec!["group:staff".to_string(), "group:sre".to_string()];
    let req = AssertionRequest {
        session: &session.hash(),
        app: "grafana",
        user: "alice",
        groups: &groups,
    };
    let token = s.assertion(&req).unwrap();
    let claims = verify_with_jwks(s.jwks(), &token, "grafana");
    assert_eq!(claims.iss, "https://gatehouse.localhost:8443");
    assert_eq!(claims.aud, "grafana");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.groups, groups);
    assert_eq!(claims.sid, session.hash().as_str());
    assert_ne!(claims.sid, session.expose(), "never the raw session id");
    assert!(!token.contains(session.expose()));
    assert_eq!(claims.exp - claims.iat, 300);
    assert_eq!(claims.nbf, claims.iat);
    assert!(claims.iat.abs_diff(now()) < 5);
    assert_eq!(claims.jti.len(), 22);

    // Another app's audience, or a token with a flipped signature byte, is refused.
    let set: JwkSet = serde_json::from_str(s.jwks()).unwrap();
    let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["wiki"]);
    assert!(jsonwebtoken::decode::<AssertionClaims>(&*token, &key, &v).is_err());
    let mut forged = token.to_string();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    v.set_audience(&["grafana"]);
    assert!(jsonwebtoken::decode::<AssertionClaims>(&forged, &key, &v).is_err());
    // A key not in the JWKS does not verify.
    let other = signer();
    let set2: JwkSet = serde_json::from_str(other.jwks()).unwrap();
    let key2 = DecodingKey::from_jwk(&set2.keys[0]).unwrap();
    assert!(jsonwebtoken::decode::<AssertionClaims>(&*token, &key2, &v).is_err());
}

#[test]
fn jwks_shape_and_rfc7638_kid() {
    let s = signer();
    let doc: serde_json::Value = serde_json::from_str(s.jwks()).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    for (field, want) in [
        ("kty", "EC"),
        ("crv", "P-256"),
        ("alg", "ES256"),
        ("use", "sig"),
    ] {
        assert_eq!(k[field], want);
    }
    assert_eq!(k["x"].as_str().unwrap().len(), 43);
    assert_eq!(k["y"].as_str().unwrap().len(), 43);
    assert_eq!(k["kid"], s.kid());
    assert!(k.get("d").is_none(), "no private part");
    // Cross-check the thumbprint with jsonwebtoken's own implementation.
    let set: JwkSet = serde_json::from_str(s.jwks()).unwrap();
    assert_eq!(
        set.keys[0].thumbprint(ThumbprintHash::SHA256).unwrap(),
        s.kid()
    );
    let header = jsonwebtoken::decode_header(
        &*s.assertion(&AssertionRequest {
            session: &CookieValue::generate().unwrap().hash(),
            app: "a",
            user: "u",
            groups: &[],
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(s.kid()));
}

#[test]
fn cached_until_near_expiry_then_replaced() {
    let s = signer();
    let session = CookieValue::generate().unwrap().hash();
    let groups = vec!["group:staff".to_string()];
    let req = alice_at_grafana(&session, &groups);
    let t0 = now();
    let first = s.assertion_at(&req, t0).unwrap();
    let second = s.assertion_at(&req, t0).unwrap();
    assert_eq!(first, second, "second call returns the identical token");
    assert!(Arc::ptr_eq(&first, &second));
    // 239 s later it still has 61 s left: reused.
    assert_eq!(s.assertion_at(&req, t0 + 239).unwrap(), first);
    // 241 s later under 60 s are left: a new token with a later expiry.
    let renewed = s.assertion_at(&req, t0 + 241).unwrap();
    assert_ne!(renewed, first);
    let claims: AssertionClaims = jsonwebtoken::dangerous::insecure_decode(&*renewed)
        .unwrap()
        .claims;
    assert_eq!(claims.iat, t0 + 241);
    assert_eq!(s.assertion_at(&req, t0 + 242).unwrap(), renewed);

    // Another app, session, user or group set gets its own token.
    let other_app = s
        .assertion_at(&AssertionRequest { app: "wiki", ..req }, t0 + 242)
        .unwrap();
    assert_ne!(other_app, renewed);
    let other_session = CookieValue::generate().unwrap().hash();
    assert_ne!(
        s.assertion_at(
            &AssertionRequest {
                session: &other_session,
                ..req
            },
            t0 + 242
        )
        .unwrap(),
        renewed
    );
    let more = vec!["group:staff".to_string(), "group:sre".to_string()];
    let regrouped = s
        .assertion_at(
            &AssertionRequest {
                groups: &more,
                ..req
            },
            t0 + 242,
        )
        .unwrap();
    assert_ne!(regrouped, renewed);
    assert_eq!(s.cached(), 3);

    s.forget_session(&session);
    assert_eq!(s.cached(), 1);
    assert_ne!(s.assertion_at(&req, t0 + 243).unwrap(), regrouped);
}

#[test]
fn cache_is_bounded() {
    let mut s = signer();
    s.cap = 4;
    let t0 = now();
    let sessions: Vec<SessionHash> = (0..10)
        .map(|_| CookieValue::generate().unwrap().hash())
        .collect();
    for (i, sess) in sessions.iter().enumerate() {
        let req = AssertionRequest {
            session: sess,
            app: "grafana",
            user: "alice",
            groups: &[],
        };
        s.assertion_at(&req, t0 + i as u64).unwrap();
        assert!(s.cached() <= 4);
    }
    assert_eq!(s.cached(), 4);
    // The newest entries survive (soonest-expiring evicted first).
    let cache = s.cache.lock().unwrap();
    for sess in &sessions[6..] {
        assert!(cache.get(sess, "grafana").is_some());
    }
    drop(cache);
    // Far in the future every entry is stale: all are evicted to make room.
    let late = CookieValue::generate().unwrap().hash();
    s.assertion_at(
        &AssertionRequest {
            session: &late,
            app: "x",
            user: "u",
            groups: &[],
        },
        t0 + 10_000,
    )
    .unwrap();
    assert_eq!(s.cached(), 1);
}

#[test]
fn key_file_created_private_and_shared() {
    let dir = TestDir::new("web");
    let data = dir.0.join("data");
    let a = AssertionSigner::load_or_create(&data, &public_url()).unwrap();
    let path = data.join(KEY_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("BEGIN PRIVATE KEY")
    );
    // A restart (or a second instance) loads the same key: tokens verify with either JWKS.
    let b = AssertionSigner::load_or_create(&data, &public_url()).unwrap();
    assert_eq!(a.kid(), b.kid());
    assert_eq!(a.jwks(), b.jwks());
    let token = a
        .assertion(&AssertionRequest {
            session: &CookieValue::generate().unwrap().hash(),
            app: "grafana",
            user: "alice",
            groups: &[],
        })
        .unwrap();
    verify_with_jwks(b.jwks(), &token, "grafana");
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from(KEY_FILE)]);
}

#[test]
fn key_file_refusals() {
    let dir = TestDir::new("web");
    let path = dir.0.join(KEY_FILE);
    // Readable by others: refused, not silently used.
    std::fs::write(
        &path,
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem(),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = AssertionSigner::load_or_create(&dir.0, &public_url()).unwrap_err();
    assert!(
        matches!(err, AssertionError::KeyPermissions { mode: 0o644, .. }),
        "{err}"
    );
    // Garbage: refused (not replaced: an operator must look at it).
    std::fs::write(&path, "not a key").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        AssertionSigner::load_or_create(&dir.0, &public_url()),
        Err(AssertionError::ParseKey { .. })
    ));
    // Another key type: refused.
    std::fs::write(
        &path,
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem(),
    )
    .unwrap();
    assert!(matches!(
        AssertionSigner::load_or_create(&dir.0, &public_url()),
        Err(AssertionError::WrongKeyType)
    ));
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    assert!(matches!(
        AssertionSigner::from_key_pair(&p384, &public_url()),
        Err(AssertionError::WrongKeyType)
    ));
}

#[test]
fn concurrent_creation_agrees_on_one_key() {
    let dir = TestDir::new("web");
    let data = dir.0.join("race");
    let kids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    AssertionSigner::load_or_create(&data, &public_url())
                        .unwrap()
                        .kid()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(kids.windows(2).all(|w| w[0] == w[1]), "{kids:?}");
}

mod openssl;

#[test]
fn identity_headers_carry_the_cached_assertion_user_and_groups() {
    let s = signer();
    let session = CookieValue::generate().unwrap().hash();
    let groups = vec!["group:staff".to_string(), "group:sre".to_string()];
    let req = alice_at_grafana(&session, &groups);
    let h = s.identity_headers(&req).unwrap();
    assert_eq!(h.user, "alice");
    assert_eq!(h.groups, "group:staff,group:sre");
    assert_eq!(
        h.assertion.as_bytes(),
        s.assertion(&req).unwrap().as_bytes()
    );
    // A cache hit hands out the same bytes, not a new signature.
    assert_eq!(s.identity_headers(&req).unwrap().assertion, h.assertion);
    assert_eq!(s.cached(), 1);
}

#[test]
fn a_name_that_cannot_be_a_header_is_refused() {
    let s = signer();
    let session = CookieValue::generate().unwrap().hash();
    let req = AssertionRequest {
        session: &session,
        app: "grafana",
        user: "alice\r\nx-injected: 1",
        groups: &[],
    };
    assert!(matches!(
        s.identity_headers(&req),
        Err(AssertionError::IdentityHeader)
    ));
    assert_eq!(s.cached(), 0, "nothing cached for a refused identity");
}

#[test]
fn each_thread_keeps_its_copy_until_expiry_forgetting_or_another_identity() {
    let s = signer();
    let session = CookieValue::generate().unwrap().hash();
    let groups = vec!["group:staff".to_string()];
    let req = alice_at_grafana(&session, &groups);
    let t0 = now();
    let first = s.identity_headers_at(&req, t0).unwrap().assertion;
    // This thread's copy: same token, its own buffer.
    let again = s.identity_headers_at(&req, t0 + 1).unwrap().assertion;
    assert_eq!(again, first);
    assert_ne!(again.as_bytes().as_ptr(), first.as_bytes().as_ptr());
    // Another thread uses the shared cache and then keeps a copy of its own.
    let other = std::thread::scope(|sc| {
        sc.spawn(|| s.identity_headers_at(&req, t0 + 2).unwrap().assertion)
            .join()
            .unwrap()
    });
    assert_eq!(other, first);
    // Another user or groups on the same session and app never get this copy.
    let more = vec!["group:staff".to_string(), "group:sre".to_string()];
    let regrouped = s
        .identity_headers_at(
            &AssertionRequest {
                groups: &more,
                ..req
            },
            t0 + 3,
        )
        .unwrap();
    assert_eq!(regrouped.groups, "group:staff,group:sre");
    assert_ne!(regrouped.assertion, first);
    // Near expiry the copy is not used: a fresh token.
    let late = t0 + ASSERTION_TTL.as_secs() - REUSE_MARGIN.as_secs() + 1;
    let renewed = s.identity_headers_at(&req, late).unwrap().assertion;
    assert_ne!(renewed, first);
    // Forgetting the session drops every thread's copy.
    s.forget_session(&session);
    assert_ne!(
        s.identity_headers_at(&req, late).unwrap().assertion,
        renewed
    );
    // A second signer never sees the first one's copies.
    let s2 = signer();
    let theirs = s2.identity_headers_at(&req, late).unwrap().assertion;
    let kid = jsonwebtoken::decode_header(theirs.to_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(kid, s2.kid(), "signed by the second signer");
    assert_eq!(s2.cached(), 1);
}
