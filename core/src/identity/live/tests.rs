//! Web sessions and `users.toml` changes at the core's level.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditKey, AuditLog};
use crate::error::AuthError;
use crate::identity::{Authenticator, NewUser, TotpCipher, Users};
use crate::secret::SecretKey;
use crate::store::{MemoryStore, RevocationEvent, Store};
use crate::testutil::TempDir;

#[tokio::test]
async fn a_web_session_follows_users_toml_and_a_lock_revokes_it() {
    let dir = TempDir::new("live-users");
    let key = SecretKey::from_bytes([8; 32]);
    let cipher = TotpCipher::new(&key).unwrap();
    let path = dir.path().join("users.toml");
    let mut users = Users::load(&path).unwrap();
    users
        .add(
            NewUser {
                name: "alice",
                groups: &["staff".into(), "payroll".into()],
                password: "correct-Horse-7-battery",
                ssh_keys: &[],
            },
            &cipher,
        )
        .unwrap();
    let audit_dir = dir.path().join("audit");
    let audit = AuditLog::open(&audit_dir, AuditKey::new(&key)).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let auth = Authenticator::new(
        path,
        TotpCipher::new(&key).unwrap(),
        store.clone(),
        audit,
        Duration::from_secs(3600),
        Duration::from_secs(600),
        crate::identity::throttle::test_policy(),
    );
    let code = users.current_totp_code("alice", &cipher).unwrap();
    let id = auth
        .verify_password_and_totp("alice", "correct-Horse-7-battery", &code, None)
        .await
        .unwrap();
    let tok = auth.start_session(&id, None, "wiki.example").await.unwrap();
    // A group taken away: the next request has the groups of now, the session lives on.
    users
        .edit("alice", |u| u.groups.retain(|g| g != "payroll"))
        .unwrap();
    auth.reload_users().await.unwrap();
    let (resumed, _) = auth
        .resume_session(tok.expose(), "wiki.example")
        .await
        .unwrap();
    assert_eq!(resumed.groups(), ["staff".to_string()]);
    // Locked: the session is revoked (live connections told), and refused.
    let mut feed = store.subscribe_revocations().await.unwrap();
    users.set_locked("alice", true).unwrap();
    auth.reload_users().await.unwrap();
    assert_eq!(
        feed.recv().await.unwrap(),
        RevocationEvent::User {
            user: "alice".into()
        }
    );
    assert!(matches!(
        auth.resume_session(tok.expose(), "wiki.example").await,
        Err(AuthError::NoSession)
    ));
    let log: String = crate::audit::tests::segment_files(&audit_dir)
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        log.contains("\"event\":\"session_revoked\"")
            && log.contains("\"by\":\"account locked in users.toml\""),
        "{log}"
    );
}
