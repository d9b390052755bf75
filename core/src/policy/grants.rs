//! Just-in-time grants in decisions: this instance's copy of the live grants, indexed by
//! user, and how a decision takes them into account.
//!
//! Semantics (the same code decides for both doors, `policy check` and the review):
//! - a group grant (`group:NAME`) makes the user a member of that group for its lifetime:
//!   the group's allow *and* deny lines apply;
//! - an object grant (`app:wiki/*`, `ssh:db-prod-1/deploy`) is an allow line of its own for
//!   the user (pattern and actions as in the policy file);
//! - an explicit deny of the policy always wins over a grant; a grant is used only when the
//!   policy alone would not allow, and the decision then names it ([`Decision::grant`]);
//! - an expired grant is ignored from the millisecond it expires, whether or not this
//!   instance has refreshed its copy yet.
//!
//! Hot path: a user without grants costs one hash lookup (none when no grant exists at
//! all); the copy is swapped as a whole when the store says the grants changed.

use std::collections::HashMap;
use std::sync::Arc;

use super::index::{Decision, PolicyIndex};
use super::parse::Actions;
use crate::identity::GROUP_PREFIX;
use crate::store::Grant;

/// What a grant gives, parsed once when the copy is built.
#[derive(Debug)]
enum Gives {
    /// Membership of a group (plain name).
    Group(String),
    /// An allow line of its own: the object without its trailing `*`.
    Object {
        prefix: String,
        wildcard: bool,
        actions: Actions,
    },
}

#[derive(Debug)]
struct Live {
    grant: Arc<Grant>,
    gives: Gives,
}

/// This instance's copy of the live grants.
#[derive(Debug, Default)]
pub struct GrantSet {
    by_user: HashMap<String, Vec<Live>>,
    len: usize,
}

impl GrantSet {
    /// Indexes `grants` by user. A record that does not parse as a grant (not written by
    /// this version) is left out: it gives nothing.
    pub fn build(grants: Vec<Grant>) -> GrantSet {
        let mut set = GrantSet::default();
        for g in grants {
            let Some(gives) = parse(&g) else {
                tracing::warn!(grant = %g.id, object = %g.object, "grant in the store does not parse; ignored");
                continue;
            };
            set.by_user.entry(g.user.clone()).or_default().push(Live {
                grant: Arc::new(g),
                gives,
            });
            set.len += 1;
        }
        set
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every grant of the copy (expired ones included until the next refresh).
    pub fn all(&self) -> impl Iterator<Item = &Arc<Grant>> {
        self.by_user.values().flatten().map(|l| &l.grant)
    }

    /// The copy without grant `id`.
    pub(super) fn without(&self, id: &str) -> Option<GrantSet> {
        if !self.all().any(|g| g.id == id) {
            return None;
        }
        Some(GrantSet::build(
            self.all()
                .filter(|g| g.id != id)
                .map(|g| (**g).clone())
                .collect(),
        ))
    }

    /// The earliest expiry among the copy's grants (unix ms), if any.
    pub fn next_expiry(&self) -> Option<u64> {
        self.all().map(|g| g.expires_ms).min()
    }

    /// Whether `user` has any grant in the copy (live or not).
    pub(super) fn has(&self, user: &str) -> bool {
        !self.is_empty() && self.by_user.contains_key(user)
    }

    /// Decides with the policy and `user`'s grants live at `now_ms` (see the module docs).
    /// The policy alone is decided first: a deny there ends it, as does an allow when no
    /// granted group could add a deny.
    pub(super) fn decide(
        &self,
        index: &PolicyIndex,
        now_ms: u64,
        user: &str,
        groups: &[String],
        object: &str,
        action: &str,
    ) -> Decision {
        let base = index.decide_identity(user, groups, object, action);
        if !base.allowed && base.rule.is_some() {
            // An explicit deny of the policy wins over any grant.
            return base;
        }
        let mine = self.by_user.get(user).map_or(&[][..], Vec::as_slice);
        let joined: Vec<(&Live, &str)> = mine
            .iter()
            .filter(|l| l.grant.is_live(now_ms))
            .filter_map(|l| match &l.gives {
                Gives::Group(name) => Some((l, name.as_str())),
                Gives::Object { .. } => None,
            })
            .collect();
        if !joined.is_empty() {
            let names: Vec<&str> = joined.iter().map(|(_, n)| *n).collect();
            let d = index.decide_identity_with(user, groups, &names, object, action);
            if !d.allowed && d.rule.is_some() {
                // A granted group's deny lines apply too.
                return d;
            }
            if base.allowed {
                return base;
            }
            if d.allowed {
                // Allowed only through a granted group: name the grant that does it.
                if let [(live, _)] = joined.as_slice() {
                    return Decision {
                        grant: Some(live.grant.clone()),
                        ..d
                    };
                }
                for (live, name) in &joined {
                    let one = index.decide_identity_with(user, groups, &[name], object, action);
                    if one.allowed {
                        return Decision {
                            grant: Some(live.grant.clone()),
                            ..one
                        };
                    }
                }
                return d;
            }
        } else if base.allowed {
            return base;
        }
        // Nothing in the policy allows: an object grant may. Of several, the one that lasts
        // longest.
        let best = mine
            .iter()
            .filter(|l| l.grant.is_live(now_ms) && matches_object(&l.gives, object, action))
            .max_by_key(|l| l.grant.expires_ms);
        match best {
            Some(l) => Decision {
                allowed: true,
                rule: Some(rule_text(&l.grant)),
                line: None,
                grant: Some(l.grant.clone()),
            },
            None => base,
        }
    }
}

/// How a grant reads as the deciding rule: `grant g-...: USER, OBJECT, ACTION`.
pub fn rule_text(g: &Grant) -> String {
    format!("grant {}: {}, {}, {}", g.id, g.user, g.object, g.action)
}

fn matches_object(gives: &Gives, object: &str, action: &str) -> bool {
    match gives {
        Gives::Group(_) => false,
        Gives::Object {
            prefix,
            wildcard,
            actions,
        } => {
            actions.matches(action)
                && if *wildcard {
                    object.starts_with(prefix.as_str())
                } else {
                    object == prefix
                }
        }
    }
}

/// What a stored grant gives; `None` when it is not well-formed.
fn parse(g: &Grant) -> Option<Gives> {
    if let Some(name) = g.object.strip_prefix(GROUP_PREFIX) {
        crate::identity::validate_group_name(name).ok()?;
        return Some(Gives::Group(name.to_string()));
    }
    crate::grant::check_object(&g.object).ok()?;
    let actions = crate::grant::parse_action(&g.action).ok()?;
    let wildcard = g.object.ends_with('*');
    Some(Gives::Object {
        prefix: g.object.strip_suffix('*').unwrap_or(&g.object).to_string(),
        wildcard,
        actions,
    })
}

#[cfg(test)]
mod tests;
