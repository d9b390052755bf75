//! Web sessions as recordings. A web session's requests are its audit records (written once,
//! on the request path); what is kept here is the session's entry in the recordings
//! directory and its index, so `gatehouse recordings list --user/--app` and the reviewer
//! console find it: registered when the session is created (every sign-in ends in
//! `login::finish`), the apps it reached added the first time it reaches each one, and an
//! end when the session ends (logout, revocation, expiry, a restart of the in-process store).
//!
//! Threat: a session running with no recording entry; recording work slowing every request;
//! a live entry that never ends. Mitigation: a session is created only once its entry is
//! written, else the sign-in is refused (503, and a `login_failure` record); the request
//! path does nothing here but at the first signed identity assertion of a session and app
//! (rare), which only queues the app's name on a bounded channel for a background task;
//! that task also ends entries on the store's revocation events and, every
//! [`SWEEP_INTERVAL`], ends every live entry whose session the store no longer has.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gatehouse_core::error_chain;
use gatehouse_core::recording::{RecordingError, RecordingId, Recordings};
use gatehouse_core::store::{RevocationEvent, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// First uses of an app that may wait for the background task.
pub const APP_USE_QUEUE: usize = 1024;
/// How often live entries are checked against the store's sessions (expiry, missed events).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// A session reached an app for the first time (as the assertion cache saw it).
#[derive(Debug)]
struct AppUse {
    session_hash: String,
    app: String,
}

/// The gateway's side of web-session recordings.
#[derive(Debug)]
pub struct WebSessions {
    recordings: Recordings,
    uses: mpsc::Sender<AppUse>,
    /// Taken by [`WebSessions::run`].
    rx: Mutex<Option<mpsc::Receiver<AppUse>>>,
}

impl WebSessions {
    pub fn new(recordings: Recordings) -> WebSessions {
        let (uses, rx) = mpsc::channel(APP_USE_QUEUE);
        WebSessions {
            recordings,
            uses,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Registers the web session `session_hash` of `user`; an error must refuse the session.
    pub async fn started(
        &self,
        user: &str,
        session_hash: &str,
    ) -> Result<RecordingId, RecordingError> {
        self.recordings
            .web_session_started(user, session_hash)
            .await
    }

    /// Notes (without waiting) that the session reached `app`; called at the first
    /// assertion signed for a session and app. A full queue drops the note (the requests
    /// stay in the audit log) and says so.
    pub fn app_used(&self, session_hash: &str, app: &str) {
        let note = AppUse {
            session_hash: session_hash.to_string(),
            app: app.to_string(),
        };
        if self.uses.try_send(note).is_err() {
            tracing::warn!(
                app,
                "web recording: app use not noted (queue full or closed)"
            );
        }
    }

    /// Ends the recording of session `session_hash` (no recording: nothing to do).
    pub async fn ended(&self, session_hash: &str) {
        let id = RecordingId::for_web_session(session_hash);
        match self.recordings.web_session_ended(&id).await {
            Ok(()) | Err(RecordingError::NotFound(_)) => {}
            Err(e) => {
                tracing::error!(recording = %id, error = %error_chain(&e), "web recording: cannot mark the session ended");
            }
        }
    }

    /// Ends the recordings of every live web session of `user`.
    async fn ended_user(&self, user: &str) {
        for m in self.live().await {
            if m.user == user
                && let Some(hash) = m.session.as_deref()
            {
                self.ended(hash).await;
            }
        }
    }

    async fn live(&self) -> Vec<gatehouse_core::recording::RecordingMeta> {
        let rec = self.recordings.clone();
        match tokio::task::spawn_blocking(move || rec.web_sessions_live()).await {
            Ok(Ok(live)) => live,
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "web recording: cannot list live sessions");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Ends every live entry whose session the store no longer has.
    async fn sweep(&self, store: &dyn Store) {
        let live = self.live().await;
        if live.is_empty() {
            return;
        }
        let sessions = match store.list_sessions().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "web recording: cannot list sessions to end expired ones");
                return;
            }
        };
        let current: HashSet<&str> = sessions.iter().map(|s| s.id_hash.as_str()).collect();
        for m in &live {
            if let Some(hash) = m.session.as_deref()
                && !current.contains(hash)
            {
                self.ended(hash).await;
            }
        }
    }

    async fn on_use(&self, u: AppUse) {
        let id = RecordingId::for_web_session(&u.session_hash);
        match self.recordings.web_app_used(&id, &u.app).await {
            Ok(()) => {}
            Err(RecordingError::NotFound(_)) => {
                tracing::warn!(recording = %id, app = %u.app, "web recording: a session without a recording entry reached an app");
            }
            Err(e) => {
                tracing::error!(recording = %id, error = %error_chain(&e), "web recording: cannot note an app use");
            }
        }
    }

    /// The background task: app uses, revocation events and the periodic sweep, until
    /// `stop`. Runs once per gateway (a second call returns at once).
    pub(crate) async fn run(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        let Some(mut uses) = self
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events = None;
        loop {
            if events.is_none() {
                match store.subscribe_revocations().await {
                    Ok(rx) => events = Some(rx),
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "web recording: cannot follow revocations; the sweep ends sessions");
                    }
                }
            }
            let next = async {
                match events.as_mut() {
                    Some(rx) => Some(rx.recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                u = uses.recv() => match u {
                    Some(u) => self.on_use(u).await,
                    None => return,
                },
                _ = tick.tick() => self.sweep(&*store).await,
                ev = next => match ev {
                    Some(Ok(RevocationEvent::Session { id_hash })) => self.ended(&id_hash).await,
                    Some(Ok(RevocationEvent::User { user })) => self.ended_user(&user).await,
                    Some(Ok(RevocationEvent::Grants { .. })) | None => {}
                    Some(Ok(RevocationEvent::Resync) | Err(RecvError::Lagged(_))) => {
                        self.sweep(&*store).await;
                    }
                    Some(Err(RecvError::Closed)) => {
                        events = None;
                        self.sweep(&*store).await;
                    }
                },
            }
        }
    }
}
