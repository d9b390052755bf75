//! Loading a policy: read, parse, index, and check that casbin decides like the index — off
//! the async runtime, in time linear in the size of the file.
//!
//! Why casbin sees a bounded policy: its `enforce()` evaluates the matcher for every rule and
//! walks the role graph for each, so probing it with the whole file costs probes × rules ×
//! links (minutes at 100,000 lines, and building its role links grows faster than the file).
//! What the load-time probe guards against is a `model.conf` that decides differently from
//! the index (which implements the shipped model's semantics): a property of the model, not
//! of the file's size. So casbin is built from two bounded policies, each decided by an index
//! built from the very same lines:
//! - a fixed policy that exercises every part of the semantics (exact and wildcard objects, a
//!   wildcard's empty rest, action alternatives and `*`, two levels of roles, deny wins,
//!   default deny), so a model that differs anywhere is refused whatever the file holds;
//! - a sample of the file itself (at most [`SAMPLE_RULES`] rules spread evenly through it,
//!   with a few `g` members of their subjects), so the file's real names, objects and actions
//!   go through casbin's matcher too.
//!
//! Every probe must agree, or the load is refused. That the index implements those semantics
//! for any policy at all is shown by the differential test against casbin (random policies,
//! thousands of requests) in this module's tests.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::index::PolicyIndex;
use super::parse::{Actions, Parsed, parse};
use super::reference::CasbinReference;
use crate::error::PolicyError;

/// Rules of the file that go through casbin at each load (spread evenly through it).
pub const SAMPLE_RULES: usize = 48;
/// `g` members probed per sampled subject.
const MEMBERS_PER_SUBJECT: usize = 2;
/// An action no policy names: probes that a rule's action list is honoured.
const OTHER_ACTION: &str = "PROBE-NO-SUCH-ACTION";

