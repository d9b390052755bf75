//! An in-memory [`Backend`] for tests and the benchmark example: static users with keys and a
//! TOTP secret, allow/deny rules, a TOTP replay cache, a failure counter, a captured audit log
//! and a revocation channel. Not for production: nothing is persisted.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use russh::keys::PublicKey;
use tokio::sync::{Notify, broadcast};
use totp_rs::{Builder, Totp};

use super::{AuthFailure, Backend, BastionEvent, Decision, SshAction, TotpOutcome};
use crate::error::BackendError;

/// Failures after which the test backend locks a user.
pub const TEST_LOCKOUT_AFTER: u32 = 5;

struct TestUser {
    keys: Vec<PublicKey>,
    totp: Option<Totp>,
}

struct Rule {
    user: String,
    /// Exact object, or a prefix when it ends with `*`.
    object: String,
    actions: Vec<SshAction>,
    allow: bool,
}

/// See the module documentation.
pub struct TestBackend {
    users: HashMap<String, TestUser>,
    rules: Vec<Rule>,
    used_steps: Mutex<HashSet<(String, u64)>>,
    failures: Mutex<HashMap<String, u32>>,
    events: Mutex<Vec<BastionEvent>>,
    event_added: Notify,
    audit_broken: AtomicBool,
    revoke_tx: broadcast::Sender<String>,
}

impl Default for TestBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl TestBackend {
    pub fn new() -> Self {
        let (revoke_tx, _) = broadcast::channel(16);
        Self {
            users: HashMap::new(),
            rules: Vec::new(),
            used_steps: Mutex::new(HashSet::new()),
            failures: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            event_added: Notify::new(),
            audit_broken: AtomicBool::new(false),
            revoke_tx,
        }
    }

    /// Adds a user with registered keys and an optional TOTP secret (raw bytes, ≥ 16).
    pub fn user(mut self, name: &str, keys: Vec<PublicKey>, totp_secret: Option<Vec<u8>>) -> Self {
        let totp = totp_secret.and_then(|s| {
            Builder::new()
                .with_secret(s)
                .with_account_name(name.to_string())
                .build()
                .ok()
        });
        self.users.insert(name.to_string(), TestUser { keys, totp });
        self
    }

    /// Allows `actions` on `object` (exact, or prefix ending in `*`) for `user`.
    pub fn allow(mut self, user: &str, object: &str, actions: &[SshAction]) -> Self {
        self.rules.push(Rule {
            user: user.into(),
            object: object.into(),
            actions: actions.to_vec(),
            allow: true,
        });
        self
    }

    /// Denies `actions` on `object` for `user`; a matching deny wins.
    pub fn deny(mut self, user: &str, object: &str, actions: &[SshAction]) -> Self {
        self.rules.push(Rule {
            user: user.into(),
            object: object.into(),
            actions: actions.to_vec(),
            allow: false,
        });
        self
    }

    /// The user's current TOTP code.
    pub fn totp_code(&self, user: &str) -> Option<String> {
        self.users
            .get(user)?
            .totp
            .as_ref()
            .map(|t| t.generate_current().to_string())
    }

    /// Ends every live session of `user` (as `gatehouse session revoke` will).
    pub fn revoke(&self, user: &str) {
        let _ = self.revoke_tx.send(user.to_string());
    }

    /// Makes every later audit write fail (to test fail-closed paths).
    pub fn break_audit(&self, broken: bool) {
        self.audit_broken.store(broken, Ordering::SeqCst);
    }

    /// Audit events recorded so far.
    pub fn events(&self) -> Vec<BastionEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Waits until an event matching `pred` has been recorded, or `timeout` passes.
    pub async fn wait_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&BastionEvent) -> bool,
    ) -> Option<BastionEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.event_added.notified();
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn matches(pattern: &str, object: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => object.starts_with(prefix),
            None => pattern == object,
        }
    }
}

#[async_trait]
impl Backend for TestBackend {
    async fn authorized_keys(&self, user: &str) -> Result<Vec<PublicKey>, BackendError> {
        Ok(self
            .users
            .get(user)
            .map(|u| u.keys.clone())
            .unwrap_or_default())
    }

    async fn check_totp(
        &self,
        user: &str,
        code: &str,
        _client: SocketAddr,
    ) -> Result<TotpOutcome, BackendError> {
        if self.is_locked(user, _client).await? {
            return Ok(TotpOutcome::Locked);
        }
        let Some(totp) = self.users.get(user).and_then(|u| u.totp.as_ref()) else {
            return Ok(TotpOutcome::Invalid);
        };
        let Some(step) = totp.check_current(code) else {
            return Ok(TotpOutcome::Invalid);
        };
        let mut used = self
            .used_steps
            .lock()
            .map_err(|_| BackendError::Unavailable {
                what: "replay cache".into(),
            })?;
        if !used.insert((user.to_string(), step)) {
            return Ok(TotpOutcome::Replayed);
        }
        Ok(TotpOutcome::Valid)
    }

    async fn is_locked(&self, user: &str, _client: SocketAddr) -> Result<bool, BackendError> {
        let f = self
            .failures
            .lock()
            .map_err(|_| BackendError::Unavailable {
                what: "lockouts".into(),
            })?;
        Ok(f.get(user).copied().unwrap_or(0) >= TEST_LOCKOUT_AFTER)
    }

    async fn note_failure(
        &self,
        user: &str,
        _client: SocketAddr,
        reason: AuthFailure,
    ) -> Result<(), BackendError> {
        if matches!(
            reason,
            AuthFailure::BadTotp | AuthFailure::ReplayedTotp | AuthFailure::MalformedTotp
        ) {
            let mut f = self
                .failures
                .lock()
                .map_err(|_| BackendError::Unavailable {
                    what: "lockouts".into(),
                })?;
            *f.entry(user.to_string()).or_insert(0) += 1;
        }
        Ok(())
    }

    async fn authorize(
        &self,
        user: &str,
        object: &str,
        action: SshAction,
    ) -> Result<Decision, BackendError> {
        let matching = self.rules.iter().filter(|r| {
            r.user == user && Self::matches(&r.object, object) && r.actions.contains(&action)
        });
        let mut allow_rule = None;
        for r in matching {
            let text = format!(
                "{}, {}, {}, {}",
                r.user,
                r.object,
                action.as_str(),
                if r.allow { "allow" } else { "deny" }
            );
            if !r.allow {
                return Ok(Decision {
                    allowed: false,
                    rule: Some(text),
                });
            }
            allow_rule.get_or_insert(text);
        }
        Ok(Decision {
            allowed: allow_rule.is_some(),
            rule: allow_rule,
        })
    }

    async fn audit(&self, event: BastionEvent) -> Result<(), BackendError> {
        if self.audit_broken.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable {
                what: "audit log".into(),
            });
        }
        self.events
            .lock()
            .map_err(|_| BackendError::Unavailable {
                what: "audit log".into(),
            })?
            .push(event);
        self.event_added.notify_waiters();
        Ok(())
    }

    fn revocations(&self) -> broadcast::Receiver<String> {
        self.revoke_tx.subscribe()
    }
}
