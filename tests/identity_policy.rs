//! End-to-end tests of authorization and of what the upstream learns about the caller:
//! casbin allow/deny (deny wins, default deny) with its audit record and alert, path tricks
//! against a deny rule, the signed identity assertion verified against the JWKS, spoofed
//! identity headers, and an unwritable audit log refusing access (fail closed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use crate::support::client::{echoed_headers, empty};
use crate::support::identity::{h1_with, unix_now, verify_assertion};
use crate::support::upstream::hex;
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, Upstream, host, within};
use sha2::{Digest, Sha256};

const POLICY: &str = "\
p, group:staff, app:wiki/*, GET|HEAD, allow
p, group:staff, app:wiki/admin/*, *, deny
p, group:staff, app:tools/*, *, allow
p, group:wiki-admins, app:wiki/admin/*, GET, allow
";

/// Two apps (`wiki`, `tools`) on one upstream each, with [`POLICY`].
async fn gateway(spec: GatehouseSpec) -> (Gatehouse, Upstream, Upstream) {
    let wiki = Upstream::start().await;
    let tools = Upstream::start().await;
    let spec = GatehouseSpec {
        policy_csv: Some(POLICY.into()),
        ..spec
    }
    .with_app(AppSpec::new("wiki", &host("wiki"), &wiki.url()))
    .with_app(AppSpec::new("tools", &host("tools"), &tools.url()));
    (Gatehouse::start(spec).await, wiki, tools)
}

/// The incident id quoted on a 403 page, checked against the audit log: an `access_denied`
/// record for `user` and `object`, and a warn-level alert line naming the same incident.
async fn assert_denial_recorded(gh: &Gatehouse, body: &str, user: &str, object: &str) {
    let ev = gh
        .expect_audit("access_denied", |e| {
            e["user"] == user && e["object"] == object
        })
        .await;
    let incident = ev["incident_id"].as_str().unwrap_or_default();
    assert!(
        !incident.is_empty(),
        "access_denied without incident id: {ev}"
    );
    assert_eq!(ev["client_addr"], "127.0.0.1", "{ev}");
    assert!(
        ev["session"]
            .as_str()
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())),
        "access_denied without the session's hash: {ev}"
    );
    assert!(
        body.contains(incident),
        "the 403 page does not quote incident {incident}:\n{body}"
    );
    gh.expect_log_line(&format!("WARN and incident {incident}"), |l| {
        l.contains(incident) && l.contains("WARN")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_allows_and_denies_with_deny_winning_and_every_denial_audited() {
    let (gh, wiki, tools) = gateway(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let admin = gh.create_user("wadmin", &["staff", "wiki-admins"]).await;
    let nobody = gh.create_user("outsider", &["visitors"]).await;
    let (wiki_host, tools_host) = (host("wiki"), host("tools"));
    let sessions = gh.login_hosts(&alice, &[&wiki_host, &tools_host]).await;
    let (a, a_tools) = (sessions[0].clone(), sessions[1].clone());
    let w = gh.login(&host("wiki"), &admin).await;
    let n = gh.login(&host("wiki"), &nobody).await;

    let mut c = h1_with(&gh, &host("wiki"), &a).await;
    let r = within(QUICK, "allowed GET", c.get("/page")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let allowed = gh
        .expect_audit("access_allowed", |e| {
            e["user"] == "alice" && e["object"] == "app:wiki/page" && e["action"] == "GET"
        })
        .await;
    // The record says from where, in which session and for which request: the session is
    // the id's hash (never the cookie itself), as in `logout` records.
    let cookie = a.split_once('=').map(|(_, v)| v).unwrap_or_default();
    let session_hash = hex(&Sha256::digest(cookie.as_bytes()));
    assert_eq!(allowed["client_addr"], "127.0.0.1", "{allowed}");
    assert_eq!(allowed["session"], session_hash.as_str(), "{allowed}");
    assert!(
        !allowed.to_string().contains(cookie),
        "cookie in the audit log: {allowed}"
    );
    assert!(
        allowed["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{allowed}"
    );
    // Method not allowed by the rule: POST on the wiki.
    let r = within(
        QUICK,
        "POST",
        c.send(c.request("POST", "/page", &[], empty())),
    )
    .await;
    assert_eq!(r.status, 403, "POST on a GET|HEAD rule: {}", r.text());
    assert_denial_recorded(&gh, &r.text(), "alice", "app:wiki/page").await;
    // The deny rule.
    let r = within(QUICK, "admin", c.get("/admin/users")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_denial_recorded(&gh, &r.text(), "alice", "app:wiki/admin/users").await;
    // Deny wins over an allow that also matches (wiki-admins may GET admin/*, staff may not).
    let mut cw = h1_with(&gh, &host("wiki"), &w).await;
    let r = within(QUICK, "deny wins", cw.get("/admin/users")).await;
    assert_eq!(r.status, 403, "deny did not win over allow: {}", r.text());
    assert_denial_recorded(&gh, &r.text(), "wadmin", "app:wiki/admin/users").await;
    // Default deny: no rule for the user's groups.
    let mut cn = h1_with(&gh, &host("wiki"), &n).await;
    let r = within(QUICK, "default deny", cn.get("/page")).await;
    assert_eq!(r.status, 403, "no matching rule: {}", r.text());
    assert_denial_recorded(&gh, &r.text(), "outsider", "app:wiki/page").await;
    // Per-app objects: alice may POST on tools (with the session handed off to that host).
    let mut ct = h1_with(&gh, &host("tools"), &a_tools).await;
    let r = within(
        QUICK,
        "tools",
        ct.send(ct.request("POST", "/run", &[], empty())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(wiki.count(), 1, "wiki upstream got {:?}", wiki.paths());
    assert_eq!(tools.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_cannot_reach_a_denied_path() {
    let (gh, wiki, _tools) = gateway(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let cookie = gh.login(&host("wiki"), &alice).await;
    let mut c = h1_with(&gh, &host("wiki"), &cookie).await;
    assert_eq!(
        within(QUICK, "control", c.get("/public/x")).await.status,
        200
    );
    let tricks = [
        "/./admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/admin;x/y",
        "/x/../admin/y",
        "/public/../admin/y",
        "/%2e/admin/x",
        "/public/%2e%2e/admin/x",
        "/admin%2fx",
        "/admin/./x",
        "/admin//x",
    ];
    let mut wrong = Vec::new();
    for path in tricks {
        let before = wiki.count();
        let mut c = h1_with(&gh, &host("wiki"), &cookie).await;
        let r = within(QUICK, path, c.get(path)).await;
        match r.status.as_u16() {
            400 => {}
            403 => {
                let ev = gh
                    .expect_audit("access_denied", |e| {
                        e["user"] == "alice"
                            && e["object"]
                                .as_str()
                                .is_some_and(|o| o.starts_with("app:wiki/admin/"))
                    })
                    .await;
                assert!(ev["incident_id"].is_string());
            }
            s => wrong.push(format!("{path}: {s}")),
        }
        if wiki.count() != before {
            wrong.push(format!(
                "{path}: reached the upstream as {:?}",
                wiki.paths().last()
            ));
        }
    }
    assert!(wrong.is_empty(), "path tricks got through: {wrong:#?}");
    assert_eq!(wiki.paths(), vec!["/public/x".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assertion_verifies_against_the_jwks_and_is_reused_within_a_session() {
    let (gh, _wiki, _tools) = gateway(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let bob = gh.create_user("bob", &["staff"]).await;
    let sessions = gh
        .login_hosts(&alice, &[&host("wiki"), &host("tools")])
        .await;
    let (a, a_tools) = (sessions[0].clone(), sessions[1].clone());
    let b = gh.login(&host("wiki"), &bob).await;
    let jwks = gh.jwks().await;
    let token = |echo: &serde_json::Value| {
        let v = echoed_headers(echo, "x-gatehouse-assertion");
        assert_eq!(v.len(), 1, "assertion headers: {v:?}");
        v[0].clone()
    };
    let mut c = h1_with(&gh, &host("wiki"), &a).await;
    let t1 = token(&within(QUICK, "1", c.get("/one")).await.json());
    let mut c2 = h1_with(&gh, &host("wiki"), &a).await;
    let t2 = token(&within(QUICK, "2", c2.get("/two")).await.json());
    assert_eq!(t1, t2, "the assertion was re-signed within one session");
    let claims = verify_assertion(&t1, &jwks, "wiki");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], support::identity::ISSUER);
    assert_eq!(claims["aud"], "wiki");
    let exp = claims["exp"].as_u64().expect("numeric exp");
    let now = unix_now();
    assert!(
        exp > now && exp <= now + 600,
        "exp {exp} is not short-lived (now {now})"
    );
    assert!(
        claims["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x == "staff")),
        "groups claim {claims}"
    );
    // Another app gets a token for its own audience; another session a different token.
    let mut ct = h1_with(&gh, &host("tools"), &a_tools).await;
    let tt = token(&within(QUICK, "tools", ct.get("/")).await.json());
    assert_eq!(verify_assertion(&tt, &jwks, "tools")["aud"], "tools");
    let mut cb = h1_with(&gh, &host("wiki"), &b).await;
    let tb = token(&within(QUICK, "bob", cb.get("/")).await.json());
    assert_ne!(tb, t1);
    assert_eq!(verify_assertion(&tb, &jwks, "wiki")["sub"], "bob");
    // A token signed for the wiki does not verify for the tools app.
    let res = std::panic::catch_unwind(|| verify_assertion(&t1, &jwks, "tools"));
    assert!(
        res.is_err(),
        "a wiki assertion verified with audience tools"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_are_replaced_by_the_gateways_own() {
    let (gh, _wiki, tools) = gateway(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let cookie = gh.login(&host("tools"), &alice).await;
    let jwks = gh.jwks().await;
    let spoofed = [
        ("x-gatehouse-user", "root"),
        ("X-Gatehouse-Groups", "admins"),
        (
            "x-gatehouse-assertion",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.",
        ),
        ("x_gatehouse_user", "root"),
    ];
    let mut c = h1_with(&gh, &host("tools"), &cookie).await;
    let r = within(
        QUICK,
        "h1",
        c.send(c.request("GET", "/", &spoofed, empty())),
    )
    .await;
    let h2 = gh
        .h2_anon(&host("tools"))
        .await
        .with_cookie(Some(cookie.clone()));
    let mut h2 = h2;
    let spoofed_lower: Vec<(String, &str)> = spoofed
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    let extra: Vec<(&str, &str)> = spoofed_lower
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let r2 = within(
        QUICK,
        "h2",
        h2.send(h2.request("GET", "/", &extra, empty())),
    )
    .await;
    for (what, r) in [("HTTP/1.1", r), ("HTTP/2", r2)] {
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let echo = r.json();
        assert_eq!(
            echoed_headers(&echo, "x-gatehouse-user"),
            vec!["alice"],
            "{what}"
        );
        let groups = echoed_headers(&echo, "x-gatehouse-groups");
        assert!(
            groups.len() == 1 && !groups[0].contains("admins"),
            "{what}: groups {groups:?}"
        );
        let tokens = echoed_headers(&echo, "x-gatehouse-assertion");
        assert_eq!(tokens.len(), 1, "{what}: {tokens:?}");
        assert_eq!(verify_assertion(&tokens[0], &jwks, "tools")["sub"], "alice");
        let leaked: Vec<_> = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p[1].as_str().is_some_and(|v| v == "root" || v == "admins"))
            .collect();
        assert!(
            leaked.is_empty(),
            "{what}: spoofed values arrived: {leaked:?}"
        );
    }
    assert_eq!(tools.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_refuses_requests_and_logins() {
    let (gh, wiki, _tools) = gateway(GatehouseSpec::default()).await;
    let alice = gh.create_user("alice", &["staff"]).await;
    let bob = gh.create_user("bob", &["staff"]).await;
    let cookie = gh.login(&host("wiki"), &alice).await;
    let mut c = h1_with(&gh, &host("wiki"), &cookie).await;
    assert_eq!(within(QUICK, "before", c.get("/before")).await.status, 200);
    // Tests run as root in CI, where permissions do not stop writes: put a plain file where
    // the audit directory was, so no file can be created or opened under it.
    let dir = gh.path(&gh.spec.audit_dir);
    std::fs::rename(&dir, dir.with_extension("moved")).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let before = wiki.count();
    let r = within(QUICK, "request", c.get("/after")).await;
    assert_eq!(
        r.status,
        503,
        "request with the audit log unwritable: {}",
        r.text()
    );
    let f = gh.login_form(&host("wiki"), None).await;
    let body = support::identity::form(&[
        ("csrf", &f.csrf),
        ("user", "bob"),
        ("password", &bob.password),
        ("code", &bob.code()),
    ]);
    let r = gh
        .post_form(
            &host("wiki"),
            support::identity::LOGIN_PATH,
            Some(&f.login_cookie),
            body,
        )
        .await;
    assert_eq!(
        r.status,
        503,
        "login with the audit log unwritable: {}",
        r.text()
    );
    assert!(
        support::identity::set_cookie(&r, support::identity::SESSION_COOKIE)
            .is_none_or(|v| v.is_empty()),
        "a session was issued without its audit record"
    );
    assert_eq!(
        wiki.count(),
        before,
        "an unaudited request reached the upstream"
    );
}
