//! The Redis store's copies against a real redis-server: two stores on one server are two
//! instances. What they must show: a live session costs no round trip; a logout, a
//! revocation, a lock or a change written by hand reaches the other instance within
//! [`INVALIDATION_BOUND`]; a lost link fails closed and recovers; Redis restored from an older
//! snapshot brings no revoked session back; a store written under another secret key is
//! refused.

use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use ::redis::aio::MultiplexedConnection;

use super::*;
use crate::store::conformance::{IDLE, TTL, data};
use crate::store::{now_ms, session_id_hash};
use crate::testutil::RedisServer;

fn record_key() -> RecordKey {
    RecordKey::new(&crate::secret::SecretKey::from_bytes([4; 32]))
}

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url(), record_key())
        .await
        .unwrap()
}

async fn raw(server: &RedisServer) -> MultiplexedConnection {
    ::redis::Client::open(server.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Calls of `cmds` Redis has served so far (`INFO commandstats`).
async fn calls(raw: &mut MultiplexedConnection, cmds: &[&str]) -> u64 {
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            cmds.contains(&name)
                .then(|| rest.split(',').next()?.parse::<u64>().ok())?
        })
        .sum()
}

/// Polls `check` until it holds; panics past `limit`; returns how long it took.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn live(s: &RedisStore, tok: &SessionToken) -> bool {
    s.touch_session(tok.expose()).await.unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_answer_without_round_trips_and_ends_reach_other_instances_within_the_bound() {
    let server = RedisServer::start();
    let (a, b) = (store(&server).await, store(&server).await);
    let mut r = raw(&server).await;
    let reads = ["get", "set", "pttl", "exists"];

    // Logout on a while b answers from its copy.
    let tok = a.create_session(data("alice"), TTL, IDLE).await.unwrap();
    assert!(live(&b, &tok).await);
    let before = calls(&mut r, &reads).await;
    for _ in 0..200 {
        assert!(live(&b, &tok).await);
    }
    let spent = calls(&mut r, &reads).await - before;
    // At most one idle-clock write and the read after it, should a second pass meanwhile.
    assert!(
        spent <= 2,
        "200 requests on b cost {spent} Redis reads/writes"
    );
    assert!(a.delete_session(tok.expose()).await.unwrap());
    let took = until("logout on a seen by b", INVALIDATION_BOUND, || async {
        !live(&b, &tok).await
    })
    .await;
    eprintln!("logout reached b after {took:?}");

    // Revocation (and `user lock`, which revokes) on a.
    let tok = a.create_session(data("alice"), TTL, IDLE).await.unwrap();
    let other = a.create_session(data("bob"), TTL, IDLE).await.unwrap();
    assert!(live(&b, &tok).await && live(&b, &other).await);
    assert_eq!(a.revoke_user("alice").await.unwrap(), 1);
    until("revocation on a seen by b", INVALIDATION_BOUND, || async {
        !live(&b, &tok).await
    })
    .await;
    assert!(live(&b, &other).await, "bob's session is untouched");

    // A record changed by hand in Redis (its MAC no longer holds).
    let key = session_key(&session_id_hash(other.expose()).unwrap());
    let _: () = r.set(&key, "v1:forged").await.unwrap();
    until("a record altered in Redis", INVALIDATION_BOUND, || async {
        !live(&b, &other).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_link_fails_closed_and_recovers() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let mut events = s.subscribe_revocations().await.unwrap();
    let tok = s.create_session(data("alice"), TTL, IDLE).await.unwrap();
    assert!(live(&s, &tok).await);
    let mut r = raw(&server).await;
    let clients: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut r)
        .await
        .unwrap();
    let line = clients
        .lines()
        .find(|l| l.contains(&format!("name={}", s.link.name)))
        .unwrap_or_else(|| panic!("no link named {} in\n{clients}", s.link.name));
    let flags = line
        .split(' ')
        .find_map(|f| f.strip_prefix("flags="))
        .unwrap();
    assert!(flags.contains('t'), "the link is tracking: {line}");
    let id = line
        .split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .unwrap()
        .to_string();
    let killed: i64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // Refused (an error, not "no session"), copy or not, and not ready.
    until(
        "sessions refused after the link was killed",
        OP_TIMEOUT,
        || async {
            matches!(
                s.touch_session(tok.expose()).await,
                Err(StoreError::Unsynced)
            )
        },
    )
    .await;
    // Back by itself; live sessions are then re-checked.
    until("link back", Duration::from_secs(10), || async {
        matches!(s.touch_session(tok.expose()).await, Ok(Some(_)))
    })
    .await;
    s.ping().await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, RevocationEvent::Resync);
}

