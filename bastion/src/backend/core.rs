//! [`CoreBackend`]: the production [`Backend`], over the services of `gatehouse-core` that
//! the gateway uses too.
//!
//! Threat: the bastion as a side door — guesses spread between the web login and SSH, a
//! TOTP code replayed on the other door, a locked or revoked user keeping SSH access, SSH
//! activity missing from the audit log or from `gatehouse session list`. Mitigation: the
//! same [`Authenticator`] (lockout counters per user and address, TOTP replay cache, audit
//! of authentication), the same [`PolicyHandle`], the same [`AuditLog`] (every
//! [`BastionEvent`] is recorded; a failed write refuses what it records) and the same
//! [`Store`]: each SSH connection is a store session (listed and revoked like web sessions),
//! and the store's revocation feed ends live connections on every instance. Keys come from
//! `users.toml`, re-read when it changes; a locked user has no keys.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use gatehouse_core::audit::{AccessContext, AuditEvent, AuditLog, new_incident_id};
use gatehouse_core::identity::{AuthMethod, Authenticator, Users};
use gatehouse_core::policy::PolicyHandle;
use gatehouse_core::store::{RevocationEvent, SessionData, SessionToken, Store};
use gatehouse_core::{AuthError, Config};
use russh::keys::PublicKey;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{AuthFailure, Backend, BastionEvent, Decision, SshAction, TotpOutcome};
use crate::error::BackendError;
use crate::registry::SessionInfo;

/// Capacity of the bastion's revocation feed (user names). A lagging receiver ends every
/// live SSH session (fail closed), so a burst larger than this costs reconnections, no more.
pub const REVOCATION_FEED_CAPACITY: usize = 256;
/// Longest interval between two touches of a live SSH session in the store, so a busy
/// connection never looks idle to `session list` (the bastion closes really idle channels).
const MAX_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// One user as the bastion needs it.
#[derive(Debug, Clone)]
struct UserEntry {
    keys: Vec<PublicKey>,
    groups: Vec<String>,
    locked: bool,
}

/// Identifies a version of the users file: an atomic rename changes the inode, an edit in
/// place the size or times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Result<Option<Stamp>, std::io::Error> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp {
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

type UserMap = Arc<HashMap<String, UserEntry>>;

/// `users.toml`, parsed once per version of the file.
struct UsersCache {
    path: PathBuf,
    current: Mutex<Option<(Option<Stamp>, UserMap)>>,
}

impl UsersCache {
    fn parse(path: &Path) -> Result<UserMap, BackendError> {
        let users = Users::load(path).map_err(|e| BackendError::Other {
            what: "users file".into(),
            source: Box::new(e),
        })?;
        let mut map = HashMap::new();
        for s in users.list() {
            let Some(rec) = users.get(&s.name) else {
                continue;
            };
            let keys = rec
                .ssh_keys
                .iter()
                .filter_map(|line| match PublicKey::from_openssh(line) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        tracing::warn!(user = %rec.name, error = %e, "ssh key of users.toml not usable by the bastion; ignored");
                        None
                    }
                })
                .collect();
            map.insert(
                rec.name.clone(),
                UserEntry {
                    keys,
                    groups: rec.groups.clone(),
                    locked: rec.locked,
                },
            );
        }
        Ok(Arc::new(map))
    }

    /// The users of the file's current version (re-read when it changed).
    async fn get(&self) -> Result<UserMap, BackendError> {
        let path = self.path.clone();
        let now = tokio::task::spawn_blocking(move || stamp(&path))
            .await
            .map_err(|_| unavailable("users file"))?
            .map_err(|e| BackendError::Other {
                what: "users file".into(),
                source: Box::new(e),
            })?;
        if let Ok(cur) = self.current.lock()
            && let Some((s, map)) = cur.as_ref()
            && *s == now
        {
            return Ok(map.clone());
        }
        let path = self.path.clone();
        // The stamp is taken before the read: a change in between is picked up next time.
        let map = tokio::task::spawn_blocking(move || Self::parse(&path))
            .await
            .map_err(|_| unavailable("users file"))??;
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some((now, map.clone()));
        }
        Ok(map)
    }

    async fn user(&self, name: &str) -> Result<Option<UserEntry>, BackendError> {
        Ok(self.get().await?.get(name).cloned())
    }
}

fn unavailable(what: &str) -> BackendError {
    BackendError::Unavailable { what: what.into() }
}

