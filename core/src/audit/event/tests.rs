use super::*;

fn ctx() -> AccessContext {
    AccessContext {
        client_addr: Some("192.0.2.7".parse().unwrap()),
        session: Some("0f".repeat(16)),
        request_id: None,
    }
}

fn ssh_events() -> Vec<AuditEvent> {
    let s = |v: &str| v.to_string();
    vec![
        AuditEvent::SshAuth {
            user: s("alice"),
            target: s("db"),
            step: SshAuthStep::LockedOut,
            incident_id: Some(new_incident_id()),
            detail: Some(s(
                "locked out: this user at this address (8 failures), 900 s left",
            )),
            context: ctx(),
        },
        AuditEvent::SshAuth {
            user: s("alice"),
            target: s("db"),
            step: SshAuthStep::TotpReplayed,
            incident_id: None,
            detail: None,
            context: ctx(),
        },
        AuditEvent::SshConnectionOpen {
            user: s("alice"),
            target: s("db"),
            login: s("root"),
            method: s("ssh-key+totp"),
            context: ctx(),
        },
        AuditEvent::SshConnectionClose {
            user: s("alice"),
            target: s("db"),
            reason: s("revoked"),
            context: ctx(),
        },
        AuditEvent::SshSessionStart {
            user: s("alice"),
            target: s("db"),
            login: s("root"),
            recording_id: s("ab"),
            request: SshRequest::Exec,
            command: Some(s("uname -a")),
            action: s("ssh"),
            context: ctx(),
        },
        AuditEvent::SshSessionEnd {
            user: s("alice"),
            target: s("db"),
            login: s("root"),
            recording_id: s("ab"),
            exit_status: Some(3),
            exit_signal: None,
            reason: s("closed"),
            context: ctx(),
        },
        AuditEvent::SshFileTransfer {
            user: s("alice"),
            target: s("db"),
            login: s("root"),
            recording_id: s("ab"),
            protocol: FileProtocol::Sftp,
            path: s("/tmp/\"x\"\n"),
            direction: TransferDirection::Upload,
            bytes: 1 << 40,
            context: ctx(),
        },
        AuditEvent::PortForward {
            user: s("alice"),
            target: s("db"),
            login: s("root"),
            destination: s("10.0.0.1:5432"),
            allowed: false,
            context: ctx(),
        },
        AuditEvent::PortForwardEnd {
            user: s("alice"),
            target: s("db"),
            login: s("root"),
            destination: s("10.0.0.1:5432"),
            bytes_up: 1,
            bytes_down: 2,
            context: ctx(),
        },
        AuditEvent::SshRefused {
            user: s("alice"),
            target: s("db"),
            reason: SshRefusal::AgentForwarding,
            detail: None,
            context: ctx(),
        },
        AuditEvent::SshHostKeyMismatch {
            user: s("alice"),
            target: s("db"),
            presented: s("ssh-ed25519 SHA256:x"),
            incident_id: new_incident_id(),
            context: ctx(),
        },
    ]
}

#[test]
fn ssh_events_carry_client_and_session_round_trip_and_name_their_kind() {
    let mut kinds = Vec::new();
    for e in ssh_events() {
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], e.kind(), "{json}");
        assert!(e.kind().starts_with("ssh_") || e.kind().starts_with("port_forward"));
        assert_eq!(json["client_addr"], "192.0.2.7", "{json}");
        assert_eq!(json["session"], "0f".repeat(16), "{json}");
        assert!(json.get("request_id").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<AuditEvent>(json).unwrap(), e);
        kinds.push(e.kind());
    }
    kinds.dedup();
    assert_eq!(kinds.len(), 10, "{kinds:?}");
}

#[test]
fn lockouts_and_host_key_mismatches_are_alerts_and_other_ssh_events_are_not() {
    for e in ssh_events() {
        let alert = matches!(
            &e,
            AuditEvent::SshAuth {
                step: SshAuthStep::LockedOut,
                ..
            } | AuditEvent::SshHostKeyMismatch { .. }
        );
        assert_eq!(e.incident_id().is_some(), alert, "{e:?}");
        if let Some(id) = e.incident_id() {
            assert!(id.starts_with("inc-"));
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["incident_id"], id);
        }
    }
}
