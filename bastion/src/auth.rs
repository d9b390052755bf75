//! The SSH user name and where it leads: `USER:LOGIN@TARGET` (or `USER:TARGET` for a
//! one-login target), the destination it resolves to, and the policy actions of the bastion.
//!
//! Threat: a target name crafted to confuse parsing, a user name that is not one the
//! identity code would accept, or a response that reveals whether a target exists.
//! Mitigation: the name is parsed strictly (the user part by core's own user-name rule);
//! unknown targets resolve to nothing and are refused exactly like a policy denial.

use gatehouse_core::config::TargetConfig;
use gatehouse_core::identity::validate_user_name;

/// What a user wants to do on `ssh:<target>/<login>`: the policy's action names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshAction {
    /// Shell or exec.
    Ssh,
    /// The SFTP subsystem or SCP.
    Sftp,
    /// A direct-tcpip (local, `-L`) forward.
    PortForward,
}

impl SshAction {
    /// The policy's action string.
    pub fn as_str(self) -> &'static str {
        match self {
            SshAction::Ssh => "ssh",
            SshAction::Sftp => "sftp",
            SshAction::PortForward => "port-forward",
        }
    }
}

/// Longest SSH user name accepted (user, login and target together).
pub const MAX_USER_NAME: usize = 200;

/// The parts of a bastion SSH user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub user: String,
    /// `None` when the name was `USER:TARGET`; resolved against the target's single login.
    pub login: Option<String>,
    pub target: String,
}

impl Selection {
    /// The policy object this name asks for (`ssh:<target>/<login>`), as audited for a target
    /// that does not resolve.
    pub fn object(&self) -> String {
        format!(
            "ssh:{}/{}",
            self.target,
            self.login.as_deref().unwrap_or("")
        )
    }
}

fn is_login(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_target(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// Parses `USER:LOGIN@TARGET` or `USER:TARGET`; anything else is `None`.
pub fn parse_user_name(name: &str) -> Option<Selection> {
    if name.len() > MAX_USER_NAME {
        return None;
    }
    let (user, rest) = name.split_once(':')?;
    if validate_user_name(user).is_err() {
        return None;
    }
    let (login, target) = match rest.split_once('@') {
        Some((login, target)) => {
            if !is_login(login) {
                return None;
            }
            (Some(login.to_string()), target)
        }
        None => (None, rest),
    };
    if !is_target(target) {
        return None;
    }
    Some(Selection {
        user: user.to_string(),
        login,
        target: target.to_string(),
    })
}

/// The resolved destination of an authenticated connection.
#[derive(Debug, Clone)]
pub struct Destination {
    pub login: String,
    pub target: TargetConfig,
}

impl Destination {
    /// The policy object `ssh:<target>/<login>`.
    pub fn object(&self) -> String {
        format!("ssh:{}/{}", self.target.name, self.login)
    }
}

/// Resolves a selection against the configured targets. `None` for an unknown target, a login
/// the target does not list, or `USER:TARGET` on a target with several logins; callers must
/// answer `None` exactly as they answer a policy denial.
pub fn resolve(sel: &Selection, targets: &[TargetConfig]) -> Option<Destination> {
    let target = targets.iter().find(|t| t.name == sel.target)?;
    let login = match &sel.login {
        Some(l) => target.logins.iter().find(|x| *x == l)?.clone(),
        None => match target.logins.as_slice() {
            [only] => only.clone(),
            _ => return None,
        },
    };
    Some(Destination {
        login,
        target: target.clone(),
    })
}

/// Whether a selection needs a TOTP code: unknown targets do (so they look like known ones).
pub fn requires_totp(sel: &Selection, targets: &[TargetConfig]) -> bool {
    targets
        .iter()
        .find(|t| t.name == sel.target)
        .is_none_or(|t| t.require_totp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(u: &str, l: Option<&str>, t: &str) -> Option<Selection> {
        Some(Selection {
            user: u.into(),
            login: l.map(Into::into),
            target: t.into(),
        })
    }

    #[test]
    fn parses_user_names_strictly() {
        let cases: &[(&str, Option<Selection>)] = &[
            (
                "alice:deploy@db-prod-1",
                sel("alice", Some("deploy"), "db-prod-1"),
            ),
            ("alice:db-prod-1", sel("alice", None, "db-prod-1")),
            ("alice", None),
            ("alice:", None),
            (":deploy@db", None),
            ("alice:deploy@", None),
            ("alice:@db", None),
            ("alice:deploy@db@x", None),
            ("alice:deploy:x@db", None),
            ("alice:deploy@DB", None),
            ("al ice:deploy@db", None),
            ("Alice:deploy@db", None),
            ("1alice:deploy@db", None),
            ("-alice:deploy@db", None),
            ("alice:-oProxy@db", None),
            ("alice:deploy@db/x", None),
            ("alice:deploy@db\0", None),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_user_name(input), want, "{input}");
        }
        assert_eq!(parse_user_name(&format!("a:{}", "b".repeat(300))), None);
    }

    fn target(name: &str, logins: &[&str]) -> TargetConfig {
        TargetConfig {
            name: name.into(),
            address: "127.0.0.1:22".into(),
            host_key: String::new(),
            logins: logins.iter().map(|s| s.to_string()).collect(),
            credential: "k".into(),
            require_totp: true,
        }
    }

    #[test]
    fn resolves_against_targets() {
        let targets = vec![target("one", &["deploy"]), target("two", &["a", "b"])];
        let r = |s: &str| {
            resolve(&parse_user_name(s).unwrap(), &targets).map(|d| (d.login, d.target.name))
        };
        assert_eq!(r("u:one"), Some(("deploy".into(), "one".into())));
        assert_eq!(r("u:deploy@one"), Some(("deploy".into(), "one".into())));
        assert_eq!(r("u:root@one"), None);
        assert_eq!(r("u:two"), None);
        assert_eq!(r("u:b@two"), Some(("b".into(), "two".into())));
        assert_eq!(r("u:b@three"), None);
        assert!(requires_totp(
            &parse_user_name("u:x@unknown").unwrap(),
            &targets
        ));
    }
}