/// The fixed policy every model is checked with (see the module documentation).
const SEMANTICS: &str = "\
p, alice, app:w/a, GET, allow
p, group:g, app:w/*, GET|HEAD, allow
p, group:g, app:w/s/*, *, deny
p, group:h, ssh:t/l, ssh|sftp, allow
p, group:h, app:x*, POST, deny
p, group:h, app:x/open/*, *, allow
p, carol, gatehouse:review, *, allow
g, bob, group:g
g, group:g, group:h
g, carol, group:h
";

/// Requests beyond each rule's own that the fixed policy is probed with.
const SEMANTICS_EXTRA: &[(&str, &str, &str)] = &[
    ("bob", "app:w/s/x", "GET"),
    ("bob", "app:w", "GET"),
    ("alice", "app:w/a/b", "GET"),
    ("alice", "app:w/ab", "GET"),
    ("bob", "ssh:t/l", "sftp"),
    ("bob", "ssh:t/l", "port-forward"),
    ("bob", "app:xyz", "POST"),
    ("carol", "app:x/open/y", "POST"),
    ("carol", "app:x/open/y", "GET"),
    ("carol", "gatehouse:review/x", "GET"),
    ("dave", "app:w/a", "GET"),
    ("group:h", "app:w/a", "GET"),
];

/// Reads, parses, indexes and casbin-checks the two files on a blocking thread, so that the
/// async runtime's threads keep serving while a large policy loads.
pub async fn load_index(model: &Path, policy: &Path) -> Result<PolicyIndex, PolicyError> {
    let (m, p) = (model.to_path_buf(), policy.to_path_buf());
    tokio::task::spawn_blocking(move || load_index_blocking(&m, &p))
        .await
        .map_err(|_| PolicyError::Interrupted {
            path: policy.to_path_buf(),
        })?
}

/// [`load_index`] on the calling thread (for the CLI, which has nothing else to serve).
pub fn load_index_blocking(model: &Path, policy: &Path) -> Result<PolicyIndex, PolicyError> {
    let text = read(policy)?;
    let parsed = parse(&text, policy)?;
    drop(text);
    let model_text = read(model)?;
    let sample = sample(&parsed);
    probe(&model_text, model, SEMANTICS, SEMANTICS_EXTRA)?;
    probe(&model_text, model, &policy_text(&sample), &[])?;
    Ok(PolicyIndex::build(parsed))
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// At most [`SAMPLE_RULES`] rules spread evenly through the file, and up to
/// [`MEMBERS_PER_SUBJECT`] `g` members of each of their subjects. One pass over each list.
fn sample(parsed: &Parsed) -> Parsed {
    let n = parsed.rules.len();
    let take = n.min(SAMPLE_RULES);
    let rules: Vec<_> = (0..take)
        .filter_map(|i| parsed.rules.get(i * n / take.max(1)).cloned())
        .collect();
    let mut wanted: HashMap<&str, usize> = rules.iter().map(|r| (r.subject.as_str(), 0)).collect();
    let mut links = Vec::new();
    for (member, role) in &parsed.links {
        if let Some(count) = wanted.get_mut(role.as_str())
            && *count < MEMBERS_PER_SUBJECT
        {
            *count += 1;
            links.push((member.clone(), role.clone()));
        }
    }
    Parsed { rules, links }
}

/// The policy text of `parsed` (each rule as written, then its links).
fn policy_text(parsed: &Parsed) -> String {
    let mut s = String::new();
    for r in &parsed.rules {
        s.push_str(&r.text);
        s.push('\n');
    }
    for (m, r) in &parsed.links {
        s.push_str(&format!("g, {m}, {r}\n"));
    }
    s
}

/// Builds casbin (with the configured model) and an index from `text`, and has both decide
/// each rule's own requests (its subject and members, its object and a wildcard's rest, its
/// first action and one it does not name) and `extra`; any difference refuses the model.
fn probe(
    model_text: &str,
    model: &Path,
    text: &str,
    extra: &[(&str, &str, &str)],
) -> Result<(), PolicyError> {
    let parsed = parse(text, Path::new("(probe)"))?;
    let reference = block_on(CasbinReference::from_text(model_text, model, text))?;
    let mut members: HashMap<&str, Vec<&str>> = HashMap::new();
    for (m, r) in &parsed.links {
        members.entry(r.as_str()).or_default().push(m.as_str());
    }
    let mut requests: Vec<(String, String, String)> = extra
        .iter()
        .map(|(s, o, a)| (s.to_string(), o.to_string(), a.to_string()))
        .collect();
    for rule in &parsed.rules {
        let action = match &rule.actions {
            Actions::Any => "GET",
            Actions::OneOf(list) => list.first().map_or("GET", String::as_str),
        };
        let mut objects = vec![rule.object.clone()];
        if rule.wildcard {
            objects.push(format!("{}x/y", rule.object));
        }
        let subjects = std::iter::once(rule.subject.as_str()).chain(
            members
                .get(rule.subject.as_str())
                .into_iter()
                .flatten()
                .copied(),
        );
        for s in subjects {
            for o in &objects {
                for a in [action, OTHER_ACTION] {
                    requests.push((s.to_string(), o.clone(), a.to_string()));
                }
            }
        }
    }
    let index = PolicyIndex::build(parsed);
    for (s, o, a) in &requests {
        let ours = index.decide([s.as_str()], o, a).allowed;
        let theirs = reference.enforce(s, o, a)?;
        if ours != theirs {
            return Err(PolicyError::ModelMismatch {
                path: model.to_path_buf(),
                probe: format!("{s} {o} {a}: casbin {theirs}, index {ours}"),
            });
        }
    }
    Ok(())
}

/// Runs a future to completion on this thread. casbin's loading API is async, but from text
/// it does no I/O: this needs no runtime (and so works on a blocking thread and in the CLI).
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_bounded_and_spread() {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!("p, group:g{i}, app:a/{i}/*, GET, allow\n"));
            for m in 0..5 {
                text.push_str(&format!("g, u{i}-{m}, group:g{i}\n"));
            }
        }
        let parsed = parse(&text, Path::new("x")).unwrap_or_default();
        let s = sample(&parsed);
        assert_eq!(s.rules.len(), SAMPLE_RULES);
        assert_eq!(s.rules.first().map(|r| r.line), Some(1));
        assert!(
            s.rules.last().is_some_and(|r| r.line > 5000),
            "reaches the end"
        );
        assert_eq!(s.links.len(), SAMPLE_RULES * MEMBERS_PER_SUBJECT);
        let small = parse("p, a, app:x, GET, allow\n", Path::new("x")).unwrap_or_default();
        assert_eq!(sample(&small).rules.len(), 1);
        assert!(sample(&Parsed::default()).rules.is_empty());
    }

    #[test]
    fn the_fixed_policy_agrees_with_the_shipped_model() {
        let model = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/model.conf"
        ));
        let text = std::fs::read_to_string(model).unwrap_or_default();
        assert!(probe(&text, model, SEMANTICS, SEMANTICS_EXTRA).is_ok());
    }

    /// A policy of `lines` lines: per block of four, a group's wildcard allow, a user's exact
    /// allow, a deny under the group's allow, and the user's membership of the group.
    fn large_policy(lines: usize) -> String {
        let mut s = String::with_capacity(lines * 48);
        for i in 0..lines {
            let (g, app) = (i / 4 % 500, i / 4 % 50);
            let b = i / 4;
            s.push_str(&match i % 4 {
                0 => format!("p, group:team{g}, app:app{app}/b{b}/*, GET|HEAD, allow\n"),
                1 => format!("p, user{b}, app:app{app}/x{b}, POST, allow\n"),
                2 => format!("p, group:team{g}, app:app{app}/b{b}/secret/*, *, deny\n"),
                _ => format!("g, user{b}, group:team{g}\n"),
            });
        }
        s
    }

    #[tokio::test]
    async fn a_100k_line_policy_loads_and_decides() {
        let model = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/model.conf"
        ));
        let dir = crate::testutil::TempDir::new("policy-100k");
        let policy = dir.path().join("policy.csv");
        std::fs::write(&policy, large_policy(100_000)).unwrap();
        let t = std::time::Instant::now();
        let h = crate::policy::PolicyHandle::load(model, &policy)
            .await
            .unwrap();
        // A figure for the README, not an assertion: machines differ.
        eprintln!(
            "100,000-line policy loaded in {:?} ({} build)",
            t.elapsed(),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        assert_eq!(h.current().len(), 75_000);
        // A node where patterns branch or end, not one per byte: at most two per pattern.
        let nodes = h.current().trie_nodes();
        assert!(nodes <= 2 * 75_000, "{nodes} trie nodes");
        // (user, object, action, allowed): blocks from the start, the middle and the end.
        let mut table = Vec::new();
        for b in [0usize, 1, 12_345, 24_999] {
            let app = b % 50;
            let other_app = (app + 1) % 50;
            // Shares the group team{b % 500} (a member only if its block exists).
            let same_group_user = b + 500;
            table.extend([
                (
                    format!("user{b}"),
                    format!("app:app{app}/b{b}/page"),
                    "GET",
                    true,
                ),
                (
                    format!("user{b}"),
                    format!("app:app{app}/b{b}/page"),
                    "POST",
                    false,
                ),
                (
                    format!("user{b}"),
                    format!("app:app{app}/b{b}/secret/k"),
                    "GET",
                    false,
                ),
                (
                    format!("user{b}"),
                    format!("app:app{app}/x{b}"),
                    "POST",
                    true,
                ),
                (
                    format!("user{b}"),
                    format!("app:app{app}/x{b}/more"),
                    "POST",
                    false,
                ),
                (
                    format!("user{b}"),
                    format!("app:app{other_app}/b{b}/page"),
                    "GET",
                    false,
                ),
                (
                    format!("user{same_group_user}"),
                    format!("app:app{app}/b{b}/page"),
                    "GET",
                    same_group_user < 25_000,
                ),
                (
                    format!("user{same_group_user}"),
                    format!("app:app{app}/x{b}"),
                    "POST",
                    false,
                ),
                (
                    format!("nobody{b}"),
                    format!("app:app{app}/b{b}/page"),
                    "GET",
                    false,
                ),
            ]);
        }
        for (user, object, action, allowed) in &table {
            let d = h.check(user, &[], object, action);
            assert_eq!(d.allowed, *allowed, "{user} {object} {action}: {d:?}");
        }
    }
}
