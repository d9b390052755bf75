//! Documented defaults. Each constant states the invariant it governs; zero or empty never
//! silently turns a security control off (validation refuses such values instead).

use std::time::Duration;

/// Data directory for audit logs, recordings and generated state.
pub const DATA_DIR: &str = "data";
/// HTTPS entry point.
pub const GATEWAY_LISTEN: &str = "127.0.0.1:8443";
/// Public URL of the gateway (login pages and redirects are built from it).
pub const PUBLIC_URL: &str = "https://gatehouse.localhost:8443";
pub const TLS_CERT: &str = "certs/gateway.crt";
pub const TLS_KEY: &str = "certs/gateway.key";
/// Admin listener (health, readiness, Prometheus metrics). Must be a loopback address.
pub const ADMIN_LISTEN: &str = "127.0.0.1:9443";
/// Open client connections accepted at once; further connections wait in the kernel backlog.
pub const MAX_CONNECTIONS: usize = 10_000;
/// A request head must be complete this long after the connection became ready for it
/// (slowloris cut-off; the product promises at most 30 s: [`MAX_HEADER_TIMEOUT`]).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The TLS handshake must finish within this deadline (at most [`MAX_TLS_HANDSHAKE_TIMEOUT`]:
/// a longer one lets half-open handshakes hold connection slots).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// A keep-alive connection with no request in flight and no bytes moving is closed after this
/// (at most [`MAX_IDLE_TIMEOUT`]: idle connections hold slots of `max_connections`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// An upstream must connect and answer (response head) within this deadline: 504 otherwise
/// (at most [`MAX_UPSTREAM_TIMEOUT`]; streaming bodies are not bound by it).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3600);
/// Connecting to an upstream must succeed within this deadline: 502 otherwise (at most
/// [`MAX_UPSTREAM_CONNECT_TIMEOUT`]).
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// On SIGTERM, in-flight requests get this long to finish before connections are cut (at
/// most [`MAX_SHUTDOWN_GRACE`]: a supervisor's own kill deadline comes sooner anyway).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);
/// Largest request head accepted (request line + headers); larger gets 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields accepted in one request; more gets 431.
pub const MAX_HEADERS: usize = 100;
/// HSTS max-age: two years, as Mozilla's guidelines recommend.
pub const HSTS_MAX_AGE_SECS: u64 = 63_072_000;

pub const BASTION_LISTEN: &str = "127.0.0.1:2222";
pub const BASTION_HOST_KEY: &str = "certs/bastion_ed25519";
pub const STORE_URL: &str = "memory://";
/// Absolute lifetime of a login session (at most [`MAX_SESSION_TTL`]: a stolen session must
/// end by itself within a week whatever the configuration says).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A session unused this long is locked (the user must log in again); at most
/// [`MAX_SESSION_IDLE_TIMEOUT`] ("automatic session locking" within a working day).
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const MAX_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// A certificate expiring within this is a warning at start and reload (and visible in the
/// `gatehouse_tls_certificate_expiry_seconds` metric).
pub const CERT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
pub const USERS_FILE: &str = "users.toml";
/// Secret key file name under the data directory (TOTP secrets at rest, audit MAC).
pub const SECRET_KEY_FILE: &str = "secret.key";
pub const POLICY_MODEL: &str = "policies/model.conf";
pub const POLICY_FILE: &str = "policies/policy.csv";
pub const AUDIT_DIR: &str = "data/audit";
/// Audit retention: a year plus two weeks, so an annual review always has a full year.
pub const AUDIT_RETENTION_DAYS: u32 = 380;
pub const RECORDING_DIR: &str = "data/recordings";
/// Longest just-in-time grant (`[grants] max_duration`): a grant is for a task, not a role;
/// at most [`MAX_GRANT_MAX_DURATION`] (a need that lasts longer belongs in the policy file,
/// where the yearly review sees it).
pub const GRANT_MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_GRANT_MAX_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Audit signing key file name under the data directory.
pub const AUDIT_SIGNING_KEY_FILE: &str = "audit-signing.key";
/// The signed head, under the data directory (apart from the log directory).
pub const AUDIT_HEAD_FILE: &str = "audit-head.json";
/// Longest time between signed checkpoints: a cut tail of the log is found offline back to
/// the newest checkpoint, so this bounds what can go unnoticed without the head file.
pub const AUDIT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Approximate cap on the shared Redis audit stream (all instances): about a day of a busy
/// deployment; a SIEM reading it keeps the rest.
pub const AUDIT_STREAM_MAX_LEN: u64 = 1_000_000;
/// The claim an SSO provider's groups are read from.
pub const OIDC_GROUPS_CLAIM: &str = "groups";
/// The claim an SSO user's policy name is read from.
pub const OIDC_USERNAME_CLAIM: &str = "preferred_username";
/// Scopes requested from an SSO provider when `scopes` is not given.
pub const OIDC_SCOPES: &[&str] = &["openid", "profile", "email"];
