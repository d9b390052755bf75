//! Policy warnings: lines that parse but cannot mean what their author meant.
//!
//! Threat: a rule that silently never matches (a typo in an app or target name, an object
//! without its `app:`/`ssh:`/`gatehouse:` namespace, a lowercase method) leaves a deny that
//! protects nothing or an allow nobody gets; an allow that reaches every app, target or
//! administrative object grants far beyond need-to-know; an empty policy locks everyone out.
//! Mitigation: `check-config`, the start and every reload name each such line with its file
//! and line number. They are warnings, not errors: the policy still loads (the decision
//! semantics are unchanged), but nobody has to find out by being denied.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::index::PolicyIndex;
use super::parse::{Actions, Effect, Rule};
use crate::config::Config;

/// The administrative objects Gatehouse decides (`gatehouse:<name>`).
pub const GATEHOUSE_OBJECTS: &[&str] = &["review", "terminate"];
/// The object namespaces and what all of each is.
const NAMESPACES: &[(&str, &str)] = &[
    ("app:", "every app"),
    ("ssh:", "every SSH target"),
    ("gatehouse:", "every administrative object"),
];
/// The actions the bastion asks for.
pub const SSH_ACTIONS: &[&str] = &["ssh", "sftp", "port-forward"];

/// What the policy can refer to: the configured apps and targets (with their logins).
#[derive(Debug, Clone, Default)]
pub struct PolicyScope {
    apps: HashSet<String>,
    targets: HashMap<String, Vec<String>>,
}

impl PolicyScope {
    pub fn new<'a>(
        apps: impl IntoIterator<Item = &'a str>,
        targets: impl IntoIterator<Item = (&'a str, Vec<String>)>,
    ) -> PolicyScope {
        PolicyScope {
            apps: apps.into_iter().map(str::to_string).collect(),
            targets: targets
                .into_iter()
                .map(|(t, logins)| (t.to_string(), logins))
                .collect(),
        }
    }

    pub fn from_config(config: &Config) -> PolicyScope {
        PolicyScope::new(
            config.apps.iter().map(|a| a.name.as_str()),
            config
                .targets
                .iter()
                .map(|t| (t.name.as_str(), t.logins.clone())),
        )
    }
}

/// One warning; `line` is `None` for the policy as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWarning {
    pub line: Option<usize>,
    pub kind: WarningKind,
    pub message: String,
}

/// What kind of problem a warning names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// The rule can never match a request.
    NeverMatches,
    /// An allow that reaches every app, every target or every administrative object.
    ReachesEverything,
    /// No allow rule at all: every request is denied.
    Empty,
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The warnings of a loaded policy, in line order (one pass over the rules).
pub fn lint(index: &PolicyIndex, scope: &PolicyScope) -> Vec<PolicyWarning> {
    let mut out = Vec::new();
    for rule in index.rules() {
        lint_rule(rule, scope, &mut out);
    }
    if !index.rules().iter().any(|r| r.effect == Effect::Allow) {
        out.push(PolicyWarning {
            line: None,
            kind: WarningKind::Empty,
            message: "the policy has no allow rule: every request and SSH session is denied".into(),
        });
    }
    out
}

