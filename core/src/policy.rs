//! Need-to-know authorization: the casbin policy (`policies/model.conf`, `policy.csv`),
//! decided by an index built for it, and the `Permit` proof.
//!
//! Threats: access beyond need-to-know; a deny silently lost to a typo; a broken reload
//! opening everything; decisions too slow to run on every request. Mitigations: default deny
//! and deny-wins; a strict parser that names file and line of any bad line; casbin validates
//! the model and is probed against the index at load (bounded policies, see [`load`]), so
//! the model and the index cannot disagree; loading runs on a blocking thread, in time linear
//! in the file, while requests are decided with the policy in force; a failed reload keeps
//! the running policy; [`Permit`] has private fields and is
//! minted only by [`PolicyHandle::authorize`], so proxying or opening a target cannot skip
//! the check.

mod grants;
mod index;
mod lint;
mod load;
mod parse;
mod reference;
mod watch;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub use grants::{GrantSet, rule_text as grant_rule_text};
pub use index::{Decision, PolicyIndex};
pub use lint::{GATEHOUSE_OBJECTS, PolicyScope, PolicyWarning, SSH_ACTIONS, WarningKind, lint};
pub use load::{SAMPLE_RULES, load_index, load_index_blocking};
pub use parse::{Actions, Effect, Parsed, Rule, parse};
pub use reference::CasbinReference;
pub use watch::{GrantWatch, Lapse, LapseReason, lapsed};

pub use crate::audit::AccessContext;
use crate::audit::{AuditEvent, AuditLog, new_incident_id};
use crate::config::PolicyConfig;
use crate::error::PolicyError;
use crate::identity::VerifiedIdentity;
use crate::store::Grant;

/// Proof that `subject` may perform `action` on `object`, by `rule`. Minted only here, by
/// [`PolicyHandle::authorize`] and [`PolicyHandle::authorize_audited`]; whatever forwards a
/// request or opens something on a target takes one, so the decision cannot be skipped.
///
/// Reading a permit is open to everyone:
///
/// ```
/// fn describe(p: &gatehouse_core::policy::Permit) -> String {
///     format!("{} may {} {} ({})", p.subject(), p.action(), p.object(), p.rule())
/// }
/// ```
///
/// Building one outside this module does not compile (the fields are private, and there is
/// no constructor, `Default` or `Deserialize`):
///
/// ```compile_fail
/// let forged = gatehouse_core::policy::Permit {
///     subject: "mallory".to_string(),
///     object: "ssh:db-prod-1/root".to_string(),
///     action: "ssh".to_string(),
///     rule: "p, mallory, ssh:*, *, allow".to_string(),
/// };
/// ```
///
/// ```compile_fail
/// let forged: gatehouse_core::policy::Permit = Default::default();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    subject: String,
    object: String,
    action: String,
    rule: String,
    /// The just-in-time grant that allowed it, when the policy file alone would not.
    grant: Option<Arc<Grant>>,
}

impl Permit {
    pub fn subject(&self) -> &str {
        &self.subject
    }
    pub fn object(&self) -> &str {
        &self.object
    }
    pub fn action(&self) -> &str {
        &self.action
    }
    /// The allowing policy line (or the grant's own line, see [`grant_rule_text`]).
    pub fn rule(&self) -> &str {
        &self.rule
    }
    /// The just-in-time grant without which this would not be allowed: what ends it when
    /// the grant expires or is revoked (see [`GrantWatch`]).
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.as_deref()
    }
    /// For an SSH object `ssh:<target>/<login>`: the target and the login.
    pub fn ssh_target(&self) -> Option<(&str, &str)> {
        self.object.strip_prefix("ssh:")?.split_once('/')
    }
}

/// A refused authorization; `rule` is the deciding deny line, `None` for default deny.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access denied")]
pub struct Denied {
    pub subject: String,
    pub object: String,
    pub action: String,
    pub rule: Option<String>,
}

/// Why an audited authorization refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The policy denied; the deny is in the audit log under `incident_id` (show it on the
    /// 403 page).
    #[error("access denied (incident {incident_id})")]
    Denied { denied: Denied, incident_id: String },
    /// The decision could not be recorded: refuse (fail closed).
    #[error("audit log unavailable; access refused")]
    Audit(#[source] crate::error::AuditError),
}

