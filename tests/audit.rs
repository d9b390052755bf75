//! The audit CLI on a log written like a server's: `audit verify` names every tamper of the
//! live log and of an export (exit 1), an untouched export verifies with only the published
//! public key after the machine's keys are gone, `audit search` filters and prints records,
//! `audit public-key` prints the published key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use gatehouse_core::audit::testkit::Backfill;
use gatehouse_core::audit::{AccessContext, AuditEvent, AuditKey, AuditSigner, Outcome};
use gatehouse_core::secret::SecretKey;

use crate::support::TestDir;

const DAY: u64 = 86_400_000;
const PW: &str = "correct-Horse-7-battery";

/// A config directory whose log holds three past days of backfilled records (signed like a
/// server's) and today's records written by the CLI itself.
pub struct LogEnv {
    pub dir: TestDir,
}

pub fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The events of a past day: allowed requests, a denied one, an admin action.
pub fn day_events(day: u64) -> Vec<AuditEvent> {
    (0..10u64)
        .map(|i| match i {
            9 => AuditEvent::AccessDenied {
                user: "mallory".into(),
                object: "app:wiki/admin/x".into(),
                action: "GET".into(),
                rule: Some("p, group:staff, app:wiki/admin/*, *, deny".into()),
                incident_id: format!("inc-day{day}"),
                context: AccessContext {
                    client_addr: Some("192.0.2.66".parse().unwrap()),
                    ..AccessContext::default()
                },
            },
            5 => AuditEvent::AdminAction {
                actor: "cli:root".into(),
                action: format!("test-{day}-{i}"),
                subject: "x".into(),
                outcome: Outcome::Success,
            },
            _ => AuditEvent::AccessAllowed {
                user: if i % 2 == 0 { "alice" } else { "bob" }.into(),
                object: format!("app:wiki/page-{day}-{i}"),
                action: "GET".into(),
                rule: "p, group:staff, app:wiki/*, GET, allow".into(),
                grant_id: None,
                grant_reason: None,
                context: AccessContext::default(),
            },
        })
        .collect()
}

impl LogEnv {
    pub fn new() -> LogEnv {
        let dir = TestDir::new("auditlog");
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        for f in ["model.conf", "policy.csv"] {
            std::fs::copy(root.join(f), dir.join("policies").join(f)).unwrap();
        }
        dir.write(
            "gatehouse.toml",
            "data_dir = \"data\"\n[identity]\nusers_file = \"users.toml\"\n[audit]\ndir = \"data/audit\"\n",
        );
        let mut raw = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut raw)
            .unwrap();
        let key_path = dir.join("data/secret.key");
        std::fs::create_dir_all(key_path.parent().unwrap()).unwrap();
        let mut f = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(f.write(true).create_new(true), 0o600);
        f.open(&key_path).unwrap().write_all(&raw).unwrap();
        let signer =
            Arc::new(AuditSigner::load_or_create(&dir.join("data/audit-signing.key")).unwrap());
        let mut b = Backfill::new(
            &dir.join("data/audit"),
            &AuditKey::new(&SecretKey::from_bytes(raw)),
        )
        .unwrap();
        b.sign_with(signer);
        let now = now_ms();
        for day in 0..3u64 {
            for (i, ev) in day_events(day).iter().enumerate() {
                b.push(now - (3 - day) * DAY + i as u64 * 1000, ev).unwrap();
            }
        }
        b.finish().unwrap();
        let env = LogEnv { dir };
        // Today: records written by the CLI (real writer: checkpoints, head file).
        env.ok(
            &[
                "user",
                "add",
                "carol",
                "--groups",
                "staff",
                "--password-stdin",
            ],
            Some(&format!("{PW}\n")),
        );
        env.ok(&["user", "lock", "carol"], None);
        env
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.dir.join("data/audit")
    }

    pub fn segments(&self) -> Vec<PathBuf> {
        crate::support::audit::segments(&self.audit_dir())
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run(
            self.dir.path(),
            Some(&self.dir.join("gatehouse.toml")),
            args,
            stdin,
        )
    }

    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "gatehouse {args:?} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs the binary in `cwd`, with `--config` when given; never with a secret in the env.
pub use crate::support::gatehouse::run_cli as run;

pub use crate::support::process::output_text as text;

