//! `FileConfig` -> `Config`. Each refusal names the key path, the bad value (never a secret)
//! and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod apps;
mod limits;
mod oidc;
mod targets;

use super::defaults as d;
use super::file::*;
use super::*;

pub(super) struct Ctx<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn err(
        &self,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(super) fn path(&self, value: Option<String>, default: &str) -> PathBuf {
        let p = PathBuf::from(value.unwrap_or_else(|| default.to_string()));
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    pub(super) fn non_empty_path(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(self.err(
                key,
                "empty path",
                "give a file path or remove the key to use the default",
            ));
        }
        Ok(self.path(value, default))
    }

    /// A size in bytes: `1048576`, `64KiB`, `512MiB`, `2GiB` (also `K`, `M`, `G`, `KB`...,
    /// all binary). Zero is refused: it would record nothing.
    pub(super) fn size(&self, key: &str, v: &str) -> Result<u64, ConfigError> {
        let t = v.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => u64::MAX,
        };
        let n = num
            .parse::<u64>()
            .ok()
            .filter(|_| mult != u64::MAX)
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(|| {
                self.err(
                    key,
                    format!("`{v}` is not a size"),
                    "write a size such as `512MiB` or `2GiB`, or remove the key to record in full",
                )
            })?;
        if n == 0 {
            return Err(self.err(
                key,
                "a zero cap would record nothing of a session without a terminal",
                "give a size such as `512MiB`, or remove the key to record in full",
            ));
        }
        Ok(n)
    }

    fn addr(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<SocketAddr, ConfigError> {
        let v = value.unwrap_or_else(|| default.to_string());
        v.parse().map_err(|_| {
            self.err(
                key,
                format!("`{v}` is not an IP:PORT socket address"),
                "write it as `127.0.0.1:8443` or `[::1]:8443`",
            )
        })
    }

    /// A positive duration of at most `max` (every duration has a documented maximum in
    /// `defaults`: an absurd value, e.g. `999999999999h`, is a typo or an attack).
    pub(super) fn duration(
        &self,
        key: &str,
        value: Option<String>,
        default: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let dur = humantime::parse_duration(v.trim()).map_err(|_| {
            self.err(
                key,
                format!("`{v}` is not a duration"),
                "write a duration such as `30s`, `15m` or `12h`",
            )
        })?;
        if dur.is_zero() {
            return Err(self.err(
                key,
                "a zero duration would turn this control off",
                "give a positive duration",
            ));
        }
        if dur > max {
            return Err(self.err(
                key,
                format!(
                    "`{v}` is longer than the allowed {}",
                    humantime::format_duration(max)
                ),
                format!("use at most {}", humantime::format_duration(max)),
            ));
        }
        Ok(dur)
    }
}

pub(super) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
}

pub(super) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub(super) fn validate(
    f: FileConfig,
    file: &Path,
    base: &Path,
    source: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    let cx = Ctx { file, base };
    let data_dir = cx.non_empty_path("data_dir", f.data_dir, d::DATA_DIR)?;
    let gateway = gateway(&cx, f.gateway)?;
    let bastion = BastionConfig {
        enabled: f.bastion.enabled.unwrap_or(true),
        listen: cx.addr("bastion.listen", f.bastion.listen, d::BASTION_LISTEN)?,
        host_key: cx.non_empty_path("bastion.host_key", f.bastion.host_key, d::BASTION_HOST_KEY)?,
    };
    let store = store(&cx, f.store)?;
    let identity = identity(&cx, f.identity, &data_dir)?;
    let policy = PolicyConfig {
        model: cx.non_empty_path("policy.model", f.policy.model, d::POLICY_MODEL)?,
        policy: cx.non_empty_path("policy.policy", f.policy.policy, d::POLICY_FILE)?,
    };
    let apps = apps::apps(&cx, f.apps)?;
    let targets = targets::targets(&cx, f.targets)?;
    let audit = super::validate_audit::audit(&cx, f.audit, &data_dir)?;
    let alerts = super::validate_audit::alerts(&cx, f.alerts)?;
    let recording = super::validate_audit::recording(&cx, f.recording, audit.retention_days)?;
    let grants = GrantsConfig {
        max_duration: cx.duration(
            "grants.max_duration",
            f.grants.max_duration,
            d::GRANT_MAX_DURATION,
            d::MAX_GRANT_MAX_DURATION,
        )?,
    };
    let admin_listen = cx.addr("admin.listen", f.admin.listen, d::ADMIN_LISTEN)?;
    if !admin_listen.ip().is_loopback() {
        return Err(cx.err("admin.listen", format!("`{admin_listen}` is not a loopback address; metrics and health must not face the network"), "use 127.0.0.1:PORT or [::1]:PORT"));
    }
    limits::distinct_listeners(&cx, &gateway, &bastion, admin_listen)?;
    let log = LogConfig {
        format: match f.log.format.as_deref() {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(cx.err(
                    "log.format",
                    format!("unknown format `{other}`"),
                    "use `human` or `json`",
                ));
            }
        },
        level: f.log.level.unwrap_or_else(|| "info".to_string()),
    };
    Ok(Config {
        source,
        data_dir,
        gateway,
        bastion,
        store,
        identity,
        policy,
        apps,
        targets,
        audit,
        alerts,
        recording,
        grants,
        admin: AdminConfig {
            listen: admin_listen,
        },
        log,
    })
}

