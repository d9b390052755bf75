//! Two `gatehouse` processes on one Redis serving the `wiki` app, sharing the secret key and
//! the users file: what the multi-instance tests start.

use super::{AppSpec, Gatehouse, GatehouseSpec, Redis, Upstream, host};

/// The policy of the pair: `staff` may do anything on the wiki.
pub const POLICY: &str = "p, group:staff, app:wiki/*, *, allow\n";

/// One instance on `redis` with the `wiki` app proxied to `up`.
pub fn spec(redis: &Redis, up: &Upstream) -> GatehouseSpec {
    GatehouseSpec {
        store_url: redis.url(),
        policy_csv: Some(POLICY.into()),
        ..Default::default()
    }
    .with_app(AppSpec::new("wiki", &host("wiki"), &up.url()))
}

/// Two instances of [`spec`]; the second shares the first's secret key and users file.
pub async fn pair(redis: &Redis, up: &Upstream) -> (Gatehouse, Gatehouse) {
    let a = Gatehouse::start(spec(redis, up)).await;
    let b = Gatehouse::start(GatehouseSpec {
        users_file: a.path("users.toml").display().to_string(),
        secret_key: a.spec.secret_key.clone(),
        ..spec(redis, up)
    })
    .await;
    (a, b)
}