fn lint_rule(rule: &Rule, scope: &PolicyScope, out: &mut Vec<PolicyWarning>) {
    let mut warn = |kind, message: String| {
        out.push(PolicyWarning {
            line: Some(rule.line),
            kind,
            message,
        })
    };
    let never = WarningKind::NeverMatches;
    let allow = rule.effect == Effect::Allow;
    let (o, wild) = (rule.object.as_str(), rule.wildcard);
    let shown = format!("{o}{}", if wild { "*" } else { "" });
    if let Some(rest) = o.strip_prefix("app:") {
        match rest.split_once('/') {
            Some((name, _)) if !scope.apps.contains(name) => warn(
                never,
                format!("`{shown}` never matches: no app named `{name}` in the config ([[apps]])"),
            ),
            Some(_) => {}
            None if !wild => warn(
                never,
                format!(
                    "`{shown}` never matches: a request's object is `app:NAME/PATH` (write `{o}/*` for the whole app)"
                ),
            ),
            None if rest.is_empty() && allow => warn(
                WarningKind::ReachesEverything,
                format!("`{shown}` allows every app, present and future"),
            ),
            None if rest.is_empty() => {}
            None if !scope.apps.iter().any(|a| a.starts_with(rest)) => warn(
                never,
                format!("`{shown}` never matches: no app name starts with `{rest}`"),
            ),
            None => {}
        }
        if let Actions::OneOf(list) = &rule.actions {
            for a in list
                .iter()
                .filter(|a| a.bytes().any(|b| b.is_ascii_lowercase()))
            {
                warn(
                    never,
                    format!(
                        "action `{a}` never matches a web request: HTTP methods are upper-case (`{}`)",
                        a.to_ascii_uppercase()
                    ),
                );
            }
        }
    } else if let Some(rest) = o.strip_prefix("ssh:") {
        let name_of = |t: &str| format!("no target named `{t}` in the config ([[targets]])");
        match rest.split_once('/') {
            Some((t, login)) => match scope.targets.get(t) {
                None => warn(never, format!("`{shown}` never matches: {}", name_of(t))),
                Some(logins)
                    if !logins
                        .iter()
                        .any(|l| l == login || (wild && l.starts_with(login))) =>
                {
                    warn(
                        never,
                        format!(
                            "`{shown}` never matches: target `{t}` has no login {}`{login}` (its logins: {})",
                            if wild { "starting with " } else { "" },
                            logins.join(", ")
                        ),
                    )
                }
                Some(_) => {}
            },
            None if !wild => warn(
                never,
                format!(
                    "`{shown}` never matches: a session's object is `ssh:TARGET/LOGIN` (write `{o}/*` for every login)"
                ),
            ),
            None if rest.is_empty() && allow => warn(
                WarningKind::ReachesEverything,
                format!("`{shown}` allows every SSH target, present and future"),
            ),
            None if rest.is_empty() => {}
            None if !scope.targets.keys().any(|t| t.starts_with(rest)) => warn(
                never,
                format!("`{shown}` never matches: no target name starts with `{rest}`"),
            ),
            None => {}
        }
        if let Actions::OneOf(list) = &rule.actions {
            for a in list.iter().filter(|a| !SSH_ACTIONS.contains(&a.as_str())) {
                warn(
                    never,
                    format!(
                        "action `{a}` never matches an SSH session (actions: {})",
                        SSH_ACTIONS.join(", ")
                    ),
                );
            }
        }
    } else if let Some(rest) = o.strip_prefix("gatehouse:") {
        let reached = GATEHOUSE_OBJECTS
            .iter()
            .filter(|g| {
                if wild {
                    g.starts_with(rest)
                } else {
                    **g == rest
                }
            })
            .count();
        if reached == 0 {
            warn(
                never,
                format!(
                    "`{shown}` never matches: Gatehouse's objects are {}",
                    GATEHOUSE_OBJECTS
                        .iter()
                        .map(|g| format!("`gatehouse:{g}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        } else if allow && wild && rest.is_empty() {
            warn(
                WarningKind::ReachesEverything,
                format!(
                    "`{shown}` allows every administrative object (reviewing recordings, ending sessions) and any added later"
                ),
            );
        }
    } else if wild && NAMESPACES.iter().any(|(ns, _)| ns.starts_with(o)) {
        if allow {
            let covered: Vec<&str> = NAMESPACES
                .iter()
                .filter(|(ns, _)| ns.starts_with(o))
                .map(|(_, what)| *what)
                .collect();
            let all = if covered.len() == NAMESPACES.len() {
                "everything: "
            } else {
                ""
            };
            warn(
                WarningKind::ReachesEverything,
                format!("`{shown}` allows {all}{}", covered.join(", ")),
            );
        }
    } else {
        warn(
            never,
            format!(
                "`{shown}` never matches: an object starts with `app:`, `ssh:` or `gatehouse:`"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::parse;

    fn scope() -> PolicyScope {
        PolicyScope::new(
            ["wiki", "grafana"],
            [("db-prod-1", vec!["deploy".to_string(), "root".to_string()])],
        )
    }

    fn warnings(text: &str) -> Vec<PolicyWarning> {
        let parsed = parse(text, Path::new("policy.csv")).unwrap_or_default();
        lint(&PolicyIndex::build(parsed), &scope())
    }

    #[test]
    fn each_line_warns_or_not_as_its_table_says() {
        use WarningKind::{NeverMatches as Never, ReachesEverything as All};
        // (line, the warning it gets and a fragment of its message, or None)
        let table: &[(&str, Option<(WarningKind, &str)>)] = &[
            ("p, group:staff, app:wiki/*, GET|HEAD, allow", None),
            ("p, group:staff, app:wiki/admin/*, *, deny", None),
            ("p, group:staff, app:wiki/page, POST, allow", None),
            (
                "p, group:staff, app:wikki/*, GET, allow",
                Some((Never, "no app named `wikki`")),
            ),
            (
                "p, group:staff, app:wikki/admin/*, *, deny",
                Some((Never, "no app named `wikki`")),
            ),
            (
                "p, group:staff, app:wiki, GET, allow",
                Some((Never, "app:NAME/PATH")),
            ),
            ("p, group:staff, app:wi*, GET, allow", None),
            (
                "p, group:staff, app:zz*, GET, allow",
                Some((Never, "no app name starts with `zz`")),
            ),
            (
                "p, group:staff, app:*, GET, allow",
                Some((All, "every app")),
            ),
            ("p, bob, app:*, *, deny", None),
            (
                "p, group:staff, app:wiki/*, get, allow",
                Some((Never, "upper-case (`GET`)")),
            ),
            (
                "p, group:staff, app:wiki/*, GET|post, allow",
                Some((Never, "`post`")),
            ),
            ("p, group:staff, app:wiki/*, *, allow", None),
            ("p, group:sre, ssh:db-prod-1/deploy, ssh|sftp, allow", None),
            ("p, group:sre, ssh:db-prod-1/*, ssh, allow", None),
            ("p, group:sre, ssh:db-prod-1/de*, ssh, allow", None),
            (
                "p, group:sre, ssh:db-prod-2/deploy, ssh, allow",
                Some((Never, "no target named `db-prod-2`")),
            ),
            (
                "p, group:sre, ssh:db-prod-1/admin, ssh, allow",
                Some((Never, "no login `admin`")),
            ),
            (
                "p, group:sre, ssh:db-prod-1/x*, ssh, allow",
                Some((Never, "no login starting with `x`")),
            ),
            (
                "p, group:sre, ssh:db-prod-1, ssh, allow",
                Some((Never, "ssh:TARGET/LOGIN")),
            ),
            ("p, group:sre, ssh:db*, ssh, allow", None),
            (
                "p, group:sre, ssh:web*, ssh, allow",
                Some((Never, "no target name starts with `web`")),
            ),
            (
                "p, group:sre, ssh:*, ssh, allow",
                Some((All, "every SSH target")),
            ),
            (
                "p, group:sre, ssh:db-prod-1/deploy, SSH, allow",
                Some((Never, "action `SSH`")),
            ),
            (
                "p, group:sre, ssh:db-prod-1/deploy, exec, allow",
                Some((Never, "action `exec`")),
            ),
            ("p, group:auditor, gatehouse:review, *, allow", None),
            ("p, group:auditor, gatehouse:terminate, *, allow", None),
            (
                "p, group:auditor, gatehouse:reviews, *, allow",
                Some((Never, "gatehouse:review")),
            ),
            (
                "p, group:auditor, gatehouse:*, *, allow",
                Some((All, "every administrative object")),
            ),
            ("p, group:auditor, gatehouse:r*, *, allow", None),
            (
                "p, group:admin, *, *, allow",
                Some((All, "allows everything: every app, every SSH")),
            ),
            (
                "p, group:admin, a*, *, allow",
                Some((All, "`a*` allows every app")),
            ),
            (
                "p, group:admin, g*, *, allow",
                Some((All, "allows every administrative object")),
            ),
            ("p, mallory, *, *, deny", None),
            (
                "p, group:staff, wiki/*, GET, allow",
                Some((Never, "`app:`, `ssh:` or `gatehouse:`")),
            ),
            (
                "p, group:staff, /wiki/*, GET, allow",
                Some((Never, "starts with `app:`")),
            ),
            (
                "p, group:staff, App:wiki/*, GET, allow",
                Some((Never, "starts with `app:`")),
            ),
        ];
        for (line, want) in table {
            let text = format!("p, x, app:wiki/*, GET, allow\n{line}\n");
            let got: Vec<_> = warnings(&text);
            assert!(got.iter().all(|w| w.line == Some(2)), "{line}: {got:?}");
            match want {
                None => assert!(got.is_empty(), "{line}: unexpected {got:?}"),
                Some((kind, fragment)) => {
                    assert_eq!(got.len(), 1, "{line}: {got:?}");
                    assert_eq!(got[0].kind, *kind, "{line}: {got:?}");
                    assert!(got[0].message.contains(fragment), "{line}: {}", got[0]);
                }
            }
        }
    }

    #[test]
    fn an_empty_policy_or_one_without_allow_is_named() {
        for text in [
            "",
            "# only comments\n",
            "p, bob, app:wiki/*, *, deny\ng, bob, group:x\n",
        ] {
            let got = warnings(text);
            assert!(
                got.iter()
                    .any(|w| w.kind == WarningKind::Empty && w.line.is_none()),
                "{text:?}: {got:?}"
            );
        }
        assert!(warnings("p, a, app:wiki/*, GET, allow\n").is_empty());
    }

    #[test]
    fn warnings_name_their_line() {
        let got = warnings("# c\n\np, a, app:nope/*, GET, allow\n");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].to_string(), format!("line 3: {}", got[0].message));
    }
}
