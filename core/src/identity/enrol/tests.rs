use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::audit::{AuditKey, AuditLog};
use crate::identity::{LockoutPolicy, NewUser, TotpCipher};
use crate::secret::SecretKey;
use crate::store::{MemoryStore, Store};
use crate::testutil::TempDir;

const PW: &str = "correct-Horse-7-battery";

fn setup() -> (TempDir, Authenticator, std::path::PathBuf) {
    let dir = TempDir::new("enrol");
    let key = SecretKey::from_bytes([3; 32]);
    let cipher = TotpCipher::new(&key).unwrap();
    let path = dir.path().join("users.toml");
    let mut users = Users::load(&path).unwrap();
    users
        .add(
            NewUser {
                name: "erin",
                groups: &["staff".into()],
                password: PW,
                ssh_keys: &[],
            },
            &cipher,
        )
        .unwrap();
    users.clear_totp("erin").unwrap();
    let audit = AuditLog::open(&dir.path().join("audit"), AuditKey::new(&key)).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let auth = Authenticator::new(
        path.clone(),
        cipher,
        store,
        audit,
        Duration::from_secs(3600),
        Duration::from_secs(600),
        LockoutPolicy::default(),
    );
    (dir, auth, path)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn password_alone_never_logs_in_and_enrolment_needs_a_valid_code() {
    let (_dir, auth, path) = setup();
    // The older entry point refuses a user without TOTP outright.
    assert!(matches!(
        auth.verify_password_and_totp("erin", PW, "123456", None)
            .await,
        Err(AuthError::InvalidCredentials)
    ));
    // A wrong password is a plain failure, not an enrolment.
    assert!(matches!(
        auth.login_web("erin", "wrong-password-99", "", None).await,
        Err(AuthError::InvalidCredentials)
    ));
    let Ok(LoginOutcome::EnrolmentRequired(proof)) = auth.login_web("erin", PW, "", None).await
    else {
        panic!("enrolment expected");
    };
    assert_eq!(proof.user(), "erin");
    let (enrolment, secret) = auth.start_enrolment(&proof).unwrap();
    assert!(enrolment.otpauth_uri.starts_with("otpauth://totp/"));
    assert!(matches!(
        auth.complete_enrolment(&proof, &secret, "000000").await,
        Err(AuthError::InvalidTotp)
    ));
    let code = totp::current_code("erin", &secret.secret, now()).unwrap();
    let id = auth
        .complete_enrolment(&proof, &secret, &code)
        .await
        .unwrap();
    assert_eq!(id.user(), "erin");
    assert_eq!(id.groups(), ["staff".to_string()]);
    assert!(
        !Users::load(&path)
            .unwrap()
            .get("erin")
            .unwrap()
            .totp_secret
            .is_empty()
    );
    // Enrolled now: a second enrolment with the same proof cannot overwrite the secret.
    let (_, other) = auth.start_enrolment(&proof).unwrap();
    let code = totp::current_code("erin", &other.secret, now() + 30).unwrap();
    assert!(
        auth.complete_enrolment(&proof, &other, &code)
            .await
            .is_err()
    );
    // And the user logs in with the enrolled secret like anyone else.
    let code = totp::current_code("erin", &secret.secret, now() - 30).unwrap();
    assert!(matches!(
        auth.login_web("erin", PW, &code, None).await,
        Ok(LoginOutcome::Verified(_))
    ));
}
