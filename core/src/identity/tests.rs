use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::audit::{AuditKey, AuditLog};
use crate::error::AuthError;
use crate::secret::SecretKey;
use crate::store::{MemoryStore, Store};
use crate::testutil::TempDir;

const PW: &str = "correct-Horse-7-battery";
const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeYz/7qFp5L7tsziy3gAQT/T5CI3erKWolp9s4IYk+O alice@laptop";

#[test]
fn user_names_are_strict() {
    for ok in [
        "alice",
        "a",
        "bob.smith",
        "x-1_2",
        "abcdefghijklmnopqrstuvwxyz012345",
    ] {
        assert!(validate_user_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "Alice",
        "1abc",
        "al:ice",
        "al@ice",
        "a b",
        "abcdefghijklmnopqrstuvwxyz0123456",
        "-x",
        "é",
    ] {
        assert!(validate_user_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn weak_passwords_refused_with_reason() {
    let cases = [
        ("short", "shorter than"),
        ("password1234", "common"),
        ("xx-alice-2024-yy", "user name"),
        ("aaaaaaaaaaaaaa", "repeats"),
    ];
    for (pw, reason) in cases {
        match check_password_strength("alice", pw) {
            Err(crate::error::IdentityError::WeakPassword(r)) => {
                assert!(r.contains(reason), "{pw}: {r}")
            }
            other => panic!("{pw}: {other:?}"),
        }
    }
    assert!(check_password_strength("alice", PW).is_ok());
}

#[test]
fn ssh_keys_validated() {
    let k = parse_ssh_public_key(ED25519).unwrap();
    assert_eq!(k.algorithm, "ssh-ed25519");
    assert_eq!(k.comment, "alice@laptop");
    assert!(parse_ssh_public_key("ssh-dss AAAAB3NzaC1kc3MAAACBAP").is_err());
    assert!(parse_ssh_public_key("ssh-ed25519 not*base64").is_err());
    // Blob of another algorithm under the ed25519 label.
    assert!(parse_ssh_public_key("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQC7").is_err());
    assert!(parse_ssh_public_key("").is_err());
}

#[test]
fn totp_secret_encrypted_bound_to_user() {
    let key = SecretKey::from_bytes([1; 32]);
    let c = TotpCipher::new(&key).unwrap();
    let ct = c.encrypt("alice", b"0123456789abcdefghij").unwrap();
    assert!(!ct.contains("0123456789"));
    assert_eq!(
        c.decrypt("alice", &ct).unwrap().as_slice(),
        b"0123456789abcdefghij"
    );
    assert!(
        c.decrypt("bob", &ct).is_err(),
        "associated data binds the user"
    );
    let other = TotpCipher::new(&SecretKey::from_bytes([2; 32])).unwrap();
    assert!(
        other.decrypt("alice", &ct).is_err(),
        "another key cannot decrypt"
    );
    assert_ne!(
        ct,
        c.encrypt("alice", b"0123456789abcdefghij").unwrap(),
        "random nonce"
    );
}

#[test]
fn users_file_roundtrip_and_admin() {
    let dir = TempDir::new("users");
    let path = dir.path().join("users.toml");
    let cipher = TotpCipher::new(&SecretKey::from_bytes([3; 32])).unwrap();
    let mut users = Users::load(&path).unwrap();
    let enrol = users
        .add(
            NewUser {
                name: "alice",
                groups: &["staff".into(), "sre".into()],
                password: PW,
                ssh_keys: &[ED25519.into()],
            },
            &cipher,
        )
        .unwrap();
    assert!(
        enrol
            .otpauth_uri
            .starts_with("otpauth://totp/Gatehouse:alice?"),
        "{}",
        enrol.otpauth_uri
    );
    assert!(enrol.otpauth_uri.contains("issuer=Gatehouse"));
    assert!(enrol.qr_svg.contains("<svg"));
    assert!(enrol.qr_terminal.lines().count() > 10);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("$argon2id$"));
    assert!(!text.contains(PW));
    assert!(
        !text.contains(&enrol.secret_base32),
        "totp secret must be encrypted at rest"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(matches!(
        users.add(
            NewUser {
                name: "alice",
                groups: &[],
                password: PW,
                ssh_keys: &[]
            },
            &cipher
        ),
        Err(crate::error::IdentityError::UserExists(_))
    ));
    assert!(
        users
            .add(
                NewUser {
                    name: "Bad:Name",
                    groups: &[],
                    password: PW,
                    ssh_keys: &[]
                },
                &cipher
            )
            .is_err()
    );
    assert!(
        users
            .add(
                NewUser {
                    name: "bob",
                    groups: &["Bad Group".into()],
                    password: PW,
                    ssh_keys: &[]
                },
                &cipher
            )
            .is_err()
    );
    assert!(
        users
            .add(
                NewUser {
                    name: "bob",
                    groups: &[],
                    password: "short",
                    ssh_keys: &[]
                },
                &cipher
            )
            .is_err()
    );
    let reloaded = Users::load(&path).unwrap();
    assert_eq!(reloaded.list().len(), 1);
    assert_eq!(reloaded.list()[0].groups, vec!["staff", "sre"]);
    users.set_locked("alice", true).unwrap();
    assert!(Users::load(&path).unwrap().get("alice").unwrap().locked);
    let old = Users::load(&path)
        .unwrap()
        .get("alice")
        .unwrap()
        .totp_secret
        .clone();
    let e2 = users.reset_totp("alice", &cipher).unwrap();
    assert_ne!(e2.secret_base32, enrol.secret_base32);
    assert_ne!(
        Users::load(&path)
            .unwrap()
            .get("alice")
            .unwrap()
            .totp_secret,
        old
    );
    assert!(users.set_locked("nobody", true).is_err());
    std::fs::write(&path, "users = 3").unwrap();
    assert!(
        Users::load(&path).is_err(),
        "a corrupt file is an error, not an empty user list"
    );
}

struct Fixture {
    _dir: TempDir,
    auth: Authenticator,
    users: Users,
    cipher: TotpCipher,
    audit_dir: std::path::PathBuf,
    key: SecretKey,
    store: Arc<dyn Store>,
}

fn fixture() -> Fixture {
    let dir = TempDir::new("auth");
    let key = SecretKey::from_bytes([9; 32]);
    let cipher = TotpCipher::new(&key).unwrap();
    let path = dir.path().join("users.toml");
    let mut users = Users::load(&path).unwrap();
    users
        .add(
            NewUser {
                name: "alice",
                groups: &["staff".into()],
                password: PW,
                ssh_keys: &[ED25519.into()],
            },
            &cipher,
        )
        .unwrap();
    let audit_dir = dir.path().join("audit");
    let audit = AuditLog::open(&audit_dir, AuditKey::new(&key)).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let lockout = LockoutPolicy {
        max_failures: 3,
        window: Duration::from_secs(60),
        lock_for: Duration::from_secs(60),
    };
    let auth = Authenticator::new(
        path,
        TotpCipher::new(&key).unwrap(),
        store.clone(),
        audit,
        Duration::from_secs(3600),
        Duration::from_secs(600),
        lockout,
    );
    Fixture {
        _dir: dir,
        auth,
        users,
        cipher,
        audit_dir,
        key,
        store,
    }
}

fn audit_text(f: &Fixture) -> String {
    let mut s = String::new();
    for p in crate::audit::tests::segment_files(&f.audit_dir) {
        s.push_str(&std::fs::read_to_string(p).unwrap());
    }
    s
}

fn code_at(f: &Fixture, user: &str, offset_steps: i64) -> String {
    let rec = f.users.get(user).unwrap();
    let secret = f.cipher.decrypt(user, &rec.totp_secret).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    totp::current_code(user, &secret, (now + offset_steps * 30) as u64).unwrap()
}

#[tokio::test]
async fn password_and_totp_login_then_session() {
    let f = fixture();
    let addr: IpAddr = "198.51.100.1".parse().unwrap();
    let code = code_at(&f, "alice", 0);
    let id = f
        .auth
        .verify_password_and_totp("alice", PW, &code, Some(addr))
        .await
        .unwrap();
    assert_eq!(id.user(), "alice");
    assert_eq!(id.groups(), ["staff"]);
    assert_eq!(id.subjects(), ["alice", "group:staff"]);
    assert_eq!(id.method(), AuthMethod::PasswordTotp);
    // The same code cannot be used twice.
    let again = f
        .auth
        .verify_password_and_totp("alice", PW, &code, Some(addr))
        .await;
    assert!(matches!(again, Err(AuthError::TotpReplayed)), "{again:?}");
    // Session: start, resume (on its own host only), logout.
    let tok = f
        .auth
        .start_session(&id, Some(addr), "wiki.example")
        .await
        .unwrap();
    let (resumed, _) = f
        .auth
        .resume_session(tok.expose(), "wiki.example")
        .await
        .unwrap();
    assert_eq!(resumed.user(), "alice");
    for other in ["admin.example", "wiki.example.evil", "", "WIKI.EXAMPLE"] {
        let r = f.auth.resume_session(tok.expose(), other).await;
        assert!(
            matches!(&r, Err(AuthError::WrongHost { user, issued_for, .. })
                if user == "alice" && issued_for.as_deref() == Some("wiki.example")),
            "{other}: {r:?}"
        );
    }
    // A session that is not a web session (SSH) is refused on every host.
    let ssh = f
        .store
        .create_session(
            crate::store::SessionData {
                user: "alice".into(),
                groups: vec![],
                method: AuthMethod::SshKey,
                auth_time: 0,
                client_addr: None,
                login_id: None,
                sso_logout: None,
            },
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(matches!(
        f.auth.resume_session(ssh.expose(), "wiki.example").await,
        Err(AuthError::WrongHost {
            issued_for: None,
            ..
        })
    ));
    f.auth.logout(tok.expose()).await.unwrap();
    assert!(matches!(
        f.auth.resume_session(tok.expose(), "wiki.example").await,
        Err(AuthError::NoSession)
    ));
    let log = audit_text(&f);
    assert!(log.contains("\"event\":\"login_success\""));
    assert!(log.contains("\"event\":\"logout\""));
    assert!(
        !log.contains(PW) && !log.contains(&code) && !log.contains(tok.expose()),
        "no secrets in the audit log"
    );
    crate::audit::verify(&f.audit_dir, &AuditKey::new(&f.key)).unwrap();
}

#[tokio::test]
async fn failures_lock_out_and_are_audited() {
    let f = fixture();
    let addr: IpAddr = "203.0.113.9".parse().unwrap();
    let code = code_at(&f, "alice", 0);
    for _ in 0..3 {
        let r = f
            .auth
            .verify_password_and_totp("alice", "wrong-password-123", &code, Some(addr))
            .await;
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    // Locked: even the right password is refused, and the lock is reported.
    let r = f
        .auth
        .verify_password_and_totp("alice", PW, &code, Some(addr))
        .await;
    assert!(matches!(r, Err(AuthError::LockedOut { .. })), "{r:?}");
    let log = audit_text(&f);
    assert!(log.contains("\"event\":\"lockout\"") && log.contains("\"incident_id\":\"inc-"));
    assert!(log.contains("\"event\":\"login_failure\""));
}

#[tokio::test]
async fn unknown_user_same_error_and_bad_totp() {
    let f = fixture();
    let r = f
        .auth
        .verify_password_and_totp("nobody", PW, "123456", None)
        .await;
    assert!(matches!(r, Err(AuthError::InvalidCredentials)));
    let r = f
        .auth
        .verify_password_and_totp("alice", PW, "12345x", None)
        .await;
    assert!(matches!(r, Err(AuthError::InvalidTotp)), "{r:?}");
    let far = code_at(&f, "alice", 5);
    let r = f
        .auth
        .verify_password_and_totp("alice", PW, &far, None)
        .await;
    assert!(
        matches!(r, Err(AuthError::InvalidTotp)),
        "a code outside the skew window: {r:?}"
    );
    assert!(audit_text(&f).contains("\"event\":\"totp_failure\""));
}

#[tokio::test]
async fn locked_account_refused() {
    let mut f = fixture();
    f.users.set_locked("alice", true).unwrap();
    let r = f
        .auth
        .verify_password_and_totp("alice", PW, &code_at(&f, "alice", 0), None)
        .await;
    assert!(matches!(r, Err(AuthError::AccountLocked)), "{r:?}");
    assert!(matches!(
        f.auth.check_ssh_key("alice", ED25519, None).await,
        Err(AuthError::AccountLocked)
    ));
}

#[tokio::test]
async fn ssh_key_then_totp() {
    let f = fixture();
    // The comment does not matter; the key does.
    let accepted = f
        .auth
        .check_ssh_key(
            "alice",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeYz/7qFp5L7tsziy3gAQT/T5CI3erKWolp9s4IYk+O",
            None,
        )
        .await
        .unwrap();
    assert_eq!(accepted.user(), "alice");
    let id = f
        .auth
        .verify_totp_after_key(&accepted, &code_at(&f, "alice", 0))
        .await
        .unwrap();
    assert_eq!(id.method(), AuthMethod::SshKeyTotp);
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINa++rv+bz1SQkqU50HLSUrrWBoUYosbOVivoLDN85Tj";
    assert!(matches!(
        f.auth.check_ssh_key("alice", other, None).await,
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        f.auth.check_ssh_key("nobody", ED25519, None).await,
        Err(AuthError::InvalidCredentials)
    ));
    let accepted = f.auth.check_ssh_key("alice", ED25519, None).await.unwrap();
    assert_eq!(
        f.auth.accept_key_only(accepted).await.unwrap().method(),
        AuthMethod::SshKey
    );
}

#[tokio::test]
async fn audit_failure_fails_login_closed() {
    let f = fixture();
    // Make the audit directory unwritable by replacing it with a file.
    std::fs::remove_dir_all(&f.audit_dir).unwrap();
    std::fs::write(&f.audit_dir, "not a dir").unwrap();
    let r = f
        .auth
        .verify_password_and_totp("alice", PW, &code_at(&f, "alice", 0), None)
        .await;
    assert!(matches!(r, Err(AuthError::Audit(_))), "{r:?}");
}

#[tokio::test]
async fn unknown_user_costs_an_argon2_run_too() {
    // Interleaved, best of five: robust to a busy machine. Skipping argon2 for unknown users
    // would make them ~100x faster; equal work keeps the ratio near 1.
    let f = fixture();
    let (mut known, mut unknown) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        for (user, best) in [("alice", &mut known), ("nobody", &mut unknown)] {
            let t = std::time::Instant::now();
            let r = f
                .auth
                .check_password(user, "wrong-password-123")
                .await
                .unwrap();
            *best = (*best).min(t.elapsed());
            assert!(matches!(r, super::authenticator::PasswordCheck::Bad));
        }
    }
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.3..3.0).contains(&ratio),
        "known {known:?} vs unknown {unknown:?}"
    );
}

#[tokio::test]
async fn hostile_names_never_reach_the_audit_log() {
    let f = fixture();
    // A hostile name never reaches the store or the audit log as such.
    let huge = "x".repeat(100_000);
    assert!(
        f.auth
            .verify_password_and_totp(&huge, PW, "123456", None)
            .await
            .is_err()
    );
    assert!(!audit_text(&f).contains(&huge[..1000]));
}

#[test]
fn users_update_lock_is_exclusive() {
    let dir = TempDir::new("ulock");
    let path = dir.path().join("users.toml");
    let held = Users::lock_for_update(&path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let p2 = path.clone();
    let t = std::thread::spawn(move || {
        let _l = Users::lock_for_update(&p2).unwrap();
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "second writer waits"
    );
    drop(held);
    rx.recv_timeout(Duration::from_secs(5))
        .expect("second writer proceeds after release");
    t.join().unwrap();
}
