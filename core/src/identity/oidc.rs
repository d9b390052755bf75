//! OpenID Connect single sign-on: several providers at once, authorization code + PKCE,
//! validated ID tokens, names and groups into policy, Gatehouse's TOTP after SSO.
//!
//! The flow, as the gateway drives it:
//! 1. [`Sso::start_login`] (the user clicked a provider's button): a login transaction bound
//!    to the browser and the provider's authorization URL to redirect to.
//! 2. [`Sso::finish_login`] (the callback `{public_url}/.gatehouse/oidc/callback`, one URI for
//!    every provider): the transaction taken once, the code exchanged, the ID token and
//!    claims checked, the name checked against local and other SSO users, the user recorded
//!    ([`SsoUsers`]); the result is an identity when the provider's `amr` proves a second
//!    factor and `trust_mfa` is set, else a proof that asks for Gatehouse's TOTP (or its
//!    enrolment, at a first login).
//! 3. [`Sso::verify_totp`] or [`Sso::start_enrolment`] + [`Sso::complete_enrolment`]: the
//!    [`VerifiedIdentity`], minted by [`Authenticator`] like every other login.
//!
//! Threats and mitigations are stated where they are handled: `transaction` (login CSRF,
//! replay), `token` (forged tokens), `claims` (names and groups), `registry` (account
//! takeover by name), `provider` (a provider down or slow), `http` (the outbound client).
//! Every refusal is audited (`sso_failure` with the check that failed) before it is
//! returned; a refusal never leaves a session or a half-recorded user behind.

mod callback;
mod claims;
mod http;
mod provider;
pub mod registry;
mod second_factor;
mod token;
mod transaction;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use openidconnect::RedirectUrl;

pub use callback::{SsoCallback, SsoLogoutHint};
pub use claims::{MAX_GROUPS, MAX_NAME_LEN, proves_mfa, valid_sso_name};
pub use http::{MAX_RESPONSE_BYTES, REQUEST_TIMEOUT};
pub use provider::ProviderStatus;
pub use registry::{NameOwner, SSO_USERS_FILE, SsoUserRecord, SsoUsers};
pub use second_factor::{SsoEnrolmentPending, SsoTotpPending};
pub use transaction::LOGIN_TTL;

use self::provider::Provider;
use super::VerifiedIdentity;
use super::authenticator::{Authenticator, unix_secs};
use crate::audit::AuditEvent;
use crate::config::Config;
use crate::error::{SsoCheck, SsoError, error_chain as chain};
use crate::outbound::HttpClient;

/// The callback path on the public host, the same for every provider.
pub const CALLBACK_PATH: &str = "/.gatehouse/oidc/callback";

/// A provider as the login page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    pub name: String,
    pub status: ProviderStatus,
}

/// Where to send the browser to sign in at the provider. The URL carries `state`, the
/// nonce and the PKCE challenge (never the verifier); do not log it.
pub struct SsoRedirect {
    pub url: String,
}

impl std::fmt::Debug for SsoRedirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SsoRedirect(..)")
    }
}

/// What comes after a successful callback.
#[derive(Debug)]
pub enum SsoStep {
    /// Signed in: the provider's `amr` proves a second factor and the provider has
    /// `trust_mfa = true` (audited as such).
    Verified(VerifiedIdentity),
    /// Ask for the user's Gatehouse TOTP code ([`Sso::verify_totp`]).
    Totp(SsoTotpPending),
    /// First SSO login: show a new TOTP secret and confirm it with a first code
    /// ([`Sso::start_enrolment`], [`Sso::complete_enrolment`]).
    Enrol(SsoEnrolmentPending),
}

/// A callback that passed every check.
#[derive(Debug)]
pub struct SsoLogin {
    pub step: SsoStep,
    /// The same-site URL the user first asked for, as given to [`Sso::start_login`].
    pub return_to: Option<String>,
    pub logout: SsoLogoutHint,
}

/// SSO for every configured provider. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sso {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    providers: Vec<Provider>,
    auth: Authenticator,
    redirect: RedirectUrl,
    registry: PathBuf,
}

/// A refusal on its way to the audit log.
struct Refusal {
    provider: Option<String>,
    user: Option<String>,
    check: SsoCheck,
    reason: String,
}

enum Failed {
    Refused(Refusal),
    Hard(SsoError),
}

impl From<SsoError> for Failed {
    fn from(e: SsoError) -> Self {
        Failed::Hard(e)
    }
}

fn refused(provider: &str, (check, reason): (SsoCheck, String)) -> Failed {
    Failed::Refused(Refusal {
        provider: Some(provider.to_string()),
        user: None,
        check,
        reason,
    })
}

