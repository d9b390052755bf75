//! The console's data endpoints: a recording's screens for a time range (the player's
//! frames, drawn on the server by core's virtual terminal) and the export of a recording as
//! plain asciicast (SSH) or JSON lines of requests (web), streamed.
//!
//! A frames request reads the recording from its start up to the end of its range and no
//! further, in bounded memory; the range is capped at [`MAX_RANGE`] seconds and the answer
//! at core's frame cap, so a 100 MB recording opens and seeks without being loaded whole.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

use gatehouse_core::recording::{
    Frame, RecordingError, RecordingId, RecordingKind, Replay, frames_from, web_timeline_from_log,
};

use super::{Reviewer, audited, json};
use crate::body::ResBody;
use crate::request_id::RequestId;
use crate::respond;
use crate::state::State;
use crate::web::form::Form;

/// Longest range one frames request covers (seconds of recording).
pub const MAX_RANGE: f64 = 300.0;
/// Changes closer than this are drawn as one frame (25 frames a second at most).
const MIN_GAP: f64 = 0.04;
/// Most frames one answer carries.
const MAX_FRAMES: usize = 600;
/// Chunks of an export in flight to a slow client.
const EXPORT_QUEUE: usize = 16;
/// Bytes per export chunk.
const EXPORT_CHUNK: usize = 64 * 1024;

#[derive(Serialize)]
struct FramesAnswer {
    from: f64,
    to: f64,
    frames: Vec<Frame>,
    /// Where to continue when the frame cap cut the range short.
    next: Option<f64>,
    /// The recording's last event, when the range reached the end.
    end: Option<f64>,
}

/// The range asked for: `from` (default 0) and `to` (default and at most `from` +
/// [`MAX_RANGE`]); `None` when a value is not a number.
fn range(query: &str) -> Option<(f64, f64)> {
    let form = Form::parse(query.as_bytes()).ok()?;
    let num = |k: &str| -> Option<Option<f64>> {
        match form.get(k) {
            None => Some(None),
            Some(v) => v.parse::<f64>().ok().filter(|n| n.is_finite()).map(Some),
        }
    };
    let from = num("from")?.unwrap_or(0.0).max(0.0);
    let to = num("to")?
        .unwrap_or(from + MAX_RANGE)
        .clamp(from, from + MAX_RANGE);
    Some((from, to))
}

/// GET `/.gatehouse/review/s/<id>/frames?from=S&to=S`.
pub(super) async fn frames(
    state: &State,
    reviewer: &Reviewer,
    rec: &RecordingId,
    query: &str,
    id: RequestId,
) -> Response<ResBody> {
    let Some((from, to)) = range(query) else {
        return respond::error(StatusCode::BAD_REQUEST, id, false);
    };
    let review = &state.review;
    if review.replay_needs_audit(reviewer.session(), rec) {
        let detail = Some(format!("from={from:.1}s"));
        if let Err(resp) = audited(state, reviewer, "replay", Some(rec), detail, id).await {
            review.forget_replay(reviewer.session(), rec);
            return resp;
        }
    }
    let recordings = state.services.recordings.clone();
    let rid = rec.clone();
    let resume = review.checkpoint_before(rec, from);
    let read = tokio::task::spawn_blocking(move || {
        let mut opened = recordings.open_cast(&rid)?;
        let replay = Replay {
            from,
            to,
            min_gap: MIN_GAP,
            max: MAX_FRAMES,
            resume: resume.as_ref(),
            checkpoint_every: crate::state::CHECKPOINT_EVERY,
        };
        frames_from(&mut opened.reader, &replay)
    })
    .await;
    match read {
        Ok(Ok((f, taken))) => {
            review.keep_checkpoints(rec, taken);
            json(
                &FramesAnswer {
                    from,
                    to,
                    frames: f.frames,
                    next: f.next,
                    end: f.end,
                },
                id,
            )
        }
        Ok(Err(RecordingError::NotFound(_) | RecordingError::InvalidId)) => {
            respond::error(StatusCode::NOT_FOUND, id, false)
        }
        Ok(Err(e)) => {
            tracing::error!(request_id = %id, recording = %rec, error = %gatehouse_core::error_chain(&e), "review: cannot read a recording");
            respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false)
        }
        Err(_) => respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false),
    }
}

