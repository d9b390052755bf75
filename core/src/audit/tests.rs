use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::error::AuditError;
use crate::secret::SecretKey;
use crate::testutil::TempDir;

pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    super::chain::segments(dir).unwrap()
}

pub(crate) fn key() -> AuditKey {
    AuditKey::new(&SecretKey::from_bytes([5; 32]))
}

pub(crate) fn ev(n: u32) -> AuditEvent {
    AuditEvent::AdminAction {
        actor: "cli".into(),
        action: format!("test-{n}"),
        subject: "x".into(),
        outcome: Outcome::Success,
    }
}

async fn write_n(dir: &Path, n: u32) {
    let log = AuditLog::open(dir, key()).unwrap();
    for i in 0..n {
        log.record(ev(i)).await.unwrap();
    }
}

fn the_segment(dir: &Path) -> PathBuf {
    let segs = segment_files(dir);
    assert_eq!(segs.len(), 1);
    segs[0].clone()
}

pub(crate) fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub(crate) fn write_lines(p: &Path, l: &[String]) {
    std::fs::write(p, l.iter().map(|s| format!("{s}\n")).collect::<String>()).unwrap();
}

fn tampered(r: Result<VerifyReport, AuditError>) -> (usize, String) {
    match r {
        Err(AuditError::Tampered { line, problem, .. }) => (line, problem),
        other => panic!("expected tampering to be found, got {other:?}"),
    }
}

#[tokio::test]
async fn chain_verifies_and_continues_after_restart() {
    let dir = TempDir::new("audit");
    write_n(dir.path(), 3).await;
    write_n(dir.path(), 2).await; // a restart continues the chain
    let report = verify(dir.path(), &key()).unwrap();
    assert_eq!(report.records, 5);
    let l = lines(&the_segment(dir.path()));
    assert!(l[0].starts_with("{\"seq\":0,\"ts\":\""));
    assert!(l[4].starts_with("{\"seq\":4,"));
    assert!(l[3].contains("\"event\":{\"event\":\"admin_action\""));
    // The wrong key finds every record forged.
    assert!(verify(dir.path(), &AuditKey::new(&SecretKey::from_bytes([6; 32]))).is_err());
    // ...and the writer refuses to continue a chain it cannot authenticate.
    assert!(AuditLog::open(dir.path(), AuditKey::new(&SecretKey::from_bytes([6; 32]))).is_err());
}

#[tokio::test]
async fn change_is_detected() {
    let dir = TempDir::new("audit");
    write_n(dir.path(), 4).await;
    let seg = the_segment(dir.path());
    let mut l = lines(&seg);
    l[2] = l[2].replace("test-2", "test-X");
    write_lines(&seg, &l);
    let (line, problem) = tampered(verify(dir.path(), &key()));
    assert_eq!(line, 3);
    assert!(
        problem.contains("record 2 was changed: its MAC"),
        "{problem}"
    );
}

#[tokio::test]
async fn removal_is_detected() {
    let dir = TempDir::new("audit");
    write_n(dir.path(), 4).await;
    let seg = the_segment(dir.path());
    let mut l = lines(&seg);
    l.remove(1);
    write_lines(&seg, &l);
    let (line, problem) = tampered(verify(dir.path(), &key()));
    assert_eq!(line, 2);
    assert!(problem.contains("record 1 was removed"), "{problem}");
    // Removing the first record is found too.
    let dir2 = TempDir::new("audit");
    write_n(dir2.path(), 3).await;
    let seg2 = the_segment(dir2.path());
    let mut l2 = lines(&seg2);
    l2.remove(0);
    write_lines(&seg2, &l2);
    assert_eq!(tampered(verify(dir2.path(), &key())).0, 1);
}

#[tokio::test]
async fn reorder_is_detected() {
    let dir = TempDir::new("audit");
    write_n(dir.path(), 4).await;
    let seg = the_segment(dir.path());
    let mut l = lines(&seg);
    l.swap(1, 2);
    write_lines(&seg, &l);
    let (line, _) = tampered(verify(dir.path(), &key()));
    assert_eq!(line, 2);
}