/// The running policy: an atomically swapped `Arc<PolicyIndex>`, and this instance's copy of
/// the just-in-time grants (an `Arc<GrantSet>` swapped the same way).
#[derive(Debug)]
pub struct PolicyHandle {
    /// Tells this handle's index apart in the per-thread cache.
    id: u64,
    model: PathBuf,
    policy: PathBuf,
    current: RwLock<Arc<PolicyIndex>>,
    grants: RwLock<Arc<GrantSet>>,
    /// Bumped whenever `current` or `grants` is replaced: per-thread copies of older ones
    /// are not used.
    generation: AtomicU64,
    /// Bumped whenever the grants copy is replaced: what grant-dependent sessions watch.
    grant_changes: tokio::sync::watch::Sender<u64>,
}

/// Per thread: the handle id and generation of the policy and grants it decided with last.
type InForce = (u64, u64, Arc<PolicyIndex>, Arc<GrantSet>);

thread_local! {
    /// Per thread, the index and grants it decided with last. A decision then reads nothing
    /// another thread writes: the lock and the reference counts would otherwise move between
    /// cores on every request. A thread drops a replaced copy at its next decision.
    static IN_FORCE: RefCell<Option<InForce>> = const { RefCell::new(None) };
}

impl PolicyHandle {
    /// Loads the policy; any error is returned and nothing runs with a broken policy.
    pub async fn load(model: &Path, policy: &Path) -> Result<PolicyHandle, PolicyError> {
        let index = load_index(model, policy).await?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(PolicyHandle {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            model: model.to_path_buf(),
            policy: policy.to_path_buf(),
            current: RwLock::new(Arc::new(index)),
            grants: RwLock::new(Arc::new(GrantSet::default())),
            generation: AtomicU64::new(0),
            grant_changes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub async fn from_config(config: &PolicyConfig) -> Result<PolicyHandle, PolicyError> {
        Self::load(&config.model, &config.policy).await
    }

    /// Re-reads the files; on error the running policy stays and the error is returned.
    /// Returns the number of rules now in force.
    pub async fn reload(&self) -> Result<usize, PolicyError> {
        let index = Arc::new(load_index(&self.model, &self.policy).await?);
        let n = index.len();
        self.install(index);
        Ok(n)
    }

    /// The model and policy files this handle loads.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.model, &self.policy)
    }

    /// Installs an index loaded with [`load_index`] (after its reload was audited); returns
    /// the number of rules now in force.
    pub fn replace(&self, index: PolicyIndex) -> usize {
        let n = index.len();
        self.install(Arc::new(index));
        n
    }

    fn install(&self, index: Arc<PolicyIndex>) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = index;
        // Under the lock: a thread that reads the new generation then reads this index.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces this instance's copy of the grants (from the store; see `crate::grant`).
    /// Decisions that start after this returns use it, on every thread.
    pub fn set_grants(&self, grants: Vec<Grant>) {
        self.install_grants(Arc::new(GrantSet::build(grants)));
    }

    /// Drops grant `id` from the copy at once (its revocation was announced); true when it
    /// was there.
    pub fn remove_grant(&self, id: &str) -> bool {
        match self.grants().without(id) {
            Some(set) => {
                self.install_grants(Arc::new(set));
                true
            }
            None => false,
        }
    }

    fn install_grants(&self, set: Arc<GrantSet>) {
        {
            let mut grants = self
                .grants
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *grants = set;
            // Under the lock, as in `install`.
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.grant_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// This instance's copy of the grants (a snapshot).
    pub fn grants(&self) -> Arc<GrantSet> {
        self.grants
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes whenever the grants copy is replaced.
    pub fn grant_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.grant_changes.subscribe()
    }

    /// Runs `f` on the index and grants in force, through this thread's copy when current.
    fn with_current<R>(&self, f: impl FnOnce(&PolicyIndex, &GrantSet) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        IN_FORCE.with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                // Re-entered from inside `f`: decide on a snapshot instead.
                return f(&self.current(), &self.grants());
            };
            let fresh = matches!(&*slot, Some((id, g, _, _)) if *id == self.id && *g == generation);
            if !fresh {
                // Taken after reading the generation: at worst newer copies filed under the
                // older number, which the next decision replaces again.
                *slot = Some((self.id, generation, self.current(), self.grants()));
            }
            match &*slot {
                Some((_, _, index, grants)) => f(index, grants),
                None => f(&self.current(), &self.grants()),
            }
        })
    }

    /// The policy in force (a snapshot; a reload does not change it under you).
    pub fn current(&self) -> Arc<PolicyIndex> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Authorizes an authenticated identity: a [`Permit`] or [`Denied`].
    pub fn authorize(
        &self,
        id: &VerifiedIdentity,
        object: &str,
        action: &str,
    ) -> Result<Permit, Denied> {
        let d = self.check(id.user(), id.groups(), object, action);
        match d {
            Decision {
                allowed: true,
                rule: Some(rule),
                grant,
                ..
            } => Ok(Permit {
                subject: id.user().to_string(),
                object: object.to_string(),
                action: action.to_string(),
                rule,
                grant,
            }),
            Decision { rule, .. } => Err(Denied {
                subject: id.user().to_string(),
                object: object.to_string(),
                action: action.to_string(),
                rule,
            }),
        }
    }

    /// [`authorize`](Self::authorize) plus its audit record: `access_allowed`, or
    /// `access_denied` with a fresh incident id (also logged as an alert). A decision that
    /// cannot be recorded is a refusal.
    pub async fn authorize_audited(
        &self,
        id: &VerifiedIdentity,
        object: &str,
        action: &str,
        ctx: AccessContext,
        audit: &AuditLog,
    ) -> Result<Permit, Refusal> {
        match self.authorize(id, object, action) {
            Ok(permit) => {
                // The record borrows the permit's fields and hands them back: no copies
                // (but for the grant's id and reason, which every access it allows carries).
                let Permit {
                    subject,
                    object,
                    action,
                    rule,
                    grant,
                } = permit;
                let event = AuditEvent::AccessAllowed {
                    user: subject,
                    object,
                    action,
                    rule,
                    grant_id: grant.as_ref().map(|g| g.id.clone()),
                    grant_reason: grant.as_ref().map(|g| g.reason.clone()),
                    context: ctx,
                };
                audit.record_ref(&event).await.map_err(Refusal::Audit)?;
                match event {
                    AuditEvent::AccessAllowed {
                        user,
                        object,
                        action,
                        rule,
                        ..
                    } => Ok(Permit {
                        subject: user,
                        object,
                        action,
                        rule,
                        grant,
                    }),
                    // Built above as AccessAllowed; anything else is refused, never passed.
                    _ => Err(Refusal::Audit(crate::error::AuditError::Closed)),
                }
            }
            Err(denied) => {
                let incident_id = new_incident_id();
                audit
                    .record(AuditEvent::AccessDenied {
                        user: denied.subject.clone(),
                        object: denied.object.clone(),
                        action: denied.action.clone(),
                        rule: denied.rule.clone(),
                        incident_id: incident_id.clone(),
                        context: ctx,
                    })
                    .await
                    .map_err(Refusal::Audit)?;
                Err(Refusal::Denied {
                    denied,
                    incident_id,
                })
            }
        }
    }

    /// Decides for a plain user and its groups (plain names) — `policy check`, reviews.
    ///
    /// Directory form: an upstream serves `/admin` and `/admin/` alike, but the pattern
    /// `app:wiki/admin/*` only matches the latter. So for an `app:` object not ending in `/`,
    /// the directory form `<object>/` is decided too, and an explicit deny there wins; a
    /// `deny` on `X/*` can never be bypassed by asking for `X`.
    pub fn check(&self, user: &str, groups: &[String], object: &str, action: &str) -> Decision {
        self.with_current(|index, grants| {
            Self::check_in(index, grants, user, groups, object, action)
        })
    }

    fn check_in(
        index: &PolicyIndex,
        grants: &GrantSet,
        user: &str,
        groups: &[String],
        object: &str,
        action: &str,
    ) -> Decision {
        // Only a user with grants pays for them (and reads the clock).
        let now = grants.has(user).then(crate::store::now_ms);
        let decide = |object: &str| match now {
            None => index.decide_identity(user, groups, object, action),
            Some(now) => grants.decide(index, now, user, groups, object, action),
        };
        let plain = decide(object);
        if !plain.allowed || !needs_directory_form(object) {
            return plain;
        }
        let mut dir = String::with_capacity(object.len() + 1);
        dir.push_str(object);
        dir.push('/');
        let as_dir = decide(&dir);
        if !as_dir.allowed && as_dir.rule.is_some() {
            return as_dir;
        }
        plain
    }
}

/// `app:<name>/<path>` objects whose path does not already end in `/`.
fn needs_directory_form(object: &str) -> bool {
    object.starts_with("app:") && object.contains('/') && !object.ends_with('/')
}

#[cfg(test)]
mod tests;
