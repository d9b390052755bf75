use std::io::Cursor;
use std::time::Duration;

use bytes::Bytes;

use super::reader::read_from;
use super::*;
use crate::testutil::TempDir;

mod terminal;

fn meta() -> RecordingMeta {
    RecordingMeta::ssh(RecordingId::generate().unwrap(), "alice", "db-prod-1")
}

#[test]
fn ids_are_32_lowercase_hex_digits_and_nothing_else() {
    let id = RecordingId::generate().unwrap();
    assert_eq!(id.as_str().len(), RECORDING_ID_LEN);
    assert_eq!(RecordingId::parse(id.as_str()).unwrap(), id);
    assert_ne!(RecordingId::generate().unwrap(), id);
    let good = "0123456789abcdef0123456789abcdef";
    assert!(RecordingId::parse(good).is_ok());
    for bad in [
        "",
        "../../etc/passwd",
        "0123456789ABCDEF0123456789abcdef",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0",
        "0123456789abcdef/123456789abcdef",
        "0123456789abcdef0123456789abcde\0",
        "g123456789abcdef0123456789abcdef",
    ] {
        assert!(RecordingId::parse(bad).is_err(), "{bad:?}");
        let json = serde_json::to_string(bad).unwrap();
        assert!(
            serde_json::from_str::<RecordingId>(&json).is_err(),
            "{bad:?}"
        );
    }
    let dir = std::path::Path::new("/rec");
    assert_eq!(
        RecordingId::parse(good)
            .unwrap()
            .path_in(dir, RecordingKind::Ssh),
        dir.join(format!("{good}.cast"))
    );
}

#[test]
fn meta_serializes_with_rfc3339_times_and_null_while_live() {
    let m = meta();
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["kind"], "ssh");
    assert_eq!(json["target"], "db-prod-1");
    assert!(json["ended_at"].is_null());
    assert!(json.get("app").is_none());
    let started = json["started_at"].as_str().unwrap().to_string();
    assert!(started.ends_with('Z') && started.contains('T'), "{started}");
    let back: RecordingMeta = serde_json::from_value(json).unwrap();
    assert_eq!(back.id, m.id);
    assert_eq!(
        format_time(back.started_at),
        format_time(m.started_at),
        "millisecond precision"
    );
    let web = RecordingMeta::web(RecordingId::generate().unwrap(), "bob", "wiki");
    let json = serde_json::to_value(&web).unwrap();
    assert_eq!(
        (json["kind"].as_str(), json["app"].as_str()),
        (Some("web"), Some("wiki"))
    );
    let bad = serde_json::json!({"id": "../x", "kind": "ssh", "user": "a",
        "started_at": started, "ended_at": null});
    assert!(serde_json::from_value::<RecordingMeta>(bad).is_err());
}

/// A recordings directory with an index writer, as the server opens it.
fn store(dir: &std::path::Path, key: Option<RecordingKey>, cap: Option<u64>) -> Recordings {
    Recordings::open(
        dir,
        RecordingsOptions {
            encrypt: key.is_some(),
            key,
            stream_cap: cap,
        },
        true,
    )
    .unwrap()
}

fn ssh_meta(request: &str, command: Option<&str>) -> RecordingMeta {
    let mut m = meta();
    m.login = Some("root".into());
    m.session = Some("c0ffee".into());
    m.request = Some(request.into());
    m.command = command.map(str::to_string);
    m
}

/// A shell session's recording (80x24 terminal) started in `rec`.
async fn shell_session(rec: &Recordings) -> (RecordingMeta, Recorder, RecordingTask) {
    let header = Header::new(80, 24, "t".into(), None, None);
    let m = ssh_meta("shell", None);
    let (r, task) = rec
        .start(m.clone(), &header, Mode::Terminal { cols: 80, rows: 24 })
        .await
        .unwrap();
    (m, r, task)
}