pub fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn write_lines(p: &Path, l: &[String]) {
    std::fs::write(p, l.iter().map(|s| format!("{s}\n")).collect::<String>()).unwrap();
}

/// Tampers shared by the live-log and export tables: (name, change, words of the finding).
/// Segment 0 holds records 0..9, segment 1 records 10..19 (exports: from record 5 on).
type Tamper = fn(&[PathBuf]);

fn tampers() -> Vec<(&'static str, Tamper, &'static str)> {
    vec![
        (
            "edit one byte",
            |s| {
                let mut l = lines(&s[1]);
                l[4] = l[4].replace("page-1-4", "page-1-5");
                write_lines(&s[1], &l);
            },
            "record 14",
        ),
        (
            "delete a record",
            |s| {
                let mut l = lines(&s[1]);
                l.remove(3);
                write_lines(&s[1], &l);
            },
            "record 13 was removed",
        ),
        (
            "insert a copied record",
            |s| {
                let mut l = lines(&s[1]);
                let c = l[2].clone();
                l.insert(6, c);
                write_lines(&s[1], &l);
            },
            "inserted copy of record 12",
        ),
        (
            "swap two records",
            |s| {
                let mut l = lines(&s[1]);
                l.swap(6, 7);
                write_lines(&s[1], &l);
            },
            "records 16 and 17 are swapped",
        ),
        (
            "cut the newest records",
            |s| {
                let p = s.last().unwrap();
                let mut l = lines(p);
                l.truncate(l.len() - 1);
                write_lines(p, &l);
            },
            "cut from the end",
        ),
        (
            "delete a middle segment",
            |s| {
                std::fs::remove_file(&s[1]).unwrap();
            },
            "is missing",
        ),
        (
            "delete the newest segment",
            |s| {
                std::fs::remove_file(s.last().unwrap()).unwrap();
            },
            "is missing",
        ),
    ]
}

#[test]
fn every_tamper_of_the_live_log_is_named_with_exit_1() {
    for (name, tamper, want) in tampers() {
        let env = LogEnv::new();
        let ok = env.ok(&["audit", "verify"], None);
        assert!(
            ok.contains("audit log ok: 32 record(s) in 4 segment(s)"),
            "{ok}"
        );
        assert!(ok.contains("records up to 31 are covered"), "{ok}");
        tamper(&env.segments());
        let bad = env.run(&["audit", "verify"], None);
        assert_eq!(bad.status.code(), Some(1), "{name}: {}", text(&bad));
        assert!(
            text(&bad).contains("TAMPERED") && text(&bad).contains(want),
            "{name}: want `{want}` in {}",
            text(&bad)
        );
    }
    // A checkpoint signed by another key (the public key replaced on the machine).
    let env = LogEnv::new();
    let other = TestDir::new("otherkey");
    let signer = AuditSigner::load_or_create(&other.join("k")).unwrap();
    let bad = env.run(
        &[
            "audit",
            "verify",
            "--public-key",
            other.join("k.pub").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("does not verify with the public key"),
        "{}",
        text(&bad)
    );
    drop(signer);
}

/// Exports records 5.. (mid-segment) to `out`; the published key is saved as `key`.
fn export(env: &LogEnv, out: &Path, key: &Path) {
    let published = key.to_path_buf();
    std::fs::write(&published, env.ok(&["audit", "public-key"], None)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&published).unwrap(),
        std::fs::read_to_string(env.dir.join("data/audit-signing.key.pub")).unwrap()
    );
    let first = lines(&env.segments()[0])[5].clone();
    let ts: serde_json::Value = serde_json::from_str(&first).unwrap();
    let since = ts["ts"].as_str().unwrap().to_string();
    let o = env.ok(
        &[
            "audit",
            "export",
            "--since",
            &since,
            "--until",
            "0s",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        o.contains("exported 27 record(s) (records 5..31) in 4 segment(s)"),
        "{o}"
    );
    assert!(o.contains("gatehouse audit verify"), "{o}");
    for f in [
        "export.json",
        "public-key.pem",
        "README.txt",
        "checkpoints.jsonl",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
}

#[test]
fn an_export_verifies_with_only_the_public_key_and_every_tamper_is_named() {
    let env = LogEnv::new();
    let exp = TestDir::new("export");
    let out = exp.join("evidence");
    let published = exp.join("published.pem");
    export(&env, &out, &published);
    // The exporting itself is on record.
    assert!(
        std::fs::read_to_string(env.segments().pop().unwrap())
            .unwrap()
            .contains("\"action\":\"audit export\"")
    );
    // The machine is gone: no config, no secret key, no signing key.
    drop(env);
    let elsewhere = TestDir::new("auditor");
    let ok = run(
        elsewhere.path(),
        None,
        &[
            "audit",
            "verify",
            out.to_str().unwrap(),
            "--public-key",
            published.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        text(&ok).contains("audit export ok: 27 record(s) in 4 segment(s) (records 5..31)"),
        "{}",
        text(&ok)
    );
    for (name, tamper, want) in tampers() {
        let copy = elsewhere.join(name.replace(' ', "-"));
        std::fs::create_dir_all(&copy).unwrap();
        for e in std::fs::read_dir(&out).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&copy)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "jsonl")
                    && p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("audit-")
            })
            .collect();
        segs.sort();
        tamper(&segs);
        let bad = run(
            elsewhere.path(),
            None,
            &[
                "audit",
                "verify",
                copy.to_str().unwrap(),
                "--public-key",
                published.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(bad.status.code(), Some(1), "{name}: {}", text(&bad));
        assert!(
            text(&bad).contains(want),
            "{name}: want `{want}` in {}",
            text(&bad)
        );
    }
    // The public key in the export replaced by another: the published key is what counts,
    // and the replaced key verifies nothing.
    let other = TestDir::new("otherkey");
    AuditSigner::load_or_create(&other.join("k")).unwrap();
    std::fs::copy(other.join("k.pub"), out.join("public-key.pem")).unwrap();
    let bad = run(
        elsewhere.path(),
        None,
        &["audit", "verify", out.to_str().unwrap()],
        None,
    );
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("does not verify with the public key"),
        "{}",
        text(&bad)
    );
    let still = run(
        elsewhere.path(),
        None,
        &[
            "audit",
            "verify",
            out.to_str().unwrap(),
            "--public-key",
            published.to_str().unwrap(),
        ],
        None,
    );
    assert!(still.status.success(), "{}", text(&still));
}

