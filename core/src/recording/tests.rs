use std::io::Cursor;

use bytes::Bytes;

use super::reader::read_from;
use super::*;
use crate::testutil::TempDir;

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

#[tokio::test]
async fn a_written_cast_reads_back_with_caps_and_markers() {
    let dir = TempDir::new("rec");
    let header = Header::new(80, 24, "t".into(), Some("ls".into()), None);
    let m = meta();
    let (rec, task) = Recorder::create(
        dir.path(),
        m.clone(),
        &header,
        Caps {
            output: Some(3),
            input: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(rec.id(), &m.id);
    rec.output(Bytes::from_static(b"hello")).await.unwrap();
    rec.input(Bytes::from_static(b"ls\r")).await.unwrap();
    rec.resize(100, 40).await.unwrap();
    rec.note("sftp open \"/x\" (read)").await.unwrap();
    drop(rec);
    let done = task.finish().await.unwrap();
    assert!(done.ended_at.is_some());
    let cast = read_cast(&m.path_in(dir.path())).unwrap();
    assert!(!cast.torn);
    assert_eq!(cast.header.version, 2);
    assert_eq!(cast.header.command.as_deref(), Some("ls"));
    let codes: Vec<(EventCode, &str)> = cast
        .events
        .iter()
        .map(|e| (e.code, e.data.as_str()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (EventCode::Output, "hel"),
            (EventCode::Input, "ls\r"),
            (EventCode::Resize, "100x40"),
            (EventCode::Output, "[gatehouse] sftp open \"/x\" (read)\r\n"),
            (
                EventCode::Marker,
                "output truncated in this recording; 5 bytes in total"
            ),
        ]
    );
    // Never overwrites an existing recording.
    assert!(
        Recorder::create(dir.path(), m, &header, Caps::NONE)
            .await
            .is_err()
    );
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
