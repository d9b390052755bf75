//! Live sessions for the reviewer console: every recording being written has a feed that a
//! reviewer subscribes to, getting the screen as it is now (an `avt` dump: escape sequences
//! that draw it on a terminal of the same size) and then every event as it is written.
//!
//! What a feed carries is what the recording keeps: keystrokes the terminal did not echo
//! are never sent (the writer publishes only after the echo judge), file transfers only as
//! markers. The snapshot and the subscription are taken under one lock the writer also
//! holds while it publishes, so a subscriber misses nothing between them. A subscriber that
//! falls more than [`LIVE_BUFFER`] events behind gets `Lagged` from the channel and
//! subscribes again (a fresh snapshot); the writer never waits for a reviewer.
//!
//! Authorization is the caller's: the console must check `gatehouse:review` (and audit the
//! watch) before it calls [`LiveHub::subscribe`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

use super::typed::CommandTracker;
use super::{RecordingId, RecordingMeta};

/// Events a live subscriber may fall behind before it must resubscribe.
pub const LIVE_BUFFER: usize = 1024;

/// One event of a live session, as written to its recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveEvent {
    /// Seconds since the start of the recording.
    pub time: f64,
    /// `o`, `i`, `r` or `m`, as in asciicast.
    pub code: &'static str,
    #[serde(serialize_with = "as_str")]
    pub data: Arc<str>,
}

fn as_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

/// The screen when a subscription starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveSnapshot {
    pub meta: RecordingMeta,
    pub cols: usize,
    pub rows: usize,
    /// Escape sequences drawing the current screen (empty for sessions without a terminal).
    pub screen: String,
}

pub(super) struct FeedState {
    pub tracker: Option<CommandTracker>,
    /// Made when a reviewer first watches, dropped once nobody does: its [`LIVE_BUFFER`]
    /// slots are allocated up front, which every idle session would otherwise carry.
    tx: Option<broadcast::Sender<LiveEvent>>,
}

impl FeedState {
    pub fn publish(&mut self, time: f64, code: &'static str, data: &str) {
        let Some(tx) = &self.tx else { return };
        if tx.receiver_count() == 0 {
            self.tx = None;
            return;
        }
        let _ = tx.send(LiveEvent {
            time,
            code,
            data: Arc::from(data),
        });
    }
}

/// The feed of one live recording.
pub struct LiveFeed {
    meta: RecordingMeta,
    pub(super) state: Mutex<FeedState>,
}

impl LiveFeed {
    pub(super) fn new(meta: RecordingMeta, tracker: Option<CommandTracker>) -> LiveFeed {
        LiveFeed {
            meta,
            state: Mutex::new(FeedState { tracker, tx: None }),
        }
    }

    pub fn meta(&self) -> &RecordingMeta {
        &self.meta
    }

    /// The screen now, and every event from now on.
    pub fn subscribe(&self) -> Option<(LiveSnapshot, broadcast::Receiver<LiveEvent>)> {
        let mut state = self.state.lock().ok()?;
        let (cols, rows, screen) = match &state.tracker {
            Some(t) => {
                let (c, r) = t.size();
                (c, r, t.dump())
            }
            None => (80, 24, String::new()),
        };
        let rx = match &state.tx {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(LIVE_BUFFER);
                state.tx = Some(tx);
                rx
            }
        };
        Some((
            LiveSnapshot {
                meta: self.meta.clone(),
                cols,
                rows,
                screen,
            },
            rx,
        ))
    }
}

/// Ends live SSH connections of this process by session id (the `session` of their audit
/// records and recordings): how the reviewer console's terminate reaches the bastion, which
/// implements it, without the gateway depending on the bastion.
pub trait EndSsh: Send + Sync + std::fmt::Debug {
    /// Ends connection `session` (its channels close; its `ssh_connection_close` record says
    /// a reviewer ended it); false when no such connection is live here.
    fn end_ssh(&self, session: &str) -> bool;
}

/// The live recordings of this process.
#[derive(Clone, Default)]
pub struct LiveHub {
    feeds: Arc<Mutex<HashMap<RecordingId, Arc<LiveFeed>>>>,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub").finish_non_exhaustive()
    }
}

impl LiveHub {
    pub(super) fn add(&self, feed: Arc<LiveFeed>) {
        if let Ok(mut m) = self.feeds.lock() {
            m.insert(feed.meta.id.clone(), feed);
        }
    }

    pub(super) fn remove(&self, id: &RecordingId) {
        if let Ok(mut m) = self.feeds.lock() {
            m.remove(id);
        }
    }

    /// The recordings being written now.
    pub fn live(&self) -> Vec<RecordingMeta> {
        let mut v: Vec<RecordingMeta> = self
            .feeds
            .lock()
            .map(|m| m.values().map(|f| f.meta.clone()).collect())
            .unwrap_or_default();
        v.sort_by_key(|m| m.started_at);
        v
    }

    /// The feed of a live recording (`None` once it ended).
    pub fn feed(&self, id: &RecordingId) -> Option<Arc<LiveFeed>> {
        self.feeds.lock().ok()?.get(id).cloned()
    }

    /// Subscribes to a live recording: its screen now and its events from now on.
    pub fn subscribe(
        &self,
        id: &RecordingId,
    ) -> Option<(LiveSnapshot, broadcast::Receiver<LiveEvent>)> {
        self.feed(id)?.subscribe()
    }
}
