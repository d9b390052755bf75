use super::*;

#[test]
fn recording_events_round_trip_and_a_cap_is_an_alert() {
    let capped = AuditEvent::RecordingCapped {
        user: "alice".into(),
        target: "db".into(),
        login: "root".into(),
        recording_id: "ab".repeat(16),
        direction: "output".into(),
        cap_bytes: 1 << 20,
        incident_id: new_incident_id(),
        context: AccessContext::default(),
    };
    let access = AuditEvent::RecordingAccess {
        actor: "cli:root".into(),
        action: "export".into(),
        recording_id: Some("ab".repeat(16)),
        detail: None,
        outcome: Outcome::Success,
        context: AccessContext::default(),
    };
    let review = AuditEvent::RecordingAccess {
        actor: "review:carol".into(),
        action: "watch".into(),
        recording_id: Some("cd".repeat(16)),
        detail: None,
        outcome: Outcome::Success,
        context: AccessContext {
            client_addr: Some("192.0.2.9".parse().unwrap()),
            session: Some("ef".repeat(32)),
            request_id: Some("r-1".into()),
        },
    };
    let ended = AuditEvent::SessionTerminated {
        by: "review:carol".into(),
        user: "alice".into(),
        kind: "ssh".into(),
        recording_id: "cd".repeat(16),
        session: "01".repeat(16),
        reason: "suspicious rm -rf".into(),
        context: AccessContext::default(),
    };
    for (e, kind, alert) in [
        (&capped, "recording_capped", true),
        (&access, "recording_access", false),
        (&review, "recording_access", false),
        (&ended, "session_terminated", false),
    ] {
        let json = serde_json::to_value(e).unwrap();
        assert_eq!(json["event"], kind);
        assert_eq!(e.kind(), kind);
        assert_eq!(e.incident_id().is_some(), alert);
        assert_eq!(&serde_json::from_value::<AuditEvent>(json).unwrap(), e);
    }
}