impl Sso {
    /// SSO for `config`'s providers, each with its own client of the one outbound HTTPS
    /// stack ([`HttpClient::for_provider`]: its `ca_file` or the web roots). Fetches
    /// nothing: a provider is discovered at its first use (or by [`Sso::refresh`]).
    pub fn new(config: &Config, auth: Authenticator) -> Result<Sso, SsoError> {
        let mut providers = Vec::with_capacity(config.identity.oidc.len());
        for p in &config.identity.oidc {
            let http = HttpClient::for_provider(p).map_err(|source| SsoError::Setup {
                provider: p.name.clone(),
                source,
            })?;
            providers.push(Provider::new(p.clone(), http));
        }
        let callback = config
            .gateway
            .public_url
            .join(CALLBACK_PATH)
            .map_err(|_| SsoError::Callback)?;
        Ok(Sso {
            inner: Arc::new(Inner {
                providers,
                auth,
                redirect: RedirectUrl::from_url(callback),
                registry: SsoUsers::path_in(&config.data_dir),
            }),
        })
    }

    /// True when no provider is configured.
    pub fn is_empty(&self) -> bool {
        self.inner.providers.is_empty()
    }

    /// The redirect URI to register at every provider.
    pub fn redirect_uri(&self) -> &str {
        self.inner.redirect.as_str()
    }

    /// The SSO user registry's path (`gatehouse user list` reads it).
    pub fn registry_path(&self) -> &std::path::Path {
        &self.inner.registry
    }

