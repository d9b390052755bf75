//! The name rules of the SSO registry, table by table.

use super::*;
use crate::identity::NewUser;
use crate::secret::SecretKey;
use crate::testutil::TempDir;

fn seen<'a>(name: &'a str, provider: &'a str, issuer: &'a str, subject: &'a str) -> Seen<'a> {
    Seen {
        name,
        provider,
        issuer,
        subject,
        groups: &[],
        now: 100,
    }
}

fn setup() -> (TempDir, PathBuf, PathBuf, TotpCipher) {
    let dir = TempDir::new("sso-registry");
    let cipher = TotpCipher::new(&SecretKey::from_bytes([9; 32])).unwrap();
    let users_file = dir.path().join("users.toml");
    let mut users = Users::load(&users_file).unwrap();
    users
        .add(
            NewUser {
                name: "alice",
                groups: &[],
                password: "correct-Horse-7-battery",
                ssh_keys: &[],
            },
            &cipher,
        )
        .unwrap();
    let registry = SsoUsers::path_in(dir.path());
    (dir, users_file, registry, cipher)
}

#[test]
fn names_are_bound_to_one_subject_and_never_to_a_local_user() {
    let (_dir, users_file, reg, cipher) = setup();
    let rec = |s: &Seen<'_>| record_login(&users_file, &reg, s, &cipher).unwrap();
    let ok = |r: &Recorded| matches!(r, Recorded::Ok { .. });
    // (login, expected)
    let table: Vec<(Seen<'_>, Recorded)> = vec![
        (
            seen("alice", "corp", "https://a", "1"),
            Recorded::Taken(NameOwner::LocalUser),
        ),
        (
            seen("bob", "corp", "https://a", "1"),
            Recorded::Ok {
                record: SsoUserRecord {
                    name: "bob".into(),
                    provider: "corp".into(),
                    issuer: "https://a".into(),
                    subject: "1".into(),
                    groups: vec![],
                    totp_secret: String::new(),
                    locked: false,
                    first_seen: 100,
                    last_login: 100,
                },
                renamed_from: None,
            },
        ),
        // The same subject again: fine.
        (
            seen("bob", "corp", "https://a", "1"),
            Recorded::Ok {
                record: SsoUserRecord {
                    name: "bob".into(),
                    provider: "corp".into(),
                    issuer: "https://a".into(),
                    subject: "1".into(),
                    groups: vec![],
                    totp_secret: String::new(),
                    locked: false,
                    first_seen: 100,
                    last_login: 100,
                },
                renamed_from: None,
            },
        ),
        // Another subject of the same provider, another provider's subject: refused.
        (
            seen("bob", "corp", "https://a", "2"),
            Recorded::Taken(NameOwner::SsoUser {
                provider: "corp".into(),
            }),
        ),
        (
            seen("bob", "partner", "https://b", "1"),
            Recorded::Taken(NameOwner::SsoUser {
                provider: "corp".into(),
            }),
        ),
    ];
    for (s, want) in &table {
        assert_eq!(&rec(s), want, "{s:?}");
    }
    // A renamed subject moves to the new name; the old one is free again.
    let r = rec(&seen("robert", "corp", "https://a", "1"));
    assert!(ok(&r), "{r:?}");
    assert!(matches!(r, Recorded::Ok { renamed_from: Some(ref o), .. } if o == "bob"));
    assert!(ok(&rec(&seen("bob", "partner", "https://b", "1"))));
    let loaded = SsoUsers::load(&reg).unwrap();
    assert_eq!(loaded.list().len(), 2);
    assert_eq!(loaded.get("bob").unwrap().provider, "partner");
}

#[test]
fn a_locked_subject_is_refused_and_a_rename_keeps_the_totp_secret() {
    let (_dir, users_file, reg, cipher) = setup();
    record_login(
        &users_file,
        &reg,
        &seen("carol", "corp", "https://a", "7"),
        &cipher,
    )
    .unwrap();
    let sealed = cipher.encrypt("carol", b"0123456789abcdefghij").unwrap();
    let mut r = SsoUsers::load(&reg).unwrap();
    assert!(
        !r.set_totp_if_empty("carol", "https://a", "other", sealed.clone())
            .unwrap()
    );
    assert!(
        r.set_totp_if_empty("carol", "https://a", "7", sealed.clone())
            .unwrap()
    );
    assert!(
        !r.set_totp_if_empty("carol", "https://a", "7", sealed)
            .unwrap(),
        "only once"
    );
    record_login(
        &users_file,
        &reg,
        &seen("caro", "corp", "https://a", "7"),
        &cipher,
    )
    .unwrap();
    let r = SsoUsers::load(&reg).unwrap();
    let plain = cipher
        .decrypt("caro", &r.get("caro").unwrap().totp_secret)
        .unwrap();
    assert_eq!(plain.as_slice(), b"0123456789abcdefghij");
    assert!(
        r.list().iter().all(|u| u.totp_secret.is_empty()),
        "list shows no secret"
    );
    let mut r = SsoUsers::load(&reg).unwrap();
    r.set_locked("caro", true).unwrap();
    assert_eq!(
        record_login(
            &users_file,
            &reg,
            &seen("caro", "corp", "https://a", "7"),
            &cipher
        )
        .unwrap(),
        Recorded::Locked
    );
    assert!(matches!(
        r.set_locked("nobody", true),
        Err(IdentityError::NoSuchUser(_))
    ));
}

#[test]
fn a_corrupt_registry_is_an_error_never_empty() {
    let (dir, _users_file, reg, _cipher) = setup();
    for text in [
        "[[users]]\nname = \"A B\"\nprovider = \"p\"\nissuer = \"i\"\nsubject = \"s\"\nfirst_seen = 1\nlast_login = 1\n",
        "[[users]]\nname = \"a\"\nprovider = \"p\"\nissuer = \"i\"\nsubject = \"\"\nfirst_seen = 1\nlast_login = 1\n",
        "[[users]]\nname = \"a\"\nprovider = \"p\"\nissuer = \"i\"\nsubject = \"s\"\nfirst_seen = 1\nlast_login = 1\n[[users]]\nname = \"b\"\nprovider = \"p\"\nissuer = \"i\"\nsubject = \"s\"\nfirst_seen = 1\nlast_login = 1\n",
        "[[users]]\nname = \"a\"\nbogus = 1\n",
        "not toml",
    ] {
        std::fs::write(&reg, text).unwrap();
        assert!(
            matches!(SsoUsers::load(&reg), Err(IdentityError::Parse { .. })),
            "{text}"
        );
    }
    assert!(
        SsoUsers::load(&dir.path().join("absent.toml"))
            .unwrap()
            .list()
            .is_empty()
    );
}
