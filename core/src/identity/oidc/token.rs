//! The protocol with one provider: the authorization URL (PKCE S256, `state`, `nonce`), the
//! code exchange (client secret), ID-token validation, the userinfo read.
//!
//! Threat: a forged or replayed ID token: `alg: none`, HS256 keyed with the provider's
//! public key, a key of our choosing under a known `kid`, a token for another client or
//! issuer, an old token, one minted for another login (nonce). Mitigation: the verifier is a
//! public-client one (the client secret is never an HMAC key) allowing only the provider's
//! advertised asymmetric algorithms; signature against the provider's key set; `iss` equal
//! to the configured issuer; `aud` containing our client id and, with several audiences,
//! `azp` equal to it; `exp` (with [`EXP_LEEWAY`]); `iat` not in the future beyond
//! [`IAT_SKEW`] nor older than [`MAX_TOKEN_AGE`]; `nonce` equal to the transaction's
//! (constant time). Each failure names its check ([`SsoCheck`]).

use std::time::{Duration, SystemTime};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IdTokenVerifier, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, SignatureVerificationError, StandardErrorResponse,
    StandardTokenResponse, TokenResponse as _, UserInfoError,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::http::Adapter;
use super::provider::{Discovered, Provider};
use crate::error::{SsoCheck, error_chain as chain};
use crate::store::ct_eq;

/// Clock skew allowed on `exp`.
pub const EXP_LEEWAY: Duration = Duration::from_secs(30);
/// Clock skew allowed on `iat` (a token "issued" later than now + this is refused).
pub const IAT_SKEW: Duration = Duration::from_secs(60);
/// An ID token issued longer ago than this is refused: it was just minted for this login.
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(600);

/// Every claim beyond the standard ones (the groups claim, custom name claims), kept as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Extra {
    #[serde(flatten)]
    claims: Map<String, Value>,
}

impl AdditionalClaims for Extra {}

pub(super) type IdToken = openidconnect::IdToken<
    Extra,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<
    IdTokenFields<
        Extra,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;
type Client = openidconnect::Client<
    Extra,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

type Refusal = (SsoCheck, String);

fn client(p: &Provider, d: &Discovered, redirect: &RedirectUrl) -> Client {
    Client::from_provider_metadata(
        d.metadata.clone(),
        ClientId::new(p.cfg.client_id.clone()),
        Some(ClientSecret::new(
            p.cfg.client_secret.expose_secret().to_string(),
        )),
    )
    .set_redirect_uri(redirect.clone())
    .set_auth_type(auth_type(d))
}

/// `client_secret_basic` unless the provider lists only `client_secret_post`.
fn auth_type(d: &Discovered) -> openidconnect::AuthType {
    use openidconnect::core::CoreClientAuthMethod as M;
    match d.metadata.token_endpoint_auth_methods_supported() {
        Some(m) if !m.contains(&M::ClientSecretBasic) && m.contains(&M::ClientSecretPost) => {
            openidconnect::AuthType::RequestBody
        }
        _ => openidconnect::AuthType::BasicAuth,
    }
}

/// The authorization URL for a login with these secrets.
pub(super) fn authorize_url(
    p: &Provider,
    d: &Discovered,
    redirect: &RedirectUrl,
    state: &str,
    nonce: &str,
    pkce_verifier: &str,
) -> url::Url {
    let challenge =
        PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(pkce_verifier.into()));
    let client = client(p, d, redirect);
    let (state, nonce) = (state.to_string(), nonce.to_string());
    let mut req = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        )
        .set_pkce_challenge(challenge);
    // `openid` is added by the client itself.
    for s in p.cfg.scopes.iter().filter(|s| s.as_str() != "openid") {
        req = req.add_scope(Scope::new(s.clone()));
    }
    req.url().0
}

/// The tokens of a login: the validated ID token's claims as JSON, the raw ID token (for
/// `id_token_hint` at logout) and the access token (for userinfo).
pub(super) struct Tokens {
    pub claims: Map<String, Value>,
    pub id_token: String,
    access_token: openidconnect::AccessToken,
    pub subject: String,
}

/// Exchanges `code` at the token endpoint and validates the ID token.
pub(super) async fn exchange(
    p: &Provider,
    mut d: std::sync::Arc<Discovered>,
    redirect: &RedirectUrl,
    code: &str,
    pkce_verifier: &str,
    nonce: &str,
) -> Result<Tokens, Refusal> {
    let client = client(p, &d, redirect);
    let adapter = Adapter(p.http());
    let response = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|e| (SsoCheck::TokenExchange, e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
        .request_async(&adapter)
        .await
        .map_err(token_error)?;
    let id_token = response.id_token().ok_or((
        SsoCheck::IdTokenMissing,
        "no id_token in the token response".into(),
    ))?;
    let claims = match verify(p, &d, id_token, nonce, SystemTime::now()) {
        Err((SsoCheck::Kid, why)) => match p.refetch_jwks(&d).await {
            Ok(Some(fresh)) => {
                d = fresh;
                verify(p, &d, id_token, nonce, SystemTime::now())?
            }
            Ok(None) => {
                return Err((
                    SsoCheck::Kid,
                    format!("{why}; key set refetched less than a minute ago, not again"),
                ));
            }
            Err(e) => {
                return Err((
                    SsoCheck::Kid,
                    format!("{why}; refetch failed: {}", chain(&e)),
                ));
            }
        },
        other => other?,
    };
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(Tokens {
        claims,
        id_token: id_token.to_string(),
        access_token: response.access_token().clone(),
        subject,
    })
}

fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, StandardErrorResponse<CoreErrorResponseType>>,
) -> Refusal {
    match e {
        RequestTokenError::ServerResponse(r) => (
            SsoCheck::TokenExchange,
            format!("token endpoint refused the code: {}", r.error().as_ref()),
        ),
        RequestTokenError::Request(e) => (
            SsoCheck::Unreachable,
            format!("token endpoint: {}", chain(&e)),
        ),
        // The path only: serde's message may quote a token.
        RequestTokenError::Parse(e, _) => (
            SsoCheck::Malformed,
            format!("token response or id token unreadable at `{}`", e.path()),
        ),
        RequestTokenError::Other(s) => (SsoCheck::TokenExchange, s),
    }
}

