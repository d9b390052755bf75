//! The tracking link: one RESP3 connection per instance that Redis keeps informed.
//!
//! It has `CLIENT TRACKING ON`, so Redis pushes an invalidation for every key this instance
//! read through it and someone changed (any instance, the CLI, an expiry, a flush); it is
//! subscribed to the revocation channel; it answers a heartbeat every [`HEARTBEAT`].
//!
//! Threat: an instance answering from its copies (see [`super::copies`]) after a change it
//! was never told about — the link silently dead, the process stalled, Redis restarted
//! without its data. Mitigations: copies are served only under a lease, the sending time of
//! the last answered heartbeat plus [`INVALIDATION_BOUND`]: pushes and answers share the one
//! connection in order, so every invalidation Redis sent before answering was applied before
//! the answer was seen, and a change made in Redis reaches every instance within the bound
//! or that instance stops serving copies. A lost link (closed connection, unanswered
//! heartbeat) drops every copy and refuses sessions ([`StoreError::Unsynced`]) until a new
//! link is tracking; live connections are then re-checked ([`RevocationEvent::Resync`]),
//! since revocations published meanwhile were missed. Each (re)connection first checks the
//! store's key-check record ([`super::check_key`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use super::copies::{Copies, LinkState, mono_ms};
use super::tombstones::Tombstones;
use super::{CHANNEL, OP_TIMEOUT, RecordKey, Wire, check_key, within};
use crate::error::StoreError;
use crate::store::{RevocationEvent, now_ms};

/// The longest time between a change in Redis (a logout, a revocation, a lock) and the moment
/// every instance stops answering from its copy of what changed.
pub const INVALIDATION_BOUND: Duration = Duration::from_secs(1);
/// How often the link proves it is alive (renewing the lease).
const HEARTBEAT: Duration = Duration::from_millis(200);
/// A heartbeat unanswered this long loses the link (copies dropped, sessions refused). A
/// slower answer only lets the lease lapse: sessions are then read from Redis (correct,
/// slower) until answers are quick again, so a loaded machine costs round trips, not errors.
const HEARTBEAT_LOST_AFTER: Duration = OP_TIMEOUT;
/// First and longest wait between reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

fn bound_ms() -> u64 {
    u64::try_from(INVALIDATION_BOUND.as_millis()).unwrap_or(u64::MAX)
}

/// The link's state, copies and connection; shared by the store and the link's task.
pub(super) struct Link {
    pub(super) state: LinkState,
    pub(super) copies: Copies,
    pub(super) tombstones: Tombstones,
    events: broadcast::Sender<RevocationEvent>,
    /// The tracking connection and its generation, while up.
    conn: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Woken when the connection reports its loss.
    lost: Notify,
    /// `CLIENT SETNAME`: `gatehouse-link-<pid>-<n>` (operators find an instance's link by
    /// it; `n` tells apart several stores of one process).
    pub(super) name: String,
    /// `n` of the name: tells this store's per-thread copies from another store's.
    pub(super) id: u64,
}

