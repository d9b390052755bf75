//! Configuration: `FileConfig` (serde shapes, unknown keys refused) is turned by
//! [`Config::from_toml`] into a [`Config`] made only of validated types. Only `Config` leaves
//! this module. Relative paths are resolved against the config file's directory.

pub mod defaults;
pub mod file;
mod validate;

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
    pub recording: RecordingConfig,
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

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub name: String,
    pub issuer: url::Url,
    pub client_id: String,
    /// The environment variable that holds the client secret (read at start, never logged).
    pub client_secret_env: String,
    pub groups_claim: String,
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
}

#[derive(Debug, Clone)]
pub struct RecordingConfig {
    pub dir: PathBuf,
    /// Recordings encrypted at rest with a key derived from the secret key.
    pub encrypt: bool,
    /// Cap (bytes, each direction) on sessions without a terminal; `None`: in full.
    pub stream_cap: Option<u64>,
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