/// Validates an ID token against the provider's key set and the login's nonce; its claims as
/// a JSON object.
pub(super) fn verify(
    p: &Provider,
    d: &Discovered,
    token: &IdToken,
    nonce: &str,
    now: SystemTime,
) -> Result<Map<String, Value>, Refusal> {
    let issuer = IssuerUrl::new(p.cfg.issuer.clone())
        .map_err(|e| (SsoCheck::Iss, format!("configured issuer unusable: {e}")))?;
    let exp_now = chrono_time(now.checked_sub(EXP_LEEWAY).unwrap_or(now));
    let verifier = IdTokenVerifier::new_public_client(
        ClientId::new(p.cfg.client_id.clone()),
        issuer,
        d.jwks().clone(),
    )
    .set_allowed_algs(d.algs.iter().cloned())
    // Other audiences are allowed only with `azp` = us, checked below.
    .set_other_audience_verifier_fn(|_| true)
    .set_time_fn(move || exp_now);
    let expected = nonce.to_string();
    let nonce_check = move |n: Option<&Nonce>| match n {
        None => Err("the token has no nonce".to_string()),
        Some(n) if ct_eq(n.secret(), &expected) => Ok(()),
        Some(_) => Err("the token's nonce is not this login's".to_string()),
    };
    let claims = token.claims(&verifier, nonce_check).map_err(claims_error)?;
    let audiences = claims.audiences();
    let azp = claims.authorized_party().map(|a| a.as_str());
    if audiences.len() > 1 && azp != Some(p.cfg.client_id.as_str()) {
        return Err((
            SsoCheck::Azp,
            format!(
                "{} audiences and azp {:?} is not our client id",
                audiences.len(),
                azp
            ),
        ));
    }
    if azp.is_some_and(|a| a != p.cfg.client_id) {
        return Err((SsoCheck::Azp, "azp names another client".into()));
    }
    let iat = claims.issue_time();
    let now_c = chrono_time(now);
    if iat > chrono_time(now + IAT_SKEW) {
        return Err((
            SsoCheck::Iat,
            format!("iat {iat} is in the future (now {now_c})"),
        ));
    }
    if iat < chrono_time(now.checked_sub(MAX_TOKEN_AGE).unwrap_or(now)) {
        return Err((
            SsoCheck::Iat,
            format!("iat {iat} is older than {} s", MAX_TOKEN_AGE.as_secs()),
        ));
    }
    match serde_json::to_value(claims) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err((SsoCheck::Malformed, "claims do not serialize".into())),
    }
}

fn chrono_time(t: SystemTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::from(t)
}

fn claims_error(e: ClaimsVerificationError) -> Refusal {
    use ClaimsVerificationError as C;
    use SignatureVerificationError as S;
    let why = e.to_string();
    let check = match &e {
        C::InvalidIssuer(_) => SsoCheck::Iss,
        C::InvalidAudience(_) => SsoCheck::Aud,
        C::Expired(_) => SsoCheck::Exp,
        C::InvalidNonce(_) => SsoCheck::Nonce,
        C::Unsupported(_) => SsoCheck::Unsupported,
        C::SignatureVerification(s) => match s {
            S::NoSignature | S::DisallowedAlg(_) | S::UnsupportedAlg(_) => SsoCheck::Alg,
            S::NoMatchingKey => SsoCheck::Kid,
            S::AmbiguousKeyId(_) => SsoCheck::AmbiguousKey,
            _ => SsoCheck::Signature,
        },
        _ => SsoCheck::Malformed,
    };
    let why = match &e {
        C::SignatureVerification(s) => format!("{why}: {s}"),
        _ => why,
    };
    (check, why)
}

/// The userinfo endpoint's claims for this login (its `sub` must be the ID token's).
pub(super) async fn userinfo(
    p: &Provider,
    d: &Discovered,
    redirect: &RedirectUrl,
    tokens: &Tokens,
) -> Result<Map<String, Value>, Refusal> {
    let client = client(p, d, redirect);
    let adapter = Adapter(p.http());
    let request = client
        .user_info(
            tokens.access_token.clone(),
            Some(openidconnect::SubjectIdentifier::new(
                tokens.subject.clone(),
            )),
        )
        .map_err(|e| (SsoCheck::Userinfo, format!("no userinfo endpoint: {e}")))?;
    let claims: openidconnect::UserInfoClaims<Extra, CoreGenderClaim> =
        request.request_async(&adapter).await.map_err(|e| match e {
            UserInfoError::Request(e) => {
                (SsoCheck::Unreachable, format!("userinfo: {}", chain(&e)))
            }
            other => (SsoCheck::Userinfo, chain(&other)),
        })?;
    match serde_json::to_value(&claims) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err((
            SsoCheck::Userinfo,
            "userinfo claims do not serialize".into(),
        )),
    }
}
