//! Interoperability: an upstream that does not use jsonwebtoken (here the `openssl` CLI)
//! verifies an assertion with nothing but the JWKS's `x`/`y`.

use std::process::Command;

use super::*;

/// SubjectPublicKeyInfo prefix for an uncompressed P-256 point (id-ecPublicKey, prime256v1).
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn der_int(bytes: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
    if v.first().is_none_or(|&b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    let mut out = vec![0x02, v.len() as u8];
    out.extend(v);
    out
}

/// JWS ES256 signatures are r||s; openssl wants an ASN.1 `ECDSA-Sig-Value`.
fn raw_to_der(sig: &[u8]) -> Vec<u8> {
    let (r, s) = sig.split_at(32);
    let body = [der_int(r), der_int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

fn openssl_verify(dir: &Path, spki: &[u8], signed: &str, sig: &[u8]) -> (bool, String) {
    std::fs::write(dir.join("pub.der"), spki).unwrap();
    std::fs::write(dir.join("msg"), signed).unwrap();
    std::fs::write(dir.join("sig.der"), raw_to_der(sig)).unwrap();
    let out = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-keyform",
            "DER",
            "-verify",
            "pub.der",
            "-signature",
            "sig.der",
            "msg",
        ])
        .current_dir(dir)
        .output()
        .expect("the openssl CLI must be installed (Debian package openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_verifies_the_token_from_jwks_coordinates() {
    let dir = TestDir::new("web-openssl");
    let s = signer();
    let session = CookieValue::generate().unwrap().hash();
    let groups = vec!["group:staff".to_string()];
    let token = s
        .assertion(&AssertionRequest {
            session: &session,
            app: "grafana",
            user: "alice",
            groups: &groups,
        })
        .unwrap();

    let jwks: serde_json::Value = serde_json::from_str(s.jwks()).unwrap();
    let key = &jwks["keys"][0];
    let x = crate::web::b64url_decode(key["x"].as_str().unwrap()).unwrap();
    let y = crate::web::b64url_decode(key["y"].as_str().unwrap()).unwrap();
    let spki = [&SPKI_P256_PREFIX[..], &[0x04], &x, &y].concat();

    let (signed, sig_b64) = token.rsplit_once('.').unwrap();
    let sig = crate::web::b64url_decode(sig_b64).unwrap();
    assert_eq!(sig.len(), 64);
    let (ok, text) = openssl_verify(&dir.0, &spki, signed, &sig);
    assert!(ok && text.contains("Verified OK"), "{text}");

    // The claims, read without any JWT library.
    let (header_b64, payload_b64) = signed.split_once('.').unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&crate::web::b64url_decode(header_b64).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], key["kid"]);
    let claims: serde_json::Value =
        serde_json::from_slice(&crate::web::b64url_decode(payload_b64).unwrap()).unwrap();
    assert_eq!(claims["iss"], "https://gatehouse.localhost:8443");
    assert_eq!(claims["aud"], "grafana");
    assert_eq!(claims["sub"], "alice");
    assert!(claims["exp"].as_u64().unwrap() > now());

    // A changed payload (another user) fails verification.
    let forged_payload = crate::web::b64url(
        serde_json::to_string(&serde_json::json!({ "sub": "admin", "aud": "grafana" }))
            .unwrap()
            .as_bytes(),
    );
    let (ok, text) = openssl_verify(
        &dir.0,
        &spki,
        &format!("{header_b64}.{forged_payload}"),
        &sig,
    );
    assert!(!ok && text.contains("Verification failure"), "{text}");
}
