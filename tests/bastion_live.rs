//! Changes to `users.toml` reach live SSH connections, from outside: the real `ssh` client
//! as an OpenSSH ControlMaster through the real binary, then the file edited as an
//! administrator would. A removed key or a group taken away ends the connection within the
//! reload bound (it used to open new sessions 25 s later), audited.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Instant;

use crate::bastion::sshd::text;
use crate::bastion::{Env, Master};
use crate::identity_live::{REACH, edit_user, set_groups};
use crate::support::identity::fresh_totp_window;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controlmaster_opens_nothing_once_its_key_is_removed() {
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    let alice = env.add_user("alice", "sre");
    let client = env.client();
    fresh_totp_window(5).await;
    tokio::task::block_in_place(|| {
        let mut master = Master::open(&client, "alice:root@db-prod-1", &alice.code(0));
        let out = master.ssh(&client, "echo before");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "before\n");
        // The administrator removes the key from users.toml.
        edit_user(&env.dir.join("users.toml"), "alice", |t| {
            t.insert("ssh_keys".into(), toml::Value::Array(Vec::new()));
        });
        let t0 = Instant::now();
        assert!(
            master.wait_exit(REACH),
            "the ControlMaster still runs {REACH:?} after its key was removed"
        );
        eprintln!(
            "key removal ended the live ssh connection in {:?}",
            t0.elapsed()
        );
        let out = master.ssh(&client, "echo after");
        assert_ne!(out.status.code(), Some(0));
        assert!(!text(&out.stdout).contains("after"));
        env.expect_audit("ssh_refused ssh_key_removed", |e| {
            e["event"] == "ssh_refused" && e["reason"] == "ssh_key_removed" && e["user"] == "alice"
        });
        env.expect_audit("ssh_connection_close", |e| {
            e["event"] == "ssh_connection_close" && e["reason"] == "ssh key removed"
        });
        // And no new connection with that key.
        let out = client.ssh("alice:root@db-prod-1", Some(&alice.code(1)), "echo new");
        assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_taken_away_ends_the_live_connection_it_allowed() {
    let env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    let alice = env.add_user("alice", "sre,ops");
    let client = env.client();
    fresh_totp_window(5).await;
    tokio::task::block_in_place(|| {
        let mut master = Master::open(&client, "alice:root@db-prod-1", &alice.code(0));
        let out = master.ssh(&client, "echo before");
        assert!(out.status.success(), "{}", text(&out.stderr));
        // `ops` taken away changes nothing here (the policy does not name it)...
        edit_user(&env.dir.join("users.toml"), "alice", set_groups(&["sre"]));
        let out = master.ssh(&client, "echo still");
        assert!(out.status.success(), "{}", text(&out.stderr));
        // ...`sre` taken away withdraws what the connection was allowed.
        edit_user(&env.dir.join("users.toml"), "alice", set_groups(&["ops"]));
        let t0 = Instant::now();
        assert!(
            master.wait_exit(REACH),
            "the ControlMaster still runs {REACH:?} after its group was taken away"
        );
        eprintln!(
            "group removal ended the live ssh connection in {:?}",
            t0.elapsed()
        );
        env.expect_audit("access_denied", |e| {
            e["event"] == "access_denied"
                && e["user"] == "alice"
                && e["object"] == "ssh:db-prod-1/root"
        });
        env.expect_audit("ssh_connection_close", |e| {
            e["event"] == "ssh_connection_close" && e["reason"] == "access withdrawn"
        });
    });
}
