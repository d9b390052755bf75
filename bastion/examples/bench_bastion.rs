//! Runs the bastion alone with the in-memory test backend, for `benches/bastion.sh`.
//!
//! Usage: `bench_bastion CONFIG USER PUBKEY_FILE` — USER may use every target with its
//! registered key (targets should set `require_totp = false`). Prints `LISTENING ADDR` once
//! bound, runs until SIGINT/SIGTERM, then drains.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::sync::Arc;

use gatehouse_bastion::backend::testing::TestBackend;
use gatehouse_bastion::{Bastion, SshAction};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, user, pubkey] = args.as_slice() else {
        eprintln!("usage: bench_bastion CONFIG USER PUBKEY_FILE");
        std::process::exit(2);
    };
    let config =
        Arc::new(gatehouse_core::Config::load(std::path::Path::new(config)).expect("valid config"));
    let key = russh::keys::load_public_key(pubkey).expect("user public key");
    let backend = TestBackend::new().user(user, vec![key], None).allow(
        user,
        "ssh:*",
        &[SshAction::Ssh, SshAction::Sftp, SshAction::PortForward],
    );
    let bastion = Bastion::bind(config, Arc::new(backend))
        .await
        .expect("bastion binds");
    println!("LISTENING {}", bastion.local_addr().expect("local addr"));
    std::io::stdout().flush().unwrap();
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    bastion.run(token).await.expect("bastion runs");
}