fn gateway(cx: &Ctx<'_>, g: GatewayFile) -> Result<GatewayConfig, ConfigError> {
    let public_raw = g.public_url.unwrap_or_else(|| d::PUBLIC_URL.to_string());
    let public_url = url::Url::parse(&public_raw)
        .ok()
        .filter(|u| {
            u.scheme() == "https"
                && u.host_str().is_some()
                && (u.path() == "/" || u.path().is_empty())
                && u.query().is_none()
        })
        .ok_or_else(|| {
            cx.err(
                "gateway.public_url",
                format!("`{public_raw}` is not an https URL without a path"),
                "write it as `https://gatehouse.example.com` (optionally with :PORT)",
            )
        })?;
    let tls_profile = match g.tls_profile.as_deref() {
        None | Some("intermediate") => TlsProfile::Intermediate,
        Some("modern") => TlsProfile::Modern,
        Some(other) => {
            return Err(cx.err(
                "gateway.tls_profile",
                format!("unknown profile `{other}`"),
                "use `intermediate` (TLS 1.2 + 1.3) or `modern` (TLS 1.3 only)",
            ));
        }
    };
    let max_connections = g.max_connections.unwrap_or(d::MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(cx.err(
            "gateway.max_connections",
            "0 would refuse every connection",
            "give a positive number, e.g. 10000",
        ));
    }
    let http_redirect_listen = match g.http_redirect_listen {
        None => None,
        Some(v) => Some(cx.addr("gateway.http_redirect_listen", Some(v), "")?),
    };
    Ok(GatewayConfig {
        listen: cx.addr("gateway.listen", g.listen, d::GATEWAY_LISTEN)?,
        public_url,
        tls_cert: cx.non_empty_path("gateway.tls_cert", g.tls_cert, d::TLS_CERT)?,
        tls_key: cx.non_empty_path("gateway.tls_key", g.tls_key, d::TLS_KEY)?,
        tls_profile,
        http_redirect_listen,
        max_connections,
        header_timeout: cx.duration(
            "gateway.header_timeout",
            g.header_timeout,
            d::HEADER_TIMEOUT,
            d::MAX_HEADER_TIMEOUT,
        )?,
        tls_handshake_timeout: cx.duration(
            "gateway.tls_handshake_timeout",
            g.tls_handshake_timeout,
            d::TLS_HANDSHAKE_TIMEOUT,
            d::MAX_TLS_HANDSHAKE_TIMEOUT,
        )?,
        idle_timeout: cx.duration(
            "gateway.idle_timeout",
            g.idle_timeout,
            d::IDLE_TIMEOUT,
            d::MAX_IDLE_TIMEOUT,
        )?,
        upstream_timeout: cx.duration(
            "gateway.upstream_timeout",
            g.upstream_timeout,
            d::UPSTREAM_TIMEOUT,
            d::MAX_UPSTREAM_TIMEOUT,
        )?,
        upstream_connect_timeout: cx.duration(
            "gateway.upstream_connect_timeout",
            g.upstream_connect_timeout,
            d::UPSTREAM_CONNECT_TIMEOUT,
            d::MAX_UPSTREAM_CONNECT_TIMEOUT,
        )?,
        shutdown_grace: cx.duration(
            "gateway.shutdown_grace",
            g.shutdown_grace,
            d::SHUTDOWN_GRACE,
            d::MAX_SHUTDOWN_GRACE,
        )?,
        tls_allow_expired: g.tls_allow_expired.unwrap_or(false),
    })
}

fn store(cx: &Ctx<'_>, s: StoreFile) -> Result<StoreConfig, ConfigError> {
    let raw = s.url.unwrap_or_else(|| d::STORE_URL.to_string());
    if raw == "memory://" {
        return Ok(StoreConfig::Memory);
    }
    match url::Url::parse(&raw) {
        Ok(u) if (u.scheme() == "redis" || u.scheme() == "rediss") && u.host_str().is_some() => {
            if u.password().is_some() {
                return Err(cx.err(
                    "store.url",
                    "the URL holds a password in clear",
                    "put the password in the environment variable GATEHOUSE_REDIS_PASSWORD instead",
                ));
            }
            Ok(StoreConfig::Redis(u))
        }
        // The value may hold credentials: do not echo it.
        _ => Err(cx.err(
            "store.url",
            "not `memory://` or a `redis://HOST:PORT/DB` URL",
            "use `memory://` for one instance or `redis://127.0.0.1:6379/0`",
        )),
    }
}

fn identity(cx: &Ctx<'_>, i: IdentityFile, data_dir: &Path) -> Result<IdentityConfig, ConfigError> {
    let session_ttl = cx.duration(
        "identity.session_ttl",
        i.session_ttl,
        d::SESSION_TTL,
        d::MAX_SESSION_TTL,
    )?;
    let idle_timeout = cx.duration(
        "identity.idle_timeout",
        i.idle_timeout,
        d::SESSION_IDLE_TIMEOUT,
        d::MAX_SESSION_IDLE_TIMEOUT,
    )?;
    if idle_timeout > session_ttl {
        return Err(cx.err(
            "identity.idle_timeout",
            "longer than identity.session_ttl",
            "make the idle timeout shorter than the session lifetime",
        ));
    }
    let oidc = oidc::providers(cx, i.oidc)?;
    Ok(IdentityConfig {
        session_ttl,
        idle_timeout,
        users_file: cx.non_empty_path("identity.users_file", i.users_file, d::USERS_FILE)?,
        secret_key_file: match i.secret_key_file {
            Some(v) => cx.non_empty_path("identity.secret_key_file", Some(v), "")?,
            None => data_dir.join(d::SECRET_KEY_FILE),
        },
        oidc,
    })
}