#[test]
fn search_filters_prints_records_newest_last_and_nothing_when_nothing_matches() {
    let env = LogEnv::new();
    let json = env.ok(&["audit", "search", "--user", "alice", "--json"], None);
    let recs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 15, "{json}");
    assert!(
        recs.windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()),
        "newest last"
    );
    assert!(
        recs.iter()
            .all(|r| r["event"]["user"] == "alice" && r["mac"].is_string())
    );
    // Each printed line is the stored record, byte for byte.
    let stored: String = env
        .segments()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(json.lines().all(|l| stored.contains(l)));
    let denied = env.ok(
        &[
            "audit",
            "search",
            "--event",
            "access_denied",
            "--decision",
            "deny",
            "--app",
            "wiki",
            "--client",
            "192.0.2.66",
        ],
        None,
    );
    assert_eq!(denied.lines().count(), 3, "{denied}");
    assert!(
        denied.contains("incident=inc-day1") && denied.contains("mallory"),
        "{denied}"
    );
    let one = env.ok(
        &["audit", "search", "--incident-id", "inc-day2", "--json"],
        None,
    );
    assert_eq!(one.lines().count(), 1, "{one}");
    let today = env.ok(&["audit", "search", "--since", "1h", "--json"], None);
    assert_eq!(
        today.lines().count(),
        2,
        "the CLI's own two records: {today}"
    );
    let last = env.ok(&["audit", "search", "--limit", "1", "--json"], None);
    assert!(last.contains("\"action\":\"user lock\""), "{last}");
    for nothing in [
        vec!["audit", "search", "--user", "nobody"],
        vec![
            "audit",
            "search",
            "--since",
            "2000-01-01",
            "--until",
            "2000-01-02T00:00:00Z",
        ],
        vec!["audit", "search", "--target", "db-prod-1", "--json"],
    ] {
        let out = env.run(&nothing, None);
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "{nothing:?}: {}",
            text(&out)
        );
    }
    let bad = env.run(&["audit", "search", "--since", "yesterday"], None);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).contains("--since") && text(&bad).contains("RFC 3339"),
        "{}",
        text(&bad)
    );
}
