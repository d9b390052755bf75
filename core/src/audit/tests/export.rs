//! Exports: a window verifies with only the public key (the secret key gone), from a start
//! in the middle of a segment; every tamper of an export is named.

use super::signed::{Signed, copy_dir, three_days_and_today};
use super::{key, lines, write_lines};
use crate::audit::export::{self, MANIFEST_FILE, PUBLIC_KEY_FILE};
use crate::audit::{AuditPublicKey, AuditSigner, VerifyReport, verify_export};
use crate::error::AuditError;
use crate::testutil::TempDir;

/// Exports records 5..=25 (mid-segment to mid-segment) of the three-days-and-today log.
async fn exported() -> (Signed, TempDir, AuditPublicKey) {
    let s = three_days_and_today(5).await;
    let recs: Vec<crate::audit::Record> = s
        .segments()
        .iter()
        .flat_map(|p| lines(p))
        .map(|l| crate::audit::Record::parse(&l).unwrap())
        .collect();
    let since = crate::audit::parse_timestamp(&recs[5].ts).unwrap();
    let until = crate::audit::parse_timestamp(&recs[25].ts).unwrap();
    let out = TempDir::new("export");
    let dir = out.path().join("x");
    let r = export::export(&s.log_dir(), &key(), &s.signer, since, until, &dir).unwrap();
    assert_eq!(
        (r.first_seq, r.last_seq, r.records),
        (Some(5), Some(25), 21)
    );
    let published = s.signer.public_key().clone();
    (s, out, published)
}

fn exp_dir(out: &TempDir) -> std::path::PathBuf {
    out.path().join("x")
}

fn problem(r: Result<VerifyReport, AuditError>) -> String {
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
async fn an_export_verifies_with_only_the_public_key() {
    let (s, out, published) = exported().await;
    // The machine's keys are gone: only the published public key remains.
    drop(s);
    let dir = exp_dir(&out);
    let r = verify_export(&dir, &published).unwrap();
    assert_eq!(
        (r.first_seq, r.last_seq, r.records),
        (Some(5), Some(25), 21)
    );
    assert!(!r.macs_checked);
    let shipped =
        AuditPublicKey::from_pem(&std::fs::read_to_string(dir.join(PUBLIC_KEY_FILE)).unwrap())
            .unwrap();
    assert_eq!(shipped, published);
    let readme = std::fs::read_to_string(dir.join(export::README_FILE)).unwrap();
    assert!(readme.contains("gatehouse audit verify"), "{readme}");
    assert!(readme.contains(&published.fingerprint()));
    // An empty window is a (signed) empty export.
    let s = Signed::new();
    drop(s.open().unwrap());
    let e = TempDir::new("export");
    export::export(&s.log_dir(), &key(), &s.signer, 0, 1000, e.path()).unwrap();
    assert_eq!(
        verify_export(e.path(), s.signer.public_key())
            .unwrap()
            .records,
        0
    );
    // A non-empty directory is refused.
    assert!(export::export(&s.log_dir(), &key(), &s.signer, 0, 1000, e.path()).is_err());
}

#[tokio::test]
async fn every_tamper_of_an_export_is_named() {
    type Tamper = fn(&std::path::Path, &AuditPublicKey);
    let seg = |dir: &std::path::Path, i: usize| crate::audit::tests::segment_files(dir)[i].clone();
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "edit a byte",
            |d, _| {
                let p = crate::audit::tests::segment_files(d)[1].clone();
                let mut l = lines(&p);
                l[4] = l[4].replace("test-4", "test-5");
                write_lines(&p, &l);
            },
            "record 14 (",
        ),
        (
            "delete a record",
            |d, _| {
                let p = crate::audit::tests::segment_files(d)[1].clone();
                let mut l = lines(&p);
                l.remove(3);
                write_lines(&p, &l);
            },
            "record 13 was removed",
        ),
        (
            "insert a copied record",
            |d, _| {
                let p = crate::audit::tests::segment_files(d)[1].clone();
                let mut l = lines(&p);
                let c = l[2].clone();
                l.insert(6, c);
                write_lines(&p, &l);
            },
            "inserted copy of record 12",
        ),
        (
            "swap two records",
            |d, _| {
                let p = crate::audit::tests::segment_files(d)[0].clone();
                let mut l = lines(&p);
                l.swap(1, 2);
                write_lines(&p, &l);
            },
            "records 6 and 7 are swapped",
        ),
        (
            "cut the newest records",
            |d, _| {
                let p = crate::audit::tests::segment_files(d).pop().unwrap();
                let mut l = lines(&p);
                l.truncate(l.len() - 1);
                write_lines(&p, &l);
            },
            "record 25 cut from the end",
        ),
        (
            "delete a middle segment",
            |d, _| {
                std::fs::remove_file(&crate::audit::tests::segment_files(d)[1]).unwrap();
            },
            "is missing from the export",
        ),
        (
            "delete the newest segment",
            |d, _| {
                std::fs::remove_file(crate::audit::tests::segment_files(d).pop().unwrap()).unwrap();
            },
            "is missing from the export",
        ),
        (
            "edit the last record",
            |d, _| {
                let p = crate::audit::tests::segment_files(d).pop().unwrap();
                let mut l = lines(&p);
                let n = l.len() - 1;
                l[n] = l[n].replace("test-5", "test-6");
                write_lines(&p, &l);
            },
            "record 25 was changed: its hash differs from the export's signed end hash",
        ),
        (
            "edit the manifest's start",
            |d, _| {
                let p = d.join(MANIFEST_FILE);
                let t = std::fs::read_to_string(&p)
                    .unwrap()
                    .replace("\"first_seq\": 5", "\"first_seq\": 6");
                std::fs::write(&p, t).unwrap();
            },
            "the export manifest does not verify",
        ),
        (
            "replace the public key",
            |d, _| {
                // An attacker's key in the export: it does not verify what the real key signed.
                let other = AuditSigner::generate().unwrap();
                std::fs::write(d.join(PUBLIC_KEY_FILE), other.public_key().to_pem()).unwrap();
            },
            "does not verify with the public key",
        ),
    ];
    let _ = seg;
    let (_s, out, published) = exported().await;
    for (name, tamper, want) in cases {
        let work = TempDir::new("tamper");
        copy_dir(&exp_dir(&out), work.path());
        assert!(
            verify_export(work.path(), &published).is_ok(),
            "{name}: clean copy"
        );
        tamper(work.path(), &published);
        // The auditor verifies with the key found in the export when that is what they
        // have; with the published key the replaced one is not even consulted.
        let key_in_dir = AuditPublicKey::from_pem(
            &std::fs::read_to_string(work.path().join(PUBLIC_KEY_FILE)).unwrap(),
        )
        .unwrap();
        let p = problem(verify_export(work.path(), &key_in_dir));
        assert!(p.contains(want), "{name}: got `{p}`, want `{want}`");
    }
}
