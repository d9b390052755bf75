//! TLS termination: Mozilla profiles, the certificate resolver and hot reload.
//!
//! Threat: downgrade to weak protocol versions or suites (no forward secrecy, CBC, RSA key
//! exchange); an outage or a mismatched key after a certificate rotation; an expired (or not
//! yet valid) certificate served, which trains users to click through warnings; an expiry
//! nobody saw coming. Mitigation: only the Mozilla intermediate (TLS 1.2 ECDHE+AEAD, TLS 1.3)
//! or modern (TLS 1.3) profile is offered; a new certificate is loaded, checked against its
//! key and its validity period and only then swapped in atomically — a broken, expired or
//! not-yet-valid file is refused (at start: no start; at reload: a logged error and the
//! running certificate stays) unless `gateway.tls_allow_expired` says otherwise, loudly; an
//! expiry within [`CERT_EXPIRY_WARNING`] is a warning at every load, and the expiry time is
//! the `gatehouse_tls_certificate_expiry_seconds` metric.

mod validity;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use gatehouse_core::config::defaults::CERT_EXPIRY_WARNING;
use gatehouse_core::config::{GatewayConfig, TlsProfile};
use prometheus_client::metrics::gauge::Gauge;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self as provider, cipher_suite as cs, kx_group};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::error::TlsError;

pub use validity::Validity;

/// How often the certificate files' metadata is polled for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Mozilla intermediate: TLS 1.3 suites, then TLS 1.2 ECDHE with AEAD only.
const INTERMEDIATE_SUITES: &[SupportedCipherSuite] = &[
    cs::TLS13_AES_128_GCM_SHA256,
    cs::TLS13_AES_256_GCM_SHA384,
    cs::TLS13_CHACHA20_POLY1305_SHA256,
    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];
/// Mozilla modern: TLS 1.3 only.
const MODERN_SUITES: &[SupportedCipherSuite] = &[
    cs::TLS13_AES_128_GCM_SHA256,
    cs::TLS13_AES_256_GCM_SHA384,
    cs::TLS13_CHACHA20_POLY1305_SHA256,
];
const INTERMEDIATE_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
const MODERN_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The crypto provider restricted to a profile's suites and groups.
pub fn profile_provider(profile: TlsProfile) -> CryptoProvider {
    let suites = match profile {
        TlsProfile::Intermediate => INTERMEDIATE_SUITES,
        TlsProfile::Modern => MODERN_SUITES,
    };
    CryptoProvider {
        cipher_suites: suites.to_vec(),
        kx_groups: vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
        ],
        ..provider::default_provider()
    }
}

fn profile_versions(profile: TlsProfile) -> &'static [&'static SupportedProtocolVersion] {
    match profile {
        TlsProfile::Intermediate => INTERMEDIATE_VERSIONS,
        TlsProfile::Modern => MODERN_VERSIONS,
    }
}

/// The configured certificate and key files and how strictly to check them.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Serve a certificate outside its validity period (logged as an error at every load).
    pub allow_expired: bool,
}

/// A certificate pair that passed every check, and what to warn about.
#[derive(Debug)]
pub struct Loaded {
    pub key: CertifiedKey,
    pub validity: Validity,
    pub warning: Option<CertWarning>,
}

/// What a loaded certificate is worth a log line (and a `check-config` line) for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertWarning {
    /// Within [`CERT_EXPIRY_WARNING`] of its end of validity.
    ExpiresSoon(String),
    /// Outside its validity period, served because of `gateway.tls_allow_expired`.
    ServedInvalid(String),
}

impl std::fmt::Display for CertWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertWarning::ExpiresSoon(w) | CertWarning::ServedInvalid(w) => f.write_str(w),
        }
    }
}

fn rfc3339(secs: i64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(validity::system_time(secs))
}

impl CertFiles {
    pub fn from_config(g: &GatewayConfig) -> CertFiles {
        CertFiles {
            cert: g.tls_cert.clone(),
            key: g.tls_key.clone(),
            allow_expired: g.tls_allow_expired,
        }
    }

    /// Reads the PEM chain and key, checks that they belong together and that the leaf is
    /// within its validity period at `now`.
    pub fn load(&self, provider: &CryptoProvider, now: SystemTime) -> Result<Loaded, TlsError> {
        for (key, path) in [
            ("gateway.tls_cert", &self.cert),
            ("gateway.tls_key", &self.key),
        ] {
            if !path.exists() {
                return Err(TlsError::Missing {
                    key,
                    path: path.clone(),
                });
            }
        }
        let certified = load_certified_key(&self.cert, &self.key, provider)?;
        let leaf = certified
            .cert
            .first()
            .map(|c| c.as_ref())
            .unwrap_or_default();
        let validity = validity::of_der(leaf).ok_or_else(|| TlsError::NoValidity {
            path: self.cert.clone(),
        })?;
        let invalid = if validity.not_yet_valid(now) {
            Some(TlsError::NotYetValid {
                path: self.cert.clone(),
                not_before: rfc3339(validity.not_before).to_string(),
            })
        } else if validity.expired(now) {
            Some(TlsError::Expired {
                path: self.cert.clone(),
                not_after: rfc3339(validity.not_after).to_string(),
            })
        } else {
            None
        };
        let warning = match invalid {
            Some(e) if !self.allow_expired => return Err(e),
            Some(e) => Some(CertWarning::ServedInvalid(format!(
                "{e}; SERVED ANYWAY because gateway.tls_allow_expired = true: browsers will warn every user"
            ))),
            None => {
                let left = validity.remaining(now);
                let soon = i64::try_from(CERT_EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
                (left < soon).then(|| {
                    CertWarning::ExpiresSoon(format!(
                        "{}: the certificate expires in {} day(s), at {}; install a renewed one",
                        self.cert.display(),
                        left / 86_400,
                        rfc3339(validity.not_after)
                    ))
                })
            }
        };
        Ok(Loaded {
            key: certified,
            validity,
            warning,
        })
    }
}

/// Reads a PEM chain and key and checks that they belong together.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsError::ReadCert {
            path: cert.to_path_buf(),
            source,
        })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::ReadCert {
            path: cert.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey {
        path: key.to_path_buf(),
        source,
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::BadKey {
            path: key.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    // Unknown consistency is refused too: fail closed.
    certified
        .keys_match()
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    Ok(certified)
}

/// Serves the current certificate; swapped whole on reload.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a complete Arc (the writer only swaps it).
        Some(match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        })
    }
}

