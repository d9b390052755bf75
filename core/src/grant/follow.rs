//! Keeps one instance's copy of the grants (in its [`PolicyHandle`]) in step with the store.
//!
//! The copy is what every decision reads, so the request path never waits on the store for
//! grants. It is refreshed when the store's channel announces a change (a revocation is
//! dropped from the copy at once, before the refresh), when asked to (the control socket,
//! so a `grant` command has taken effect when it returns), when a poll of the store's
//! generation (every [`POLL_INTERVAL`]) shows a change the channel missed, and at each
//! grant's expiry. Grants that leave the copy expired are recorded (`grant_expired`).
//!
//! Fail closed: when the store cannot confirm the grants for [`STALE_AFTER`], the copy is
//! emptied (grants stop allowing anything) until the store answers again; a closed channel
//! empties it too until the subscription is back. A Redis store whose invalidation link is
//! down says so ([`StoreError::Unsynced`]): changes may be missed, so the copy is emptied at
//! once, and refreshed when the store announces the link is back ([`RevocationEvent::Resync`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, AuditLog};
use crate::error::{GrantError, StoreError};
use crate::policy::PolicyHandle;
use crate::store::{Grant, RevocationEvent, Store, now_ms};

/// How often the store's grants generation is polled (a missed event is caught this late).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long the copy is kept while the store cannot confirm it.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// Pending refresh requests (control socket commands); more wait for a slot.
const REQUESTS: usize = 16;
/// How long a caller waits for its refresh.
const REFRESH_DEADLINE: Duration = Duration::from_secs(5);
/// Pause before subscribing again after the channel closed.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(1);

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// Asks the follower of this instance to refresh its copy now.
#[derive(Debug, Clone)]
pub struct GrantSync {
    requests: mpsc::Sender<Reply>,
}

impl GrantSync {
    /// Subscribes to the store's channel, loads the grants into `policy` and spawns the
    /// task that keeps them in step until `shutdown`. An error (store down) stops the start.
    pub async fn start(
        store: Arc<dyn Store>,
        policy: Arc<PolicyHandle>,
        audit: AuditLog,
        shutdown: CancellationToken,
    ) -> Result<GrantSync, StoreError> {
        let feed = store.subscribe_revocations().await?;
        let mut follower = Follower {
            store,
            policy,
            audit,
            generation: None,
            confirmed: Instant::now(),
        };
        follower.refresh().await?;
        let (requests, rx) = mpsc::channel(REQUESTS);
        tokio::spawn(follower.run(feed, rx, shutdown));
        Ok(GrantSync { requests })
    }

    /// Refreshes the copy from the store and returns once it is installed.
    pub async fn refresh(&self) -> Result<(), GrantError> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.requests.send(tx).await.ok()?;
            rx.await.ok()
        };
        match tokio::time::timeout(REFRESH_DEADLINE, asked).await {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(e))) => Err(GrantError::Store(e)),
            _ => Err(GrantError::Refresh),
        }
    }
}

struct Follower {
    store: Arc<dyn Store>,
    policy: Arc<PolicyHandle>,
    audit: AuditLog,
    /// The store generation of the copy, once loaded.
    generation: Option<u64>,
    /// When the store last confirmed the copy.
    confirmed: Instant,
}