/// The id of the link named `name` in `CLIENT LIST`.
async fn link_id(r: &mut MultiplexedConnection, name: &str) -> String {
    let clients: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(r)
        .await
        .unwrap();
    let line = clients
        .lines()
        .find(|l| l.contains(&format!("name={name}")))
        .unwrap_or_else(|| panic!("no link named {name} in\n{clients}"));
    line.split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_changes_reach_other_instances_and_a_lost_link_refuses_the_generation() {
    let server = RedisServer::start();
    let (a, b) = (store(&server).await, store(&server).await);
    let mut r = raw(&server).await;
    let now = now_ms();
    let g = Grant {
        id: Grant::new_id().unwrap(),
        user: "alice".into(),
        object: "group:dba".into(),
        action: "*".into(),
        reason: "ticket OPS-2".into(),
        granted_by: "cli:root".into(),
        created_ms: now,
        expires_ms: now + 600_000,
    };
    let g0 = b.grants_generation().await.unwrap();
    // Unchanged: answered from b's copy, no round trip.
    let before = calls(&mut r, &["get"]).await;
    for _ in 0..20 {
        assert_eq!(b.grants_generation().await.unwrap(), g0);
    }
    assert_eq!(
        calls(&mut r, &["get"]).await,
        before,
        "reads of an unchanged generation"
    );
    // A grant added on a changes b's answer within the bound.
    a.put_grant(&g).await.unwrap();
    let took = until("grant added seen by b", INVALIDATION_BOUND, || async {
        b.grants_generation().await.unwrap() != g0
    })
    .await;
    eprintln!("a grant added on a changed b's generation after {took:?}");
    assert_eq!(b.list_grants().await.unwrap(), vec![g.clone()]);
    // A grant record deleted by hand (no generation bump) changes it too: b read the
    // record on its link, so Redis tells b.
    let g1 = b.grants_generation().await.unwrap();
    let _: i64 = r.del(format!("{GRANT_PREFIX}{}", g.id)).await.unwrap();
    until(
        "grant record deleted by hand",
        INVALIDATION_BOUND,
        || async { b.grants_generation().await.unwrap() != g1 },
    )
    .await;
    assert!(b.list_grants().await.unwrap().is_empty());
    // b's link killed: the generation is refused (the policy drops its grants), then back.
    let id = link_id(&mut r, &b.link.name).await;
    let killed: i64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    until(
        "generation refused without the link",
        OP_TIMEOUT,
        || async { matches!(b.grants_generation().await, Err(StoreError::Unsynced)) },
    )
    .await;
    until(
        "generation answered again",
        Duration::from_secs(10),
        || async { b.grants_generation().await.is_ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restored_from_older_data_brings_no_revoked_session_back() {
    let mut server = RedisServer::start();
    let (a, b) = (store(&server).await, store(&server).await);
    let alice = a.create_session(data("alice"), TTL, IDLE).await.unwrap();
    let logout = a.create_session(data("dave"), TTL, IDLE).await.unwrap();
    let bob = a.create_session(data("bob"), TTL, IDLE).await.unwrap();
    for t in [&alice, &logout, &bob] {
        assert!(live(&b, t).await);
    }
    // A snapshot with every session, then a revocation and a logout it does not have.
    let mut r = raw(&server).await;
    let _: () = ::redis::cmd("SAVE").query_async(&mut r).await.unwrap();
    a.revoke_user("alice").await.unwrap();
    b.delete_session(logout.expose()).await.unwrap();
    until("ends reached b", INVALIDATION_BOUND, || async {
        !live(&b, &alice).await && !live(&a, &logout).await
    })
    .await;
    // Redis dies and comes back with the snapshot: the records are back in Redis.
    tokio::task::block_in_place(|| {
        server.stop();
        server.restart();
    });
    let mut r = raw(&server).await;
    let alice_key = session_key(&session_id_hash(alice.expose()).unwrap());
    assert!(
        r.exists::<_, bool>(&alice_key).await.unwrap(),
        "the snapshot has the revoked session"
    );
    for (name, s) in [("a", &a), ("b", &b)] {
        until("link back", Duration::from_secs(10), || async {
            matches!(s.touch_session(bob.expose()).await, Ok(Some(_)))
        })
        .await;
        assert!(!live(s, &alice).await, "revoked session back on {name}");
        assert!(!live(s, &logout).await, "logged-out session back on {name}");
    }
    assert!(
        !r.exists::<_, bool>(&alice_key).await.unwrap(),
        "the resurrected record is deleted"
    );
    // Restarted empty: nothing of before is served, the copies included.
    tokio::task::block_in_place(|| {
        server.stop();
        server.forget_data();
        server.restart();
    });
    until("link back, empty", Duration::from_secs(10), || async {
        matches!(b.touch_session(bob.expose()).await, Ok(None))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_under_another_secret_key_is_refused() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let tok = s.create_session(data("alice"), TTL, IDLE).await.unwrap();
    let other = RecordKey::new(&crate::secret::SecretKey::from_bytes([5; 32]));
    let err = RedisStore::connect(&server.url(), other.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("another secret key"), "{err}");
    // The same key again is fine.
    store(&server).await;
    // Without the check record (deleted by hand), the records' MACs still refuse it.
    let mut r = raw(&server).await;
    let _: () = r.del(KEY_CHECK).await.unwrap();
    let o = RedisStore::connect(&server.url(), other).await.unwrap();
    assert!(o.touch_session(tok.expose()).await.unwrap().is_none());
}

#[test]
fn revocation_messages_carry_ended_sessions_and_stay_readable_both_ways() {
    let w = Wire {
        event: RevocationEvent::User {
            user: "alice".into(),
        },
        ended: vec!["ab".repeat(32)],
    };
    let json = serde_json::to_string(&w).unwrap();
    // An instance reading the event alone (older, or the bastion's feed) ignores the rest.
    let plain: RevocationEvent = serde_json::from_str(&json).unwrap();
    assert_eq!(plain, w.event);
    // An older instance's message has no list.
    let old: Wire = serde_json::from_str(r#"{"kind":"session","id_hash":"x"}"#).unwrap();
    assert_eq!(
        old.event,
        RevocationEvent::Session {
            id_hash: "x".into()
        }
    );
    assert!(old.ended.is_empty());
}
