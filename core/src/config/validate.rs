//! `FileConfig` -> `Config`. Each refusal names the key path, the bad value (never a secret)
//! and the fix.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults as d;
use super::file::*;
use super::*;

struct Ctx<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Ctx<'_> {
    fn err(
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

    fn path(&self, value: Option<String>, default: &str) -> PathBuf {
        let p = PathBuf::from(value.unwrap_or_else(|| default.to_string()));
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn non_empty_path(
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
    fn size(&self, key: &str, v: &str) -> Result<u64, ConfigError> {
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

    fn duration(
        &self,
        key: &str,
        value: Option<String>,
        default: Duration,
        max: Option<Duration>,
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
        if let Some(max) = max.filter(|m| dur > *m) {
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

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_hostname(s: &str) -> bool {
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
    let apps = apps(&cx, f.apps)?;
    let targets = targets(&cx, f.targets)?;
    let retention_days = f.audit.retention_days.unwrap_or(d::AUDIT_RETENTION_DAYS);
    if retention_days == 0 {
        return Err(cx.err(
            "audit.retention_days",
            "0 would delete the audit log at once",
            "give a number of days, e.g. 380",
        ));
    }
    let audit = AuditConfig {
        dir: cx.non_empty_path("audit.dir", f.audit.dir, d::AUDIT_DIR)?,
        retention_days,
    };
    let recording = RecordingConfig {
        dir: cx.non_empty_path("recording.dir", f.recording.dir, d::RECORDING_DIR)?,
        encrypt: f.recording.encrypt.unwrap_or(false),
        stream_cap: match f.recording.stream_cap {
            None => None,
            Some(v) => Some(cx.size("recording.stream_cap", &v)?),
        },
    };
    let admin_listen = cx.addr("admin.listen", f.admin.listen, d::ADMIN_LISTEN)?;
    if !admin_listen.ip().is_loopback() {
        return Err(cx.err("admin.listen", format!("`{admin_listen}` is not a loopback address; metrics and health must not face the network"), "use 127.0.0.1:PORT or [::1]:PORT"));
    }
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
        recording,
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
            Some(Duration::from_secs(30)),
        )?,
        tls_handshake_timeout: cx.duration(
            "gateway.tls_handshake_timeout",
            g.tls_handshake_timeout,
            d::TLS_HANDSHAKE_TIMEOUT,
            Some(Duration::from_secs(60)),
        )?,
        idle_timeout: cx.duration(
            "gateway.idle_timeout",
            g.idle_timeout,
            d::IDLE_TIMEOUT,
            None,
        )?,
        upstream_timeout: cx.duration(
            "gateway.upstream_timeout",
            g.upstream_timeout,
            d::UPSTREAM_TIMEOUT,
            None,
        )?,
        upstream_connect_timeout: cx.duration(
            "gateway.upstream_connect_timeout",
            g.upstream_connect_timeout,
            d::UPSTREAM_CONNECT_TIMEOUT,
            None,
        )?,
        shutdown_grace: cx.duration(
            "gateway.shutdown_grace",
            g.shutdown_grace,
            d::SHUTDOWN_GRACE,
            None,
        )?,
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
    let session_ttl = cx.duration("identity.session_ttl", i.session_ttl, d::SESSION_TTL, None)?;
    let idle_timeout = cx.duration(
        "identity.idle_timeout",
        i.idle_timeout,
        d::SESSION_IDLE_TIMEOUT,
        None,
    )?;
    if idle_timeout > session_ttl {
        return Err(cx.err(
            "identity.idle_timeout",
            "longer than identity.session_ttl",
            "make the idle timeout shorter than the session lifetime",
        ));
    }
    let mut oidc = Vec::new();
    let mut names = HashSet::new();
    for (n, o) in i.oidc.into_iter().enumerate() {
        let key = |k: &str| format!("identity.oidc[{n}].{k}");
        let name = o
            .name
            .ok_or_else(|| cx.err(key("name"), "missing", "name the provider, e.g. `corp`"))?;
        if !is_name(&name) {
            return Err(cx.err(
                key("name"),
                format!("`{name}` is not a valid name"),
                "use lowercase letters, digits, `-` and `_`",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(cx.err(
                key("name"),
                format!("`{name}` is used twice"),
                "give every provider its own name",
            ));
        }
        let issuer_raw = o
            .issuer
            .ok_or_else(|| cx.err(key("issuer"), "missing", "give the provider's issuer URL"))?;
        let issuer = url::Url::parse(&issuer_raw)
            .ok()
            .filter(|u| {
                u.scheme() == "https"
                    || u.host_str()
                        .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]")
            })
            .ok_or_else(|| {
                cx.err(
                    key("issuer"),
                    format!("`{issuer_raw}` is not an https URL"),
                    "use the issuer's https URL (plain http only on loopback, for tests)",
                )
            })?;
        let client_id = o.client_id.filter(|c| !c.is_empty()).ok_or_else(|| {
            cx.err(
                key("client_id"),
                "missing",
                "give the client id registered at the provider",
            )
        })?;
        let client_secret_env = o
            .client_secret_env
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                cx.err(
                    key("client_secret_env"),
                    "missing",
                    "name the environment variable that holds the client secret",
                )
            })?;
        oidc.push(OidcConfig {
            name,
            issuer,
            client_id,
            client_secret_env,
            groups_claim: o
                .groups_claim
                .unwrap_or_else(|| d::OIDC_GROUPS_CLAIM.to_string()),
        });
    }
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

fn apps(cx: &Ctx<'_>, list: Vec<AppFile>) -> Result<Vec<AppConfig>, ConfigError> {
    let mut out: Vec<AppConfig> = Vec::with_capacity(list.len());
    for (n, a) in list.into_iter().enumerate() {
        let key = |k: &str| format!("apps[{n}].{k}");
        let name = a.name.ok_or_else(|| {
            cx.err(
                key("name"),
                "missing",
                "name the app, e.g. `grafana`; policies refer to it as app:<name>/",
            )
        })?;
        if !is_name(&name) {
            return Err(cx.err(
                key("name"),
                format!("`{name}` is not a valid app name"),
                "use lowercase letters, digits, `-` and `_`",
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(cx.err(
                key("name"),
                format!("`{name}` is used by another app"),
                "give every app its own name",
            ));
        }
        let host_raw = a.host.ok_or_else(|| {
            cx.err(
                key("host"),
                "missing",
                "give the host the app is served on, e.g. `grafana.gatehouse.example.com`",
            )
        })?;
        let host = host_raw.to_ascii_lowercase();
        if !is_hostname(&host) {
            return Err(cx.err(
                key("host"),
                format!("`{host_raw}` is not a host name"),
                "write a bare host name without scheme, port or path",
            ));
        }
        let path_prefix = match a.path_prefix {
            None => None,
            Some(p) => {
                let trimmed = p.trim_end_matches('/');
                if trimmed.is_empty() {
                    None
                } else if !trimmed.starts_with('/')
                    || trimmed.contains("//")
                    || trimmed.split('/').any(|s| s == "." || s == "..")
                    || trimmed.bytes().any(|b| {
                        b == b'%'
                            || b == b'\\'
                            || b == b'?'
                            || b == b'#'
                            || b.is_ascii_control()
                            || b == b' '
                    })
                {
                    return Err(cx.err(
                        key("path_prefix"),
                        format!("`{p}` is not a plain absolute path"),
                        "write it as `/grafana`: starts with `/`, no `..`, `%`, `?` or `\\`",
                    ));
                } else {
                    Some(trimmed.to_string())
                }
            }
        };
        if out
            .iter()
            .any(|o| o.host == host && o.path_prefix == path_prefix)
        {
            return Err(cx.err(
                key("host"),
                format!("`{host}` with this path prefix is already routed to another app"),
                "give each app its own host or path prefix",
            ));
        }
        let up_raw = a.upstream.ok_or_else(|| {
            cx.err(
                key("upstream"),
                "missing",
                "give the app's address, e.g. `http://127.0.0.1:3000`",
            )
        })?;
        let upstream = url::Url::parse(&up_raw)
            .ok()
            .filter(|u| {
                u.scheme() == "http"
                    && u.host_str().is_some()
                    && (u.path() == "/" || u.path().is_empty())
                    && u.query().is_none()
                    && u.username().is_empty()
                    && u.password().is_none()
            })
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                let port = u.port_or_known_default()?;
                Some(Upstream {
                    authority: format!("{host}:{port}"),
                })
            })
            .ok_or_else(|| {
                cx.err(
                    key("upstream"),
                    format!("`{up_raw}` is not an http://HOST:PORT URL"),
                    "write it as `http://127.0.0.1:3000`, without path, query or credentials",
                )
            })?;
        out.push(AppConfig {
            name,
            host,
            path_prefix,
            upstream,
        });
    }
    Ok(out)
}

fn targets(cx: &Ctx<'_>, list: Vec<TargetFile>) -> Result<Vec<TargetConfig>, ConfigError> {
    let mut out: Vec<TargetConfig> = Vec::with_capacity(list.len());
    for (n, t) in list.into_iter().enumerate() {
        let key = |k: &str| format!("targets[{n}].{k}");
        let name = t
            .name
            .ok_or_else(|| cx.err(key("name"), "missing", "name the target, e.g. `db-prod-1`"))?;
        if !is_name(&name) {
            return Err(cx.err(
                key("name"),
                format!("`{name}` is not a valid target name"),
                "use lowercase letters, digits, `-` and `_` (no `@` or `:`)",
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(cx.err(
                key("name"),
                format!("`{name}` is used by another target"),
                "give every target its own name",
            ));
        }
        let address = t
            .address
            .ok_or_else(|| cx.err(key("address"), "missing", "give the target's `HOST:PORT`"))?;
        let valid_addr = address
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !valid_addr {
            return Err(cx.err(
                key("address"),
                format!("`{address}` is not HOST:PORT"),
                "write it as `10.0.0.5:22`",
            ));
        }
        let host_key = t.host_key.ok_or_else(|| {
            cx.err(
                key("host_key"),
                "missing: a target's host key must be pinned",
                "paste the target's public host key, e.g. from `ssh-keyscan`",
            )
        })?;
        let mut parts = host_key.split_whitespace();
        let algo_ok = parts.next().is_some_and(|a| {
            matches!(
                a,
                "ssh-ed25519"
                    | "ecdsa-sha2-nistp256"
                    | "ecdsa-sha2-nistp384"
                    | "ecdsa-sha2-nistp521"
                    | "rsa-sha2-256"
                    | "rsa-sha2-512"
                    | "ssh-rsa"
            )
        });
        let blob_ok = parts.next().is_some_and(|b| {
            b.len() >= 16
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
        });
        if !algo_ok || !blob_ok {
            return Err(cx.err(key("host_key"), "not an OpenSSH public key line", "write it as `ssh-ed25519 AAAA...` (one line of `ssh-keyscan` output without the host name)"));
        }
        let logins = t.logins.unwrap_or_default();
        if logins.is_empty() {
            return Err(cx.err(
                key("logins"),
                "no login given",
                "list the accounts staff may use, e.g. `[\"deploy\"]`",
            ));
        }
        for l in &logins {
            let ok = !l.is_empty()
                && l.len() <= 32
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                && !l.starts_with('-');
            if !ok {
                return Err(cx.err(
                    key("logins"),
                    format!("`{l}` is not a valid login name"),
                    "use letters, digits, `.`, `-` and `_`",
                ));
            }
        }
        let credential = t
            .credential
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                cx.err(
                    key("credential"),
                    "missing",
                    "give the path of the bastion's private key for this target",
                )
            })?;
        out.push(TargetConfig {
            name,
            address,
            host_key,
            logins,
            credential: cx.path(Some(credential), ""),
            require_totp: t.require_totp.unwrap_or(true),
        });
    }
    Ok(out)
}
