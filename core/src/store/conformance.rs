//! One conformance suite, run against the memory store and a real redis-server.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::testutil::RedisServer;

mod grants;

pub(super) fn data(user: &str) -> SessionData {
    SessionData {
        user: user.to_string(),
        groups: vec!["staff".into()],
        method: AuthMethod::PasswordTotp,
        auth_time: 1,
        client_addr: Some("127.0.0.1".parse().unwrap()),
        login_id: None,
        sso_logout: None,
    }
}

/// `data(user)` from sign-in `login`.
fn of_login(user: &str, login: &str) -> SessionData {
    SessionData {
        login_id: Some(login.into()),
        ..data(user)
    }
}

pub(super) const TTL: Duration = Duration::from_secs(3600);
pub(super) const IDLE: Duration = Duration::from_secs(600);

async fn sessions_roundtrip(s: &dyn Store) {
    let tok = s.create_session(data("alice"), TTL, IDLE).await.unwrap();
    assert_eq!(tok.expose().len(), 64);
    let got = s
        .touch_session(tok.expose())
        .await
        .unwrap()
        .expect("session exists");
    assert_eq!(got.data.user, "alice");
    // Stored under the hash, never the raw id.
    assert_eq!(got.id_hash, session_id_hash(tok.expose()).unwrap());
    assert_ne!(got.id_hash, tok.expose());
    // Unknown and malformed ids find nothing.
    let other = SessionToken::generate().unwrap();
    assert!(s.touch_session(other.expose()).await.unwrap().is_none());
    assert!(s.touch_session("../../etc").await.unwrap().is_none());
    assert!(
        s.touch_session(&tok.expose().to_uppercase())
            .await
            .unwrap()
            .is_none()
    );
    let listed = s.list_sessions().await.unwrap();
    assert!(listed.iter().any(|x| x.id_hash == got.id_hash));
    assert!(
        !format!("{listed:?}").contains(tok.expose()),
        "raw id must not be stored"
    );
    let mut rx = s.subscribe_revocations().await.unwrap();
    assert!(s.delete_session(tok.expose()).await.unwrap());
    assert!(!s.delete_session(tok.expose()).await.unwrap());
    assert!(s.touch_session(tok.expose()).await.unwrap().is_none());
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        RevocationEvent::Session {
            id_hash: got.id_hash
        }
    );
}

async fn idle_and_absolute_expiry(s: &dyn Store) {
    // Idle: unused for longer than the idle timeout.
    let idle = s
        .create_session(data("idle"), TTL, Duration::from_millis(400))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        s.touch_session(idle.expose()).await.unwrap().is_none(),
        "idle session must be gone"
    );
    // Absolute: used all the time, still ends at the TTL.
    let abs = s
        .create_session(
            data("busy"),
            Duration::from_millis(900),
            Duration::from_millis(600),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            s.touch_session(abs.expose()).await.unwrap().is_some(),
            "touch keeps it alive before the ttl"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.touch_session(abs.expose()).await.unwrap().is_none(),
        "absolute ttl ends it"
    );
}

async fn revoke_user_publishes(s: &dyn Store) {
    let mut rx = s.subscribe_revocations().await.unwrap();
    let a1 = s.create_session(data("rev"), TTL, IDLE).await.unwrap();
    let a2 = s.create_session(data("rev"), TTL, IDLE).await.unwrap();
    let other = s.create_session(data("keep"), TTL, IDLE).await.unwrap();
    assert_eq!(s.revoke_user("rev").await.unwrap(), 2);
    assert!(s.touch_session(a1.expose()).await.unwrap().is_none());
    assert!(s.touch_session(a2.expose()).await.unwrap().is_none());
    assert!(s.touch_session(other.expose()).await.unwrap().is_some());
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, RevocationEvent::User { user: "rev".into() });
    assert_eq!(s.revoke_user("rev").await.unwrap(), 0);
}

