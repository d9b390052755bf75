//! A shared scenario for the identity tests: one `wiki` app on its own upstream, users in
//! group `staff` allowed GET/HEAD/POST on it except under `/admin/`, and the contract's
//! answer to a request without a valid session.

use super::client::empty;
use super::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host, within};

pub const POLICY: &str = "\
p, group:staff, app:wiki/*, GET|HEAD|POST, allow
p, group:staff, app:wiki/admin/*, *, deny
";

pub async fn wiki(spec: GatehouseSpec) -> (Gatehouse, Upstream) {
    let up = Upstream::start().await;
    let spec = GatehouseSpec {
        policy_csv: Some(POLICY.into()),
        ..spec
    }
    .with_app(AppSpec::new("wiki", &host("wiki"), &up.url()));
    (Gatehouse::start(spec).await, up)
}

/// A request with no valid session must be refused the way the contract says: 303 to the
/// login page on the same host for a browser GET, 401 for an API call.
pub async fn assert_unauthenticated(gh: &Gatehouse, cookie: Option<&str>, what: &str) {
    let mut c = gh.h1_anon(&host("wiki")).await;
    let mut browser = vec![("accept", "text/html")];
    let mut api = vec![("accept", "application/json")];
    if let Some(ck) = cookie {
        browser.push(("cookie", ck));
        api.push(("cookie", ck));
    }
    let r = within(
        QUICK,
        what,
        c.send(c.request("GET", "/page", &browser, empty())),
    )
    .await;
    assert_eq!(
        r.status,
        303,
        "{what}: browser GET: {} {}",
        r.status,
        r.text()
    );
    let loc = r.header("location").unwrap_or_default();
    let on_same_host = loc.starts_with("/.gatehouse/login?next=")
        || loc.starts_with(&format!("https://{}", host("wiki")));
    assert!(
        on_same_host && loc.contains("/.gatehouse/login"),
        "{what}: location {loc:?}"
    );
    let r = within(
        QUICK,
        what,
        c.send(c.request("GET", "/page", &api, empty())),
    )
    .await;
    assert_eq!(r.status, 401, "{what}: API GET: {} {}", r.status, r.text());
}