/// Sends `bytes` to the client in chunks; false once it went away.
fn send(tx: &mpsc::Sender<Bytes>, buf: &mut Vec<u8>, flush: bool) -> bool {
    if buf.len() >= EXPORT_CHUNK || (flush && !buf.is_empty()) {
        let chunk = Bytes::from(std::mem::take(buf));
        return tx.blocking_send(chunk).is_ok();
    }
    true
}

/// Writes the export of `rid` to `tx`, chunk by chunk (on a blocking thread).
fn produce(
    state: ExportSources,
    rid: &RecordingId,
    kind: RecordingKind,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), RecordingError> {
    let mut buf = Vec::with_capacity(EXPORT_CHUNK);
    let line = |buf: &mut Vec<u8>, v: &dyn erased::Json| {
        v.write(buf);
        buf.push(b'\n');
    };
    if kind == RecordingKind::Web {
        let meta = state.recordings.meta(rid)?.meta;
        for r in web_timeline_from_log(&state.audit_dir, &meta, &state.hosts)? {
            line(&mut buf, &r);
            if !send(tx, &mut buf, false) {
                return Ok(());
            }
        }
        send(tx, &mut buf, true);
        return Ok(());
    }
    let mut opened = state.recordings.open_cast(rid)?;
    line(&mut buf, opened.reader.header());
    while let Some(ev) = opened.reader.next_event()? {
        line(&mut buf, &(ev.time, ev.code.as_str(), ev.data.as_str()));
        if !send(tx, &mut buf, false) {
            return Ok(());
        }
    }
    send(tx, &mut buf, true);
    Ok(())
}

/// Serialising to a buffer, for values of different types in one closure.
mod erased {
    pub trait Json {
        fn write(&self, buf: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Json for T {
        fn write(&self, buf: &mut Vec<u8>) {
            // Serialising plain data to a Vec cannot fail.
            let _ = serde_json::to_writer(buf, self);
        }
    }
}

struct ExportSources {
    recordings: gatehouse_core::recording::Recordings,
    audit_dir: std::path::PathBuf,
    hosts: std::collections::HashMap<String, String>,
}

/// GET `/.gatehouse/review/s/<id>/export`: the plain recording, as a download.
pub(super) async fn export(
    state: &State,
    reviewer: &Reviewer,
    rec: &RecordingId,
    id: RequestId,
) -> Response<ResBody> {
    let recordings = state.services.recordings.clone();
    let rid = rec.clone();
    let kind = match tokio::task::spawn_blocking(move || recordings.meta(&rid)).await {
        Ok(Ok(s)) => s.meta.kind,
        Ok(Err(RecordingError::NotFound(_))) => {
            return respond::error(StatusCode::NOT_FOUND, id, false);
        }
        Ok(Err(e)) => {
            tracing::error!(request_id = %id, recording = %rec, error = %gatehouse_core::error_chain(&e), "review: cannot read a recording");
            return respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false);
        }
        Err(_) => return respond::error(StatusCode::INTERNAL_SERVER_ERROR, id, false),
    };
    if let Err(resp) = audited(state, reviewer, "export", Some(rec), None, id).await {
        return resp;
    }
    let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
    let sources = ExportSources {
        recordings: state.services.recordings.clone(),
        audit_dir: state.review.audit_dir.clone(),
        hosts: state.review.hosts.clone(),
    };
    let rid = rec.clone();
    let request = id.to_string();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = produce(sources, &rid, kind, &tx) {
            // The client gets a cut file (the status is already sent); the log says why.
            tracing::error!(request_id = %request, recording = %rid, error = %gatehouse_core::error_chain(&e), "review: export failed");
        }
    });
    let (ext, ctype) = match kind {
        RecordingKind::Ssh => ("cast", "application/x-asciicast"),
        RecordingKind::Web => ("jsonl", "application/x-ndjson"),
    };
    let mut resp = respond::empty(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{rec}.{ext}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    *resp.body_mut() = ResBody::channel(rx);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_numbers_and_bounded() {
        assert_eq!(range(""), Some((0.0, MAX_RANGE)));
        assert_eq!(range("from=10&to=20"), Some((10.0, 20.0)));
        assert_eq!(range("from=-5&to=1"), Some((0.0, 1.0)));
        assert_eq!(range("from=10&to=5"), Some((10.0, 10.0)));
        assert_eq!(range("from=0&to=100000"), Some((0.0, MAX_RANGE)));
        for bad in ["from=x", "to=NaN", "from=inf", "from=1&from=2"] {
            assert_eq!(range(bad), None, "{bad}");
        }
    }
}
