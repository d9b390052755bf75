//! What the provider sends back (the callback's query) and what logout needs later.

use serde::{Deserialize, Serialize};

/// The query of a callback request. Build it with [`SsoCallback::from_query`].
#[derive(Default, Clone, PartialEq, Eq)]
pub struct SsoCallback {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// RFC 9207 `iss`: when present it must be the transaction's provider's issuer.
    pub iss: Option<String>,
}

impl std::fmt::Debug for SsoCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoCallback")
            .field("error", &self.error)
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

/// Longest query value read from a callback.
pub(super) const MAX_CALLBACK_VALUE: usize = 4096;

impl SsoCallback {
    /// Parses a callback's query string. A repeated parameter makes it unusable (both
    /// values are dropped: the transaction check then refuses it).
    pub fn from_query(query: &str) -> SsoCallback {
        let mut cb = SsoCallback::default();
        let mut seen = std::collections::HashSet::new();
        let mut repeated = std::collections::HashSet::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if !seen.insert(k.to_string()) {
                repeated.insert(k.to_string());
                continue;
            }
            if v.len() > MAX_CALLBACK_VALUE {
                continue;
            }
            let slot = match k.as_ref() {
                "state" => &mut cb.state,
                "code" => &mut cb.code,
                "error" => &mut cb.error,
                "error_description" => &mut cb.error_description,
                "iss" => &mut cb.iss,
                _ => continue,
            };
            *slot = Some(v.into_owned());
        }
        for k in repeated {
            match k.as_str() {
                "state" => cb.state = None,
                "code" => cb.code = None,
                "iss" => cb.iss = None,
                _ => {}
            }
        }
        cb
    }
}

/// What logout needs to end the session at the provider too: keep it in the server-side
/// session (never in a cookie). `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoLogoutHint {
    pub provider: String,
    pub(super) id_token: String,
}

impl std::fmt::Debug for SsoLogoutHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoLogoutHint")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}
