//! The signed log: checkpoints, the head file, a cut tail refused at open, durability, and
//! every tamper named by `verify_log`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{ev, key, lines, write_lines};
use crate::audit::checkpoint::{self, CheckpointKind};
use crate::audit::testkit::Backfill;
use crate::audit::{
    AuditEvent, AuditLog, AuditOptions, AuditSigner, VerifyOptions, retention, verify_log,
};
use crate::error::AuditError;
use crate::testutil::TempDir;

pub(crate) const DAY: u64 = 86_400_000;

/// A log directory with its signer and head file.
pub(crate) struct Signed {
    pub dir: TempDir,
    pub signer: Arc<AuditSigner>,
}

impl Signed {
    pub fn new() -> Signed {
        Signed {
            dir: TempDir::new("signed"),
            signer: Arc::new(AuditSigner::generate().unwrap()),
        }
    }
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }
    pub fn head_file(&self) -> PathBuf {
        self.dir.path().join("audit-head.json")
    }
    pub fn opts(&self) -> AuditOptions {
        AuditOptions {
            signer: Some(self.signer.clone()),
            head_file: Some(self.head_file()),
            checkpoint_interval: Duration::from_millis(100),
            ..AuditOptions::default()
        }
    }
    pub fn open(&self) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(&self.log_dir(), key(), self.opts())
    }
    pub fn verify(&self) -> Result<crate::audit::VerifyReport, AuditError> {
        let k = key();
        verify_log(
            &self.log_dir(),
            VerifyOptions {
                mac: Some(&k),
                public_key: Some(self.signer.public_key()),
                head_file: Some(&self.head_file()),
            },
        )
    }
    /// Segments, oldest first.
    pub fn segments(&self) -> Vec<PathBuf> {
        super::segment_files(&self.log_dir())
    }
}

/// Three old days of ten records each (backfilled), then `today` records written by the
/// server with checkpoints, closed.
pub(crate) async fn three_days_and_today(today: u32) -> Signed {
    let s = Signed::new();
    let now = crate::store::now_ms();
    let mut b = Backfill::new(&s.log_dir(), &key()).unwrap();
    b.sign_with(s.signer.clone());
    for day in 0..3u64 {
        for i in 0..10u32 {
            b.push(now - (3 - day) * DAY + u64::from(i) * 1000, &ev(i))
                .unwrap();
        }
    }
    b.finish().unwrap();
    let log = s.open().unwrap();
    for i in 0..today {
        log.record(ev(100 + i)).await.unwrap();
    }
    log.close();
    drop(log);
    s
}

fn problem(r: Result<crate::audit::VerifyReport, AuditError>) -> String {
    match r {
        Err(AuditError::Tampered {
            path,
            line,
            problem,
        }) => {
            format!("{}:{line}: {problem}", path.display())
        }
        Err(AuditError::Broken { path, problem }) => format!("{}: {problem}", path.display()),
        other => panic!("expected a verification failure, got {other:?}"),
    }
}

#[tokio::test]
async fn checkpoints_close_segments_cover_the_head_and_verify() {
    let s = three_days_and_today(5).await;
    let report = s.verify().unwrap();
    assert_eq!(report.records, 35);
    assert_eq!(
        report.signed_through,
        Some(34),
        "the stop checkpoint covers the head"
    );
    assert!(report.checkpoints >= 3);
    let cps = checkpoint::read_dir(&s.log_dir()).unwrap();
    // The first record of today closed the newest backfilled segment.
    let close = cps
        .items
        .iter()
        .find(|f| f.cp.kind == CheckpointKind::Close && f.cp.seq == 29)
        .expect("a close checkpoint of the newest backfilled segment");
    let today = crate::audit::chain::timestamp(crate::store::now_ms()).1;
    assert_eq!(close.cp.next.as_deref(), Some(today.as_str()));
    assert!(
        cps.items
            .iter()
            .any(|f| f.cp.kind == CheckpointKind::Stop && f.cp.seq == 34)
    );
    let head = checkpoint::read_single(&s.head_file()).unwrap().unwrap();
    assert_eq!((head.kind, head.seq), (CheckpointKind::Head, 34));
    assert!(head.verify(s.signer.public_key()));
}