fn other(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> BackendError {
    BackendError::Other {
        what: what.into(),
        source: Box::new(e),
    }
}

fn auth_error(e: AuthError) -> BackendError {
    match e {
        AuthError::Audit(a) => BackendError::Audit(Box::new(a)),
        AuthError::Store(s) => other("session store", s),
        e => other("authentication", e),
    }
}

/// A live SSH connection's store session.
struct Live {
    user: String,
    token: SessionToken,
}

/// See the module documentation.
pub struct CoreBackend {
    authenticator: Authenticator,
    store: Arc<dyn Store>,
    policy: Arc<PolicyHandle>,
    audit: AuditLog,
    users: UsersCache,
    session_ttl: Duration,
    idle_timeout: Duration,
    /// Connection id -> its store session.
    live: Mutex<HashMap<String, Live>>,
    revoke_tx: broadcast::Sender<String>,
}

impl CoreBackend {
    /// Builds the backend and starts its two tasks (revocation feed from the store, session
    /// keep-alive), which end with `shutdown`. Fails when the store's revocation feed cannot
    /// be subscribed (no SSH session could then be revoked).
    pub async fn start(
        config: &Config,
        authenticator: Authenticator,
        store: Arc<dyn Store>,
        policy: Arc<PolicyHandle>,
        audit: AuditLog,
        shutdown: CancellationToken,
    ) -> Result<Arc<CoreBackend>, BackendError> {
        let feed = store
            .subscribe_revocations()
            .await
            .map_err(|e| other("revocation feed", e))?;
        let (revoke_tx, _) = broadcast::channel(REVOCATION_FEED_CAPACITY);
        let backend = Arc::new(CoreBackend {
            authenticator,
            store,
            policy,
            audit,
            users: UsersCache {
                path: config.identity.users_file.clone(),
                current: Mutex::new(None),
            },
            session_ttl: config.identity.session_ttl,
            idle_timeout: config.identity.idle_timeout,
            live: Mutex::new(HashMap::new()),
            revoke_tx,
        });
        tokio::spawn(forward_revocations(
            Arc::downgrade(&backend),
            feed,
            shutdown.clone(),
        ));
        tokio::spawn(keep_alive(Arc::downgrade(&backend), shutdown));
        Ok(backend)
    }

    fn live_users(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .live
            .lock()
            // A poisoned table still lists who is connected: revocation must reach them.
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|l| l.user.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn revoke_local(&self, user: String) {
        // No receiver (bastion not running yet or stopped): nothing to end.
        let _ = self.revoke_tx.send(user);
    }

    /// Touches every live SSH session; one the store no longer has (revoked through a
    /// missed event, or expired) ends its user's connections here.
    async fn touch_all(&self) {
        let tokens: Vec<(String, String)> = self
            .live
            .lock()
            // A poisoned table is still checked: a session gone from the store must end.
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|l| (l.user.clone(), l.token.expose().to_string()))
            .collect();
        for (user, token) in tokens {
            match self.store.touch_session(&token).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(user = %user, "ssh session gone from the store; ending it");
                    self.revoke_local(user);
                }
                Err(e) => {
                    tracing::warn!(user = %user, error = %crate::error_chain(&e), "cannot touch an ssh session in the store");
                }
            }
        }
    }

    async fn record(&self, event: AuditEvent) -> Result<(), BackendError> {
        self.audit
            .record(event)
            .await
            .map(|_| ())
            .map_err(|e| BackendError::Audit(Box::new(e)))
    }
}

async fn forward_revocations(
    backend: Weak<CoreBackend>,
    mut feed: broadcast::Receiver<RevocationEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = feed.recv() => ev,
        };
        let Some(b) = backend.upgrade() else { return };
        match ev {
            Ok(RevocationEvent::User { user }) => b.revoke_local(user),
            // One web session ended (logout); SSH connections are ended per user.
            Ok(RevocationEvent::Session { .. }) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!(
                    missed = n,
                    "store revocation feed lagged; ending every ssh session"
                );
                for u in b.live_users() {
                    b.revoke_local(u);
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                tracing::error!("store revocation feed closed; ending every ssh session");
                for u in b.live_users() {
                    b.revoke_local(u);
                }
                return;
            }
        }
    }
}

async fn keep_alive(backend: Weak<CoreBackend>, shutdown: CancellationToken) {
    let every = match backend.upgrade() {
        Some(b) => (b.idle_timeout / 4).clamp(Duration::from_secs(1), MAX_TOUCH_INTERVAL),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(b) = backend.upgrade() else { return };
        b.touch_all().await;
    }
}