#[tokio::test]
async fn torn_last_line_is_cut_on_restart() {
    let dir = TempDir::new("audit");
    write_n(dir.path(), 2).await;
    let seg = the_segment(dir.path());
    let mut text = std::fs::read_to_string(&seg).unwrap();
    text.push_str("{\"seq\":2,\"ts\":\"20");
    std::fs::write(&seg, text).unwrap();
    // A crash, not tampering: the prefix verifies and the torn line is reported.
    let r = verify(dir.path(), &key()).unwrap();
    assert_eq!(r.records, 2);
    assert_eq!(r.torn_tail.as_ref().map(|t| t.line), Some(3));
    write_n(dir.path(), 1).await;
    assert_eq!(verify(dir.path(), &key()).unwrap().records, 3);
}

#[tokio::test]
async fn deny_carries_incident_id_and_concurrent_records_chain() {
    let dir = TempDir::new("audit");
    let log = AuditLog::open(dir.path(), key()).unwrap();
    let r = log
        .record(AuditEvent::AccessDenied {
            user: "bob".into(),
            object: "app:wiki/admin/x".into(),
            action: "GET".into(),
            rule: Some("p, group:staff, app:wiki/admin/*, *, deny".into()),
            incident_id: new_incident_id(),
            context: AccessContext::default(),
        })
        .await
        .unwrap();
    let id = r.incident_id.unwrap();
    assert!(id.starts_with("inc-") && id.len() == 36);
    assert_ne!(id, new_incident_id());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let log = log.clone();
        tasks.push(tokio::spawn(
            async move { log.record(ev(i)).await.unwrap().seq },
        ));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
    assert_eq!(verify(dir.path(), &key()).unwrap().records, 51);
    assert!(
        std::fs::read_to_string(the_segment(dir.path()))
            .unwrap()
            .contains(&id)
    );
}

#[tokio::test]
async fn unwritable_log_returns_error() {
    let dir = TempDir::new("audit");
    let log_dir = dir.path().join("log");
    let log = AuditLog::open(&log_dir, key()).unwrap();
    log.record(ev(0)).await.unwrap();
    // The segment becomes unwritable: replace the directory by a file.
    std::fs::remove_dir_all(&log_dir).unwrap();
    std::fs::write(&log_dir, "x").unwrap();
    assert!(
        log.record(ev(1)).await.is_err(),
        "a record that cannot be written is an error"
    );
}

#[tokio::test]
async fn two_writers_on_one_directory_keep_one_chain() {
    // The server and a CLI command (admin action) may write at the same time.
    let dir = TempDir::new("audit");
    let a = AuditLog::open(dir.path(), key()).unwrap();
    let b = AuditLog::open(dir.path(), key()).unwrap();
    for i in 0..10 {
        a.record(ev(i)).await.unwrap();
        b.record(ev(100 + i)).await.unwrap();
    }
    let (ra, rb) = tokio::join!(a.record(ev(50)), b.record(ev(51)));
    assert_ne!(ra.unwrap().seq, rb.unwrap().seq);
    assert_eq!(verify(dir.path(), &key()).unwrap().records, 22);
}

