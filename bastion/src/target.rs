//! The bastion's own SSH connection to a target.
//!
//! Threat: a man in the middle between bastion and target (stolen session, captured
//! credential), or a target reached without a policy decision. Mitigation: the target's host
//! key is pinned in the config and compared exactly (no trust on first use, no known_hosts);
//! a mismatch refuses and is reported with the presented fingerprint. Connecting, starting a
//! shell, an exec or a subsystem and opening a forward each take core's
//! [`Permit`] — minted only by core's policy code — and check
//! that it names this target, this login and an action that covers the request. The target
//! credential is loaded once at start and never leaves the process.
//!
//! Without a permit nothing opens; a policy object in its place does not compile:
//!
//! ```compile_fail
//! # async fn f(conn: &gatehouse_bastion::target::TargetConn) {
//! let _ = conn.open_direct_tcpip(&"ssh:db-prod-1/root", "10.0.0.1", 5432, ("127.0.0.1", 1)).await;
//! # }
//! ```
//!
//! ```compile_fail
//! # async fn f(conn: &gatehouse_bastion::target::TargetConn) {
//! use gatehouse_bastion::target::Start;
//! let _ = conn.start_session(Start::Subsystem("sftp"), None, &[]).await;
//! # }
//! ```
//!
//! ```compile_fail
//! # async fn f(spec: &gatehouse_bastion::target::TargetSpec, config: std::sync::Arc<russh::client::Config>) {
//! let _ = gatehouse_bastion::target::TargetConn::connect(spec, config).await;
//! # }
//! ```
//!
//! With one, it does (a permit can only come from `PolicyHandle::authorize*`):
//!
//! ```
//! # use gatehouse_core::policy::Permit;
//! # use gatehouse_bastion::target::{Start, TargetConn, TargetSpec};
//! # async fn f(spec: &TargetSpec, config: std::sync::Arc<russh::client::Config>, permit: &Permit) {
//! let conn = TargetConn::connect(permit, spec, config).await.unwrap();
//! let _ = conn.start_session(permit, Start::Subsystem("sftp"), None, &[]).await;
//! let _ = conn.open_direct_tcpip(permit, "10.0.0.1", 5432, ("127.0.0.1", 1)).await;
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::config::TargetConfig;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Pty as PtyMode, client};

use gatehouse_core::policy::Permit;

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

/// The terminal a client asked for, replayed on the target.
#[derive(Debug, Clone)]
pub struct Pty {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub pix_w: u32,
    pub pix_h: u32,
    pub modes: Vec<(PtyMode, u32)>,
}

/// What a session channel starts on the target.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    Shell,
    Exec(&'a str),
    Subsystem(&'a str),
}

impl Start<'_> {
    /// The policy actions a permit may carry to start this: a subsystem is file transfer
    /// (`sftp`); a shell or an exec is `ssh`, or `sftp` for an SCP exec (decided by the caller,
    /// which asked the policy for that action).
    fn actions(&self) -> &'static [&'static str] {
        match self {
            Start::Shell => &["ssh"],
            Start::Exec(_) => &["ssh", "sftp"],
            Start::Subsystem(_) => &["sftp"],
        }
    }
}

/// The login `permit` grants on `target`, when it is an SSH permit for it with one of
/// `actions`.
fn permitted_login<'p>(
    permit: &'p Permit,
    target: &str,
    actions: &[&str],
) -> Result<&'p str, TargetError> {
    match permit.ssh_target() {
        Some((t, login)) if t == target && actions.contains(&permit.action()) => Ok(login),
        _ => Err(TargetError::WrongPermit),
    }
}

/// An authenticated connection to a target, as one login.
pub struct TargetConn {
    handle: client::Handle<PinnedHostKey>,
    target: String,
    login: String,
}

impl TargetConn {
    /// Connects as the permit's login, verifying the pinned host key.
    pub async fn connect(
        permit: &Permit,
        spec: &TargetSpec,
        config: Arc<client::Config>,
    ) -> Result<TargetConn, TargetError> {
        let login = permitted_login(permit, &spec.config.name, &["ssh", "sftp", "port-forward"])?;
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
                .authenticate_publickey(login, key)
                .await
                .map_err(TargetError::Connect)?;
            if !result.success() {
                return Err(TargetError::CredentialRefused);
            }
            Ok(TargetConn {
                handle,
                target: spec.config.name.clone(),
                login: login.to_string(),
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| TargetError::ConnectTimeout)?
    }

    /// Checks that `permit` is for this connection's target and login, with one of `actions`.
    fn check(&self, permit: &Permit, actions: &[&str]) -> Result<(), TargetError> {
        match permitted_login(permit, &self.target, actions)? {
            login if login == self.login => Ok(()),
            _ => Err(TargetError::WrongPermit),
        }
    }

    /// Opens a session channel, replays the client's terminal and environment on it and
    /// starts the shell, exec or subsystem.
    pub async fn start_session(
        &self,
        permit: &Permit,
        start: Start<'_>,
        pty: Option<&Pty>,
        env: &[(String, String)],
    ) -> Result<russh::Channel<client::Msg>, TargetError> {
        self.check(permit, start.actions())?;
        let ch = self
            .handle
            .channel_open_session()
            .await
            .map_err(TargetError::Channel)?;
        if let Some(p) = pty {
            ch.request_pty(false, &p.term, p.cols, p.rows, p.pix_w, p.pix_h, &p.modes)
                .await
                .map_err(TargetError::Channel)?;
        }
        for (k, v) in env {
            ch.set_env(false, k.as_str(), v.as_str())
                .await
                .map_err(TargetError::Channel)?;
        }
        match start {
            Start::Shell => ch.request_shell(true).await,
            Start::Exec(cmd) => ch.exec(true, cmd.as_bytes()).await,
            Start::Subsystem(name) => ch.request_subsystem(true, name).await,
        }
        .map_err(TargetError::Channel)?;
        Ok(ch)
    }

    /// Opens a direct-tcpip channel from the target to `host:port`.
    pub async fn open_direct_tcpip(
        &self,
        permit: &Permit,
        host: &str,
        port: u32,
        orig: (&str, u32),
    ) -> Result<russh::Channel<client::Msg>, TargetError> {
        self.check(permit, &["port-forward"])?;
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
