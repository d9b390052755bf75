//! Sessions index search over 100,000 recorded sessions (the target: under 200 ms).
//!
//! Generates 100,000 sessions (SSH and web, 60 users, 300 targets, 20 apps, over a year),
//! with 5 to 40 typed commands each (about 2.2 million) and a file transfer in one in ten,
//! into a fresh index; then times the searches `recordings list` and the reviewer console
//! make, each the median of several runs, and prints them with the result counts.
//! Run: `cargo bench -p gatehouse-core --bench recordings_index` (a release build).
//! `GATEHOUSE_BENCH_INDEX=DIR` keeps the generated index in DIR and reuses it next time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_core::audit::{FileProtocol, TransferDirection};
use gatehouse_core::recording::{
    CommandSource, FileTransfer, Format, IndexedSession, Query, RecordingId, RecordingMeta,
    Recordings, RecordingsOptions, Sidecar,
};

const SESSIONS: usize = 100_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

const VERBS: &[&str] = &[
    "ls -la",
    "cd /var/log",
    "tail -n 200",
    "grep -ri error",
    "systemctl status",
    "systemctl restart",
    "journalctl -u",
    "ps aux",
    "df -h",
    "du -sh",
    "cat /etc/hosts",
    "vim",
    "less",
    "psql -c",
    "kubectl get pods -n",
    "docker ps",
    "sudo -k",
    "top -b -n1",
    "netstat -tlnp",
    "uptime",
];
const NOUNS: &[&str] = &[
    "nginx",
    "postgres",
    "payroll-api",
    "hr-sync",
    "billing",
    "redis",
    "kafka",
    "app.log",
    "/srv/app",
    "/etc/nginx/nginx.conf",
    "backup.sh",
    "deploy",
    "cron",
    "ledger",
    "grafana",
];

fn sessions(rng: &mut Rng, start: SystemTime) -> Vec<IndexedSession> {
    let year = 365 * 86_400_000u64;
    (0..SESSIONS)
        .map(|i| {
            let id = RecordingId::parse(&format!("{:032x}", (i as u128) * 7919 + 1)).unwrap();
            let user = format!("user{:02}", rng.below(60));
            let at = start + Duration::from_millis(rng.below(year));
            let web = rng.below(5) == 0;
            let mut meta = if web {
                RecordingMeta::web(id, &user, &format!("app{:02}", rng.below(20)))
            } else {
                RecordingMeta::ssh(id, &user, &format!("db-prod-{:03}", rng.below(300)))
            };
            meta.started_at = at;
            meta.ended_at = Some(at + Duration::from_secs(60 + rng.below(7200)));
            meta.session = Some(format!("{:016x}", rng.next()));
            let mut commands = Vec::new();
            let mut files = Vec::new();
            if !web {
                meta.login = Some("deploy".into());
                meta.request = Some("shell".into());
                for c in 0..(5 + rng.below(36)) {
                    let text = format!(
                        "{} {} {:x}",
                        rng.pick(VERBS),
                        rng.pick(NOUNS),
                        rng.below(1 << 20)
                    );
                    commands.push((c * 4000, CommandSource::Typed, text));
                }
                if rng.below(10) == 0 {
                    files.push((
                        1000,
                        FileTransfer {
                            protocol: FileProtocol::Sftp,
                            direction: TransferDirection::Download,
                            path: format!("/srv/exports/{}-{:x}.csv", rng.pick(NOUNS), rng.next()),
                            bytes: rng.below(1 << 30),
                        },
                    ));
                }
            }
            IndexedSession {
                sidecar: Sidecar {
                    meta,
                    format: (!web).then_some(Format::Plain),
                    pty: !web,
                    cut: false,
                },
                commands,
                files,
            }
        })
        .collect()
}

fn main() {
    let keep = std::env::var_os("GATEHOUSE_BENCH_INDEX").map(std::path::PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("gatehouse-index-bench-{}", std::process::id()))
    });
    let reuse = keep.is_some() && dir.join(".index.sqlite3").exists();
    if !reuse {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let rec = Recordings::open(&dir, RecordingsOptions::default(), false).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let t = Instant::now();
    let all = sessions(&mut rng, start);
    let commands: usize = all.iter().map(|s| s.commands.len()).sum();
    if !reuse {
        for chunk in all.chunks(10_000) {
            rec.index().insert_sessions(chunk).unwrap();
        }
    }
    let size = std::fs::metadata(rec.index().path())
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{} {SESSIONS} sessions ({commands} commands) in {:.1} s; index {:.0} MiB",
        if reuse { "reused" } else { "generated" },
        t.elapsed().as_secs_f64(),
        size as f64 / 1048576.0
    );
    let day = |d: u64| start + Duration::from_secs(d * 86_400);
    let q = |f: &dyn Fn(&mut Query)| {
        let mut q = Query::default();
        f(&mut q);
        q
    };
    let cases: Vec<(&str, Query)> = vec![
        (
            "--command (rare, 1 session)",
            q(&|q| q.command = Some(all[4242].commands[0].2.clone())),
        ),
        (
            "--command \"restart payroll-api\"",
            q(&|q| q.command = Some("restart payroll-api".into())),
        ),
        (
            "--command \"ledger\" --user user07",
            q(&|q| {
                q.command = Some("ledger".into());
                q.user = Some("user07".into());
            }),
        ),
        (
            "--file \"hr-sync\"",
            q(&|q| q.file = Some("hr-sync".into())),
        ),
        (
            "--user user13 --since/--until (a month)",
            q(&|q| {
                q.user = Some("user13".into());
                q.since = Some(day(100));
                q.until = Some(day(130));
            }),
        ),
        (
            "--target db-prod-042",
            q(&|q| q.target = Some("db-prod-042".into())),
        ),
        ("--app app07 (web)", q(&|q| q.app = Some("app07".into()))),
        (
            "--since/--until (a day, all users)",
            q(&|q| {
                q.since = Some(day(200));
                q.until = Some(day(201));
            }),
        ),
        (
            "--command \"grep -ri error\" (common) newest 100",
            q(&|q| {
                q.command = Some("grep -ri error".into());
                q.limit = Some(100);
            }),
        ),
        (
            "--command \"grep -ri error\" (common, all)",
            q(&|q| q.command = Some("grep -ri error".into())),
        ),
    ];
    println!("{:<50} {:>9} {:>10}", "search", "results", "median ms");
    for (name, query) in cases {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..7 {
            let t = Instant::now();
            n = rec.index().search(&query).unwrap().len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{name:<50} {n:>9} {:>10.1}",
            times[3].as_secs_f64() * 1000.0
        );
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