fn events(rec: &Recordings, id: &RecordingId) -> Vec<(EventCode, String)> {
    let mut o = rec.open_cast(id).unwrap();
    let mut v = Vec::new();
    while let Some(e) = o.reader.next_event().unwrap() {
        v.push((e.code, e.data));
    }
    assert_eq!(o.damage(), None);
    v
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn a_stream_is_compressed_in_full_or_capped_with_a_notice() {
    let dir = TempDir::new("rec-stream");
    let rec = store(dir.path(), None, None);
    let header = Header::new(0, 0, "t".into(), Some("bash -s".into()), None);
    let m = ssh_meta("exec", Some("bash -s"));
    let (r, task) = rec
        .start(m.clone(), &header, Mode::Stream { script: true })
        .await
        .unwrap();
    let line = "x".repeat(1023) + "\n";
    for _ in 0..3000 {
        assert_eq!(r.output(b(&line)).await.unwrap(), Kept::All);
    }
    r.input(b("set -e\nsystemctl restart nginx\n"))
        .await
        .unwrap();
    drop(r);
    task.finish().await.unwrap();
    let file = Format::Gzip.path(dir.path(), &m.id);
    assert!(
        std::fs::metadata(&file).unwrap().len() < 300 * 1024,
        "compressed"
    );
    let ev = events(&rec, &m.id);
    let out: usize = ev
        .iter()
        .filter(|(c, _)| *c == EventCode::Output)
        .map(|(_, d)| d.len())
        .sum();
    assert_eq!(out, 3000 * 1024, "recorded in full");
    rec.index_writer().unwrap().flush().await;
    for c in ["restart nginx", "bash -s"] {
        let q = Query {
            command: Some(c.into()),
            ..Query::default()
        };
        assert_eq!(rec.index().search(&q).unwrap().len(), 1, "{c}");
    }

    // With a cap: the part under it, a notice, the totals; the caller is told once.
    let rec = store(dir.path(), None, Some(4096));
    let m = ssh_meta("exec", Some("cat dump"));
    let (r, task) = rec
        .start(m.clone(), &header, Mode::Stream { script: false })
        .await
        .unwrap();
    assert_eq!(r.output(b(&"a".repeat(3000))).await.unwrap(), Kept::All);
    assert_eq!(
        r.output(b(&"b".repeat(3000))).await.unwrap(),
        Kept::CapReached {
            direction: StreamDirection::Output,
            cap: 4096
        }
    );
    assert_eq!(r.output(b("c")).await.unwrap(), Kept::Beyond);
    drop(r);
    task.finish().await.unwrap();
    let ev = events(&rec, &m.id);
    let out: usize = ev
        .iter()
        .filter(|(c, _)| *c == EventCode::Output)
        .map(|(_, d)| d.len())
        .sum();
    assert_eq!(out, 4096);
    let markers: Vec<&str> = ev
        .iter()
        .filter(|(c, _)| *c == EventCode::Marker)
        .map(|(_, d)| d.as_str())
        .collect();
    assert!(
        markers.iter().any(|m| m.contains("stream_cap")),
        "{markers:?}"
    );
    assert!(
        markers.iter().any(|m| m.contains("6001 bytes in total")),
        "{markers:?}"
    );
}

#[tokio::test]
async fn encrypted_recordings_read_back_with_the_key_only_and_survive_a_cut() {
    let dir = TempDir::new("rec-enc");
    let key = RecordingKey::new(&crate::secret::SecretKey::from_bytes([5; 32]));
    let rec = store(dir.path(), Some(key.clone()), None);
    let (m, r, task) = shell_session(&rec).await;
    r.output(b("$ ")).await.unwrap();
    r.input(b("echo top-secret-output\r")).await.unwrap();
    r.output(b("echo top-secret-output\r\ntop-secret-output\r\n$ "))
        .await
        .unwrap();
    drop(r);
    task.finish().await.unwrap();
    let file = Format::Sealed.path(dir.path(), &m.id);
    let raw = std::fs::read(&file).unwrap();
    assert!(
        !raw.windows(10).any(|w| w == b"top-secret"),
        "ciphertext on disk"
    );
    let ev = events(&rec, &m.id);
    assert!(ev.iter().any(|(_, d)| d.contains("top-secret-output")));
    // Without the key: refused, not garbage.
    let plain = Recordings::open(dir.path(), RecordingsOptions::default(), false).unwrap();
    assert!(matches!(
        plain.open_cast(&m.id),
        Err(RecordingError::NoKey(_))
    ));
    // Cut inside the final frame (a crash while closing): every event frame reads.
    std::fs::write(&file, &raw[..raw.len() - 10]).unwrap();
    let mut o = rec.open_cast(&m.id).unwrap();
    let mut n = 0;
    while o.reader.next_event().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, ev.len());
    assert!(o.damage().is_some());
}