#[tokio::test]
async fn checkpoints_are_written_while_records_flow() {
    let s = Signed::new();
    let log = s.open().unwrap();
    for i in 0..5 {
        log.record(ev(i)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    // Periodic checkpoints came without a close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let minutes = checkpoint::read_dir(&s.log_dir())
            .unwrap()
            .items
            .iter()
            .filter(|f| f.cp.kind == CheckpointKind::Minute)
            .count();
        if minutes >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic checkpoints"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.verify().unwrap().signed_through.is_some());
}

#[tokio::test]
async fn session_level_records_are_on_disk_when_record_returns() {
    let s = Signed::new();
    let log = s.open().unwrap();
    for i in 0..20 {
        let r = log
            .record(AuditEvent::Logout {
                user: "alice".into(),
                session: format!("s{i}"),
            })
            .await
            .unwrap();
        assert!(
            log.synced() > r.seq,
            "logout {} returned before its fsync",
            r.seq
        );
    }
}

/// Each tamper of the live log, and the words `verify_log` must name it with.
#[tokio::test]
async fn every_tamper_of_the_live_log_is_named() {
    type Tamper = fn(&Signed);
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "edit a byte",
            |s| {
                let seg = &s.segments()[1];
                let mut l = lines(seg);
                l[4] = l[4].replace("test-4", "test-5");
                write_lines(seg, &l);
            },
            "record 14 was changed: its MAC does not verify",
        ),
        (
            "delete a record",
            |s| {
                let seg = &s.segments()[1];
                let mut l = lines(seg);
                l.remove(3);
                write_lines(seg, &l);
            },
            "record 13 was removed",
        ),
        (
            "insert a copied record",
            |s| {
                let seg = &s.segments()[1];
                let mut l = lines(seg);
                let copy = l[2].clone();
                l.insert(6, copy);
                write_lines(seg, &l);
            },
            "inserted copy of record 12",
        ),
        (
            "swap two records",
            |s| {
                let seg = &s.segments()[0];
                let mut l = lines(seg);
                l.swap(5, 6);
                write_lines(seg, &l);
            },
            "records 5 and 6 are swapped",
        ),
        (
            "cut the newest records",
            |s| {
                let seg = s.segments().pop().unwrap();
                let mut l = lines(&seg);
                l.truncate(l.len() - 3);
                write_lines(&seg, &l);
            },
            "cut from the end",
        ),
        (
            "delete a middle segment",
            |s| {
                std::fs::remove_file(&s.segments()[1]).unwrap();
            },
            "is missing: records 10..19 gone",
        ),
        (
            "delete the newest segment",
            |s| {
                std::fs::remove_file(s.segments().pop().unwrap()).unwrap();
            },
            "is missing",
        ),
        (
            "replace the public key",
            |s| {
                // Checkpoints signed by another key: the published key does not verify them.
                let other = AuditSigner::generate().unwrap();
                let f = checkpoint::read_dir(&s.log_dir()).unwrap().items.remove(0);
                let mut cp = f.cp.clone();
                cp.key = other.public_key().id();
                cp.sig = other.sign(&cp.message());
                let mut l = lines(&f.path);
                l[f.line - 1] = serde_json::to_string(&cp).unwrap();
                write_lines(&f.path, &l);
            },
            "does not verify with the public key",
        ),
    ];
    for (name, tamper, want) in cases {
        let s = three_days_and_today(5).await;
        assert!(s.verify().is_ok(), "{name}: clean log");
        tamper(&s);
        let p = problem(s.verify());
        assert!(p.contains(want), "{name}: got `{p}`, want `{want}`");
    }
}

#[tokio::test]
async fn a_cut_tail_is_refused_at_open_and_says_why() {
    // The head file alone is enough; so is the newest checkpoint when the head file is gone.
    for remove_head in [false, true] {
        let s = three_days_and_today(6).await;
        let seg = s.segments().pop().unwrap();
        let mut l = lines(&seg);
        l.truncate(l.len() - 2);
        write_lines(&seg, &l);
        if remove_head {
            std::fs::remove_file(s.head_file()).unwrap();
        }
        match s.open() {
            Err(AuditError::CutTail { problem, .. }) => {
                assert!(problem.contains("confirmed record 35"), "{problem}");
                assert!(problem.contains("the log ends at record 33"), "{problem}");
                assert!(problem.contains("refusing to chain onto it"), "{problem}");
            }
            other => panic!("a cut log was opened: {other:?}"),
        }
        // Nothing was written onto it.
        assert_eq!(lines(&seg).len(), l.len());
    }
    // The newest segment deleted whole.
    let s = three_days_and_today(3).await;
    std::fs::remove_file(s.segments().pop().unwrap()).unwrap();
    assert!(matches!(s.open(), Err(AuditError::CutTail { .. })));
    // An intact log opens, and a forged head is refused.
    let s = three_days_and_today(3).await;
    drop(s.open().unwrap());
    let mut head = checkpoint::read_single(&s.head_file()).unwrap().unwrap();
    head.seq -= 1;
    checkpoint::write_single(&s.head_file(), &head, false).unwrap();
    assert!(matches!(s.open(), Err(AuditError::CutTail { .. })));
}

