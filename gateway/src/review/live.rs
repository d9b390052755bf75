//! Live sessions: a reviewer watches an SSH terminal as it happens (server-sent events of
//! screens drawn on the server from the live feed), and a holder of `gatehouse:terminate`
//! ends a live session with a reason.
//!
//! A watch stream ends after [`WATCH_RECHECK`]; the browser's `EventSource` reconnects
//! through the gate, so a reviewer whose right was withdrawn stops seeing the terminal
//! within that time. It also ends when the session ends (an `end` event, after which the
//! page does not reconnect) and when the gateway drains.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::{broadcast, mpsc};

use gatehouse_core::audit::AuditEvent;
use gatehouse_core::error_chain;
use gatehouse_core::recording::{LiveScreen, RecordingId, RecordingKind, RecordingMeta};

use super::{REVIEW_PATH, Reviewer, Terminator, audited, may_terminate, page};
use crate::body::ResBody;
use crate::pages::escape;
use crate::request_id::RequestId;
use crate::respond;
use crate::state::State;
use crate::web::csrf::{check_origin, purpose};

/// How long one watch stream lasts before the browser reconnects (and is authorized again).
pub const WATCH_RECHECK: Duration = Duration::from_secs(5 * 60);
/// Screens sent at most this often (changes in between are drawn together).
const FRAME_INTERVAL: Duration = Duration::from_millis(100);
/// A comment line this often keeps idle streams open through proxies.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events queued to a slow watcher; when full the screen is sent later (never the session
/// waiting: the feed is a broadcast the writer never blocks on).
const WATCH_QUEUE: usize = 8;
/// Longest reason accepted.
pub const MAX_REASON: usize = 500;

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// GET `/.gatehouse/review/s/<id>/live`: `text/event-stream` of `frame` events (a
/// [`gatehouse_core::recording::Frame`] as JSON) and a final `end`.
pub(super) async fn watch(
    state: &State,
    reviewer: &Reviewer,
    rec: &RecordingId,
    id: RequestId,
) -> Response<ResBody> {
    let hub = state.services.recordings.live().clone();
    let Some((snapshot, rx)) = hub.subscribe(rec) else {
        return respond::error(StatusCode::NOT_FOUND, id, false);
    };
    if snapshot.meta.kind != RecordingKind::Ssh {
        return respond::error(StatusCode::NOT_FOUND, id, false);
    }
    if let Err(resp) = audited(state, reviewer, "watch", Some(rec), None, id).await {
        return resp;
    }
    let Some(screen) = LiveScreen::new(snapshot.cols, snapshot.rows, &snapshot.screen) else {
        return respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false);
    };
    let (tx, body) = mpsc::channel(WATCH_QUEUE);
    let stop = state.review.stop.clone();
    let rid = rec.clone();
    tokio::spawn(async move {
        stream(hub, rid, screen, rx, tx, stop).await;
    });
    let mut resp = respond::empty(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    *resp.body_mut() = ResBody::channel(body);
    resp
}

/// Feeds one watcher until the session ends, the watcher leaves, the recheck time is up or
/// the gateway drains.
async fn stream(
    hub: gatehouse_core::recording::LiveHub,
    rid: RecordingId,
    mut screen: LiveScreen,
    mut rx: broadcast::Receiver<gatehouse_core::recording::LiveEvent>,
    tx: mpsc::Sender<Bytes>,
    stop: tokio_util::sync::CancellationToken,
) {
    let frame_json =
        |s: &LiveScreen, t: f64| serde_json::to_string(&s.frame(t)).unwrap_or_default();
    let mut last_time = 0.0;
    if tx
        .send(Bytes::from_static(b"retry: 1000\n\n"))
        .await
        .is_err()
        || tx
            .send(event("frame", &frame_json(&screen, last_time)))
            .await
            .is_err()
    {
        return;
    }
    let deadline = tokio::time::sleep(WATCH_RECHECK);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(FRAME_INTERVAL);
    let mut beat = tokio::time::interval(HEARTBEAT);
    let mut dirty = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = &mut deadline => return,
            () = tx.closed() => return,
            _ = beat.tick() => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
            _ = tick.tick(), if dirty => {
                dirty = false;
                if tx.send(event("frame", &frame_json(&screen, last_time))).await.is_err() {
                    return;
                }
            }
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    last_time = ev.time;
                    dirty |= screen.apply(ev.code, &ev.data);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind: start again from the screen as it is now.
                    let Some((snap, fresh)) = hub.subscribe(&rid) else {
                        let _ = tx.send(event("end", "{}")).await;
                        return;
                    };
                    let Some(s) = LiveScreen::new(snap.cols, snap.rows, &snap.screen) else {
                        return;
                    };
                    screen = s;
                    rx = fresh;
                    dirty = true;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = tx.send(event("frame", &frame_json(&screen, last_time))).await;
                    let _ = tx.send(event("end", "{}")).await;
                    return;
                }
            },
        }
    }
}

/// The reason of a termination: trimmed, 1 to [`MAX_REASON`] characters, no control
/// characters.
fn reason(text: Option<&str>) -> Option<String> {
    let t = text?.trim();
    let n = t.chars().count();
    ((1..=MAX_REASON).contains(&n) && !t.chars().any(char::is_control)).then(|| t.to_string())
}

