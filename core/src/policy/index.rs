//! The decision index: one byte trie over object patterns; each node holds the rules whose
//! pattern ends there, sorted by subject id. A decision walks the object once and looks up
//! only the request's subjects: cost grows with the object's length, not the rule count.

use std::collections::{HashMap, HashSet, VecDeque};

use super::parse::{Effect, Parsed, Rule};

/// casbin's default role manager follows at most this many `g` links.
const MAX_ROLE_DEPTH: usize = 10;

#[derive(Debug, Default)]
struct Node {
    /// (byte, child node), sorted by byte.
    children: Vec<(u8, u32)>,
    /// Rules `prefix*` ending here: (subject id, rule id), sorted.
    wild: Vec<(u32, u32)>,
    /// Rules matching exactly this object: (subject id, rule id), sorted.
    exact: Vec<(u32, u32)>,
}

/// An immutable, indexed policy.
#[derive(Debug, Default)]
pub struct PolicyIndex {
    rules: Vec<Rule>,
    subjects: HashMap<String, u32>,
    /// Subject id -> ids it inherits through `g` links (itself included), sorted.
    closure: Vec<Vec<u32>>,
    nodes: Vec<Node>,
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The deciding line as written: the winning deny, else the first matching allow;
    /// `None` when nothing matched (default deny).
    pub rule: Option<String>,
    /// Its line number in the policy file.
    pub line: Option<usize>,
}

impl PolicyIndex {
    pub fn build(parsed: Parsed) -> PolicyIndex {
        let mut idx = PolicyIndex {
            nodes: vec![Node::default()],
            ..PolicyIndex::default()
        };
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
            let a = intern(m, &mut idx.subjects);
            let b = intern(r, &mut idx.subjects);
            edges.entry(a).or_default().push(b);
        }
        let mut entries: Vec<(u32, u32, u32, bool)> = Vec::new(); // (node, subj, rule, wild)
        for (rid, rule) in parsed.rules.iter().enumerate() {
            let s = intern(&rule.subject, &mut idx.subjects);
            let mut node = 0u32;
            for &b in rule.object.as_bytes() {
                node = idx.child_or_insert(node, b);
            }
            entries.push((node, s, rid as u32, rule.wildcard));
        }
        for (node, s, r, wild) in entries {
            if let Some(n) = idx.nodes.get_mut(node as usize) {
                if wild {
                    n.wild.push((s, r))
                } else {
                    n.exact.push((s, r))
                }
            }
        }
        for n in &mut idx.nodes {
            n.wild.sort_unstable();
            n.exact.sort_unstable();
        }
        let count = idx.subjects.len();
        idx.closure = (0..count as u32)
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
        idx.rules = parsed.rules;
        idx
    }

    fn child_or_insert(&mut self, node: u32, b: u8) -> u32 {
        let next_id = self.nodes.len() as u32;
        let Some(n) = self.nodes.get_mut(node as usize) else {
            return 0;
        };
        match n.children.binary_search_by_key(&b, |c| c.0) {
            Ok(i) => n.children.get(i).map_or(0, |c| c.1),
            Err(i) => {
                n.children.insert(i, (b, next_id));
                self.nodes.push(Node::default());
                next_id
            }
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
        let mut ids: Vec<u32> = Vec::new();
        self.extend_ids(&mut ids, user);
        let mut key = String::with_capacity(64);
        for g in groups {
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
            let mut node = self.nodes.first();
            let bytes = object.as_bytes();
            let mut i = 0;
            while let Some(n) = node {
                consider(&n.wild);
                let Some(&b) = bytes.get(i) else {
                    consider(&n.exact);
                    break;
                };
                node = n
                    .children
                    .binary_search_by_key(&b, |c| c.0)
                    .ok()
                    .and_then(|k| n.children.get(k))
                    .and_then(|c| self.nodes.get(c.1 as usize));
                i += 1;
            }
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
        }
    }

    /// The `p` rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}