#[tokio::test]
async fn a_torn_last_line_is_a_crash_and_the_server_continues() {
    let s = three_days_and_today(4).await;
    let seg = s.segments().pop().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":34,\"ts\":\"2026").unwrap();
    drop(f);
    let r = s.verify().unwrap();
    assert_eq!(r.records, 34);
    assert!(r.torn_tail.is_some());
    let log = s.open().unwrap();
    assert_eq!(log.record(ev(1)).await.unwrap().seq, 34);
    log.close();
    let r = s.verify().unwrap();
    assert_eq!((r.records, r.torn_tail), (35, None));
}

#[tokio::test]
async fn retention_removes_old_segments_and_the_rest_still_verifies() {
    let s = Signed::new();
    let now = crate::store::now_ms();
    let mut b = Backfill::new(&s.log_dir(), &key()).unwrap();
    b.sign_with(s.signer.clone());
    for day in [400u64, 390, 381, 379, 10] {
        for i in 0..5u32 {
            b.push(now - day * DAY + u64::from(i), &ev(i)).unwrap();
        }
    }
    b.finish().unwrap();
    let log = s.open().unwrap();
    log.record(ev(9)).await.unwrap();
    let report = retention::apply(&log, 380).await.unwrap().unwrap();
    assert_eq!(report.removed.len(), 3);
    assert_eq!(report.through_seq, Some(14));
    assert!(
        retention::apply(&log, 380).await.unwrap().is_none(),
        "nothing more to remove"
    );
    log.close();
    let r = s.verify().unwrap();
    assert_eq!((r.first_seq, r.retention_through), (Some(15), Some(14)));
    assert_eq!(r.records, 12, "10 kept, 1 written, 1 retention record");
    let last = lines(&s.segments().pop().unwrap()).pop().unwrap();
    assert!(last.contains("\"event\":\"audit_retention\""), "{last}");
    // The oldest kept segment removed by hand is found.
    std::fs::remove_file(&s.segments()[0]).unwrap();
    let p = problem(s.verify());
    assert!(p.contains("is missing: records 15..19 gone"), "{p}");
}

#[test]
fn retention_refuses_to_hide_a_gap() {
    let s = Signed::new();
    let now = crate::store::now_ms();
    let mut b = Backfill::new(&s.log_dir(), &key()).unwrap();
    for day in [400u64, 10, 1] {
        for i in 0..3u32 {
            b.push(now - day * DAY + u64::from(i), &ev(i)).unwrap();
        }
    }
    b.finish().unwrap();
    // A record of the first kept segment is gone: pruning the old one would hide it.
    let seg = &s.segments()[1];
    let mut l = lines(seg);
    l.remove(0);
    write_lines(seg, &l);
    let r = retention::prune(&s.log_dir(), 380, now, &s.signer);
    assert!(matches!(r, Err(AuditError::Broken { .. })), "{r:?}");
    assert_eq!(s.segments().len(), 3, "nothing removed");
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test]
async fn a_periodic_checkpoint_is_trusted_only_once_its_signature_checks() {
    use crate::audit::checkpoint::{ChainHead, Checkpoint};
    let s = three_days_and_today(2).await;
    let date = s.segments()[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("audit-")
        .trim_end_matches(".jsonl")
        .to_string();
    let wrong = ChainHead {
        seq: 5,
        hash: "ab".repeat(32),
        date,
    };
    // A forged periodic checkpoint (another key) that disagrees with the log: named as
    // forged, not as a change of the records.
    let other = AuditSigner::generate().unwrap();
    checkpoint::append(
        &s.log_dir(),
        &Checkpoint::sign(&other, CheckpointKind::Minute, &wrong, None),
    )
    .unwrap();
    let p = problem(s.verify());
    assert!(p.contains("does not verify with the public key"), "{p}");
    // A genuine one that disagrees: the records up to it were changed.
    let s = three_days_and_today(2).await;
    let mut wrong = wrong;
    wrong.date = s.segments()[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("audit-")
        .trim_end_matches(".jsonl")
        .to_string();
    checkpoint::append(
        &s.log_dir(),
        &Checkpoint::sign(&s.signer, CheckpointKind::Minute, &wrong, None),
    )
    .unwrap();
    let p = problem(s.verify());
    assert!(p.contains("to record 5 were changed"), "{p}");
}
