//! A hostile OpenID provider double: the one place a double is right, because a real provider
//! will not sign bad tokens. A small hyper server on 127.0.0.1 (plain http: the issuer is
//! loopback) serving a discovery document (advertising `none` and HS256 too, to prove they
//! are refused anyway), a key set (P-256 keys, rotatable, fetches counted), a token endpoint
//! returning whatever ID token the test crafted (requests recorded, so tests can check PKCE
//! and the client secret), and a userinfo endpoint with test-chosen claims.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::net::serve_http1;

pub const CLIENT_ID: &str = "gatehouse-test";
pub const CLIENT_SECRET: &str = "double-client-secret";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A P-256 signing key and its JWK.
pub struct SigningKey {
    pub kid: String,
    pair: KeyPair,
}

impl SigningKey {
    pub fn new(kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.to_string(),
            pair: KeyPair::generate().unwrap(),
        }
    }

    pub fn jwk(&self) -> Value {
        let raw = self.pair.public_key_raw();
        assert_eq!(raw.len(), 65, "uncompressed P-256 point");
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        })
    }

    /// The public key's bytes (the "secret" of the HS256 confusion attack).
    pub fn public_bytes(&self) -> Vec<u8> {
        self.pair.public_key_raw().to_vec()
    }

    /// `claims` signed ES256 under `kid` (this key's own unless given).
    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.unwrap_or(&self.kid).to_string());
        h.typ = Some("JWT".into());
        jsonwebtoken::encode(
            &h,
            claims,
            &EncodingKey::from_ec_der(&self.pair.serialize_der()),
        )
        .unwrap()
    }
}

/// A token with `alg: none` and no signature.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// `claims` MACed HS256 with `secret` (e.g. the provider's public key), under `kid`.
pub fn hs256(claims: &Value, secret: &[u8], kid: &str) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[derive(Default)]
struct State {
    issuer: String,
    jwks: Mutex<Vec<Value>>,
    jwks_fetches: AtomicU64,
    id_token: Mutex<Option<String>>,
    userinfo: Mutex<Value>,
    token_requests: Mutex<Vec<(String, String)>>,
}

/// The running double.
pub struct ProviderDouble {
    pub addr: SocketAddr,
    pub issuer: String,
    /// The key the key set publishes from the start.
    pub key: SigningKey,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl ProviderDouble {
    pub async fn start() -> ProviderDouble {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://127.0.0.1:{}", addr.port());
        let key = SigningKey::new("key-1");
        let state = Arc::new(State {
            issuer: issuer.clone(),
            jwks: Mutex::new(vec![key.jwk()]),
            userinfo: Mutex::new(json!({})),
            ..State::default()
        });
        let st = state.clone();
        let svc = hyper::service::service_fn(move |req| serve(st.clone(), req));
        let task = tokio::spawn(serve_http1(listener, svc));
        ProviderDouble {
            addr,
            issuer,
            key,
            state,
            task,
        }
    }

    /// The ID token the next token request gets.
    pub fn next_id_token(&self, token: String) {
        *self.state.id_token.lock().unwrap() = Some(token);
    }

    /// What the userinfo endpoint answers (its `sub` included).
    pub fn set_userinfo(&self, claims: Value) {
        *self.state.userinfo.lock().unwrap() = claims;
    }

    /// Publishes `key` in the key set too (a rotation).
    pub fn publish(&self, key: &SigningKey) {
        self.state.jwks.lock().unwrap().push(key.jwk());
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The form fields and `Authorization` header of every token request so far.
    pub fn token_requests(&self) -> Vec<(String, String)> {
        self.state.token_requests.lock().unwrap().clone()
    }

    /// Claims of a token that passes every check for `nonce` (tests then break one).
    pub fn good_claims(&self, nonce: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({
            "iss": self.issuer,
            "sub": "subject-1",
            "aud": CLIENT_ID,
            "exp": now + 300,
            "iat": now,
            "nonce": nonce,
            "preferred_username": "mallory",
            "groups": ["staff"],
        })
    }
}

impl Drop for ProviderDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

async fn serve(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let iss = &st.issuer;
    Ok(match path.as_str() {
        "/.well-known/openid-configuration" => json_response(
            StatusCode::OK,
            &json!({
                "issuer": iss,
                "authorization_endpoint": format!("{iss}/auth"),
                "token_endpoint": format!("{iss}/token"),
                "userinfo_endpoint": format!("{iss}/userinfo"),
                "jwks_uri": format!("{iss}/jwks"),
                "end_session_endpoint": format!("{iss}/logout"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256", "HS256", "none"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
            }),
        ),
        "/jwks" => {
            st.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let keys = st.jwks.lock().unwrap().clone();
            json_response(StatusCode::OK, &json!({ "keys": keys }))
        }
        "/token" => {
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            st.token_requests
                .lock()
                .unwrap()
                .push((String::from_utf8_lossy(&body).into_owned(), auth));
            match st.id_token.lock().unwrap().take() {
                Some(t) => json_response(
                    StatusCode::OK,
                    &json!({
                        "access_token": "double-access-token",
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "id_token": t,
                    }),
                ),
                None => json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"})),
            }
        }
        "/userinfo" => {
            let v = st.userinfo.lock().unwrap().clone();
            json_response(StatusCode::OK, &v)
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
    })
}
