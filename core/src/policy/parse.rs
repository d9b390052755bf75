//! Strict reader of `policy.csv`. casbin's own reader skips lines it does not understand;
//! this one refuses them with file and line, so a typo never silently drops a deny.

use std::path::Path;

use crate::error::PolicyError;

/// The effect of a `p` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// An action pattern: `*` or alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actions {
    Any,
    OneOf(Vec<String>),
}

impl Actions {
    pub fn matches(&self, action: &str) -> bool {
        match self {
            Actions::Any => true,
            Actions::OneOf(list) => list.iter().any(|a| a == action),
        }
    }
}

/// One `p` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub subject: String,
    /// The object without its trailing `*`.
    pub object: String,
    /// True when the object pattern ended in `*` (any rest of the path, also empty).
    pub wildcard: bool,
    pub actions: Actions,
    pub effect: Effect,
    /// 1-based line number in the policy file.
    pub line: usize,
    /// The line as written (trimmed): what `policy check` prints as the deciding rule.
    pub text: String,
}

/// Parsed policy: rules in file order and `g` edges (member, role).
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub rules: Vec<Rule>,
    pub links: Vec<(String, String)>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'*' && b != b',')
}

fn valid_object(s: &str) -> bool {
    let body = s.strip_suffix('*').unwrap_or(s);
    s.len() <= 1024
        && !s.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'*' && b != b',')
}

fn valid_action(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 32
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses policy text; `path` names the file in errors. A leading UTF-8 byte-order mark (as
/// some editors on Windows write) is accepted and ignored.
pub fn parse(text: &str, path: &Path) -> Result<Parsed, PolicyError> {
    let mut out = Parsed::default();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |problem: String| PolicyError::Line {
            path: path.to_path_buf(),
            line,
            problem,
        };
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = t.split(',').map(str::trim).collect();
        match fields.as_slice() {
            ["p", sub, obj, act, eft] => {
                if !valid_name(sub) {
                    return Err(err(format!(
                        "invalid subject `{sub}`: a user name or `group:NAME`, no `*`, `,` or quotes"
                    )));
                }
                if !valid_object(obj) {
                    return Err(err(format!(
                        "invalid object `{obj}`: printable ASCII, `*` only as the last character"
                    )));
                }
                let actions = if *act == "*" {
                    Actions::Any
                } else {
                    let list: Vec<String> = act.split('|').map(str::to_string).collect();
                    if !list.iter().all(|a| valid_action(a)) {
                        return Err(err(format!(
                            "invalid action `{act}`: `*` or names like GET|HEAD (letters, digits, `-`, `_`)"
                        )));
                    }
                    Actions::OneOf(list)
                };
                let effect = match *eft {
                    "allow" => Effect::Allow,
                    "deny" => Effect::Deny,
                    other => {
                        return Err(err(format!(
                            "invalid effect `{other}`: use `allow` or `deny`"
                        )));
                    }
                };
                let wildcard = obj.ends_with('*');
                let object = obj.strip_suffix('*').unwrap_or(obj).to_string();
                out.rules.push(Rule {
                    subject: (*sub).to_string(),
                    object,
                    wildcard,
                    actions,
                    effect,
                    line,
                    text: t.to_string(),
                });
            }
            ["p", ..] => {
                return Err(err(format!(
                    "a `p` line has 5 fields (p, subject, object, action, effect), this one has {}",
                    fields.len()
                )));
            }
            ["g", member, role] => {
                if !valid_name(member) || !valid_name(role) {
                    return Err(err(
                        "invalid `g` line: `g, user, group:NAME` without `*`, `,` or quotes".into(),
                    ));
                }
                out.links.push(((*member).to_string(), (*role).to_string()));
            }
            ["g", ..] => {
                return Err(err(format!(
                    "a `g` line has 3 fields (g, user, group), this one has {}",
                    fields.len()
                )));
            }
            [kind, ..] => {
                return Err(err(format!(
                    "unknown line type `{kind}`: use `p`, `g` or a `#` comment"
                )));
            }
            [] => {}
        }
    }
    Ok(out)
}
