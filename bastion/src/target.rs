//! The bastion's own SSH connection to a target.
//!
//! Threat: a man in the middle between bastion and target (stolen session, captured
//! credential), or a target reached without a policy decision. Mitigation: the target's host
//! key is pinned in the config and compared exactly (no trust on first use, no known_hosts);
//! a mismatch refuses and is reported with the presented fingerprint. Connecting takes a
//! [`Permit`]. The target credential is loaded once at start and never leaves the process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::config::TargetConfig;
use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

use crate::backend::Permit;
use crate::error::TargetError;

/// Connecting and authenticating to a target must finish within this deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A target with its pinned key and credential, prepared at start.
pub struct TargetSpec {
    pub config: TargetConfig,
    pinned: PublicKey,
    credential: Arc<PrivateKey>,
}

impl TargetSpec {
    /// Parses the pinned key and loads the credential; errors stop the start-up.
    pub fn prepare(config: &TargetConfig) -> Result<TargetSpec, TargetError> {
        let pinned =
            PublicKey::from_openssh(config.host_key.trim()).map_err(TargetError::PinnedKey)?;
        let credential =
            russh::keys::load_secret_key(&config.credential, None).map_err(|source| {
                TargetError::Credential {
                    path: config.credential.clone(),
                    source,
                }
            })?;
        Ok(TargetSpec {
            config: config.clone(),
            pinned,
            credential: Arc::new(credential),
        })
    }
}

/// Checks the presented host key against the pin; remembers what was presented.
pub struct PinnedHostKey {
    pinned: PublicKey,
    presented: Arc<Mutex<Option<String>>>,
}

impl client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let ok = key.key_data() == self.pinned.key_data();
        if !ok && let Ok(mut slot) = self.presented.lock() {
            *slot = Some(format!(
                "{} {}",
                key.algorithm(),
                key.fingerprint(HashAlg::Sha256)
            ));
        }
        Ok(ok)
    }
}

/// An authenticated connection to a target.
pub struct TargetConn {
    handle: client::Handle<PinnedHostKey>,
}

impl TargetConn {
    /// Connects as the permit's login, verifying the pinned host key.
    pub async fn connect(
        permit: &Permit,
        spec: &TargetSpec,
        config: Arc<client::Config>,
    ) -> Result<TargetConn, TargetError> {
        let presented = Arc::new(Mutex::new(None));
        let handler = PinnedHostKey {
            pinned: spec.pinned.clone(),
            presented: presented.clone(),
        };
        let connect = async {
            let mut handle =
                match client::connect(config, spec.config.address.as_str(), handler).await {
                    Ok(h) => h,
                    Err(e) => {
                        if let Some(p) = presented.lock().ok().and_then(|s| s.clone()) {
                            return Err(TargetError::HostKeyMismatch { presented: p });
                        }
                        return Err(TargetError::Connect(e));
                    }
                };
            let hash = if spec.credential.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(TargetError::Connect)?
                    .flatten()
                    .or(Some(HashAlg::Sha512))
            } else {
                None
            };
            let key = PrivateKeyWithHashAlg::new(spec.credential.clone(), hash);
            let result = handle
                .authenticate_publickey(permit.login(), key)
                .await
                .map_err(TargetError::Connect)?;
            if !result.success() {
                return Err(TargetError::CredentialRefused);
            }
            Ok(TargetConn { handle })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| TargetError::ConnectTimeout)?
    }

    /// Opens a session channel.
    pub async fn open_session(
        &self,
        _permit: &Permit,
    ) -> Result<russh::Channel<client::Msg>, TargetError> {
        self.handle
            .channel_open_session()
            .await
            .map_err(TargetError::Channel)
    }

    /// Opens a direct-tcpip channel from the target to `host:port`.
    pub async fn open_direct_tcpip(
        &self,
        _permit: &Permit,
        host: &str,
        port: u32,
        orig: (&str, u32),
    ) -> Result<russh::Channel<client::Msg>, TargetError> {
        self.handle
            .channel_open_direct_tcpip(host, port, orig.0, orig.1)
            .await
            .map_err(TargetError::Channel)
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "session ended", "en")
            .await;
    }
}
