//! SSO users in the CLI: `gatehouse user list` shows them with their provider once seen,
//! `user lock` locks them (the next SSO login is refused), `user totp-reset` sends them back
//! to enrolment, and `user add` refuses a name an SSO user holds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Output;

use gatehouse_core::SsoError;
use gatehouse_core::error::SsoCheck;
use gatehouse_core::identity::oidc::{SsoCallback, SsoStep};

use crate::support::gatehouse::run_cli;
use crate::support::identity::totp_from_base32;
use crate::support::oidc_double::{CLIENT_ID, CLIENT_SECRET, ProviderDouble};
use crate::support::sso::{ProviderConf, SsoFixture, query_param};

fn cli(fx: &SsoFixture, args: &[&str], stdin: Option<&str>) -> Output {
    run_cli(fx.dir.path(), Some(&fx.config_file()), args, stdin)
}

use crate::support::process::output_text as text;

async fn login(fx: &SsoFixture, double: &ProviderDouble) -> Result<SsoStep, SsoError> {
    let start = fx.sso.start_login("evil", "b", None).await.unwrap();
    let nonce = query_param(&start.url, "nonce").unwrap();
    let state = query_param(&start.url, "state").unwrap();
    double.next_id_token(double.key.sign(&double.good_claims(&nonce), None));
    let cb = SsoCallback::from_query(&format!("state={state}&code=c"));
    fx.sso
        .finish_login(&cb, Some("b"), None)
        .await
        .map(|l| l.step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_users_are_listed_locked_and_reset_from_the_cli() {
    let double = ProviderDouble::start().await;
    let fx = SsoFixture::new(&[ProviderConf::new(
        "evil",
        &double.issuer,
        CLIENT_ID,
        CLIENT_SECRET,
    )]);
    fx.add_local_user("alice");
    let list = text(&cli(&fx, &["user", "list"], None));
    assert!(!list.contains("mallory"), "not seen yet: {list}");

    // First login: enrol, so the user has a TOTP secret.
    let SsoStep::Enrol(p) = login(&fx, &double).await.unwrap() else {
        panic!()
    };
    let (e, secret) = fx.sso.start_enrolment(&p).unwrap();
    let code = totp_from_base32(&e.secret_base32).generate(crate::support::identity::unix_now());
    fx.sso
        .complete_enrolment(&p, &secret, &code.to_string())
        .await
        .unwrap();

    let list = text(&cli(&fx, &["user", "list"], None));
    let alice = list.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(alice.contains("local"), "{list}");
    let mallory = list.lines().find(|l| l.starts_with("mallory")).unwrap();
    assert!(
        mallory.contains("staff") && mallory.contains("evil") && mallory.contains("ago"),
        "{list}"
    );
    assert!(
        mallory.split_whitespace().nth(2) == Some("no"),
        "not locked: {list}"
    );

    // A local user may not take the SSO user's name.
    let add = cli(
        &fx,
        &["user", "add", "mallory", "--password-stdin"],
        Some("correct-Horse-7-battery\n"),
    );
    assert!(
        !add.status.success() && text(&add).contains("SSO user"),
        "{}",
        text(&add)
    );

    // totp-reset: the next login enrols again.
    let reset = cli(&fx, &["user", "totp-reset", "mallory"], None);
    assert!(reset.status.success(), "{}", text(&reset));
    assert!(!fx.registry().has_totp("mallory"));
    assert!(matches!(
        login(&fx, &double).await.unwrap(),
        SsoStep::Enrol(_)
    ));

    // lock: listed as locked, and the next SSO login is refused and audited.
    let lock = cli(&fx, &["user", "lock", "mallory"], None);
    assert!(lock.status.success(), "{}", text(&lock));
    let list = text(&cli(&fx, &["user", "list"], None));
    let mallory = list.lines().find(|l| l.starts_with("mallory")).unwrap();
    assert!(mallory.split_whitespace().nth(2) == Some("yes"), "{list}");
    assert_eq!(
        login(&fx, &double).await.unwrap_err().check(),
        Some(SsoCheck::Locked)
    );
    assert!(
        fx.audit_of("admin_action")
            .iter()
            .any(|e| e["action"] == "user lock" && e["subject"] == "mallory")
    );
    assert!(!cli(&fx, &["user", "lock", "nobody"], None).status.success());
}