impl CertResolver {
    fn swap(&self, new: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }
}

/// A file's modification time and size, `None` when it cannot be read.
type Stamp = Option<(SystemTime, u64)>;

/// Reloads the certificate files into the running server (SIGHUP and file changes).
#[derive(Clone, Debug)]
pub struct Reloader {
    inner: Arc<ReloadInner>,
}

#[derive(Debug)]
struct ReloadInner {
    resolver: Arc<CertResolver>,
    files: CertFiles,
    provider: Arc<CryptoProvider>,
    /// `gatehouse_tls_certificate_expiry_seconds`: the serving certificate's end of validity.
    expiry: Gauge,
}

/// Logs a loaded certificate's warning: an error when an invalid period is served anyway,
/// else a warning (near expiry).
fn report(loaded: &Loaded) {
    match &loaded.warning {
        Some(CertWarning::ServedInvalid(w)) => {
            tracing::error!(warning = %w, "tls certificate outside its validity period");
        }
        Some(CertWarning::ExpiresSoon(w)) => {
            tracing::warn!(warning = %w, "tls certificate expires soon");
        }
        None => {}
    }
}

impl Reloader {
    /// Re-reads the certificate and key. A broken, expired or not-yet-valid pair is refused
    /// (logged) and the running certificate stays.
    pub fn reload(&self) {
        let i = &self.inner;
        match i.files.load(&i.provider, SystemTime::now()) {
            Ok(loaded) => {
                report(&loaded);
                i.expiry.set(loaded.validity.not_after);
                i.resolver.swap(Arc::new(loaded.key));
                tracing::info!(cert = %i.files.cert.display(), "tls certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %gatehouse_core::error_chain(&e), "tls certificate reload refused; the running certificate stays");
            }
        }
    }

    fn stamp(&self) -> (Stamp, Stamp) {
        let s = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        (s(&self.inner.files.cert), s(&self.inner.files.key))
    }

    /// Polls the files' modification time and size; reloads when either changes.
    pub async fn watch(self, stop: CancellationToken) {
        let mut last = self.stamp();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = self.stamp();
            if now != last {
                last = now;
                if now.0.is_some() && now.1.is_some() {
                    self.reload();
                }
            }
        }
    }
}

/// Builds the server config (profile, ALPN, resolver) and its reloader; `expiry` is the
/// metric that follows the serving certificate's end of validity.
pub fn server_config(
    profile: TlsProfile,
    files: CertFiles,
    expiry: Gauge,
) -> Result<(Arc<ServerConfig>, Reloader), TlsError> {
    let provider = Arc::new(profile_provider(profile));
    let initial = files.load(&provider, SystemTime::now())?;
    report(&initial);
    expiry.set(initial.validity.not_after);
    let resolver = Arc::new(CertResolver {
        current: RwLock::new(Arc::new(initial.key)),
    });
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(profile_versions(profile))
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let reloader = Reloader {
        inner: Arc::new(ReloadInner {
            resolver,
            files,
            provider,
            expiry,
        }),
    };
    Ok((Arc::new(config), reloader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite as C;
    use rustls::NamedGroup as G;

    fn suites(p: TlsProfile) -> Vec<C> {
        profile_provider(p)
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect()
    }

    #[test]
    fn intermediate_suites_are_mozilla_intermediate() {
        assert_eq!(
            suites(TlsProfile::Intermediate),
            [
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS13_AES_256_GCM_SHA384,
                C::TLS13_CHACHA20_POLY1305_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ]
        );
        assert_eq!(profile_versions(TlsProfile::Intermediate).len(), 2);
    }

    #[test]
    fn modern_is_tls13_only() {
        let s = suites(TlsProfile::Modern);
        assert_eq!(s.len(), 3);
        assert!(
            profile_provider(TlsProfile::Modern)
                .cipher_suites
                .iter()
                .all(|s| s.tls13().is_some())
        );
        assert_eq!(
            profile_versions(TlsProfile::Modern),
            [&rustls::version::TLS13]
        );
    }

    #[test]
    fn groups_include_post_quantum_hybrid_first() {
        for p in [TlsProfile::Intermediate, TlsProfile::Modern] {
            let g: Vec<G> = profile_provider(p)
                .kx_groups
                .iter()
                .map(|g| g.name())
                .collect();
            assert_eq!(
                g,
                [G::X25519MLKEM768, G::X25519, G::secp256r1, G::secp384r1]
            );
        }
    }
}
