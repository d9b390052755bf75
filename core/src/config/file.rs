//! The TOML shapes of `gatehouse.toml` as written by people: every section, every key, unknown
//! keys refused. These types never leave `core`; `validate` turns them into [`crate::Config`].

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory for audit logs, recordings and generated state (default `data`).
    pub data_dir: Option<String>,
    #[serde(default)]
    pub gateway: GatewayFile,
    #[serde(default)]
    pub bastion: BastionFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub identity: IdentityFile,
    #[serde(default)]
    pub policy: PolicyFile,
    #[serde(default)]
    pub apps: Vec<AppFile>,
    #[serde(default)]
    pub targets: Vec<TargetFile>,
    #[serde(default)]
    pub audit: AuditFile,
    #[serde(default)]
    pub alerts: AlertsFile,
    #[serde(default)]
    pub recording: RecordingFile,
    #[serde(default)]
    pub grants: GrantsFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub log: LogFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// HTTPS entry point, `IP:PORT` (default `127.0.0.1:8443`).
    pub listen: Option<String>,
    /// Public URL of the gateway, `https://HOST[:PORT]`.
    pub public_url: Option<String>,
    /// PEM certificate chain (default `certs/gateway.crt`).
    pub tls_cert: Option<String>,
    /// PEM private key (default `certs/gateway.key`).
    pub tls_key: Option<String>,
    /// `intermediate` (TLS 1.2 + 1.3, default) or `modern` (TLS 1.3 only).
    pub tls_profile: Option<String>,
    /// Optional plain-HTTP listener that only redirects to HTTPS.
    pub http_redirect_listen: Option<String>,
    /// Cap on open client connections (default 10000).
    pub max_connections: Option<usize>,
    /// Deadline for a complete request head, e.g. `10s` (at most `30s`).
    pub header_timeout: Option<String>,
    /// Deadline for the TLS handshake (default `10s`, at most `60s`).
    pub tls_handshake_timeout: Option<String>,
    /// Idle keep-alive connections are closed after this (default `60s`, at most `1h`).
    pub idle_timeout: Option<String>,
    /// Deadline for an upstream's response head (default `30s`, at most `1h`): 504 after it.
    pub upstream_timeout: Option<String>,
    /// Deadline for connecting to an upstream (default `5s`, at most `60s`): 502 after it.
    pub upstream_connect_timeout: Option<String>,
    /// Grace period for in-flight requests on SIGTERM (default `30s`, at most `1h`).
    pub shutdown_grace: Option<String>,
    /// Serve a certificate outside its validity period (expired or not yet valid) instead of
    /// refusing it at start and reload (default false); logged as an error at every load.
    pub tls_allow_expired: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BastionFile {
    /// SSH listener `IP:PORT` (default `127.0.0.1:2222`).
    pub listen: Option<String>,
    /// Host key file (OpenSSH format); an ed25519 key is generated when missing.
    pub host_key: Option<String>,
    /// Set to false to run the gateway alone.
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// `memory://` (one instance) or `redis://HOST:PORT/DB` (several instances).
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    /// Absolute session lifetime (default `12h`, at most `7d`).
    pub session_ttl: Option<String>,
    /// Idle timeout after which a session is locked (default `30m`, at most `24h`).
    pub idle_timeout: Option<String>,
    /// Local users file (default `users.toml`).
    pub users_file: Option<String>,
    /// 32-byte secret key (TOTP secrets at rest, audit MAC); created 0600 when missing
    /// (default `<data_dir>/secret.key`). `GATEHOUSE_SECRET_KEY` (base64) overrides it.
    pub secret_key_file: Option<String>,
    #[serde(default)]
    pub oidc: Vec<OidcFile>,
}