    /// Every provider, in config order, with what the login page should say about it.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.inner
            .providers
            .iter()
            .map(|p| ProviderInfo {
                name: p.cfg.name.clone(),
                status: p.status(),
            })
            .collect()
    }

    /// Fetches the discovery document of every provider that has none fresh (and is not
    /// backing off after a failure). Failures are logged, never returned: run it in the
    /// background at start and now and then, so the login page knows who is up.
    /// Providers are fetched side by side: a slow one does not hold up the others.
    pub async fn refresh(&self) {
        let mut fetches = tokio::task::JoinSet::new();
        for i in 0..self.inner.providers.len() {
            let sso = self.clone();
            fetches.spawn(async move {
                if let Some(p) = sso.inner.providers.get(i) {
                    let _ = p.discovered().await;
                }
            });
        }
        while fetches.join_next().await.is_some() {}
    }

    async fn audit(&self, ev: AuditEvent) -> Result<(), SsoError> {
        self.inner
            .auth
            .inner
            .audit
            .record(ev)
            .await
            .map(|_| ())
            .map_err(SsoError::Audit)
    }

    fn provider(&self, name: &str) -> Option<&Provider> {
        self.inner.providers.iter().find(|p| p.cfg.name == name)
    }

    /// Starts a login at `provider`: stores the transaction, bound to `binding` (a value
    /// only this browser holds, e.g. the hash of its login-transaction cookie; the callback
    /// must present it again), and returns the URL to redirect the browser to.
    /// `return_to` must already be checked as same-site; it comes back in [`SsoLogin`].
    pub async fn start_login(
        &self,
        provider: &str,
        binding: &str,
        return_to: Option<&str>,
    ) -> Result<SsoRedirect, SsoError> {
        let p = self
            .provider(provider)
            .ok_or_else(|| SsoError::UnknownProvider(provider.chars().take(64).collect()))?;
        if binding.is_empty() || binding.len() > transaction::MAX_BINDING_LEN {
            return Err(SsoError::Binding);
        }
        let return_to = return_to.filter(|r| r.len() <= transaction::MAX_RETURN_TO_LEN);
        let d = p
            .discovered()
            .await
            .map_err(|source| SsoError::Unavailable {
                provider: provider.to_string(),
                source,
            })?;
        let now = unix_secs(SystemTime::now());
        let txn = transaction::NewTxn::generate(provider, binding, return_to, now)?;
        txn.save(self.inner.auth.store().as_ref()).await?;
        let url = token::authorize_url(
            p,
            &d,
            &self.inner.redirect,
            &txn.state,
            &txn.record.nonce,
            &txn.record.pkce_verifier,
        );
        tracing::info!(provider, "sso login started");
        Ok(SsoRedirect { url: url.into() })
    }

    /// Finishes a login from the provider's callback. `binding` is the value the browser
    /// presented to [`Sso::start_login`] (from the same cookie). Every refusal is audited as
    /// `sso_failure` with its check before it is returned.
    pub async fn finish_login(
        &self,
        callback: &SsoCallback,
        binding: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<SsoLogin, SsoError> {
        match self.finish(callback, binding, client).await {
            Ok(login) => Ok(login),
            Err(Failed::Hard(e)) => Err(e),
            Err(Failed::Refused(r)) => {
                tracing::info!(
                    provider = r.provider.as_deref().unwrap_or("-"),
                    user = r.user.as_deref().unwrap_or("-"),
                    check = r.check.as_str(),
                    reason = %r.reason,
                    "sso login refused"
                );
                self.audit(AuditEvent::SsoFailure {
                    provider: r.provider.clone(),
                    user: r.user,
                    check: r.check.as_str().into(),
                    reason: r.reason.clone(),
                    client_addr: client,
                })
                .await?;
                Err(SsoError::Refused {
                    provider: r.provider,
                    check: r.check,
                    reason: r.reason,
                })
            }
        }
    }

    async fn finish(
        &self,
        cb: &SsoCallback,
        binding: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<SsoLogin, Failed> {
        let store = self.inner.auth.store().clone();
        let txn = match transaction::take(store.as_ref(), cb.state.as_deref(), binding).await? {
            Ok(t) => t,
            Err(why) => {
                let (check, reason) = match why {
                    transaction::TxnRefusal::State(r) => (SsoCheck::State, r.to_string()),
                    transaction::TxnRefusal::Binding => (
                        SsoCheck::Binding,
                        "the callback came from another browser than the login's".to_string(),
                    ),
                };
                return Err(Failed::Refused(Refusal {
                    provider: None,
                    user: None,
                    check,
                    reason,
                }));
            }
        };
        let name = txn.provider.as_str();
        let Some(p) = self.provider(name) else {
            return Err(refused(
                name,
                (SsoCheck::State, "provider no longer configured".into()),
            ));
        };
        if let Some(iss) = &cb.iss
            && iss != &p.cfg.issuer
        {
            return Err(refused(
                name,
                (
                    SsoCheck::Iss,
                    "the callback's iss is not the provider's issuer".into(),
                ),
            ));
        }
        if let Some(error) = &cb.error {
            return Err(refused(
                name,
                (
                    SsoCheck::ProviderError,
                    provider_error(error, cb.error_description.as_deref()),
                ),
            ));
        }
        let Some(code) = cb.code.as_deref().filter(|c| !c.is_empty()) else {
            return Err(refused(
                name,
                (SsoCheck::Code, "the callback has no code".into()),
            ));
        };
        let d = p
            .discovered()
            .await
            .map_err(|e| refused(name, (SsoCheck::Unreachable, chain(&e))))?;
        let redirect = &self.inner.redirect;
        let tokens = token::exchange(p, d.clone(), redirect, code, &txn.pkce_verifier, &txn.nonce)
            .await
            .map_err(|r| refused(name, r))?;
        let userinfo = if claims::needs_userinfo(&p.cfg, &tokens.claims) {
            Some(
                token::userinfo(p, &d, redirect, &tokens)
                    .await
                    .map_err(|r| refused(name, r))?,
            )
        } else {
            None
        };
        let found = claims::extract(&p.cfg, &tokens.claims, userinfo.as_ref())
            .map_err(|r| refused(name, r))?;
        let logout = SsoLogoutHint {
            provider: name.to_string(),
            id_token: tokens.id_token,
        };
        let step = self
            .admit(p, &tokens.subject, found, logout.clone(), client)
            .await?;
        Ok(SsoLogin {
            step,
            return_to: txn.return_to,
            logout,
        })
    }

    /// The URL that ends the session at the provider too (its `end_session_endpoint`, with
    /// `id_token_hint`, `client_id` and `post_logout_redirect_uri`), when it has one and its
    /// discovery document is at hand.
    pub fn end_session_url(
        &self,
        hint: &SsoLogoutHint,
        post_logout_redirect_uri: &str,
    ) -> Option<String> {
        let p = self.provider(&hint.provider)?;
        let d = p.cached()?;
        let endpoint = d
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut url = endpoint.url().clone();
        url.query_pairs_mut()
            .append_pair("id_token_hint", &hint.id_token)
            .append_pair("client_id", &p.cfg.client_id)
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        Some(url.into())
    }
}

/// The provider's error code and description, bounded and printable, for the audit record.
fn provider_error(error: &str, description: Option<&str>) -> String {
    let clean =
        |s: &str, n: usize| -> String { s.chars().filter(|c| !c.is_control()).take(n).collect() };
    match description {
        Some(d) => format!(
            "the provider answered `{}`: {}",
            clean(error, 64),
            clean(d, 200)
        ),
        None => format!("the provider answered `{}`", clean(error, 64)),
    }
}

#[cfg(test)]
mod tests;
