//! The login flows under the throttle: both sides of the trade-off, at the core's level (the
//! end-to-end tests drive the same through the binary).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{LockoutPolicy, ThrottleRule, test_policy};
use crate::audit::{AuditKey, AuditLog};
use crate::error::AuthError;
use crate::identity::{Authenticator, NewUser, TotpCipher, Users, totp};
use crate::secret::SecretKey;
use crate::store::{MemoryStore, Scope, Store};
use crate::testutil::TempDir;

const PW: &str = "correct-Horse-7-battery";

struct Fixture {
    dir: TempDir,
    auth: Authenticator,
    users: Users,
    cipher: TotpCipher,
}

fn fixture(policy: LockoutPolicy) -> Fixture {
    let dir = TempDir::new("throttle");
    let key = SecretKey::from_bytes([3; 32]);
    let cipher = TotpCipher::new(&key).unwrap();
    let path = dir.path().join("users.toml");
    let mut users = Users::load(&path).unwrap();
    users
        .add(
            NewUser {
                name: "alice",
                groups: &["staff".into()],
                password: PW,
                ssh_keys: &[],
            },
            &cipher,
        )
        .unwrap();
    let audit = AuditLog::open(&dir.path().join("audit"), AuditKey::new(&key)).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let auth = Authenticator::new(
        path,
        TotpCipher::new(&key).unwrap(),
        store,
        audit,
        Duration::from_secs(3600),
        Duration::from_secs(600),
        policy,
    );
    Fixture {
        dir,
        auth,
        users,
        cipher,
    }
}

impl Fixture {
    fn code(&self, offset_steps: i64) -> String {
        let rec = self.users.get("alice").unwrap();
        let secret = self.cipher.decrypt("alice", &rec.totp_secret).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        totp::current_code(
            "alice",
            &secret,
            now.saturating_add_signed(offset_steps * 30),
        )
        .unwrap()
    }

    fn audit(&self) -> String {
        crate::audit::tests::segment_files(&self.dir.path().join("audit"))
            .into_iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    async fn login(&self, password: &str, code: &str, from: &str) -> Result<(), AuthError> {
        let addr: IpAddr = from.parse().unwrap();
        self.auth
            .verify_password_and_totp("alice", password, code, Some(addr))
            .await
            .map(drop)
    }
}

/// A step the test waits for: far enough from the end of the TOTP step that the codes used
/// stay valid through the test.
async fn fresh_step() {
    let left = 30
        - SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 30;
    if left < 5 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

#[tokio::test]
async fn failures_elsewhere_never_refuse_an_address_that_has_not_failed() {
    let f = fixture(test_policy());
    // Three addresses lock themselves out for alice.
    for from in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        for _ in 0..3 {
            let r = f.login("wrong-password-1", "000000", from).await;
            assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
        }
        let r = f.login(PW, "000000", from).await;
        assert!(
            matches!(
                r,
                Err(AuthError::LockedOut {
                    scope: Scope::UserAtAddress,
                    locked: true,
                    ..
                })
            ),
            "guessing stopped at {from}: {r:?}"
        );
    }
    // Alice, at her own address, is not affected.
    fresh_step().await;
    f.login(PW, &f.code(0), "198.51.100.20").await.unwrap();
    let log = f.audit();
    assert_eq!(log.matches("\"event\":\"lockout\"").count(), 3, "{log}");
    assert!(log.contains("\"key\":\"user:alice@192.0.2.1\""), "{log}");
    assert!(
        log.contains("locked out: this user at this address (3 failures)"),
        "{log}"
    );
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_never_counted() {
    let f = fixture(test_policy());
    fresh_step().await;
    let code = f.code(0);
    f.login(PW, &code, "192.0.2.9").await.unwrap();
    // Far more replays than the lock needs (3): each refused as a replay, none counted.
    for _ in 0..10 {
        let r = f.login(PW, &code, "192.0.2.9").await;
        assert!(matches!(r, Err(AuthError::TotpReplayed)), "{r:?}");
    }
    f.login(PW, &f.code(1), "192.0.2.9").await.unwrap();
    let log = f.audit();
    assert!(!log.contains("\"event\":\"lockout\""), "{log}");
    assert!(
        log.contains("code replayed (refused; not counted as a guess)"),
        "{log}"
    );
}

#[tokio::test]
async fn a_success_forgets_the_failures_at_its_address() {
    let f = fixture(test_policy());
    for _ in 0..2 {
        assert!(f.login("wrong-password-1", "0", "192.0.2.4").await.is_err());
    }
    fresh_step().await;
    f.login(PW, &f.code(0), "192.0.2.4").await.unwrap();
    for _ in 0..2 {
        assert!(f.login("wrong-password-1", "0", "192.0.2.4").await.is_err());
    }
    f.login(PW, &f.code(1), "192.0.2.4").await.unwrap();
}

#[tokio::test]
async fn guessing_from_many_addresses_slows_each_address_that_failed() {
    let mut policy = test_policy();
    policy.user = ThrottleRule {
        free: 2,
        first_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(30),
        lock_after: None,
        lock_for: Duration::ZERO,
    };
    policy.user_alert_at = 4;
    let f = fixture(policy);
    for i in 1..=4 {
        let r = f
            .login("wrong-password-1", "0", &format!("192.0.2.{i}"))
            .await;
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    // Each failed address now waits the user's delay (no lock)...
    let r = f.login("wrong-password-1", "0", "192.0.2.1").await;
    assert!(
        matches!(
            r,
            Err(AuthError::LockedOut {
                scope: Scope::User,
                locked: false,
                remaining_secs: 25..=30,
            })
        ),
        "{r:?}"
    );
    // ...while a fresh address still gets its answer at once.
    fresh_step().await;
    f.login(PW, &f.code(0), "203.0.113.5").await.unwrap();
    let log = f.audit();
    assert!(log.contains("\"event\":\"user_throttled\""), "{log}");
    assert!(
        log.contains("slowed: this user, failing from several addresses"),
        "{log}"
    );
}

#[tokio::test]
async fn the_address_counter_stops_spraying_over_users() {
    let mut policy = test_policy();
    policy.address = ThrottleRule {
        free: 4,
        first_delay: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
        lock_after: Some(4),
        lock_for: Duration::from_secs(120),
    };
    let f = fixture(policy);
    let from: IpAddr = "192.0.2.77".parse().unwrap();
    for name in ["u1", "u2", "u3", "u4"] {
        let r = f
            .auth
            .verify_password_and_totp(name, PW, "000000", Some(from))
            .await;
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    let r = f.login(PW, "000000", "192.0.2.77").await;
    assert!(
        matches!(
            r,
            Err(AuthError::LockedOut {
                scope: Scope::Address,
                locked: true,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(f.audit().contains("\"key\":\"addr:192.0.2.77\""));
}
