//! A path-compressed trie over the policy's object patterns, built from the sorted patterns
//! breadth first into one array (a node's children are contiguous, sorted by first byte).
//!
//! Why this shape: a trie with a node per byte and a vector per node cost about 1 KiB per
//! rule at 100,000 lines (a million nodes; most of a load's time went to page faults). Here a
//! node exists only where patterns branch or end (at most two per distinct pattern), holds its
//! label as a range of one pattern's bytes, and keeps its rules as ranges of two shared arrays.
//! Building sorts the patterns once and touches each byte of them a bounded number of times.

use super::super::parse::Rule;

/// One node; its label is `object[start..end]` of rule `key_rule`.
#[derive(Debug, Clone, Copy)]
struct Node {
    key_rule: u32,
    start: u32,
    end: u32,
    first_child: u32,
    children: u32,
    /// Rules `label*` (ending here): a range of [`Trie::wild`].
    wild: (u32, u32),
    /// Rules matching exactly the label: a range of [`Trie::exact`].
    exact: (u32, u32),
    /// The label's first byte (children are found by it without reading the pattern).
    first: u8,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Trie {
    nodes: Vec<Node>,
    /// (subject id, rule id), sorted within each node's range.
    wild: Vec<(u32, u32)>,
    exact: Vec<(u32, u32)>,
}

/// A distinct pattern: the first rule naming it and its rules' ranges.
struct Key {
    rule: u32,
    wild: (u32, u32),
    exact: (u32, u32),
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Trie {
    /// `subject[i]` is rule `i`'s subject id.
    pub(super) fn build(rules: &[Rule], subject: &[u32]) -> Trie {
        let object = |r: u32| {
            rules
                .get(r as usize)
                .map_or(&[][..], |r| r.object.as_bytes())
        };
        let mut order: Vec<u32> = (0..len_u32(rules.len())).collect();
        order.sort_unstable_by(|a, b| object(*a).cmp(object(*b)).then(a.cmp(b)));
        let mut trie = Trie::default();
        let mut keys: Vec<Key> = Vec::new();
        for group in order.chunk_by(|a, b| object(*a) == object(*b)) {
            let (w0, e0) = (len_u32(trie.wild.len()), len_u32(trie.exact.len()));
            for &r in group {
                let s = subject.get(r as usize).copied().unwrap_or(u32::MAX);
                if rules.get(r as usize).is_some_and(|r| r.wildcard) {
                    trie.wild.push((s, r));
                } else {
                    trie.exact.push((s, r));
                }
            }
            if let Some(w) = trie.wild.get_mut(w0 as usize..) {
                w.sort_unstable();
            }
            if let Some(e) = trie.exact.get_mut(e0 as usize..) {
                e.sort_unstable();
            }
            keys.push(Key {
                rule: group.first().copied().unwrap_or(0),
                wild: (w0, len_u32(trie.wild.len())),
                exact: (e0, len_u32(trie.exact.len())),
            });
        }
        let key = |k: usize| keys.get(k).map_or(&[][..], |k| object(k.rule));
        // Breadth first: (first key, end key, depth). A node's children are queued together,
        // so they get consecutive ids.
        let mut queue = std::collections::VecDeque::new();
        if !keys.is_empty() {
            queue.push_back((0usize, keys.len(), 0usize));
        }
        while let Some((lo, hi, depth)) = queue.pop_front() {
            let (first, last) = (key(lo), key(hi - 1));
            // Sorted: the range's common prefix is its first and last keys' (and a key that
            // ends inside it would be the first, so it ends exactly there).
            let end = depth
                + first
                    .get(depth..)
                    .unwrap_or_default()
                    .iter()
                    .zip(last.get(depth..).unwrap_or_default())
                    .take_while(|(a, b)| a == b)
                    .count();
            let mut node = Node {
                key_rule: keys.get(lo).map_or(0, |k| k.rule),
                start: len_u32(depth),
                end: len_u32(end),
                first_child: 0,
                children: 0,
                wild: (0, 0),
                exact: (0, 0),
                first: first.get(depth).copied().unwrap_or(0),
            };
            let mut rest = lo;
            if first.len() == end {
                if let Some(k) = keys.get(lo) {
                    (node.wild, node.exact) = (k.wild, k.exact);
                }
                rest += 1;
            }
            node.first_child = len_u32(trie.nodes.len() + 1 + queue.len());
            while rest < hi {
                let b = key(rest).get(end);
                let mut next = rest + 1;
                while next < hi && key(next).get(end) == b {
                    next += 1;
                }
                queue.push_back((rest, next, end));
                node.children += 1;
                rest = next;
            }
            trie.nodes.push(node);
        }
        trie
    }

    /// Calls `visit` with the rule lists (sorted (subject id, rule id)) of every pattern that
    /// matches `object`: each `prefix*` on its path, and the exact pattern equal to it.
    pub(super) fn walk<'a>(
        &'a self,
        rules: &[Rule],
        object: &[u8],
        mut visit: impl FnMut(&'a [(u32, u32)]),
    ) {
        let mut node = self.nodes.first();
        while let Some(n) = node {
            let label = rules
                .get(n.key_rule as usize)
                .and_then(|r| r.object.as_bytes().get(n.start as usize..n.end as usize));
            let here = object.get(n.start as usize..n.end as usize);
            if label.is_none() || label != here {
                return;
            }
            visit(
                self.wild
                    .get(n.wild.0 as usize..n.wild.1 as usize)
                    .unwrap_or_default(),
            );
            let Some(&b) = object.get(n.end as usize) else {
                visit(
                    self.exact
                        .get(n.exact.0 as usize..n.exact.1 as usize)
                        .unwrap_or_default(),
                );
                return;
            };
            let kids = self
                .nodes
                .get(n.first_child as usize..(n.first_child + n.children) as usize)
                .unwrap_or_default();
            node = kids
                .binary_search_by_key(&b, |c| c.first)
                .ok()
                .and_then(|i| kids.get(i));
        }
    }

    /// Nodes in the trie (for tests of its size).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }
}
