//! One SSO provider's state: its validated config, its HTTP client, and its discovery
//! document and key set, fetched lazily and cached.
//!
//! Threat: a provider that is down or slow holding up start-up or local logins; a flood of
//! logins hammering a dead provider; a token whose unknown `kid` makes every login refetch
//! the key set (amplification). Mitigation: nothing is fetched until needed (or a background
//! refresh asks); a failure is remembered and retried only after a growing back-off, during
//! which the provider reports itself unavailable at once; a stale document keeps serving
//! while a refresh fails; an unknown `kid` refetches the key set at most once per
//! [`KID_REFETCH_INTERVAL`]. The std mutex guarding the cache is never held across an
//! `.await`: fetches run unlocked and publish their result (two concurrent fetches of a cold
//! provider are harmless).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{IssuerUrl, JwsSigningAlgorithm, ProviderMetadataWithLogout};

use super::http::Adapter;
use crate::config::OidcConfig;
use crate::error::ProviderFetchError;
use crate::outbound::HttpClient;

/// A discovery document is refetched after this (the key set with it).
pub const METADATA_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` refetches the key set at most this often per provider.
pub const KID_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// First retry delay after a failed fetch; it doubles per failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A provider's discovery document with its key set, and the ID-token algorithms we accept
/// from it: the ones it advertises, minus `none` and the symmetric (HS*) ones.
#[derive(Debug)]
pub(super) struct Discovered {
    pub metadata: ProviderMetadataWithLogout,
    pub algs: Vec<CoreJwsSigningAlgorithm>,
    fetched: Instant,
}

impl Discovered {
    pub fn jwks(&self) -> &CoreJsonWebKeySet {
        self.metadata.jwks()
    }
}

/// What the login page says about a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderStatus {
    /// Not tried yet: the first login click fetches its discovery document.
    Unknown,
    /// Its discovery document and key set are at hand.
    Available,
    /// The last fetch failed and nothing usable is cached.
    Unavailable,
}

#[derive(Debug, Default)]
struct Cache {
    discovered: Option<Arc<Discovered>>,
    /// When the last fetch failed, and how many failed in a row.
    failed_at: Option<Instant>,
    failures: u32,
    last_kid_refetch: Option<Instant>,
}

pub(super) struct Provider {
    pub cfg: OidcConfig,
    http: HttpClient,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.cfg.name)
            .field("issuer", &self.cfg.issuer)
            .finish_non_exhaustive()
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(8);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

impl Provider {
    pub fn new(cfg: OidcConfig, http: HttpClient) -> Provider {
        Provider {
            cfg,
            http,
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn status(&self) -> ProviderStatus {
        let c = self.cache();
        match (&c.discovered, c.failed_at) {
            (Some(_), _) => ProviderStatus::Available,
            (None, Some(_)) => ProviderStatus::Unavailable,
            (None, None) => ProviderStatus::Unknown,
        }
    }

    /// The cached discovery document when there is one (stale or not): what logout needs.
    pub fn cached(&self) -> Option<Arc<Discovered>> {
        self.cache().discovered.clone()
    }

    /// The discovery document and key set: cached while fresh, fetched otherwise. While a
    /// refresh fails, a stale copy keeps serving; with none, the provider is unavailable.
    pub async fn discovered(&self) -> Result<Arc<Discovered>, ProviderFetchError> {
        let stale = {
            let c = self.cache();
            if let Some(d) = c
                .discovered
                .as_ref()
                .filter(|d| d.fetched.elapsed() < METADATA_TTL)
            {
                return Ok(d.clone());
            }
            if let Some(at) = c.failed_at {
                let wait = backoff(c.failures);
                let since = at.elapsed();
                if since < wait {
                    return c.discovered.clone().ok_or(ProviderFetchError::BackingOff {
                        secs: since.as_secs(),
                        retry_secs: (wait - since).as_secs().max(1),
                    });
                }
            }
            c.discovered.clone()
        };
        match self.fetch().await {
            Ok(d) => {
                let d = Arc::new(d);
                let mut c = self.cache();
                c.discovered = Some(d.clone());
                c.failed_at = None;
                c.failures = 0;
                tracing::info!(provider = %self.cfg.name, "sso provider discovered");
                Ok(d)
            }
            Err(e) => {
                {
                    let mut c = self.cache();
                    c.failed_at = Some(Instant::now());
                    c.failures = c.failures.saturating_add(1);
                }
                tracing::warn!(
                    provider = %self.cfg.name,
                    error = %crate::error::error_chain(&e),
                    serving_stale = stale.is_some(),
                    "sso provider discovery failed"
                );
                stale.ok_or(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Discovered, ProviderFetchError> {
        let issuer = IssuerUrl::new(self.cfg.issuer.clone())
            .map_err(|e| ProviderFetchError::Discovery(Box::new(e)))?;
        let adapter = Adapter(&self.http);
        // Fetches the document, checks its `issuer` equals ours, then fetches the key set.
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &adapter)
            .await
            .map_err(|e| ProviderFetchError::Discovery(Box::new(e)))?;
        let algs: Vec<CoreJwsSigningAlgorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|a| asymmetric(a))
            .cloned()
            .collect();
        if algs.is_empty() {
            return Err(ProviderFetchError::NoAlgorithm);
        }
        Ok(Discovered {
            metadata,
            algs,
            fetched: Instant::now(),
        })
    }

    /// After a token named a `kid` the key set lacks: refetches the key set, unless that was
    /// done less than [`KID_REFETCH_INTERVAL`] ago. `None` when rate-limited.
    pub async fn refetch_jwks(
        &self,
        current: &Arc<Discovered>,
    ) -> Result<Option<Arc<Discovered>>, ProviderFetchError> {
        {
            let mut c = self.cache();
            if c.last_kid_refetch
                .is_some_and(|t| t.elapsed() < KID_REFETCH_INTERVAL)
            {
                return Ok(None);
            }
            c.last_kid_refetch = Some(Instant::now());
        }
        let adapter = Adapter(&self.http);
        let jwks = CoreJsonWebKeySet::fetch_async(current.metadata.jwks_uri(), &adapter)
            .await
            .map_err(|e| ProviderFetchError::Jwks(Box::new(e)))?;
        tracing::info!(provider = %self.cfg.name, keys = jwks.keys().len(), "sso key set refetched for an unknown kid");
        let d = Arc::new(Discovered {
            metadata: current.metadata.clone().set_jwks(jwks),
            algs: current.algs.clone(),
            fetched: current.fetched,
        });
        self.cache().discovered = Some(d.clone());
        Ok(Some(d))
    }
}

/// An ID-token algorithm we accept at all: signed with a private key (RS*, PS*, ES*, EdDSA).
fn asymmetric(alg: &CoreJwsSigningAlgorithm) -> bool {
    !alg.uses_shared_secret() && *alg != CoreJwsSigningAlgorithm::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(3), FIRST_BACKOFF * 4);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        use CoreJwsSigningAlgorithm as A;
        for (alg, ok) in [
            (A::RsaSsaPkcs1V15Sha256, true),
            (A::RsaSsaPssSha256, true),
            (A::EcdsaP256Sha256, true),
            (A::EdDsa, true),
            (A::HmacSha256, false),
            (A::HmacSha512, false),
            (A::None, false),
        ] {
            assert_eq!(asymmetric(&alg), ok, "{alg:?}");
        }
    }
}
