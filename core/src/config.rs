//! Configuration: `FileConfig` (serde shapes, unknown keys refused) is turned by
//! [`Config::from_toml`] into a [`Config`] made only of validated types. Only `Config` leaves
//! this module. Relative paths are resolved against the config file's directory.

pub mod defaults;
pub mod file;
mod validate;
mod validate_audit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` for the quick-start.
    pub source: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub gateway: GatewayConfig,
    pub bastion: BastionConfig,
    pub store: StoreConfig,
    pub identity: IdentityConfig,
    pub policy: PolicyConfig,
    pub apps: Vec<AppConfig>,
    pub targets: Vec<TargetConfig>,
    pub audit: AuditConfig,
    pub alerts: AlertsConfig,
    pub recording: RecordingConfig,
    pub grants: GrantsConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProfile {
    /// Mozilla intermediate: TLS 1.2 and 1.3, ECDHE key exchange with AEAD ciphers only.
    Intermediate,
    /// Mozilla modern: TLS 1.3 only.
    Modern,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub public_url: url::Url,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub tls_profile: TlsProfile,
    pub http_redirect_listen: Option<SocketAddr>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub upstream_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Serve a certificate outside its validity period instead of refusing it (loudly).
    pub tls_allow_expired: bool,
}

#[derive(Debug, Clone)]
pub struct BastionConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub host_key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Memory,
    Redis(url::Url),
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub session_ttl: Duration,
    pub idle_timeout: Duration,
    pub users_file: PathBuf,
    /// Secret key file (TOTP secrets at rest, audit MAC); `GATEHOUSE_SECRET_KEY` overrides it.
    pub secret_key_file: PathBuf,
    pub oidc: Vec<OidcConfig>,
}

/// One SSO provider (`[[identity.oidc]]`), validated: its secret is loaded, its CA parsed.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Unique, URL-safe (`[a-z0-9_-]`, at most 64).
    pub name: String,
    /// The issuer exactly as written: discovery and every ID token's `iss` must equal it.
    pub issuer: String,
    /// True when the issuer is plain http on a loopback address (tests): only then may the
    /// provider's endpoints be plain http, and only on loopback.
    pub insecure_loopback: bool,
    pub client_id: String,
    /// Where the client secret came from (named in messages; the secret never is).
    pub client_secret_source: SecretSource,
    /// The client secret, read during validation. `Debug` prints `[REDACTED]`.
    pub client_secret: secrecy::SecretString,
    pub groups_claim: String,
    pub username_claim: String,
    pub trust_mfa: bool,
    /// The CA(s) to trust for this provider; `None`: the built-in web roots.
    pub ca: Option<CaBundle>,
    /// Scopes to request; `openid` first.
    pub scopes: Vec<String>,
}

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// Trust anchors read from a PEM file, each one parsed as a trust anchor during validation.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: std::sync::Arc<[rustls_pki_types::CertificateDer<'static>]>,
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub model: PathBuf,
    pub policy: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    /// Lowercase host, without port.
    pub host: String,
    /// Normalised prefix starting with `/` and without a trailing `/`; `None` for the whole host.
    pub path_prefix: Option<String>,
    pub upstream: Upstream,
    /// Origins besides the app's own (`https://<host>[:port]`) whose pages may open
    /// WebSockets to it: lowercase `scheme://host[:port]`, as browsers send `Origin`.
    pub allowed_origins: Vec<String>,
}

/// An upstream origin: scheme is always `http` here (TLS upstreams are a later addition), so
/// only the authority is kept; the request's path is appended as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port` as it goes into the upstream request's authority.
    pub authority: String,
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub address: String,
    pub host_key: String,
    pub logins: Vec<String>,
    pub credential: PathBuf,
    pub require_totp: bool,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub retention_days: u32,
    /// Every record also to syslog.
    pub syslog: Option<SyslogTarget>,
    /// Ed25519 key signing checkpoints (`<file>.pub` is its public half).
    pub signing_key_file: PathBuf,
    /// The signed head the server last confirmed, kept apart from the log directory.
    pub head_file: PathBuf,
    /// Longest time between signed checkpoints while records flow.
    pub checkpoint_interval: Duration,
    /// Approximate cap on the Redis stream's length (all instances together).
    pub stream_max_len: u64,
}

/// Where syslog copies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A local datagram socket, e.g. `/dev/log`.
    Unix(PathBuf),
    /// A collector, `HOST:PORT`.
    Udp(String),
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTarget::Unix(p) => write!(f, "unix://{}", p.display()),
            SyslogTarget::Udp(a) => write!(f, "udp://{a}"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AlertsConfig {
    /// JSON POST per alert; https, or http on a loopback address.
    pub webhook_url: Option<url::Url>,
    /// Extra CA (PEM) trusted for the webhook, besides the webpki roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RecordingConfig {
    pub dir: PathBuf,
    /// Recordings older than this are removed (default: the audit log's retention).
    pub retention_days: u32,
    /// Recordings encrypted at rest with a key derived from the secret key.
    pub encrypt: bool,
    /// Cap (bytes, each direction) on sessions without a terminal; `None`: in full.
    pub stream_cap: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct GrantsConfig {
    /// Longest just-in-time grant accepted.
    pub max_duration: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, Some(path))
    }

    /// Validates TOML text; `path` names the file in errors and anchors relative paths.
    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let display = path.map_or_else(|| PathBuf::from("<quick-start>"), Path::to_path_buf);
        let parsed: file::FileConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: display.clone(),
            message: syntax_message(&e),
        })?;
        let base = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        validate::validate(parsed, &display, &base, path.map(Path::to_path_buf))
    }

    /// The quick-start configuration: every default, no apps or targets (the caller adds the
    /// demo app once its in-process upstream is listening). Everything it writes stays under
    /// the data directory, the users file included (`data/users.toml`).
    pub fn quickstart() -> Result<Config, ConfigError> {
        let mut c = Self::from_toml("", None)?;
        c.identity.users_file = c.data_dir.join(defaults::USERS_FILE);
        Ok(c)
    }

    /// Finds the app serving `host` (lowercase, no port) and `path`: exact host, longest prefix.
    pub fn route(&self, host: &str, path: &str) -> Option<&AppConfig> {
        route(&self.apps, host, path)
    }
}

/// Longest-prefix routing over the apps of one host. A prefix `/a` matches `/a` and `/a/...`,
/// never `/ab`.
pub fn route<'a>(apps: &'a [AppConfig], host: &str, path: &str) -> Option<&'a AppConfig> {
    apps.iter()
        .filter(|a| a.host == host)
        .filter(|a| match &a.path_prefix {
            None => true,
            Some(p) => {
                path == p
                    || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
            }
        })
        .max_by_key(|a| a.path_prefix.as_ref().map_or(0, String::len))
}

/// toml's messages carry the line, column and a caret excerpt; keep them on one line each.
fn syntax_message(e: &toml::de::Error) -> String {
    let msg = e.to_string();
    let msg = msg.trim_end();
    if msg.starts_with("TOML parse error") {
        msg.to_string()
    } else {
        format!("invalid config: {msg}")
    }
}

#[cfg(test)]
mod tests;