#[tokio::test]
async fn the_index_is_rebuilt_from_the_recordings_when_lost_or_corrupt() {
    let dir = TempDir::new("rec-rebuild");
    let key = RecordingKey::new(&crate::secret::SecretKey::from_bytes([6; 32]));
    {
        let rec = store(dir.path(), Some(key.clone()), None);
        let header = Header::new(80, 24, "t".into(), None, None);
        let m = ssh_meta("shell", None);
        let (r, task) = rec
            .start(m, &header, Mode::Terminal { cols: 80, rows: 24 })
            .await
            .unwrap();
        r.output(b("$ ")).await.unwrap();
        r.input(b("uname -a\r")).await.unwrap();
        r.output(b("uname -a\r\nLinux\r\n$ ")).await.unwrap();
        r.transfer(FileTransfer {
            protocol: crate::audit::FileProtocol::Sftp,
            direction: crate::audit::TransferDirection::Upload,
            path: "/srv/app/config with space.yml".into(),
            bytes: 42,
        })
        .await
        .unwrap();
        drop(r);
        task.finish().await.unwrap();
        let web = rec.web_session_started("bob", "ab12").await.unwrap();
        rec.web_app_used(&web, "wiki").await.unwrap();
        rec.web_app_used(&web, "grafana").await.unwrap();
        rec.web_app_used(&web, "wiki").await.unwrap();
        rec.web_session_ended(&web).await.unwrap();
        rec.index_writer().unwrap().flush().await;
    }
    let index = dir.path().join(index::INDEX_FILE);
    for damage in ["lost", "corrupt"] {
        match damage {
            "lost" => std::fs::remove_file(&index).unwrap(),
            _ => std::fs::write(
                &index,
                b"this is not a database at all, not even close.............",
            )
            .unwrap(),
        }
        for s in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("{}{s}", index::INDEX_FILE)));
        }
        let rec = store(dir.path(), Some(key.clone()), None);
        let i = rec.index();
        let by = |q: Query| i.search(&q).unwrap();
        assert_eq!(
            by(Query {
                command: Some("uname".into()),
                ..Query::default()
            })
            .len(),
            1,
            "{damage}"
        );
        assert_eq!(
            by(Query {
                file: Some("WITH SPACE".into()),
                ..Query::default()
            })
            .len(),
            1,
            "{damage}"
        );
        let web = by(Query {
            app: Some("grafana".into()),
            ..Query::default()
        });
        assert_eq!(web.len(), 1, "{damage}");
        assert_eq!((web[0].user.as_str(), web[0].apps.len()), ("bob", 2));
        assert_eq!(web[0].session.as_deref(), Some("ab12"));
        assert!(
            by(Query {
                user: Some("nobody".into()),
                ..Query::default()
            })
            .is_empty()
        );
        assert_eq!(
            i.files(&by(Query::default())[0].id).unwrap()[0]
                .transfer
                .bytes,
            42
        );
    }
}