impl Link {
    /// Connects the first link (its failure is the store's) and starts the task that keeps
    /// it alive; the task stops when the returned guard is dropped.
    pub(super) async fn start(
        client: redis::Client,
        records: RecordKey,
        events: broadcast::Sender<RevocationEvent>,
    ) -> Result<(Arc<Link>, DropGuard), StoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let link = Arc::new(Link {
            state: LinkState::default(),
            copies: Copies::default(),
            tombstones: Tombstones::default(),
            events,
            conn: Mutex::new(None),
            lost: Notify::new(),
            name: format!("gatehouse-link-{}-{id}", std::process::id()),
            id,
        });
        link.establish(&client, &records).await?;
        let stop = CancellationToken::new();
        let task = link.clone();
        let token = stop.clone();
        tokio::spawn(
            async move { task.maintain(&client, &records, token).await }
                .instrument(tracing::info_span!("store_link")),
        );
        Ok((link, stop.drop_guard()))
    }

    fn slot(&self) -> MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tracking connection and its generation; [`StoreError::Unsynced`] while down.
    pub(super) fn conn(&self) -> Result<(u64, MultiplexedConnection), StoreError> {
        let generation = self.state.generation();
        match &*self.slot() {
            Some((g, c)) if *g == generation && self.state.is_up() => Ok((*g, c.clone())),
            _ => Err(StoreError::Unsynced),
        }
    }

    /// [`StoreError::Unsynced`] unless the link is up.
    pub(super) fn check_up(&self) -> Result<(), StoreError> {
        if self.state.is_up() {
            Ok(())
        } else {
            Err(StoreError::Unsynced)
        }
    }

    /// The connection of `generation` is gone: drop every copy, refuse until reconnected.
    fn lose(&self, generation: u64, why: &str) {
        if !self.state.set_down(generation) {
            return;
        }
        self.copies.clear();
        self.slot().take();
        self.lost.notify_one();
        tracing::error!(
            reason = why,
            "store invalidation link lost: copies dropped, sessions refused until it is back"
        );
    }

    /// A push from the connection of `generation` (called in its read loop, in order with
    /// the answers: it must not block).
    fn on_push(&self, generation: u64, p: PushInfo) {
        match p.kind {
            PushKind::Invalidate => match p.data.first() {
                Some(Value::Array(keys)) => {
                    for k in keys {
                        if let Value::BulkString(b) = k {
                            self.copies.invalidate(b);
                        }
                    }
                }
                // FLUSHDB / FLUSHALL: every key changed.
                Some(Value::Nil) => self.copies.clear(),
                _ => {}
            },
            PushKind::Message => {
                let Some(Value::BulkString(payload)) = p.data.get(1) else {
                    return;
                };
                let Ok(wire) = serde_json::from_slice::<Wire>(payload) else {
                    tracing::warn!("undecodable message on the revocation channel; ignored");
                    return;
                };
                if let RevocationEvent::Session { id_hash } = &wire.event {
                    self.tombstones.add(id_hash, now_ms());
                }
                for h in &wire.ended {
                    self.tombstones.add(h, now_ms());
                }
                // A re-check is this instance's own decision, never a peer's message.
                if wire.event != RevocationEvent::Resync {
                    let _ = self.events.send(wire.event);
                }
            }
            PushKind::Disconnection => self.lose(generation, "connection closed"),
            _ => {}
        }
    }

    /// Opens a tracking, subscribed connection, checks the store's key, and goes up.
    async fn establish(
        self: &Arc<Self>,
        client: &redis::Client,
        records: &RecordKey,
    ) -> Result<(), StoreError> {
        let generation = self.state.next_generation();
        let weak: Weak<Link> = Arc::downgrade(self);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_push_sender(move |p: PushInfo| {
                if let Some(link) = weak.upgrade() {
                    link.on_push(generation, p);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let mut c = match tokio::time::timeout(
            OP_TIMEOUT,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(StoreError::Connect(e)),
            Err(_) => return Err(StoreError::Timeout { op: "connect" }),
        };
        within(
            "link",
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(&self.name)
                .query_async::<()>(&mut c),
        )
        .await?;
        within(
            "link",
            redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .query_async::<()>(&mut c),
        )
        .await?;
        within("subscribe", c.subscribe(CHANNEL)).await?;
        let sent = mono_ms();
        check_key(&mut c, records).await?;
        *self.slot() = Some((generation, c));
        if !self.state.set_up(generation, sent, bound_ms()) {
            self.slot().take();
            return Err(StoreError::Unsynced);
        }
        Ok(())
    }

    /// Heartbeats while up; reconnects (with backoff) when lost; until `stop`.
    async fn maintain(
        self: Arc<Self>,
        client: &redis::Client,
        records: &RecordKey,
        stop: CancellationToken,
    ) {
        loop {
            self.heartbeat_until_lost(&stop).await;
            let mut wait = RECONNECT_MIN;
            let mut attempts = 0u32;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                match self.establish(client, records).await {
                    Ok(()) => {
                        tracing::info!(
                            attempts,
                            "store invalidation link back: serving sessions again"
                        );
                        // Revocations published while down were missed: re-check.
                        let _ = self.events.send(RevocationEvent::Resync);
                        break;
                    }
                    Err(e) => {
                        attempts += 1;
                        // Every attempt at first, then one line in ten.
                        if attempts <= 3 || attempts.is_multiple_of(10) {
                            tracing::error!(
                                attempts,
                                error = %crate::error_chain(&e),
                                "store invalidation link: cannot reconnect"
                            );
                        }
                        wait = (wait * 2).min(RECONNECT_MAX);
                    }
                }
            }
        }
    }

    async fn heartbeat_until_lost(&self, stop: &CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Lapses of the lease since the last log line, and when that was.
        let (mut lapses, mut logged) = (0u64, 0u64);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                // A wake-up left from a loss already handled is no loss.
                () = self.lost.notified() => if self.state.is_up() { continue } else { return },
                _ = tick.tick() => {}
            }
            let Ok((generation, mut c)) = self.conn() else {
                return;
            };
            let sent = mono_ms();
            let answer = tokio::time::timeout(
                HEARTBEAT_LOST_AFTER,
                redis::cmd("PING").query_async::<Value>(&mut c),
            )
            .await;
            match answer {
                Ok(Ok(_)) => {
                    let now = mono_ms();
                    if !self.state.serving(now) {
                        lapses += 1;
                    }
                    self.state.renew(generation, sent, bound_ms());
                    if lapses > 0 && now.saturating_sub(logged) >= 60_000 {
                        tracing::warn!(
                            lapses,
                            "store heartbeat answered late: sessions were read from Redis meanwhile (is the machine or Redis overloaded?)"
                        );
                        (lapses, logged) = (0, now);
                    }
                }
                Ok(Err(_)) => {
                    self.lose(generation, "heartbeat failed");
                    return;
                }
                Err(_) => {
                    self.lose(
                        generation,
                        "heartbeat unanswered within the operation timeout",
                    );
                    return;
                }
            }
            self.copies.sweep(now_ms());
        }
    }
}