/// POST `/.gatehouse/review/s/<id>/terminate` (`csrf`, `reason`).
pub(super) async fn terminate(
    state: &State,
    reviewer: &Reviewer,
    rec: &RecordingId,
    req: Request<Incoming>,
    id: RequestId,
) -> Response<ResBody> {
    let (parts, body) = req.into_parts();
    if let Err(e) = check_origin(&parts.headers, &state.login.origins) {
        tracing::info!(request_id = %id, reason = %e, "terminate refused");
        return respond::error(StatusCode::FORBIDDEN, id, false);
    }
    let form = match respond::read_form(&parts.headers, body).await {
        Ok(f) => f,
        Err(e) => return respond::error(e.status(), id, false),
    };
    if let Err(e) =
        state
            .services
            .csrf
            .verify(purpose::REVIEW, reviewer.session(), form.get("csrf"))
    {
        tracing::info!(request_id = %id, reason = %e, "terminate refused");
        return respond::error(StatusCode::FORBIDDEN, id, false);
    }
    let path = format!("{REVIEW_PATH}/s/{rec}/terminate");
    let terminator = match may_terminate(state, reviewer, &parts, &path, id).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Some(reason) = reason(form.get("reason")) else {
        let body = format!(
            "<p class=\"error\" role=\"alert\">Give a reason (1 to {MAX_REASON} characters): it goes in the audit log.</p>\n\
             <p><a href=\"{REVIEW_PATH}/s/{rec}\">Back to the session</a></p>\n"
        );
        return page(StatusCode::BAD_REQUEST, "Session not ended", &body);
    };
    let recordings = state.services.recordings.clone();
    let rid = rec.clone();
    let meta = match tokio::task::spawn_blocking(move || recordings.index().get(&rid)).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => return respond::error(StatusCode::NOT_FOUND, id, false),
        Ok(Err(e)) => {
            tracing::error!(request_id = %id, error = %error_chain(&e), "terminate: index unavailable");
            return respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false);
        }
        Err(_) => return respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false),
    };
    end(state, &terminator, &meta, reason, id).await
}

/// Ends a live session: the `session_terminated` record first, then the SSH connection
/// closed or the web session revoked.
async fn end(
    state: &State,
    t: &Terminator<'_>,
    meta: &RecordingMeta,
    reason: String,
    id: RequestId,
) -> Response<ResBody> {
    let rec = &meta.id;
    let back = format!("<p><a href=\"{REVIEW_PATH}/s/{rec}\">Back to the session</a></p>\n");
    let session = meta.session.clone().unwrap_or_default();
    let live = match meta.kind {
        RecordingKind::Ssh => state.services.recordings.live().feed(rec).is_some(),
        RecordingKind::Web => meta.ended_at.is_none(),
    };
    let can = match meta.kind {
        RecordingKind::Ssh => state.services.end_ssh.is_some(),
        RecordingKind::Web => true,
    };
    if !live || session.is_empty() || !can {
        let body = format!("<p>This session is not live here: nothing was ended.</p>\n{back}");
        return page(StatusCode::CONFLICT, "Session not live", &body);
    }
    let record = AuditEvent::SessionTerminated {
        by: t.reviewer().actor(),
        user: meta.user.clone(),
        kind: meta.kind.as_str().to_string(),
        recording_id: rec.to_string(),
        session: session.clone(),
        reason: reason.clone(),
        context: t.reviewer().context(),
    };
    if let Err(e) = state.services.audit.record(record).await {
        tracing::error!(request_id = %id, error = %error_chain(&e), "terminate refused: audit log unavailable");
        return respond::unavailable("The audit log cannot be written: nothing was ended.", id);
    }
    let ended = match meta.kind {
        RecordingKind::Ssh => state
            .services
            .end_ssh
            .as_ref()
            .is_some_and(|e| e.end_ssh(&session)),
        RecordingKind::Web => end_web(state, meta, &session, id).await,
    };
    tracing::warn!(request_id = %id, reviewer = %t.reviewer().user(), user = %meta.user, recording = %rec, ended, "a reviewer ended a live session");
    let body = if ended {
        format!(
            "<p>The {} session of <strong>{}</strong> was ended. Reason on record: <q>{}</q></p>\n{back}",
            meta.kind.as_str().to_uppercase(),
            escape(&meta.user),
            escape(&reason)
        )
    } else {
        format!("<p>The session had already ended.</p>\n{back}")
    };
    page(StatusCode::OK, "Session ended", &body)
}

/// Revokes a web session (and the rest of its sign-in on other hosts); true when it was
/// live.
async fn end_web(state: &State, meta: &RecordingMeta, hash: &str, id: RequestId) -> bool {
    let store = &state.services.store;
    let ended = match store.end_session_hash(hash).await {
        Ok(Some(s)) => {
            if let Some(login) = &s.data.login_id
                && let Err(e) = store.end_login(&s.data.user, login).await
            {
                tracing::error!(request_id = %id, error = %error_chain(&e), "terminate: the sign-in's other sessions were not ended");
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::error!(request_id = %id, error = %error_chain(&e), "terminate: store unavailable");
            false
        }
    };
    if let Err(e) = state.services.recordings.web_session_ended(&meta.id).await {
        tracing::warn!(request_id = %id, error = %error_chain(&e), "terminate: the web session's entry was not closed");
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_required_bounded_and_one_line() {
        assert_eq!(
            reason(Some("  rm -rf on prod ")).as_deref(),
            Some("rm -rf on prod")
        );
        for bad in [None, Some(""), Some("   "), Some("a\nb"), Some("x\u{7}")] {
            assert_eq!(reason(bad), None, "{bad:?}");
        }
        assert!(reason(Some(&"x".repeat(MAX_REASON))).is_some());
        assert!(reason(Some(&"x".repeat(MAX_REASON + 1))).is_none());
    }
}