#[tokio::test]
async fn a_moved_log_directory_is_an_error_not_a_silent_write() {
    // The open segment's file survives a rename of its directory: writing on into it would
    // put records where nobody looks. The writer checks the path still names its file.
    let dir = TempDir::new("audit");
    let log_dir = dir.path().join("log");
    let log = AuditLog::open(&log_dir, key()).unwrap();
    log.record(ev(0)).await.unwrap();
    std::fs::rename(&log_dir, dir.path().join("moved")).unwrap();
    std::fs::create_dir(&log_dir).unwrap();
    // A new, empty directory at the old path: the next record fails...
    assert!(log.record(ev(1)).await.is_err());
    assert_eq!(
        std::fs::read_to_string(
            dir.path().join("moved").join(
                segment_files(&dir.path().join("moved"))[0]
                    .file_name()
                    .unwrap()
            )
        )
        .unwrap()
        .lines()
        .count(),
        1,
        "nothing was written into the moved file"
    );
    // ...and so does every later one: a new chain over records this server confirmed would
    // hide that they are gone. A restart starts on the directory as it is.
    assert!(matches!(
        log.record(ev(2)).await,
        Err(AuditError::Tampered { .. })
    ));
    drop(log);
    let log = AuditLog::open(&log_dir, key()).unwrap();
    log.record(ev(3)).await.unwrap();
    assert_eq!(verify(&log_dir, &key()).unwrap().records, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_never_stall_the_log() {
    // Hundreds of concurrent records, many of whose callers are cancelled while they wait
    // for their batch (a client hanging up mid-request). The pen is never lost: every record
    // that was confirmed is in the chain, the chain verifies, and the log still writes.
    let dir = TempDir::new("audit");
    let log = AuditLog::open(dir.path(), key()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..400u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                // Cancelled almost at once, often while waiting for its turn.
                tokio::time::timeout(Duration::from_micros(1), log.record(ev(i)))
                    .await
                    .ok()
                    .map(|r| r.unwrap().seq)
            } else {
                Some(log.record(ev(i)).await.unwrap().seq)
            }
        }));
    }
    let mut confirmed = Vec::new();
    for t in tasks {
        if let Some(seq) = t.await.unwrap() {
            confirmed.push(seq);
        }
    }
    let last = tokio::time::timeout(Duration::from_secs(5), log.record(ev(999)))
        .await
        .expect("the log stalled")
        .unwrap();
    let report = verify(dir.path(), &key()).unwrap();
    assert_eq!(report.records, last.seq + 1, "no gap in the chain");
    let text = std::fs::read_to_string(the_segment(dir.path())).unwrap();
    let written: std::collections::HashSet<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(confirmed.iter().all(|s| written.contains(s)));
    assert!(confirmed.len() >= 266);
}

