//! `[[identity.oidc]]` -> [`OidcConfig`]: names, issuer URL, the client secret reference (read
//! here, never echoed), claim names, the CA file, scopes.
//!
//! Threat: a typo that silently weakens SSO (an http issuer on the network, a claim that makes
//! every user the same name, a world-readable secret). Mitigation: each is refused with the
//! key, the value (never the secret) and the fix.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::SecretString;

use super::{Ctx, d, is_name};
use crate::config::file::OidcFile;
use crate::config::{CaBundle, OidcConfig, SecretSource};
use crate::error::ConfigError;

/// Largest client secret file read (a secret is a line, not a document).
const MAX_SECRET_FILE_BYTES: u64 = 4096;
/// Largest CA file read.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;
/// Longest claim name accepted (namespaced claims are URLs).
const MAX_CLAIM_NAME: usize = 256;
/// Most scopes accepted.
const MAX_SCOPES: usize = 32;

/// Claims that name no user and no group: taking the name or groups from one of them is a
/// misconfiguration (every user would get the same name, or the groups a timestamp).
const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "nonce",
    "azp",
    "at_hash",
    "c_hash",
    "auth_time",
    "acr",
    "amr",
    "sid",
    "email_verified",
    "phone_number_verified",
];

pub(super) fn providers(cx: &Ctx<'_>, list: Vec<OidcFile>) -> Result<Vec<OidcConfig>, ConfigError> {
    let mut out = Vec::with_capacity(list.len());
    let mut names = HashSet::new();
    for (n, o) in list.into_iter().enumerate() {
        let p = provider(cx, n, o)?;
        if !names.insert(p.name.clone()) {
            return Err(cx.err(
                format!("identity.oidc[{n}].name"),
                format!("`{}` is used by another provider", p.name),
                "give every provider its own name",
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// True for `localhost` and loopback IP literals (`127.0.0.0/8`, `::1`).
fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(h)) => h.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a).is_loopback(),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a).is_loopback(),
        None => false,
    }
}

fn provider(cx: &Ctx<'_>, n: usize, o: OidcFile) -> Result<OidcConfig, ConfigError> {
    let key = |k: &str| format!("identity.oidc[{n}].{k}");
    let name = o
        .name
        .ok_or_else(|| cx.err(key("name"), "missing", "name the provider, e.g. `corp`"))?;
    if !is_name(&name) {
        return Err(cx.err(
            key("name"),
            format!("`{name}` is not a valid provider name"),
            "use 1-64 lowercase letters, digits, `-` and `_` (it appears in URLs)",
        ));
    }
    let (issuer, insecure_loopback) = issuer(cx, &key("issuer"), o.issuer)?;
    let client_id = o
        .client_id
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            cx.err(
                key("client_id"),
                "missing",
                "give the client id registered at the provider",
            )
        })?;
    if client_id.len() > 256 || client_id.chars().any(char::is_control) {
        return Err(cx.err(
            key("client_id"),
            "longer than 256 characters or holds control characters",
            "give the client id exactly as the provider shows it",
        ));
    }
    let (client_secret_source, client_secret) =
        secret(cx, n, o.client_secret_env, o.client_secret_file)?;
    let groups_claim = claim(
        cx,
        &key("groups_claim"),
        o.groups_claim,
        d::OIDC_GROUPS_CLAIM,
    )?;
    let username_claim = claim(
        cx,
        &key("username_claim"),
        o.username_claim,
        d::OIDC_USERNAME_CLAIM,
    )?;
    if groups_claim == username_claim {
        return Err(cx.err(
            key("groups_claim"),
            format!("`{groups_claim}` is also the username_claim"),
            "read the name and the groups from different claims",
        ));
    }
    let ca = match o.ca_file {
        None => None,
        Some(f) => Some(ca_bundle(cx, &key("ca_file"), &f)?),
    };
    Ok(OidcConfig {
        name,
        issuer,
        insecure_loopback,
        client_id,
        client_secret_source,
        client_secret,
        groups_claim,
        username_claim,
        trust_mfa: o.trust_mfa.unwrap_or(false),
        ca,
        scopes: scopes(cx, &key("scopes"), o.scopes)?,
    })
}

/// The issuer as written, and whether it is plain http on loopback.
fn issuer(cx: &Ctx<'_>, key: &str, raw: Option<String>) -> Result<(String, bool), ConfigError> {
    let raw = raw.ok_or_else(|| {
        cx.err(
            key,
            "missing",
            "give the provider's issuer URL, e.g. `https://idp.example.com/realms/staff`",
        )
    })?;
    let bad = |problem: String| {
        cx.err(
            key,
            problem,
            "write the issuer's https URL exactly as the provider's discovery document gives it \
             (plain http only for a loopback address, for tests)",
        )
    };
    let u = url::Url::parse(&raw).map_err(|_| bad(format!("`{raw}` is not a URL")))?;
    if u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return Err(bad(format!("`{raw}` has a query, fragment or credentials")));
    }
    match u.scheme() {
        "https" if u.host().is_some() => Ok((raw, false)),
        "http" if is_loopback_host(&u) => Ok((raw, true)),
        "http" => Err(bad(format!(
            "`{raw}` is plain http on a non-loopback address"
        ))),
        _ => Err(bad(format!("`{raw}` is not an https URL"))),
    }
}

