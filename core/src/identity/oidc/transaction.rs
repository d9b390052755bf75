//! The SSO login transaction: what the callback needs to finish a login it started.
//!
//! Threat: a forged or replayed callback (login CSRF: an attacker's own code delivered to a
//! victim's browser), a `state` or `nonce` guessed or reused, a PKCE verifier leaked through
//! a URL. Mitigation: `state`, `nonce` and the PKCE verifier are 256-bit random values; the
//! record is stored server-side only (in the shared store, under the SHA-256 of `state`, for
//! [`LOGIN_TTL`]) and taken atomically once; it names the browser that started the login by
//! the hash of a value only that browser holds (the gateway's login-transaction cookie), and
//! the callback must present the same value (constant-time comparison), so a callback
//! replayed in, or sent to, another browser is refused. The provider is taken from the
//! record, never from the callback.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::SsoError;
use crate::store::{OnceKind, Store, ct_eq};

/// How long a login may take between the redirect to the provider and the callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Longest `state` read from a callback (ours are 43 characters).
pub const MAX_STATE_LEN: usize = 128;
/// Longest browser binding accepted from the caller.
pub const MAX_BINDING_LEN: usize = 256;
/// Longest return URL kept (the gateway checks it is same-site before and after).
pub const MAX_RETURN_TO_LEN: usize = 2048;
/// Record format version.
const VERSION: u8 = 1;

/// 32 random bytes, base64url without padding (43 characters).
pub(super) fn random_token() -> Result<String, SsoError> {
    let mut raw = [0u8; 32];
    crate::secret::random_bytes(&mut raw).map_err(|_| SsoError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Hex SHA-256.
pub(super) fn sha256_hex(value: &str) -> String {
    crate::secret::hex_lower(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        value.as_bytes(),
    ))
}

/// A login transaction as stored (JSON). Secrets in it (nonce, PKCE verifier) never leave
/// the server; `state` is stored only as its hash.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginTxn {
    pub v: u8,
    pub provider: String,
    pub state_hash: String,
    pub binding_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: Option<String>,
    /// Unix seconds.
    pub created: u64,
}

impl std::fmt::Debug for LoginTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginTxn")
            .field("provider", &self.provider)
            .field("return_to", &self.return_to)
            .finish_non_exhaustive()
    }
}

/// The fresh secrets of a login and its stored record.
pub(super) struct NewTxn {
    pub state: String,
    pub record: LoginTxn,
}

impl NewTxn {
    pub fn generate(
        provider: &str,
        binding: &str,
        return_to: Option<&str>,
        now: u64,
    ) -> Result<NewTxn, SsoError> {
        let state = random_token()?;
        Ok(NewTxn {
            record: LoginTxn {
                v: VERSION,
                provider: provider.to_string(),
                state_hash: sha256_hex(&state),
                binding_hash: sha256_hex(binding),
                nonce: random_token()?,
                pkce_verifier: random_token()?,
                return_to: return_to.map(str::to_string),
                created: now,
            },
            state,
        })
    }

    pub async fn save(&self, store: &dyn Store) -> Result<(), SsoError> {
        let json = serde_json::to_vec(&self.record).map_err(|_| SsoError::Random)?;
        store
            .put_once(
                OnceKind::OidcLogin,
                &self.record.state_hash,
                &json,
                LOGIN_TTL,
            )
            .await
            .map_err(SsoError::Store)
    }
}

/// Why a callback's transaction was not found or not this browser's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TxnRefusal {
    /// No `state`, a malformed one, or no live record for it (tampered, expired, used).
    State(&'static str),
    /// The record exists (and is now spent) but another browser started it.
    Binding,
}

/// Takes the transaction of `state` (once) and checks it belongs to `binding`'s browser.
pub(super) async fn take(
    store: &dyn Store,
    state: Option<&str>,
    binding: Option<&str>,
) -> Result<Result<LoginTxn, TxnRefusal>, SsoError> {
    let Some(state) = state.filter(|s| !s.is_empty() && s.len() <= MAX_STATE_LEN) else {
        return Ok(Err(TxnRefusal::State("missing or malformed state")));
    };
    let hash = sha256_hex(state);
    let Some(raw) = store
        .take_once(OnceKind::OidcLogin, &hash)
        .await
        .map_err(SsoError::Store)?
    else {
        return Ok(Err(TxnRefusal::State(
            "no login transaction for this state (tampered, expired or already used)",
        )));
    };
    let Ok(record) = serde_json::from_slice::<LoginTxn>(&raw) else {
        return Ok(Err(TxnRefusal::State("unreadable login transaction")));
    };
    if record.v != VERSION || !ct_eq(&record.state_hash, &hash) {
        return Ok(Err(TxnRefusal::State("login transaction does not match")));
    }
    let presented = binding
        .filter(|b| !b.is_empty() && b.len() <= MAX_BINDING_LEN)
        .map(sha256_hex)
        .unwrap_or_default();
    if !ct_eq(&presented, &record.binding_hash) {
        return Ok(Err(TxnRefusal::Binding));
    }
    Ok(Ok(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_transaction_is_taken_once_by_its_own_browser() {
        let store = MemoryStore::new();
        let t = NewTxn::generate("corp", "browser-a", Some("/x"), 1).unwrap();
        assert_eq!(t.state.len(), 43);
        assert_ne!(t.record.nonce, t.record.pkce_verifier);
        assert!(!format!("{:?}", t.record).contains(&t.record.nonce));
        t.save(&store).await.unwrap();
        let got = take(&store, Some(&t.state), Some("browser-a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, t.record);
        assert_eq!(
            take(&store, Some(&t.state), Some("browser-a"))
                .await
                .unwrap(),
            Err(TxnRefusal::State(
                "no login transaction for this state (tampered, expired or already used)"
            )),
            "single use"
        );
        // Another browser: refused, and the transaction is spent.
        let t = NewTxn::generate("corp", "browser-a", None, 1).unwrap();
        t.save(&store).await.unwrap();
        assert_eq!(
            take(&store, Some(&t.state), Some("browser-b"))
                .await
                .unwrap(),
            Err(TxnRefusal::Binding)
        );
        assert!(matches!(
            take(&store, Some(&t.state), Some("browser-a"))
                .await
                .unwrap(),
            Err(TxnRefusal::State(_))
        ));
        // No binding at all, no or tampered state.
        let t = NewTxn::generate("corp", "browser-a", None, 1).unwrap();
        t.save(&store).await.unwrap();
        assert_eq!(
            take(&store, Some(&t.state), None).await.unwrap(),
            Err(TxnRefusal::Binding)
        );
        assert!(matches!(
            take(&store, None, Some("browser-a")).await.unwrap(),
            Err(TxnRefusal::State(_))
        ));
        let mut tampered = t.state.clone();
        tampered.push('x');
        assert!(matches!(
            take(&store, Some(&tampered), Some("browser-a"))
                .await
                .unwrap(),
            Err(TxnRefusal::State(_))
        ));
    }
}
