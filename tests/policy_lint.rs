//! Policies that say what is wrong, through the real binary: `check-config` warns (exit 0)
//! about lines that can never match, allows that reach everything and an empty policy, and
//! accepts a UTF-8 BOM; a reload logs the same warnings; `policy check` decides an `app:`
//! object with the path normalised exactly as the gateway does, which a running gateway
//! confirms request by request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use crate::support;
use crate::support::gatehouse::{binary, check_config};
use crate::support::identity::h1_with;
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, TestDir, Upstream, host, within};

const TARGET: &str = "\n[[targets]]\nname = \"db-prod-1\"\naddress = \"10.0.0.5:22\"\n\
    host_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\n\
    logins = [\"deploy\"]\ncredential = \"certs/targets/deploy_ed25519\"\n";

/// check-config on a config with apps `echo` and `wiki` and target `db-prod-1/deploy`,
/// whose policy is `policy`: `(exit code, stdout, stderr)`.
fn check_policy(policy: &str) -> (Option<i32>, String, String) {
    let spec = GatehouseSpec {
        policy_csv: Some(policy.to_string()),
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("echo", &host("echo"), "http://127.0.0.1:3000"))
    .with_app(AppSpec::new("wiki", &host("wiki"), "http://127.0.0.1:3001"));
    let dir = TestDir::new("lint");
    let _pki = support::Pki::new(&dir.join("certs"));
    spec.write_policies(&dir);
    let file = dir.write("gatehouse.toml", format!("{}{TARGET}", spec.to_toml()));
    check_config(&file)
}

#[test]
fn check_config_names_each_suspicious_line_and_still_passes() {
    const GOOD: &str = "p, group:staff, app:wiki/*, GET, allow\n";
    // (line 2 of the policy, a fragment its warning must carry, or None for no warning)
    let table: &[(&str, Option<&str>)] = &[
        ("p, group:staff, app:echo/*, GET|HEAD, allow", None),
        ("p, group:sre, ssh:db-prod-1/deploy, ssh|sftp, allow", None),
        ("p, group:auditor, gatehouse:review, *, allow", None),
        (
            "p, group:staff, app:wikki/admin/*, *, deny",
            Some("no app named `wikki`"),
        ),
        (
            "p, group:sre, ssh:db-prod-2/deploy, ssh, allow",
            Some("no target named `db-prod-2`"),
        ),
        (
            "p, group:sre, ssh:db-prod-1/root, ssh, allow",
            Some("no login `root`"),
        ),
        (
            "p, group:staff, wiki/*, GET, allow",
            Some("`app:`, `ssh:` or `gatehouse:`"),
        ),
        (
            "p, group:staff, app:wiki/*, get, allow",
            Some("upper-case (`GET`)"),
        ),
        (
            "p, group:staff, app:wiki, GET, allow",
            Some("app:NAME/PATH"),
        ),
        ("p, group:admin, *, *, allow", Some("allows everything")),
        (
            "p, group:admin, gatehouse:*, *, allow",
            Some("every administrative object"),
        ),
        ("p, group:admin, app:*, GET, allow", Some("every app")),
    ];
    let mut failures = Vec::new();
    for (line, want) in table {
        let (code, out, err) = check_policy(&format!("{GOOD}{line}\n"));
        let warned: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("policy warning"))
            .collect();
        let ok = code == Some(0)
            && out.contains(": ok")
            && match want {
                None => warned.is_empty(),
                Some(fragment) => {
                    warned.len() == 1
                        && warned[0].contains("policy.csv:2:")
                        && warned[0].contains(fragment)
                        && out.contains("1 policy warning")
                }
            };
        if !ok {
            failures.push(format!(
                "{line}: exit {code:?}\n  stdout: {out}\n  stderr: {err}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_empty_policy_is_named_and_a_bom_is_accepted() {
    for empty in ["", "# nobody yet\n", "p, mallory, app:wiki/*, *, deny\n"] {
        let (code, out, err) = check_policy(empty);
        assert_eq!(code, Some(0), "{empty:?}: {out}{err}");
        assert!(
            err.contains("no allow rule: every request and SSH session is denied"),
            "{empty:?}: {err}"
        );
    }
    let (code, out, err) = check_policy("\u{feff}p, group:staff, app:wiki/*, GET, allow\n");
    assert_eq!(code, Some(0), "BOM refused: {out}{err}");
    assert!(out.contains("1 policy rule(s))"), "{out}");
    assert!(!err.contains("warning"), "{err}");
}

/// The shipped-policy shape: staff read the wiki except its admin pages.
const POLICY: &str = "\
p, group:staff, app:wiki/*, GET|HEAD, allow
p, group:staff, app:wiki/admin/*, *, deny
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_decides_paths_as_the_gateway_does() {
    let wiki = Upstream::start().await;
    let spec = GatehouseSpec {
        policy_csv: Some(POLICY.into()),
        ..GatehouseSpec::default()
    }
    .with_app(AppSpec::new("wiki", &host("wiki"), &wiki.url()));
    let gh = Gatehouse::start(spec).await;
    let dave = gh.create_user("dave", &["staff"]).await;
    let cookie = gh.login(&host("wiki"), &dave).await;
    // (request path, whether the gateway lets it through)
    let table: &[(&str, bool)] = &[
        ("/page", true),
        ("/admin/x", false),
        ("/../admin/x", false),
        ("/docs/../admin/x", false),
        ("/docs/%2e%2e/admin/x", false),
        ("//admin/x", false),
        ("/admin;x=1/y", false),
        ("/%61dmin/x", false),
        ("/a%2fadmin", false),
        ("/docs/./page", true),
        ("/docs/../page", true),
    ];
    let mut failures = Vec::new();
    for (path, allowed) in table {
        let mut c = h1_with(&gh, &host("wiki"), &cookie).await;
        let r = within(QUICK, path, c.get(path)).await;
        let through = r.status == 200;
        let out = Command::new(binary())
            .args(["--config"])
            .arg(gh.config_path())
            .args(["policy", "check", "dave", &format!("app:wiki{path}"), "GET"])
            .current_dir(gh.dir.path())
            .env("GATEHOUSE_SECRET_KEY", &gh.spec.secret_key)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let cli_allows = out.status.code() == Some(0) && said.starts_with("allow\n");
        if through != *allowed || cli_allows != *allowed {
            failures.push(format!(
                "{path}: gateway {} (want {allowed}), policy check {cli_allows}: {said}{}",
                r.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_logs_the_warnings_of_the_new_policy() {
    let wiki = Upstream::start().await;
    let spec = GatehouseSpec::default().with_app(AppSpec::new("wiki", &host("wiki"), &wiki.url()));
    let gh = Gatehouse::start(spec).await;
    assert!(!gh.stderr().contains("policy warning"), "{}", gh.stderr());
    std::fs::write(
        gh.path("policies/policy.csv"),
        "p, group:staff, app:wiki/*, GET, allow\np, group:staff, app:wikki/*, GET, allow\n",
    )
    .unwrap();
    gh.signal("HUP");
    gh.expect_log_line("the warning for line 2", |l| {
        // (`line=2` is a structured field, coloured: matched loosely.)
        l.contains("policy warning") && l.contains("no app named `wikki`") && l.ends_with('2')
    })
    .await;
}
