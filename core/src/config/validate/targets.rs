//! `[[targets]]`: SSH targets with their pinned host keys, logins and credentials.

use super::super::TargetConfig;
use super::super::file::TargetFile;
use super::{Ctx, is_name};
use crate::error::ConfigError;

pub(super) fn targets(
    cx: &Ctx<'_>,
    list: Vec<TargetFile>,
) -> Result<Vec<TargetConfig>, ConfigError> {
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