/// Exactly one of `client_secret_env` / `client_secret_file`, read now.
fn secret(
    cx: &Ctx<'_>,
    n: usize,
    env: Option<String>,
    file: Option<String>,
) -> Result<(SecretSource, SecretString), ConfigError> {
    let key = |k: &str| format!("identity.oidc[{n}].{k}");
    match (env, file) {
        (Some(_), Some(_)) => Err(cx.err(
            key("client_secret_env"),
            "both client_secret_env and client_secret_file are given",
            "keep exactly one of them",
        )),
        (None, None) => Err(cx.err(
            key("client_secret_env"),
            "missing: neither client_secret_env nor client_secret_file is given",
            "name the environment variable that holds the client secret, or a 0600 file",
        )),
        (Some(var), None) => {
            let valid_name = !var.is_empty()
                && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !var.as_bytes().first().is_some_and(u8::is_ascii_digit);
            if !valid_name {
                return Err(cx.err(
                    key("client_secret_env"),
                    format!("`{var}` is not an environment variable name"),
                    "name the variable (letters, digits, `_`), not the secret itself",
                ));
            }
            match std::env::var(&var) {
                Ok(v) if !v.trim().is_empty() => Ok((
                    SecretSource::Env(var),
                    SecretString::from(v.trim().to_string()),
                )),
                _ => Err(cx.err(
                    key("client_secret_env"),
                    format!("the environment variable `{var}` is not set or empty"),
                    format!("export {var} with the client secret before starting Gatehouse"),
                )),
            }
        }
        (None, Some(f)) => {
            let k = key("client_secret_file");
            if f.trim().is_empty() {
                return Err(cx.err(
                    k,
                    "empty path",
                    "give the path of a 0600 file holding the secret",
                ));
            }
            let path = cx.path(Some(f), "");
            let text = read_private(&path).map_err(|problem| {
                cx.err(
                    &k,
                    format!("`{}`: {problem}", path.display()),
                    "put the client secret alone in a file readable only by Gatehouse (chmod 600)",
                )
            })?;
            Ok((SecretSource::File(path), text))
        }
    }
}

/// Reads a small secret file that only its owner may read; the trimmed content.
fn read_private(path: &Path) -> Result<SecretString, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it ({e})"))?;
    if !meta.is_file() || meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "not a regular file of at most {MAX_SECRET_FILE_BYTES} bytes"
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err("readable by group or others".into());
        }
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("cannot read it ({e})"))?,
    );
    let secret = text.trim();
    if secret.is_empty() {
        return Err("empty".into());
    }
    Ok(SecretString::from(secret.to_string()))
}

fn claim(
    cx: &Ctx<'_>,
    key: &str,
    value: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let v = value.unwrap_or_else(|| default.to_string());
    let ok = !v.is_empty()
        && v.len() <= MAX_CLAIM_NAME
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if !ok {
        return Err(cx.err(
            key,
            format!("`{v}` is not a claim name"),
            format!(
                "give the claim's name, e.g. `{default}` (printable ASCII, no spaces or quotes)"
            ),
        ));
    }
    if RESERVED_CLAIMS.contains(&v.as_str()) {
        return Err(cx.err(
            key,
            format!("`{v}` is a protocol claim, not the user's name or groups"),
            format!("use the claim that carries them, e.g. `{default}`"),
        ));
    }
    Ok(v)
}

fn scopes(cx: &Ctx<'_>, key: &str, value: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let Some(list) = value else {
        return Ok(d::OIDC_SCOPES.iter().map(|s| (*s).to_string()).collect());
    };
    if list.len() > MAX_SCOPES {
        return Err(cx.err(
            key,
            format!("{} scopes; at most {MAX_SCOPES}", list.len()),
            "request only the scopes the groups and name claims need",
        ));
    }
    let mut out = vec!["openid".to_string()];
    for s in list {
        // RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !ok {
            return Err(cx.err(
                key,
                format!("`{s}` is not a scope"),
                "list scopes as separate strings, e.g. [\"openid\", \"profile\", \"groups\"]",
            ));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Reads and parses a PEM CA file: at least one certificate, each usable as a trust anchor.
fn ca_bundle(cx: &Ctx<'_>, key: &str, raw: &str) -> Result<CaBundle, ConfigError> {
    let path = cx.path(Some(raw.to_string()), "");
    let bad = |problem: String| {
        cx.err(
            key,
            format!("`{}`: {problem}", path.display()),
            "give a PEM file with the CA certificate(s) that issued the provider's TLS certificate",
        )
    };
    let meta = std::fs::metadata(&path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    if !meta.is_file() || meta.len() > MAX_CA_FILE_BYTES {
        return Err(bad(format!(
            "not a regular file of at most {MAX_CA_FILE_BYTES} bytes"
        )));
    }
    let bytes = std::fs::read(&path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert = item.map_err(|_| bad("malformed PEM".into()))?;
        let mut probe = rustls::RootCertStore::empty();
        probe.add(cert.clone()).map_err(|_| {
            bad(format!(
                "certificate {} is not a valid CA certificate",
                certs.len() + 1
            ))
        })?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(CaBundle {
        path,
        certs: Arc::from(certs),
    })
}

#[cfg(test)]
mod tests;