/// The user an event is about.
fn event_user(e: &BastionEvent) -> &str {
    match e {
        BastionEvent::AuthSucceeded { user, .. }
        | BastionEvent::AuthFailed { user, .. }
        | BastionEvent::AccessDenied { user, .. }
        | BastionEvent::HostKeyMismatch { user, .. }
        | BastionEvent::TargetUnreachable { user, .. }
        | BastionEvent::Refused { user, .. }
        | BastionEvent::SessionStarted { user, .. }
        | BastionEvent::SessionEnded { user, .. }
        | BastionEvent::ForwardOpened { user, .. }
        | BastionEvent::ForwardClosed { user, .. }
        | BastionEvent::Revoked { user, .. } => user,
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[async_trait]
impl Backend for CoreBackend {
    async fn authorized_keys(&self, user: &str) -> Result<Vec<PublicKey>, BackendError> {
        Ok(match self.users.user(user).await? {
            Some(u) if !u.locked => u.keys,
            _ => Vec::new(),
        })
    }

    async fn check_totp(
        &self,
        user: &str,
        code: &str,
        client: SocketAddr,
    ) -> Result<TotpOutcome, BackendError> {
        match self
            .authenticator
            .verify_totp_for_user(user, code, Some(client.ip()))
            .await
        {
            Ok(_) => Ok(TotpOutcome::Valid),
            Err(AuthError::TotpReplayed) => Ok(TotpOutcome::Replayed),
            Err(AuthError::LockedOut { .. }) => Ok(TotpOutcome::Locked),
            Err(
                AuthError::InvalidTotp
                | AuthError::InvalidCredentials
                | AuthError::AccountLocked
                | AuthError::NoSession,
            ) => Ok(TotpOutcome::Invalid),
            Err(e) => Err(auth_error(e)),
        }
    }

    async fn is_locked(&self, user: &str, client: SocketAddr) -> Result<bool, BackendError> {
        self.authenticator
            .is_locked_out(user, Some(client.ip()))
            .await
            .map_err(auth_error)
    }

    async fn note_failure(
        &self,
        user: &str,
        client: SocketAddr,
        reason: AuthFailure,
    ) -> Result<(), BackendError> {
        match reason {
            // Never reached the authenticator: count it here.
            AuthFailure::MalformedTotp => self
                .authenticator
                .note_totp_failure(user, "malformed code", Some(client.ip()))
                .await
                .map_err(auth_error),
            // Counted by `check_totp` (the authenticator) already.
            AuthFailure::BadTotp | AuthFailure::ReplayedTotp => Ok(()),
            // Clients offer several keys in turn; a lockout is not a new failure.
            AuthFailure::UnknownKey | AuthFailure::BadUserName | AuthFailure::Locked => Ok(()),
        }
    }

    async fn authorize(
        &self,
        user: &str,
        object: &str,
        action: SshAction,
    ) -> Result<Decision, BackendError> {
        let groups = match self.users.user(user).await? {
            Some(u) if !u.locked => u.groups,
            // Locked or removed since the login: deny (no rule decided it).
            _ => {
                return Ok(Decision {
                    allowed: false,
                    rule: None,
                });
            }
        };
        let d = self.policy.check(user, &groups, object, action.as_str());
        if d.allowed
            && let Some(rule) = &d.rule
        {
            self.record(AuditEvent::AccessAllowed {
                user: user.to_string(),
                object: object.to_string(),
                action: action.as_str().to_string(),
                rule: rule.clone(),
                context: AccessContext::default(),
            })
            .await?;
            return Ok(Decision {
                allowed: true,
                rule: d.rule,
            });
        }
        Ok(Decision {
            allowed: false,
            rule: d.rule,
        })
    }

    async fn audit(&self, event: BastionEvent) -> Result<(), BackendError> {
        match &event {
            BastionEvent::AccessDenied {
                user,
                object,
                action,
                rule,
                ..
            } => {
                return self
                    .record(AuditEvent::AccessDenied {
                        user: user.clone(),
                        object: object.clone(),
                        action: action.as_str().to_string(),
                        rule: rule.clone(),
                        incident_id: new_incident_id(),
                        context: AccessContext::default(),
                    })
                    .await;
            }
            BastionEvent::AuthSucceeded {
                user,
                client,
                totp: false,
                ..
            } => {
                // Key-only targets: the login itself goes through the authenticator
                // (lockouts, locked accounts, `login_success`) like every other login.
                self.authenticator
                    .accept_verified_key(user, Some(client.ip()))
                    .await
                    .map_err(auth_error)?;
            }
            _ => {}
        }
        let ssh = serde_json::to_value(&event).map_err(|e| other("audit encoding", e))?;
        self.record(AuditEvent::Ssh {
            user: event_user(&event).to_string(),
            ssh,
            incident_id: event.is_alert().then(new_incident_id),
        })
        .await
    }

    fn revocations(&self) -> broadcast::Receiver<String> {
        self.revoke_tx.subscribe()
    }

    async fn session_opened(&self, session: &SessionInfo, totp: bool) -> Result<(), BackendError> {
        let groups = self
            .users
            .user(&session.user)
            .await?
            .map(|u| u.groups)
            .unwrap_or_default();
        let data = SessionData {
            user: session.user.clone(),
            groups,
            method: if totp {
                AuthMethod::SshKeyTotp
            } else {
                AuthMethod::SshKey
            },
            auth_time: unix_secs(session.started),
            client_addr: Some(session.client.ip()),
        };
        let token = self
            .store
            .create_session(data, self.session_ttl, self.idle_timeout)
            .await
            .map_err(|e| other("session store", e))?;
        if let Ok(mut m) = self.live.lock() {
            m.insert(
                session.id.clone(),
                Live {
                    user: session.user.clone(),
                    token,
                },
            );
            return Ok(());
        }
        Err(unavailable("live session table"))
    }

    async fn session_closed(&self, session: &SessionInfo) {
        let live = self
            .live
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&session.id));
        let Some(live) = live else { return };
        if let Err(e) = self.store.delete_session(live.token.expose()).await {
            // It expires on its own (TTL, idle timeout).
            tracing::warn!(user = %live.user, error = %crate::error_chain(&e), "cannot remove an ended ssh session from the store");
        }
    }
}
