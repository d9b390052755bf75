//! `[[apps]]`: names, hosts, path prefixes, upstreams and WebSocket origins.

use super::super::file::AppFile;
use super::super::{AppConfig, Upstream};
use super::{Ctx, is_hostname, is_name};
use crate::error::ConfigError;

pub(super) fn apps(cx: &Ctx<'_>, list: Vec<AppFile>) -> Result<Vec<AppConfig>, ConfigError> {
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
        let allowed_origins = a
            .allowed_origins
            .unwrap_or_default()
            .iter()
            .map(|o| origin(cx, &key("allowed_origins"), o))
            .collect::<Result<_, _>>()?;
        out.push(AppConfig {
            name,
            host,
            path_prefix,
            upstream,
            allowed_origins,
        });
    }
    Ok(out)
}

/// One entry of `allowed_origins`: an origin as a browser sends it (`scheme://host[:port]`,
/// nothing more), stored lowercase with the default port left out.
fn origin(cx: &Ctx<'_>, key: &str, raw: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(raw).ok().filter(|u| {
        matches!(u.scheme(), "https" | "http")
            && u.host_str().is_some()
            && u.path() == "/"
            && !raw.trim_end_matches('/').contains(['?', '#', '@'])
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
            && u.password().is_none()
            && raw.matches('/').count() <= 3
    });
    match parsed {
        Some(u) => Ok(u.origin().ascii_serialization()),
        None => Err(cx.err(
            key,
            format!("`{raw}` is not an origin"),
            "write it as a browser sends `Origin`: `https://tools.example.com` (optionally with :PORT, no path)",
        )),
    }
}
