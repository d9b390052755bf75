//! The grants part of the conformance suite: both stores keep, list, expire and revoke
//! grants alike, bump the generation on each change and announce it on the channel.

use std::time::Duration;

use super::super::*;
use crate::testutil::RedisServer;

fn grant(user: &str, object: &str, ttl_ms: u64) -> Grant {
    let now = now_ms();
    Grant {
        id: Grant::new_id().unwrap(),
        user: user.into(),
        object: object.into(),
        action: "*".into(),
        reason: "ticket OPS-1: payroll export".into(),
        granted_by: "cli:root".into(),
        created_ms: now,
        expires_ms: now + ttl_ms,
    }
}

async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<RevocationEvent>) -> RevocationEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .unwrap()
}

pub(super) async fn grants_roundtrip(s: &dyn Store) {
    let mut rx = s.subscribe_revocations().await.unwrap();
    let g0 = s.grants_generation().await.unwrap();
    let a = grant("alice", "app:payroll/*", 3_600_000);
    s.put_grant(&a).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        RevocationEvent::Grants { revoked: None }
    );
    let g1 = s.grants_generation().await.unwrap();
    assert_ne!(g0, g1, "a new grant changes the generation");
    let b = grant("bob", "group:sre", 3_600_000);
    s.put_grant(&b).await.unwrap();
    next_event(&mut rx).await;
    let listed = s.list_grants().await.unwrap();
    assert!(listed.contains(&a) && listed.contains(&b), "{listed:?}");
    // Revocation: the grant back, gone from the list, announced with its id.
    let g2 = s.grants_generation().await.unwrap();
    assert_eq!(s.revoke_grant(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        next_event(&mut rx).await,
        RevocationEvent::Grants {
            revoked: Some(a.id.clone())
        }
    );
    assert_ne!(s.grants_generation().await.unwrap(), g2);
    assert!(!s.list_grants().await.unwrap().contains(&a));
    assert_eq!(s.revoke_grant(&a.id).await.unwrap(), None, "only once");
    assert_eq!(s.revoke_grant("g-0123456789abcdef").await.unwrap(), None);
    assert_eq!(s.revoke_grant("../../etc").await.unwrap(), None);
    // Expiry: listed while live, never after.
    let short = grant("carol", "ssh:db-prod-1/deploy", 400);
    s.put_grant(&short).await.unwrap();
    assert!(s.list_grants().await.unwrap().contains(&short));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = s.list_grants().await.unwrap();
    assert!(!after.contains(&short), "expired grants are never listed");
    assert_eq!(s.revoke_grant(&short.id).await.unwrap(), None);
    assert!(after.contains(&b));
    s.revoke_grant(&b.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_grants_reach_other_instances_and_forged_records_grant_nothing() {
    use ::redis::AsyncCommands;
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), super::record_key())
        .await
        .unwrap();
    let b = RedisStore::connect(&server.url(), super::record_key())
        .await
        .unwrap();
    let mut rx_b = b.subscribe_revocations().await.unwrap();
    let g = grant("alice", "app:payroll/*", 3_600_000);
    a.put_grant(&g).await.unwrap();
    assert_eq!(
        next_event(&mut rx_b).await,
        RevocationEvent::Grants { revoked: None }
    );
    assert_eq!(b.list_grants().await.unwrap(), vec![g.clone()]);

    // Written by hand into Redis: a grant record without a valid MAC, or moved under another
    // id, is no grant.
    let client = ::redis::Client::open(server.url().as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let sealed: Vec<u8> = raw.get(format!("gatehouse:grant:{}", g.id)).await.unwrap();
    assert!(sealed.starts_with(b"v1:"));
    let mut forged = grant("mallory", "ssh:db-prod-1/root", 3_600_000);
    forged.id = "g-00000000000000aa".into();
    let json = serde_json::to_vec(&forged).unwrap();
    let _: () = raw
        .set(format!("gatehouse:grant:{}", forged.id), json)
        .await
        .unwrap();
    let _: () = raw
        .set("gatehouse:grant:g-00000000000000bb", sealed.clone())
        .await
        .unwrap();
    let _: () = raw
        .sadd(
            "gatehouse:grant-ids",
            &["g-00000000000000aa", "g-00000000000000bb"],
        )
        .await
        .unwrap();
    assert_eq!(b.list_grants().await.unwrap(), vec![g.clone()]);
    // Extended by hand (a later expiry, the MAC kept): refused too.
    let mut altered = sealed.clone();
    let at = altered
        .windows(12)
        .position(|w| w == b"\"expires_ms\"")
        .unwrap();
    let digit = at + 13;
    altered[digit] = if altered[digit] == b'9' { b'8' } else { b'9' };
    let _: () = raw
        .set(format!("gatehouse:grant:{}", g.id), altered)
        .await
        .unwrap();
    assert!(b.list_grants().await.unwrap().is_empty());

    // Revoked through one instance: announced to the other with its id.
    let h = grant("bob", "group:sre", 3_600_000);
    a.put_grant(&h).await.unwrap();
    next_event(&mut rx_b).await;
    assert_eq!(a.revoke_grant(&h.id).await.unwrap(), Some(h.clone()));
    assert_eq!(
        next_event(&mut rx_b).await,
        RevocationEvent::Grants {
            revoked: Some(h.id.clone())
        }
    );
    assert!(b.list_grants().await.unwrap().is_empty());
}