#[tokio::test]
async fn records_are_synced_soon_after_they_are_written() {
    // Confirmed records reach the disk without another record pushing them: the syncer
    // fdatasyncs at once after an idle period. Observed through the cross-process lock,
    // which the syncer hands back only after its sync.
    let dir = TempDir::new("audit");
    let log = AuditLog::open(dir.path(), key()).unwrap();
    log.record(ev(0)).await.unwrap();
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(".audit.lock"))
        .unwrap();
    let start = std::time::Instant::now();
    tokio::task::spawn_blocking(move || lock.lock().unwrap())
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// Takes the log directory's lock as another process would (a CLI command); granted once
/// the syncer hands it back after its sync.
async fn hold_dir_lock(dir: &Path) -> std::fs::File {
    let path = dir.join(".audit.lock");
    tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.lock().unwrap();
        f
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_lock_held_by_another_process_delays_records_without_blocking_the_thread() {
    // A CLI command holds the directory lock: the server's record waits for it, but its
    // thread keeps serving other tasks (this test runs on a single thread).
    let dir = TempDir::new("audit");
    let log = AuditLog::open(dir.path(), key()).unwrap();
    log.record(ev(0)).await.unwrap();
    let other = hold_dir_lock(dir.path()).await;
    let pending = tokio::spawn({
        let log = log.clone();
        async move { log.record(ev(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished(), "the record waits for the lock");
    other.unlock().unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the record never got the lock")
        .unwrap();
    assert_eq!(r.unwrap().seq, 1);
    assert_eq!(verify(dir.path(), &key()).unwrap().records, 2);
}

#[tokio::test]
async fn a_detached_record_waits_for_a_lock_held_by_another_process_and_is_not_lost() {
    // A response's answers are written without a waiter; a CLI command holding the
    // directory lock at that moment must delay them, never drop them.
    let dir = TempDir::new("audit");
    let log = AuditLog::open(dir.path(), key()).unwrap();
    log.record(ev(0)).await.unwrap();
    let other = hold_dir_lock(dir.path()).await;
    let answers = AuditEvent::RequestsCompleted {
        session: "ab12".into(),
        answers: vec![crate::audit::Answer {
            request_id: "r-1".into(),
            status: 200,
            bytes: 5,
            duration_ms: 1,
        }],
    };
    assert!(log.record_detached(&answers));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(lines(&the_segment(dir.path())).len(), 1, "not written yet");
    other.unlock().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while lines(&the_segment(dir.path())).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the record was lost");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lines(&the_segment(dir.path()))[1].contains("\"requests_completed\""));
    assert_eq!(verify(dir.path(), &key()).unwrap().records, 2);
}

#[tokio::test]
async fn the_head_is_found_from_the_end_of_a_large_segment() {
    // The head is read backwards in growing windows: a segment far larger than the first
    // window, a last record longer than it, and a torn line after it.
    let dir = TempDir::new("audit");
    write_n(dir.path(), 300).await;
    {
        let log = AuditLog::open(dir.path(), key()).unwrap();
        log.record(AuditEvent::PolicyReload {
            ok: false,
            rules: 0,
            error: Some("x".repeat(100_000)),
        })
        .await
        .unwrap();
    }
    let seg = the_segment(dir.path());
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":302,\"ts\":\"torn").unwrap();
    drop(f);
    let log = AuditLog::open(dir.path(), key()).unwrap();
    assert_eq!(log.record(ev(1)).await.unwrap().seq, 301);
    assert_eq!(verify(dir.path(), &key()).unwrap().records, 302);
}

#[test]
fn access_context_fields_sit_in_the_event_and_absent_ones_are_left_out() {
    let ev = |context| AuditEvent::AccessAllowed {
        user: "alice".into(),
        object: "app:wiki/page".into(),
        action: "GET".into(),
        rule: "p, group:staff, app:wiki/*, GET, allow".into(),
        grant_id: None,
        grant_reason: None,
        context,
    };
    let full = ev(AccessContext {
        client_addr: Some("192.0.2.7".parse().unwrap()),
        session: Some("ab".repeat(32)),
        request_id: Some("0badf00d-2a".into()),
    });
    let json: serde_json::Value = serde_json::to_value(&full).unwrap();
    assert_eq!(json["event"], "access_allowed");
    assert_eq!(json["client_addr"], "192.0.2.7");
    assert_eq!(json["session"], "ab".repeat(32));
    assert_eq!(json["request_id"], "0badf00d-2a");
    assert_eq!(
        serde_json::from_value::<AuditEvent>(json).unwrap(),
        full,
        "round trip"
    );
    let bare = serde_json::to_string(&ev(AccessContext::default())).unwrap();
    for absent in ["client_addr", "session", "request_id", "null"] {
        assert!(!bare.contains(absent), "{absent} in {bare}");
    }
}

mod export;
mod shipping;
mod signed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_records_are_written_in_the_chain_with_or_without_a_writer() {
    let dir = TempDir::new("audit");
    let log = AuditLog::open(dir.path(), key()).unwrap();
    let done = |n: u64| AuditEvent::RequestCompleted {
        session: "ab12".into(),
        request_id: format!("r-{n}"),
        status: 200,
        bytes: n,
        duration_ms: 1,
    };
    // Nobody writing: written at once, before the call returns.
    assert!(log.record_detached(&done(0)));
    assert!(lines(&the_segment(dir.path()))[0].contains("\"request_id\":\"r-0\""));
    // Beside waiting writers on several threads: every one is written, the chain holds.
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.record(ev(i)).await.unwrap();
            assert!(log.record_detached(&done(u64::from(i) + 1)));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    log.record(ev(99)).await.unwrap();
    assert_eq!(verify(dir.path(), &key()).unwrap().records, 82);
    let text = std::fs::read_to_string(the_segment(dir.path())).unwrap();
    for n in 0..=40 {
        assert!(text.contains(&format!("\"request_id\":\"r-{n}\"")), "r-{n}");
    }
}
