//! From verified claims to a Gatehouse identity: the policy name, the groups, the `amr`.
//!
//! Threat: a provider-controlled value that takes over another user's name, smuggles
//! separators into headers or policy subjects, sheds a group that a deny rule names, or
//! claims a second factor nobody checked. Mitigation: the name and groups are lowercased and
//! must then be plain names (a bad value refuses the login; dropping a group could lift a
//! deny); `email` is a name only when `email_verified` is exactly `true` in the same
//! response; groups are bounded in count; the `amr` is read from the ID token only and
//! counts as a second factor only with `trust_mfa` (see [`proves_mfa`]).

use serde_json::{Map, Value};

use crate::config::OidcConfig;
use crate::error::SsoCheck;
use crate::identity::validate_group_name;

/// Most groups accepted from a provider; more refuses the login (a truncated list could
/// lose a group that a deny rule names).
pub const MAX_GROUPS: usize = 256;
/// Longest SSO user name (an e-mail address fits).
pub const MAX_NAME_LEN: usize = 128;
/// Most `amr` values kept (for the audit record and the MFA decision).
const MAX_AMR: usize = 16;
/// Longest `amr` value kept.
const MAX_AMR_LEN: usize = 32;

/// What the claims say about the user, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub name: String,
    pub groups: Vec<String>,
    pub amr: Vec<String>,
}

type Refusal = (SsoCheck, String);

/// True when the ID token lacks a claim that the userinfo endpoint may hold: the name claim
/// (with `email_verified` for `email`) or the groups claim.
pub fn needs_userinfo(cfg: &OidcConfig, id: &Map<String, Value>) -> bool {
    let name_missing = !id.contains_key(&cfg.username_claim)
        || (cfg.username_claim == "email" && !id.contains_key("email_verified"));
    name_missing || !id.contains_key(&cfg.groups_claim)
}

/// The name, groups and `amr` of a login. Claims come from the ID token first, then from
/// userinfo (same subject, checked by the caller); `amr` only from the ID token.
pub fn extract(
    cfg: &OidcConfig,
    id: &Map<String, Value>,
    userinfo: Option<&Map<String, Value>>,
) -> Result<Extracted, Refusal> {
    let name_source = if id.contains_key(&cfg.username_claim) {
        Some(id)
    } else {
        userinfo.filter(|u| u.contains_key(&cfg.username_claim))
    };
    let name = name(cfg, name_source)?;
    let groups_value = id
        .get(&cfg.groups_claim)
        .or_else(|| userinfo.and_then(|u| u.get(&cfg.groups_claim)));
    Ok(Extracted {
        name,
        groups: groups(&cfg.groups_claim, groups_value)?,
        amr: amr(id.get("amr")),
    })
}

fn name(cfg: &OidcConfig, source: Option<&Map<String, Value>>) -> Result<String, Refusal> {
    let claim = cfg.username_claim.as_str();
    let Some(source) = source else {
        return Err((
            SsoCheck::Name,
            format!("neither the ID token nor userinfo has the `{claim}` claim"),
        ));
    };
    let Some(Value::String(raw)) = source.get(claim) else {
        return Err((
            SsoCheck::Name,
            format!("the `{claim}` claim is not a string"),
        ));
    };
    if claim == "email" && source.get("email_verified") != Some(&Value::Bool(true)) {
        return Err((
            SsoCheck::EmailVerified,
            "`email` is the name claim but the provider does not say `email_verified: true`".into(),
        ));
    }
    let lower = raw.to_ascii_lowercase();
    if !valid_sso_name(&lower) {
        return Err((
            SsoCheck::Name,
            format!(
                "the `{claim}` claim is not a valid user name (1-{MAX_NAME_LEN} of a-z, 0-9, \
                 `.`, `_`, `-`, `+`, one `@`)"
            ),
        ));
    }
    Ok(lower)
}

/// An SSO user name (after lowercasing): 1 to [`MAX_NAME_LEN`] of `a-z 0-9 . _ - + @`,
/// starting with a letter or digit, at most one `@` (e-mail addresses), no `:` (the SSH login
/// separator), no spaces, quotes or commas (headers, policy lines).
pub fn valid_sso_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_+@".contains(&b))
        && name.bytes().filter(|b| *b == b'@').count() <= 1
        && !name.ends_with(['.', '@'])
}

fn groups(claim: &str, value: Option<&Value>) -> Result<Vec<String>, Refusal> {
    let items: Vec<&Value> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v @ Value::String(_)) => vec![v],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => {
            return Err((
                SsoCheck::Groups,
                format!("the `{claim}` claim is neither a string nor an array"),
            ));
        }
    };
    if items.len() > MAX_GROUPS {
        return Err((
            SsoCheck::Groups,
            format!(
                "the `{claim}` claim lists {} groups, more than {MAX_GROUPS}",
                items.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::String(g) = item else {
            return Err((
                SsoCheck::Groups,
                format!("the `{claim}` claim's entry {i} is not a string"),
            ));
        };
        let g = g.to_ascii_lowercase();
        if validate_group_name(&g).is_err() {
            return Err((
                SsoCheck::Groups,
                format!(
                    "the `{claim}` claim's entry {i} is not a valid group name (1-64 of a-z, \
                     0-9, `.`, `_`, `-`): configure the provider to send plain group names"
                ),
            ));
        }
        if !out.contains(&g) {
            out.push(g);
        }
    }
    Ok(out)
}

fn amr(value: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(a)) = value else {
        return Vec::new();
    };
    a.iter()
        .filter_map(Value::as_str)
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_AMR_LEN
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .take(MAX_AMR)
        .map(str::to_string)
        .collect()
}

/// Authentication methods by factor (RFC 8176 values).
const KNOWLEDGE: &[&str] = &["pwd", "pin", "kba"];
const POSSESSION: &[&str] = &["otp", "hwk", "swk", "sc", "sms", "tel", "pop"];
const INHERENCE: &[&str] = &["fpt", "face", "iris", "retina", "vbm", "bio", "geo"];

/// True when `amr` proves more than one factor: `mfa` itself, or methods from two different
/// factor classes (RFC 8176), e.g. `["pwd", "otp"]` or `["hwk", "fpt"]`. `["otp"]` alone or
/// `["pwd", "pin"]` (two things known) is one factor.
pub fn proves_mfa(amr: &[String]) -> bool {
    if amr.iter().any(|a| a == "mfa") {
        return true;
    }
    let has = |class: &[&str]| amr.iter().any(|a| class.contains(&a.as_str()));
    let classes = [has(KNOWLEDGE), has(POSSESSION), has(INHERENCE)];
    classes.iter().filter(|c| **c).count() >= 2
}

#[cfg(test)]
mod tests;