/// One `[[identity.oidc]]` provider.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// The provider's name on the login page and in `gatehouse user list`: lowercase letters,
    /// digits, `-`, `_` (it appears in URLs), unique.
    pub name: Option<String>,
    /// The issuer URL exactly as the provider writes it in its tokens' `iss` claim; https
    /// (plain http only for a loopback address, for tests).
    pub issuer: Option<String>,
    /// The client id registered at the provider.
    pub client_id: Option<String>,
    /// Name of the environment variable holding the client secret (never the secret itself).
    pub client_secret_env: Option<String>,
    /// Or: a file (mode 0600) holding the client secret. Exactly one of the two.
    pub client_secret_file: Option<String>,
    /// ID-token or userinfo claim holding the user's groups, an array or a single string
    /// (default `groups`).
    pub groups_claim: Option<String>,
    /// Claim whose value is the user's name in policies (default `preferred_username`);
    /// `email` is used only when the provider says `email_verified: true`.
    pub username_claim: Option<String>,
    /// True: a login whose ID token's `amr` proves a second factor skips Gatehouse's TOTP
    /// step (default false).
    pub trust_mfa: Option<bool>,
    /// PEM file of the CA(s) to trust for this provider instead of the built-in roots.
    pub ca_file: Option<String>,
    /// Scopes to request (default `["openid", "profile", "email"]`; `openid` is always sent).
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// casbin model (default `policies/model.conf`).
    pub model: Option<String>,
    /// casbin policy (default `policies/policy.csv`).
    pub policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    /// Name used in policies as `app:<name>/<path>`: lowercase letters, digits, `-`, `_`.
    pub name: Option<String>,
    /// Host the app is served on (matched against the Host header / `:authority`).
    pub host: Option<String>,
    /// Optional path prefix, e.g. `/grafana`; the longest matching prefix wins.
    pub path_prefix: Option<String>,
    /// `http://HOST:PORT` of the upstream.
    pub upstream: Option<String>,
    /// Origins besides the app's own whose pages may open WebSockets to it, e.g.
    /// `["https://tools.example.com"]`; any other `Origin` on an upgrade is refused (403).
    pub allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    pub name: Option<String>,
    /// `HOST:PORT` of the target's sshd.
    pub address: Option<String>,
    /// Pinned host key, OpenSSH public-key format (`ssh-ed25519 AAAA...`).
    pub host_key: Option<String>,
    /// Logins staff may use on the target.
    pub logins: Option<Vec<String>>,
    /// The bastion's private key for this target.
    pub credential: Option<String>,
    /// TOTP required on top of the key (default true).
    pub require_totp: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// Directory of the daily segments (default `data/audit`).
    pub dir: Option<String>,
    /// Whole segments older than this many days are removed (default 380).
    pub retention_days: Option<u32>,
    /// Every record also to syslog: `unix:///dev/log` or `udp://HOST:PORT`.
    pub syslog: Option<String>,
    /// Ed25519 key signing checkpoints; generated (0600) when missing, its public key
    /// written beside it as `<file>.pub` (default `<data_dir>/audit-signing.key`).
    pub signing_key_file: Option<String>,
    /// Longest time between signed checkpoints while records flow (default and maximum
    /// `60s`).
    pub checkpoint_interval: Option<String>,
    /// Approximate cap on the Redis stream `gatehouse:audit:stream` (default 1000000).
    pub stream_max_len: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    /// One JSON POST per alert, retried; https (plain http only for a loopback address).
    pub webhook_url: Option<String>,
    /// Extra CA (PEM) to trust for the webhook besides the public roots.
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingFile {
    /// Directory of the recordings, their metadata files and the sessions index (default
    /// `data/recordings`; created owner-only).
    pub dir: Option<String>,
    /// Recordings older than this many days are removed (default: `audit.retention_days`).
    pub retention_days: Option<u32>,
    /// Encrypt recordings at rest (AES-256-GCM, key derived from the secret key); default
    /// false. `recordings export` writes the plain file.
    pub encrypt: Option<bool>,
    /// Optional cap on what is recorded of each direction of a session *without* a terminal
    /// (a piped script, a copied dump), e.g. `"512MiB"`; absent: recorded in full. Past it
    /// the session goes on, the rest is counted, and an audit record and an alert say so.
    /// Sessions with a terminal are always recorded in full.
    pub stream_cap: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsFile {
    /// Longest just-in-time grant `gatehouse grant add --for` accepts (default `7d`, at most
    /// `90d`); a longer request is refused, never shortened.
    pub max_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Loopback `IP:PORT` for `/healthz`, `/readyz`, `/metrics` (default `127.0.0.1:9443`).
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `human` (default) or `json`.
    pub format: Option<String>,
    /// tracing filter, e.g. `info` or `gatehouse_gateway=debug` (RUST_LOG overrides it).
    pub level: Option<String>,
}