#[tokio::test]
async fn a_recording_left_live_by_a_crash_is_ended_at_the_next_start() {
    let dir = TempDir::new("rec-crash");
    let rec = store(dir.path(), None, None);
    let (m, r, task) = shell_session(&rec).await;
    r.output(b("$ ")).await.unwrap();
    rec.index_writer().unwrap().flush().await;
    let live = rec
        .index()
        .search(&Query {
            live: true,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(live.len(), 1);
    // The process "dies": the writer never finishes; a new server opens the directory.
    std::mem::forget(r);
    std::mem::forget(task);
    let again = store(dir.path(), None, None);
    assert!(
        again
            .index()
            .search(&Query {
                live: true,
                ..Query::default()
            })
            .unwrap()
            .is_empty()
    );
    let s = again.meta(&m.id).unwrap();
    assert!(s.cut && s.meta.ended_at.is_some());
    // Never overwrites an existing recording.
    assert!(
        rec.start(
            m,
            &Header::new(80, 24, "t".into(), None, None),
            Mode::Terminal { cols: 80, rows: 24 }
        )
        .await
        .is_err()
    );
}

#[test]
fn web_requests_come_from_the_session_s_audit_records() {
    let lines = [
        r#"{"seq":1,"ts":"2026-01-02T10:00:00.000Z","prev":"00","event":{"event":"access_allowed","user":"bob","object":"app:wiki/index.html","action":"GET","rule":"p, group:staff, app:wiki/*, GET|HEAD, allow","client_addr":"192.0.2.1","session":"ab12","request_id":"r-1"},"mac":"00"}"#,
        r#"{"seq":2,"ts":"2026-01-02T10:00:01.000Z","prev":"00","event":{"event":"access_allowed","user":"eve","object":"app:wiki/","action":"GET","rule":"x","session":"ff00","request_id":"r-2"},"mac":"00"}"#,
        r#"{"seq":3,"ts":"2026-01-02T10:00:02.000Z","prev":"00","event":{"event":"access_denied","user":"bob","object":"app:wiki/admin/x","action":"POST","rule":null,"incident_id":"inc-1","session":"ab12","request_id":"r-3"},"mac":"00"}"#,
        r#"{"seq":4,"ts":"2026-01-02T10:00:03.000Z","prev":"00","event":{"event":"request_completed","session":"ab12","request_id":"r-1","status":200,"bytes":1234,"duration_ms":7},"mac":"00"}"#,
        r#"{"seq":5,"ts":"2026-01-02T10:00:03.000Z","prev":"00","event":{"event":"request_completed","session":"ff00","request_id":"r-2","status":500,"bytes":1,"duration_ms":1},"mac":"00"}"#,
        r#"{"seq":6,"ts":"2026-01-02T10:00:04.000Z","prev":"00","event":{"event":"request_completed","session":"ab12","request_id":"r-9","status":201,"bytes":1,"duration_ms":1},"mac":"00"}"#,
        r#"{"seq":7,"ts":"2026-01-02T10:00:04.000Z","prev":"00","event":{"event":"access_allowed","user":"bob","object":"app:wiki/a.css","action":"GET","rule":"x","session":"ab12","request_id":"r-4"},"mac":"00"}"#,
        r#"{"seq":8,"ts":"2026-01-02T10:00:04.000Z","prev":"00","event":{"event":"access_allowed","user":"bob","object":"app:wiki/b.js","action":"GET","rule":"x","session":"ab12","request_id":"r-5"},"mac":"00"}"#,
        r#"{"seq":9,"ts":"2026-01-02T10:00:05.000Z","prev":"00","event":{"event":"requests_completed","session":"ab12","answers":[{"request_id":"r-5","status":304,"bytes":0,"duration_ms":2},{"request_id":"r-4","status":200,"bytes":99,"duration_ms":3}]},"mac":"00"}"#,
        r#"{"seq":10,"ts":"2026-01-02T10:00:05.000Z","prev":"00","event":{"event":"requests_completed","session":"ff00","answers":[{"request_id":"r-4","status":500,"bytes":1,"duration_ms":1}]},"mac":"00"}"#,
        r#"{"seq":11,"ts":"2026-01-02T10:00:06.000Z","prev":"00","event":{"event":"logout","user":"bob","session":"ab12"},"mac":"00"}"#,
        "not json ab12",
    ];
    let hosts = std::collections::HashMap::from([("wiki".to_string(), "wiki.example".to_string())]);
    let t = web_timeline(lines, "ab12", &hosts);
    assert_eq!(t.len(), 4);
    assert_eq!(
        (
            t[0].method.as_str(),
            t[0].host.as_deref(),
            t[0].path.as_str(),
            t[0].decision.as_str()
        ),
        ("GET", Some("wiki.example"), "/index.html", "allow")
    );
    assert_eq!(
        (t[1].decision.as_str(), t[1].incident_id.as_deref()),
        ("deny", Some("inc-1"))
    );
    assert_eq!(t[1].request_id.as_deref(), Some("r-3"));
    assert_eq!(
        (t[0].status, t[0].bytes, t[0].duration_ms),
        (Some(200), Some(1234), Some(7)),
        "joined with its own request_completed only"
    );
    assert_eq!((t[1].status, t[1].bytes), (Some(403), None));
    // Answers gathered in one record, in any order, each joined to its own request.
    assert_eq!(
        (
            t[2].path.as_str(),
            t[2].status,
            t[2].bytes,
            t[2].duration_ms
        ),
        ("/a.css", Some(200), Some(99), Some(3))
    );
    assert_eq!(
        (
            t[3].path.as_str(),
            t[3].status,
            t[3].bytes,
            t[3].duration_ms
        ),
        ("/b.js", Some(304), Some(0), Some(2))
    );
    assert!(web_timeline(lines, "", &hosts).is_empty());
}

#[tokio::test]
async fn screens_at_keyframes_and_events_between() {
    let dir = TempDir::new("rec-screens");
    let rec = store(dir.path(), None, None);
    let header = Header::new(20, 5, "t".into(), None, None);
    let m = ssh_meta("shell", None);
    let (r, task) = rec
        .start(m.clone(), &header, Mode::Terminal { cols: 20, rows: 5 })
        .await
        .unwrap();
    r.output(b("first\r\n")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    r.output(b("second\r\n")).await.unwrap();
    drop(r);
    task.finish().await.unwrap();
    let mut o = rec.open_cast(&m.id).unwrap();
    let (frames, events) = screens(&mut o.reader, 0.06, 10.0, 0.1).unwrap();
    assert!(frames.len() >= 2);
    assert_eq!(frames[0].text[0], "first");
    assert_eq!(frames[0].text[1], "");
    assert_eq!(frames.last().unwrap().text[1], "second");
    assert_eq!(events.len(), 1, "only the events inside the range");
    let mut vt = avt::Terminal::new(20, 5).unwrap();
    vt.feed(frames.last().unwrap().screen.as_str());
    assert_eq!(vt.screen().line(1).unwrap().text().trim_end(), "second");
}

#[test]
fn unknown_or_hostile_ids_reach_no_file() {
    let dir = TempDir::new("rec-ids");
    std::fs::write(dir.path().join("secret.key"), b"k").unwrap();
    let rec = Recordings::open(
        &dir.path().join("recordings"),
        RecordingsOptions::default(),
        false,
    )
    .unwrap();
    assert!(RecordingId::parse("../secret.key").is_err());
    let missing = RecordingId::generate().unwrap();
    assert!(matches!(
        rec.open_cast(&missing),
        Err(RecordingError::NotFound(_))
    ));
}

#[test]
fn a_torn_last_line_is_dropped_and_reported() {
    let text = "{\"version\":2,\"width\":80,\"height\":24}\n\
                [0.5,\"o\",\"one\"]\n\n[1.0,\"o\",\"two\"]\n[1.5,\"o\",\"thr";
    let cast = read_from(Cursor::new(text)).unwrap();
    assert!(cast.torn);
    let data: Vec<&str> = cast.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["one", "two"]);
    // A complete last line without its newline is still an event.
    let cast = read_from(Cursor::new(
        "{\"version\":2,\"width\":1,\"height\":1}\n[0,\"m\",\"x\"]",
    ))
    .unwrap();
    assert!(!cast.torn);
    assert_eq!(cast.events.len(), 1);
}

#[test]
fn damage_before_the_last_line_is_an_error() {
    let header = "{\"version\":2,\"width\":80,\"height\":24}\n";
    for (body, line) in [
        ("[0.5,\"o\",\"one\"]\nnot json\n[1,\"o\",\"x\"]\n", 3),
        ("[0.5,\"x\",\"unknown code\"]\n", 2),
        ("[-1,\"o\",\"negative time\"]\n", 2),
    ] {
        match read_from(Cursor::new(format!("{header}{body}"))) {
            Err(RecordingError::Malformed { line: l, .. }) => assert_eq!(l, line, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    for bad in [
        "",
        "{\"version\":2",
        "{\"version\":1,\"width\":1,\"height\":1}\n",
        "[]\n",
    ] {
        assert!(read_from(Cursor::new(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn an_overlong_line_is_refused_without_holding_it() {
    let mut text = String::from("{\"version\":2,\"width\":80,\"height\":24}\n[0,\"o\",\"");
    text.push_str(&"a".repeat(MAX_LINE + 10));
    text.push_str("\"]\n");
    assert!(matches!(
        read_from(Cursor::new(text)),
        Err(RecordingError::Malformed { line: 2, .. })
    ));
}

#[test]
fn searches_by_time_range_include_live_sessions_and_keep_the_newest_under_a_limit() {
    use std::time::{Duration, UNIX_EPOCH};
    let dir = TempDir::new("rec-query");
    let rec = Recordings::open(dir.path(), RecordingsOptions::default(), false).unwrap();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let h = |n: u64| t0 + Duration::from_secs(n * 3600);
    // (start hour, end hour or live, command)
    let rows = [
        (0, Some(1), "ls"),
        (2, Some(30), "long job"),
        (5, None, "still live"),
        (40, Some(41), "ls -la"),
    ];
    let sessions: Vec<IndexedSession> = rows
        .iter()
        .map(|(s, e, c)| {
            let mut m = meta();
            m.started_at = h(*s);
            m.ended_at = e.map(h);
            IndexedSession {
                sidecar: Sidecar {
                    meta: m,
                    format: Some(Format::Plain),
                    pty: true,
                    cut: false,
                },
                commands: vec![(0, CommandSource::Typed, c.to_string())],
                files: vec![],
            }
        })
        .collect();
    rec.index().insert_sessions(&sessions).unwrap();
    let ids = |q: Query| -> Vec<String> {
        rec.index()
            .search(&q)
            .unwrap()
            .into_iter()
            .map(|m| m.command_of(&sessions))
            .collect()
    };
    let at = |since: u64, until: u64| Query {
        since: Some(h(since)),
        until: Some(h(until)),
        ..Query::default()
    };
    assert_eq!(
        ids(at(20, 25)),
        ["long job", "still live"],
        "overlapping, live included"
    );
    assert_eq!(ids(at(35, 45)), ["still live", "ls -la"]);
    assert_eq!(
        ids(Query {
            live: true,
            ..Query::default()
        }),
        ["still live"]
    );
    assert_eq!(
        ids(Query {
            limit: Some(2),
            ..Query::default()
        }),
        ["still live", "ls -la"],
        "the newest, oldest first"
    );
    assert_eq!(
        ids(Query {
            command: Some("ls".into()),
            ..Query::default()
        }),
        ["ls", "ls -la"],
        "short text: a scan"
    );
    assert_eq!(
        ids(Query {
            command: Some("LONG J".into()),
            ..Query::default()
        }),
        ["long job"]
    );
}

impl RecordingMeta {
    /// Test helper: the command of the generated session with this id.
    fn command_of(&self, sessions: &[IndexedSession]) -> String {
        sessions
            .iter()
            .find(|s| s.sidecar.meta.id == self.id)
            .map(|s| s.commands[0].2.clone())
            .unwrap()
    }
}
