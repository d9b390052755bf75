//! Session records in Redis are authenticated: an attacker who can write to the store
//! (driven here with `redis-cli`, as they would) cannot mint a session for any name, edit a
//! live session's user, or move another user's valid record under their own cookie. The
//! gateway treats each as no session (401) and logs it; nothing reaches the upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use sha2::{Digest, Sha256};

use crate::support::identity::h1_with;
use crate::support::upstream::hex;
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Redis, Upstream, host, within};

/// `redis-cli -p PORT ARGS...`: its stdout, trimmed.
fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(redis.port.to_string())
        .args(args)
        .output()
        .expect("running redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn session_key(token: &str) -> String {
    format!(
        "gatehouse:session:{}",
        hex(&Sha256::digest(token.as_bytes()))
    )
}

/// The JSON of a stored record, whatever its framing (`v1:<mac>:` prefix or none).
fn json_of(stored: &str) -> serde_json::Value {
    let start = stored.find('{').expect("a JSON record");
    serde_json::from_str(&stored[start..]).expect("the record's JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_written_into_redis_by_hand_are_refused() {
    let redis = Redis::start();
    let up = Upstream::start().await;
    let echo = host("echo");
    let spec = GatehouseSpec {
        store_url: redis.url(),
        ..Default::default()
    }
    .with_app(AppSpec::new("echo", &echo, &up.url()));
    let gh = Gatehouse::start_signed_in(spec).await;
    let victim = gh.cookie_value().unwrap();
    let victim_token = victim.split_once('=').unwrap().1.to_string();
    let mut c = h1_with(&gh, &echo, &victim).await;
    assert_eq!(within(QUICK, "victim", c.get("/")).await.status, 200);
    let stored = redis_cli(&redis, &["GET", &session_key(&victim_token)]);
    assert!(!stored.is_empty(), "no session record in Redis");
    let record = json_of(&stored);

    // The attacker's own cookie value, and a record for it as they would write it.
    let attacker_token = hex(&Sha256::digest(b"attacker chooses this"));
    let attacker_key = session_key(&attacker_token);
    let mut minted = record.clone();
    minted["id_hash"] =
        serde_json::Value::String(attacker_key["gatehouse:session:".len()..].to_string());
    minted["data"]["user"] = "root".into();
    minted["data"]["groups"] = serde_json::json!(["testers", "admins"]);
    let minted = minted.to_string();
    let mac_prefix = stored.find('{').map_or("", |i| &stored[..i]).to_string();
    let attacks: Vec<(&str, String, String)> = vec![
        ("minted, plain JSON", attacker_key.clone(), minted.clone()),
        (
            "minted, made-up MAC",
            attacker_key.clone(),
            format!("v1:{}:{minted}", "0".repeat(64)),
        ),
        (
            "minted, the victim's MAC",
            attacker_key.clone(),
            format!("{mac_prefix}{minted}"),
        ),
        (
            "the victim's record moved",
            attacker_key.clone(),
            stored.clone(),
        ),
    ];
    let attacker_cookie = format!("__Host-gatehouse={attacker_token}");
    for (what, key, value) in &attacks {
        redis_cli(&redis, &["SET", key, value, "PX", "600000"]);
        let mut c = h1_with(&gh, &echo, &attacker_cookie).await;
        let r = within(QUICK, what, c.get("/as-root")).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }
    // Altered: the victim's own record now says `root`, its MAC kept.
    let altered = stored.replace("\"tester\"", "\"root\"");
    assert_ne!(altered, stored);
    redis_cli(
        &redis,
        &["SET", &session_key(&victim_token), &altered, "PX", "600000"],
    );
    let mut c = h1_with(&gh, &echo, &victim).await;
    let r = within(QUICK, "altered", c.get("/as-root")).await;
    assert_eq!(r.status, 401, "altered record: {}", r.text());

    assert_eq!(up.paths(), ["/"], "a forged session reached the upstream");
    assert_eq!(
        gh.count_audit("access_allowed", |e| e["user"] == "root"),
        0,
        "a forged session was authorized"
    );
    gh.expect_log_line("the MAC failure", |l| {
        l.contains("fails its MAC") && l.contains(&attacker_key)
    })
    .await;
}