impl Follower {
    async fn run(
        mut self,
        mut feed: broadcast::Receiver<RevocationEvent>,
        mut requests: mpsc::Receiver<Reply>,
        shutdown: CancellationToken,
    ) {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let expiry = self.policy.grants().next_expiry();
            let until_expiry =
                Duration::from_millis(expiry.map_or(u64::MAX / 4, |e| e.saturating_sub(now_ms())));
            tokio::select! {
                () = shutdown.cancelled() => return,
                ev = feed.recv() => match ev {
                    Ok(RevocationEvent::Grants { revoked }) => {
                        if let Some(id) = revoked {
                            self.policy.remove_grant(&id);
                        }
                        self.refresh_logged().await;
                    }
                    // The store's link is back after a loss: changes may have been missed.
                    Ok(RevocationEvent::Resync) => self.refresh_logged().await,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => self.refresh_logged().await,
                    Err(broadcast::error::RecvError::Closed) => {
                        feed = self.resubscribe(&shutdown).await;
                    }
                },
                Some(reply) = requests.recv() => {
                    let _ = reply.send(self.refresh().await);
                }
                _ = poll.tick() => self.poll().await,
                () = tokio::time::sleep(until_expiry), if expiry.is_some() => {
                    let now = now_ms();
                    let live: Vec<Grant> = self
                        .policy
                        .grants()
                        .all()
                        .filter(|g| g.is_live(now))
                        .map(|g| (**g).clone())
                        .collect();
                    self.install(live).await;
                }
            }
        }
    }

    /// A closed channel: grants cannot be kept in step, so none allow until it is back.
    async fn resubscribe(
        &mut self,
        shutdown: &CancellationToken,
    ) -> broadcast::Receiver<RevocationEvent> {
        tracing::error!("store channel closed; grants suspended until it is back");
        self.install(Vec::new()).await;
        self.generation = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    // Never read again: the caller returns at its next turn.
                    let (_, rx) = broadcast::channel(1);
                    return rx;
                }
                () = tokio::time::sleep(RESUBSCRIBE_BACKOFF) => {}
            }
            if let Ok(feed) = self.store.subscribe_revocations().await {
                self.refresh_logged().await;
                return feed;
            }
        }
    }

    async fn poll(&mut self) {
        match self.store.grants_generation().await {
            Ok(g) if Some(g) == self.generation => self.confirmed = Instant::now(),
            Ok(_) => self.refresh_logged().await,
            Err(e) => self.unconfirmed(&e).await,
        }
    }

    async fn refresh_logged(&mut self) {
        if let Err(e) = self.refresh().await {
            self.unconfirmed(&e).await;
        }
    }

    /// The store did not answer: keep the copy for [`STALE_AFTER`], then empty it; at once
    /// when the store knows it may have missed changes ([`StoreError::Unsynced`]).
    async fn unconfirmed(&mut self, e: &StoreError) {
        tracing::warn!(error = %crate::error_chain(e), "cannot refresh grants from the store");
        let unsynced = matches!(e, StoreError::Unsynced);
        if (unsynced || self.confirmed.elapsed() >= STALE_AFTER) && !self.policy.grants().is_empty()
        {
            if unsynced {
                tracing::error!("store invalidation link down; grants suspended until it is back");
            } else {
                tracing::error!(
                    "grants not confirmed by the store for {STALE_AFTER:?}; suspended until it answers"
                );
            }
            self.install(Vec::new()).await;
            self.generation = None;
        }
    }

    /// Reads the store's generation, then its grants, and installs them.
    async fn refresh(&mut self) -> Result<(), StoreError> {
        let generation = self.store.grants_generation().await?;
        let grants = self.store.list_grants().await?;
        self.install(grants).await;
        self.generation = Some(generation);
        self.confirmed = Instant::now();
        Ok(())
    }

    /// Installs `grants` as the copy; grants that leave it expired are recorded.
    async fn install(&self, grants: Vec<Grant>) {
        let now = now_ms();
        let kept: HashSet<&str> = grants.iter().map(|g| g.id.as_str()).collect();
        let expired: Vec<Arc<Grant>> = self
            .policy
            .grants()
            .all()
            .filter(|g| !kept.contains(g.id.as_str()) && !g.is_live(now))
            .cloned()
            .collect();
        self.policy.set_grants(grants);
        for g in expired {
            tracing::info!(grant = %g.id, user = %g.user, object = %g.object, "grant expired");
            let event = AuditEvent::GrantExpired {
                grant_id: g.id.clone(),
                user: g.user.clone(),
                object: g.object.clone(),
            };
            if let Err(e) = self.audit.record(event).await {
                tracing::error!(error = %crate::error_chain(&e), grant = %g.id, "cannot record a grant's expiry");
            }
        }
    }
}
