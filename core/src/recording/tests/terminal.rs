//! Terminal sessions: keys kept only when shown back, typed commands, and a quiet terminal
//! at rest.

use super::*;

/// An idle session's virtual terminal rests (its cells freed) and wakes with its screen, its
/// prompt and its pending line intact.
#[tokio::test(start_paused = true)]
async fn a_quiet_terminal_rests_and_wakes_with_its_screen() {
    let dir = TempDir::new("rec-rest");
    let rec = store(dir.path(), None, None);
    let (m, r, task) = shell_session(&rec).await;
    let awake = || {
        let feed = rec.live().feed(&m.id).unwrap();
        let state = feed.state.lock().unwrap();
        state.tracker.as_ref().unwrap().is_awake()
    };
    r.output(b("$ ")).await.unwrap();
    r.input(b("echo one\r")).await.unwrap();
    r.output(b("echo one\r\none\r\n$ ")).await.unwrap();
    r.input(b("echo tw")).await.unwrap();
    r.output(b("echo tw")).await.unwrap();
    // The paused clock runs ahead whenever every task waits.
    let mut waited = Duration::ZERO;
    while awake() {
        assert!(
            waited < writer::REST_AFTER * 10,
            "the terminal never rested"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += Duration::from_secs(1);
    }
    assert!(
        waited >= writer::REST_AFTER - Duration::from_secs(1),
        "rested after {waited:?}"
    );
    let (snap, _live) = rec.live().subscribe(&m.id).unwrap();
    assert_eq!((snap.cols, snap.rows), (80, 24));
    assert!(
        snap.screen.contains("one") && snap.screen.contains("echo tw"),
        "{:?}",
        snap.screen
    );
    assert!(!awake(), "watching does not wake it");
    r.input(b("o\r")).await.unwrap();
    r.output(b("o\r\ntwo\r\n$ ")).await.unwrap();
    drop(r);
    task.finish().await.unwrap();
    let ev = events(&rec, &m.id);
    for c in ["command: echo one", "command: echo two"] {
        assert!(ev.contains(&(EventCode::Marker, c.into())), "{c}: {ev:?}");
    }
}

#[tokio::test]
async fn a_terminal_session_keeps_echoed_keys_and_commands_and_never_a_password() {
    let dir = TempDir::new("rec-term");
    let rec = store(dir.path(), None, None);
    let (m, r, task) = shell_session(&rec).await;
    assert!(rec.live().feed(&m.id).is_some(), "live while it runs");
    let (snap, mut live) = rec.live().subscribe(&m.id).unwrap();
    assert_eq!((snap.cols, snap.rows), (80, 24));
    r.output(b("$ ")).await.unwrap();
    for (keys, shown) in [
        ("echo hellp", "echo hellp"),
        ("\x7f", "\x08 \x08"),
        ("o\r", "o\r\nhello\r\n$ "),
        ("sudo -k id\r", "sudo -k id\r\n[sudo] password for root: "),
    ] {
        r.input(b(keys)).await.unwrap();
        r.output(b(shown)).await.unwrap();
    }
    for k in ["s", "3", "c", "r", "3", "t", "\r"] {
        r.input(b(k)).await.unwrap();
    }
    r.output(b("\r\nuid=0(root)\r\n$ ")).await.unwrap();
    r.resize(100, 30).await.unwrap();
    drop(r);
    let done = task.finish().await.unwrap();
    assert!(done.ended_at.is_some());
    assert!(rec.live().feed(&m.id).is_none(), "no longer live");
    let ev = events(&rec, &m.id);
    let all: String = ev.iter().map(|(_, d)| d.as_str()).collect();
    assert!(!all.contains("s3cr3t"), "{ev:?}");
    let input: String = ev
        .iter()
        .filter(|(c, _)| *c == EventCode::Input)
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(input, "echo hellp\x7fo\rsudo -k id\r\r");
    assert!(
        ev.contains(&(EventCode::Marker, "command: echo hello".into())),
        "{ev:?}"
    );
    assert!(ev.contains(&(EventCode::Marker, "command: sudo -k id".into())));
    assert!(
        ev.iter()
            .any(|(c, d)| *c == EventCode::Marker && d.starts_with("input not recorded: 6 bytes")),
        "{ev:?}"
    );
    assert!(ev.contains(&(EventCode::Resize, "100x30".into())));
    // The live subscriber saw the same, never the password.
    let mut seen = String::new();
    while let Ok(e) = live.try_recv() {
        seen.push_str(&e.data);
    }
    assert!(
        seen.contains("command: echo hello") && !seen.contains("s3cr3t"),
        "{seen}"
    );
    // The index, updated as it ran.
    rec.index_writer().unwrap().flush().await;
    let q = |c: &str| Query {
        command: Some(c.into()),
        ..Query::default()
    };
    let found = rec.index().search(&q("ECHO HEL")).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, m.id);
    assert!(found[0].ended_at.is_some());
    assert!(rec.index().search(&q("s3cr3t")).unwrap().is_empty());
    assert!(rec.index().search(&q("cr3")).unwrap().is_empty());
    let cmds: Vec<String> = rec
        .index()
        .commands(&m.id)
        .unwrap()
        .into_iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(cmds, ["echo hello", "sudo -k id"]);
    // Nothing of the password in any file of the directory either.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"s3cr3t"));
    }
}