async fn end_login_ends_one_sign_in_everywhere(s: &dyn Store) {
    let mut rx = s.subscribe_revocations().await.unwrap();
    let public = s
        .create_bound_session(of_login("eve", "L1"), Some("gh.example"), TTL, IDLE)
        .await
        .unwrap();
    let app = s
        .create_bound_session(of_login("eve", "L1"), Some("wiki.example"), TTL, IDLE)
        .await
        .unwrap();
    let other_browser = s
        .create_bound_session(of_login("eve", "L2"), Some("gh.example"), TTL, IDLE)
        .await
        .unwrap();
    let old_record = s
        .create_bound_session(data("eve"), Some("gh.example"), TTL, IDLE)
        .await
        .unwrap();
    let same_id_other_user = s
        .create_bound_session(of_login("mallory", "L1"), Some("gh.example"), TTL, IDLE)
        .await
        .unwrap();
    let mut ended = s.end_login("eve", "L1").await.unwrap();
    ended.sort();
    let mut want = vec![
        session_id_hash(public.expose()).unwrap(),
        session_id_hash(app.expose()).unwrap(),
    ];
    want.sort();
    assert_eq!(ended, want);
    for gone in [&public, &app] {
        assert!(s.touch_session(gone.expose()).await.unwrap().is_none());
    }
    for kept in [&other_browser, &old_record, &same_id_other_user] {
        assert!(s.touch_session(kept.expose()).await.unwrap().is_some());
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        match ev {
            RevocationEvent::Session { id_hash } => seen.push(id_hash),
            // An earlier case's user revocation, delivered late by Redis pub/sub.
            RevocationEvent::User { user } if user != "eve" => {}
            other => panic!("{other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, want);
    assert!(s.end_login("eve", "L1").await.unwrap().is_empty());
    assert_eq!(s.revoke_user("eve").await.unwrap(), 2);
    s.revoke_user("mallory").await.unwrap();
}

fn schedules() -> Schedules {
    Schedules {
        // Two free failures, then 1 s, 2 s, then a 10 s lock.
        user_at_address: Schedule(vec![0, 0, 1000, 2000, 10_000]),
        address: Schedule(vec![0, 0, 0, 0, 500]),
        user: Schedule(vec![0, 0, 0, 0, 3000]),
        window: Duration::from_secs(60),
    }
}

fn open_counts(g: Gate) -> Counts {
    match g {
        Gate::Open(c) => c,
        closed => panic!("expected open, got {closed:?}"),
    }
}

fn closed(g: Gate) -> (Scope, u64) {
    match g {
        Gate::Closed { scope, wait, .. } => (scope, u64::try_from(wait.as_millis()).unwrap()),
        open => panic!("expected closed, got {open:?}"),
    }
}

/// The throttle's counters: reserved with the check (also under races), growing delays from
/// the last attempt, settled back, and per-user failures that never close an address that
/// has not failed.
async fn throttle(s: Arc<dyn Store>) {
    let sch = schedules();
    let t0 = now_ms();
    let a1: IpAddr = "192.0.2.7".parse().unwrap();
    let k = AttemptKey::new("mallory", Some(a1));
    // A peek changes nothing.
    for _ in 0..5 {
        assert_eq!(
            open_counts(s.attempt_gate(&k, &sch, t0, false).await.unwrap()),
            Counts::default()
        );
    }
    let c = open_counts(s.attempt_gate(&k, &sch, t0, true).await.unwrap());
    assert_eq!((c.user_at_address, c.address, c.user), (1, 1, 1));
    open_counts(s.attempt_gate(&k, &sch, t0, true).await.unwrap());
    let c = open_counts(s.attempt_gate(&k, &sch, t0 + 10, true).await.unwrap());
    assert_eq!(c.user_at_address, 3);
    // Three failures: 1 s from the last attempt.
    assert_eq!(
        closed(s.attempt_gate(&k, &sch, t0 + 510, true).await.unwrap()),
        (Scope::UserAtAddress, 500)
    );
    let c = open_counts(s.attempt_gate(&k, &sch, t0 + 1010, true).await.unwrap());
    assert_eq!(c.user_at_address, 4, "a refused attempt is not counted");
    assert_eq!(
        closed(s.attempt_gate(&k, &sch, t0 + 1010, true).await.unwrap()),
        (Scope::UserAtAddress, 2000)
    );
    // A success forgets the user's failures here and takes the attempt back elsewhere.
    s.settle_attempt(&k, Settle::Success).await.unwrap();
    let c = open_counts(s.attempt_gate(&k, &sch, t0 + 1010, false).await.unwrap());
    assert_eq!((c.user_at_address, c.address, c.user), (0, 3, 3));
    // Not a guess: taken back everywhere.
    let before = open_counts(s.attempt_gate(&k, &sch, t0 + 1010, false).await.unwrap());
    open_counts(s.attempt_gate(&k, &sch, t0 + 1010, true).await.unwrap());
    s.settle_attempt(&k, Settle::NotAGuess).await.unwrap();
    assert_eq!(
        open_counts(s.attempt_gate(&k, &sch, t0 + 1010, false).await.unwrap()),
        before
    );
    // The address counter, for another user at the same address: 5 failures, then 500 ms.
    let other = AttemptKey::new("trudy", Some(a1));
    let c = open_counts(s.attempt_gate(&other, &sch, t0 + 1020, true).await.unwrap());
    assert_eq!((c.user_at_address, c.address), (1, 4));
    open_counts(s.attempt_gate(&other, &sch, t0 + 1030, true).await.unwrap());
    let (scope, _) = closed(s.attempt_gate(&other, &sch, t0 + 1040, true).await.unwrap());
    assert_eq!(scope, Scope::Address);
    // The user's failures from many addresses: a fresh address is open...
    let victim = |ip: &str| AttemptKey::new("victim", Some(ip.parse().unwrap()));
    for i in 1..=5 {
        open_counts(
            s.attempt_gate(&victim(&format!("198.51.100.{i}")), &sch, t0, true)
                .await
                .unwrap(),
        );
    }
    let clean = victim("203.0.113.9");
    let c = open_counts(s.attempt_gate(&clean, &sch, t0 + 1, false).await.unwrap());
    assert_eq!((c.user_at_address, c.user), (0, 5));
    // ...and one that failed waits the user's delay from its own last attempt.
    assert_eq!(
        closed(
            s.attempt_gate(&victim("198.51.100.1"), &sch, t0 + 1000, true)
                .await
                .unwrap()
        ),
        (Scope::User, 2000)
    );
    // An IPv6 /64 is one address.
    let v6 = |ip: &str| AttemptKey::new("sixer", Some(ip.parse().unwrap()));
    for ip in ["2001:db8::1", "2001:db8::2", "2001:db8::3"] {
        open_counts(s.attempt_gate(&v6(ip), &sch, t0, true).await.unwrap());
    }
    assert_eq!(
        closed(
            s.attempt_gate(&v6("2001:db8::ffff"), &sch, t0, true)
                .await
                .unwrap()
        )
        .0,
        Scope::UserAtAddress
    );
    // Raced: of 16 concurrent attempts at one free counter, only the free ones get through.
    let raced = AttemptKey::new("racer", Some("192.0.2.99".parse().unwrap()));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, k, sch) = (s.clone(), raced.clone(), sch.clone());
        tasks.push(tokio::spawn(async move {
            matches!(
                s.attempt_gate(&k, &sch, t0, true).await.unwrap(),
                Gate::Open(_)
            )
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(
        admitted, 3,
        "two free failures, then the third waits for the first delay"
    );
    // Counters expire with their window (a short one here).
    let short = Schedules {
        window: Duration::from_millis(300),
        user_at_address: Schedule(vec![0, 60_000]),
        ..schedules()
    };
    let gone = AttemptKey::new("gone", Some("192.0.2.55".parse().unwrap()));
    let t1 = now_ms();
    open_counts(s.attempt_gate(&gone, &short, t1, true).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = open_counts(
        s.attempt_gate(&gone, &short, now_ms(), false)
            .await
            .unwrap(),
    );
    assert_eq!(c, Counts::default(), "forgotten after the window");
    // A lock outlives the window.
    open_counts(s.attempt_gate(&gone, &short, now_ms(), true).await.unwrap());
    open_counts(s.attempt_gate(&gone, &short, now_ms(), true).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        closed(
            s.attempt_gate(&gone, &short, now_ms(), false)
                .await
                .unwrap()
        )
        .0,
        Scope::UserAtAddress
    );
}

async fn totp_replay_under_race(s: Arc<dyn Store>) {
    assert!(s.mark_totp_used("alice", 100).await.unwrap());
    assert!(!s.mark_totp_used("alice", 100).await.unwrap());
    assert!(s.mark_totp_used("alice", 101).await.unwrap());
    assert!(s.mark_totp_used("bob", 100).await.unwrap());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.mark_totp_used("race", 7).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one concurrent use of a step succeeds");
    s.ping().await.unwrap();
}

async fn handoff_taken_once(s: Arc<dyn Store>) {
    let h = Handoff {
        data: data("alice"),
        audience: "wiki.example".into(),
    };
    let hash = "ab".repeat(32);
    s.put_handoff(&hash, &h, Duration::from_secs(30))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, hash) = (s.clone(), hash.clone());
        tasks.push(tokio::spawn(
            async move { s.take_handoff(&hash).await.unwrap() },
        ));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    assert_eq!(got, vec![h.clone()], "exactly one taker gets the ticket");
    s.put_handoff("cd", &h, Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(s.take_handoff("cd").await.unwrap(), None, "expired");
}

async fn once_values_taken_once(s: Arc<dyn Store>) {
    let key = "ef".repeat(32);
    s.put_once(
        OnceKind::OidcLogin,
        &key,
        b"{\"v\":1}",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, key) = (s.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            s.take_once(OnceKind::OidcLogin, &key).await.unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    assert_eq!(
        got,
        vec![b"{\"v\":1}".to_vec()],
        "exactly one taker gets the value"
    );
    assert_eq!(
        s.take_once(OnceKind::OidcLogin, "nope").await.unwrap(),
        None
    );
    s.put_once(OnceKind::OidcLogin, "gh", b"x", Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        s.take_once(OnceKind::OidcLogin, "gh").await.unwrap(),
        None,
        "expired"
    );
    let big = vec![b'x'; MAX_ONCE_BYTES + 1];
    assert!(matches!(
        s.put_once(OnceKind::OidcLogin, "big", &big, TTL).await,
        Err(StoreError::TooLarge { .. })
    ));
}

/// A session ended by its hash alone (the console's terminate): gone, its revocation
/// published; a malformed or unknown hash ends nothing.
async fn end_session_by_hash(s: &dyn Store) {
    let tok = s.create_session(data("alice"), TTL, IDLE).await.unwrap();
    let hash = session_id_hash(tok.expose()).unwrap();
    for bad in ["", "../../x", &hash.to_uppercase(), &hash[..63]] {
        assert!(s.end_session_hash(bad).await.unwrap().is_none(), "{bad}");
    }
    let mut rx = s.subscribe_revocations().await.unwrap();
    let ended = s.end_session_hash(&hash).await.unwrap().expect("ended");
    assert_eq!(ended.data.user, "alice");
    assert!(s.touch_session(tok.expose()).await.unwrap().is_none());
    assert!(s.end_session_hash(&hash).await.unwrap().is_none());
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, RevocationEvent::Session { id_hash: hash });
}

async fn suite(s: Arc<dyn Store>) {
    end_session_by_hash(s.as_ref()).await;
    once_values_taken_once(s.clone()).await;
    handoff_taken_once(s.clone()).await;
    sessions_roundtrip(s.as_ref()).await;
    revoke_user_publishes(s.as_ref()).await;
    end_login_ends_one_sign_in_everywhere(s.as_ref()).await;
    throttle(s.clone()).await;
    totp_replay_under_race(s.clone()).await;
    idle_and_absolute_expiry(s.as_ref()).await;
    grants::grants_roundtrip(s.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms() {
    let server = RedisServer::start();
    let store = open(
        &crate::config::StoreConfig::Redis(server.url()),
        &crate::secret::SecretKey::from_bytes([4; 32]),
    )
    .await
    .unwrap();
    assert!(!store.is_in_process());
    suite(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_revocation_reaches_other_instances() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), record_key())
        .await
        .unwrap();
    let b = RedisStore::connect(&server.url(), record_key())
        .await
        .unwrap();
    let mut rx_b = b.subscribe_revocations().await.unwrap();
    let tok = a.create_session(data("multi"), TTL, IDLE).await.unwrap();
    assert!(
        b.touch_session(tok.expose()).await.unwrap().is_some(),
        "sessions are shared"
    );
    assert_eq!(a.revoke_user("multi").await.unwrap(), 1);
    let ev = tokio::time::timeout(Duration::from_secs(5), rx_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        RevocationEvent::User {
            user: "multi".into()
        }
    );
    assert!(b.touch_session(tok.expose()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_errors_not_hangs() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), record_key())
        .await
        .unwrap();
    let tok = store.create_session(data("down"), TTL, IDLE).await.unwrap();
    server.stop();
    let started = std::time::Instant::now();
    assert!(
        store.touch_session(tok.expose()).await.is_err(),
        "fail closed: an error, not `no session`"
    );
    assert!(store.mark_totp_used("down", 1).await.is_err());
    assert!(store.ping().await.is_err());
    assert!(
        store
            .attempt_gate(&AttemptKey::new("down", None), &schedules(), now_ms(), true)
            .await
            .is_err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4 * 3),
        "each call is bounded by the op timeout"
    );
    // A store that cannot connect at all is an error too, under the deadline.
    let started = std::time::Instant::now();
    assert!(
        RedisStore::connect(&server.url(), record_key())
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn record_key() -> super::RecordKey {
    super::RecordKey::new(&crate::secret::SecretKey::from_bytes([4; 32]))
}

/// What a raw Redis client (anyone who can write to the store) does to session and handoff
/// records: none of it gives a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_records_forged_altered_or_moved_are_no_session() {
    use ::redis::AsyncCommands;
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), record_key())
        .await
        .unwrap();
    let client = ::redis::Client::open(server.url().as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let victim = store
        .create_bound_session(data("alice"), Some("wiki.example"), TTL, IDLE)
        .await
        .unwrap();
    let victim_key = format!(
        "gatehouse:session:{}",
        session_id_hash(victim.expose()).unwrap()
    );
    let sealed: Vec<u8> = raw.get(&victim_key).await.unwrap();
    assert!(
        sealed.starts_with(b"v1:"),
        "records are stored with their MAC"
    );
    let json = String::from_utf8(sealed[68..].to_vec()).unwrap();
    // Forged: a record for `admin` under a token the attacker chose, plain or with a made-up MAC.
    let attacker = SessionToken::generate().unwrap();
    let attacker_hash = session_id_hash(attacker.expose()).unwrap();
    let attacker_key = format!("gatehouse:session:{attacker_hash}");
    let forged = json
        .replace(&session_id_hash(victim.expose()).unwrap(), &attacker_hash)
        .replace("\"alice\"", "\"admin\"");
    for value in [
        forged.clone().into_bytes(),
        format!("v1:{}:{forged}", "0".repeat(64)).into_bytes(),
        // Moved: the victim's valid record (with its MAC) under the attacker's key.
        sealed.clone(),
    ] {
        let _: () = raw.set(&attacker_key, value).await.unwrap();
        assert!(
            store
                .touch_session(attacker.expose())
                .await
                .unwrap()
                .is_none(),
            "a record written by hand gave a session"
        );
    }
    // Altered: the victim's own record with another user, the MAC kept.
    let mut altered = sealed.clone();
    let at = altered.windows(7).position(|w| w == b"\"alice\"").unwrap();
    altered[at + 1..at + 6].copy_from_slice(b"admin");
    let _: () = raw.set(&victim_key, altered).await.unwrap();
    assert!(
        store
            .touch_session(victim.expose())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.list_sessions().await.unwrap().is_empty());
    // A session dropped from its user's index still ends with a revocation.
    let hidden = store.create_session(data("dave"), TTL, IDLE).await.unwrap();
    let _: () = raw
        .srem(
            "gatehouse:user-sessions:dave",
            session_id_hash(hidden.expose()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(store.revoke_user("dave").await.unwrap(), 1);
    assert!(
        store
            .touch_session(hidden.expose())
            .await
            .unwrap()
            .is_none()
    );
    // Another secret key cannot read (or mint) this store's sessions, even once the
    // key-check record that refuses it at connection is deleted.
    let tok = store.create_session(data("bob"), TTL, IDLE).await.unwrap();
    let other_key = RecordKey::new(&crate::secret::SecretKey::from_bytes([5; 32]));
    assert!(matches!(
        RedisStore::connect(&server.url(), other_key.clone()).await,
        Err(StoreError::KeyMismatch { .. })
    ));
    let _: () = raw.del("gatehouse:key-check").await.unwrap();
    let other = RedisStore::connect(&server.url(), other_key).await.unwrap();
    assert!(other.touch_session(tok.expose()).await.unwrap().is_none());
    assert!(store.touch_session(tok.expose()).await.unwrap().is_some());
    // Handoff tickets too.
    let handoff = Handoff {
        data: data("carol"),
        audience: "wiki.example".into(),
    };
    let _: () = raw
        .set(
            "gatehouse:handoff:feed",
            serde_json::to_vec(&handoff).unwrap(),
        )
        .await
        .unwrap();
    assert!(store.take_handoff("feed").await.unwrap().is_none());
    store.put_handoff("beef", &handoff, TTL).await.unwrap();
    assert_eq!(store.take_handoff("beef").await.unwrap(), Some(handoff));
}
