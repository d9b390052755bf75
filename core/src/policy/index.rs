//! The decision index: a path-compressed trie over object patterns ([`trie`]); each node
//! holds the rules whose pattern ends there, sorted by subject id. A decision walks the object
//! once and looks up only the request's subjects: cost grows with the object's length, not the
//! rule count. Building it is linear in the policy's size (plus one sort of the patterns).

mod trie;

use std::collections::{HashMap, HashSet, VecDeque};

use super::parse::{Effect, Parsed, Rule};
use trie::Trie;

/// casbin's default role manager follows at most this many `g` links.
const MAX_ROLE_DEPTH: usize = 10;

/// An immutable, indexed policy.
#[derive(Debug, Default)]
pub struct PolicyIndex {
    rules: Vec<Rule>,
    subjects: HashMap<String, u32>,
    /// Subject id -> ids it inherits through `g` links (itself included), sorted.
    closure: Vec<Vec<u32>>,
    trie: Trie,
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The deciding line as written: the winning deny, else the first matching allow;
    /// `None` when nothing matched (default deny).
    pub rule: Option<String>,
    /// Its line number in the policy file (`None` for a grant's own line).
    pub line: Option<usize>,
    /// The just-in-time grant without which this would not be allowed (see
    /// [`super::grants`]); `None` when the policy file alone decided.
    pub grant: Option<std::sync::Arc<crate::store::Grant>>,
}

impl PolicyIndex {
    pub fn build(parsed: Parsed) -> PolicyIndex {
        let mut subjects: HashMap<String, u32> = HashMap::new();
        let intern = |s: &str, subjects: &mut HashMap<String, u32>| -> u32 {
            if let Some(&id) = subjects.get(s) {
                return id;
            }
            let n = subjects.len() as u32;
            subjects.insert(s.to_string(), n);
            n
        };
        let mut edges: HashMap<u32, Vec<u32>> = HashMap::new();
        for (m, r) in &parsed.links {
            let a = intern(m, &mut subjects);
            let b = intern(r, &mut subjects);
            edges.entry(a).or_default().push(b);
        }
        let subject: Vec<u32> = parsed
            .rules
            .iter()
            .map(|rule| intern(&rule.subject, &mut subjects))
            .collect();
        let trie = Trie::build(&parsed.rules, &subject);
        let count = subjects.len();
        let closure = (0..count as u32)
            .map(|start| {
                if !edges.contains_key(&start) {
                    // Most subjects (users in no group, groups in no other) link nowhere.
                    return vec![start];
                }
                let mut seen = HashSet::from([start]);
                let mut queue = VecDeque::from([(start, 0usize)]);
                while let Some((s, depth)) = queue.pop_front() {
                    if depth >= MAX_ROLE_DEPTH {
                        continue;
                    }
                    for &next in edges.get(&s).map(Vec::as_slice).unwrap_or(&[]) {
                        if seen.insert(next) {
                            queue.push_back((next, depth + 1));
                        }
                    }
                }
                let mut v: Vec<u32> = seen.into_iter().collect();
                v.sort_unstable();
                v
            })
            .collect();
        PolicyIndex {
            rules: parsed.rules,
            subjects,
            closure,
            trie,
        }
    }

    /// Number of `p` rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds the ids `subject` reaches (itself and its roles) to `ids`.
    fn extend_ids(&self, ids: &mut Vec<u32>, subject: &str) {
        if let Some(id) = self.subjects.get(subject) {
            ids.extend(
                self.closure
                    .get(*id as usize)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
            );
        }
    }

    /// Subject ids of a request: each known subject and what it inherits.
    fn subject_ids<'a>(&self, subjects: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::new();
        for s in subjects {
            self.extend_ids(&mut ids, s);
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// [`decide`](PolicyIndex::decide) for a user and its groups (plain names, looked up as
    /// `group:<name>`), without building a subject string per group.
    pub fn decide_identity(
        &self,
        user: &str,
        groups: &[String],
        object: &str,
        action: &str,
    ) -> Decision {
        self.decide_identity_with(user, groups, &[], object, action)
    }

    /// [`decide_identity`](PolicyIndex::decide_identity) with `extra` groups besides the
    /// user's own (those of its live group grants).
    pub(crate) fn decide_identity_with(
        &self,
        user: &str,
        groups: &[String],
        extra: &[&str],
        object: &str,
        action: &str,
    ) -> Decision {
        let mut ids: Vec<u32> = Vec::new();
        self.extend_ids(&mut ids, user);
        let mut key = String::with_capacity(64);
        for g in groups
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            key.clear();
            key.push_str(crate::identity::GROUP_PREFIX);
            key.push_str(g);
            self.extend_ids(&mut ids, &key);
        }
        ids.sort_unstable();
        ids.dedup();
        self.decide_ids(&ids, object, action)
    }

    /// Decides for a set of subjects (user name and `group:NAME` entries).
    pub fn decide<'a>(
        &self,
        subjects: impl IntoIterator<Item = &'a str>,
        object: &str,
        action: &str,
    ) -> Decision {
        let ids = self.subject_ids(subjects);
        self.decide_ids(&ids, object, action)
    }

    fn decide_ids(&self, ids: &[u32], object: &str, action: &str) -> Decision {
        let mut best_allow: Option<u32> = None;
        let mut best_deny: Option<u32> = None;
        if !ids.is_empty() {
            let mut consider = |list: &[(u32, u32)]| {
                if list.is_empty() {
                    return;
                }
                for &s in ids {
                    let start = list.partition_point(|e| e.0 < s);
                    for &(es, rid) in list.get(start..).unwrap_or(&[]) {
                        if es != s {
                            break;
                        }
                        let Some(rule) = self.rules.get(rid as usize) else {
                            continue;
                        };
                        if !rule.actions.matches(action) {
                            continue;
                        }
                        let slot = if rule.effect == Effect::Deny {
                            &mut best_deny
                        } else {
                            &mut best_allow
                        };
                        if slot.is_none_or(|b| rid < b) {
                            *slot = Some(rid);
                        }
                    }
                }
            };
            self.trie
                .walk(&self.rules, object.as_bytes(), &mut consider);
        }
        let (allowed, rid) = match (best_deny, best_allow) {
            (Some(d), _) => (false, Some(d)),
            (None, Some(a)) => (true, Some(a)),
            (None, None) => (false, None),
        };
        let rule = rid.and_then(|r| self.rules.get(r as usize));
        Decision {
            allowed,
            rule: rule.map(|r| r.text.clone()),
            line: rule.map(|r| r.line),
            grant: None,
        }
    }

    /// Subject names by id (for reviews, with [`PolicyIndex::reached_ids`]).
    pub fn subject_names(&self) -> Vec<&str> {
        let mut names = vec![""; self.subjects.len()];
        for (name, &id) in &self.subjects {
            if let Some(slot) = names.get_mut(id as usize) {
                *slot = name;
            }
        }
        names
    }

    /// The subject ids a user reaches: itself, its groups (plain names) and what they
    /// inherit through `g` lines; sorted.
    pub fn reached_ids(&self, user: &str, groups: &[String]) -> Vec<u32> {
        let mut ids = Vec::new();
        self.extend_ids(&mut ids, user);
        for g in groups {
            self.extend_ids(&mut ids, &format!("{}{g}", crate::identity::GROUP_PREFIX));
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Nodes of the pattern trie.
    #[cfg(test)]
    pub(crate) fn trie_nodes(&self) -> usize {
        self.trie.len()
    }

    /// The `p` rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}
