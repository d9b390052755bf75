//! `gatehouse check-config`: a good file passes without binding a port; each malformed file is
//! rejected with exit 1 and a message naming the file, the key and a fix.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;

use crate::support::gatehouse::check_config;
use crate::support::{AppSpec, GatehouseSpec, TestDir, host};

fn good_spec() -> GatehouseSpec {
    GatehouseSpec::default()
        .with_app(AppSpec::new("echo", &host("echo"), "http://127.0.0.1:3000"))
        .with_app(AppSpec::new("wiki", &host("wiki"), "http://127.0.0.1:3001"))
}

/// Writes `text` (with dev certificates and the good spec's policy files beside it) and runs
/// check-config on it.
fn check(text: &str) -> (Option<i32>, String, String, std::path::PathBuf, TestDir) {
    let dir = TestDir::new("cfg");
    let _pki = support::Pki::new(&dir.join("certs"));
    good_spec().write_policies(&dir);
    let file = dir.write("gatehouse.toml", text);
    let (code, out, err) = check_config(&file);
    (code, out, err, file, dir)
}

#[test]
fn good_config_passes_without_binding_its_ports() {
    // Hold the listen address: a check that bound it would fail.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let text = good_spec().to_toml().replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{addr}\""),
        1,
    );
    assert!(text.contains(&addr.to_string()));
    let (code, out, err, file, _dir) = check(&text);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains(": ok"), "stdout: {out}");
    assert!(
        out.contains(file.to_str().unwrap()),
        "stdout names the file: {out}"
    );
}

/// A malformed variant of the good config: how it is made, and what the message must name.
struct Bad {
    name: &'static str,
    edit: fn(String) -> String,
    key: &'static str,
}

const BAD: &[Bad] = &[
    Bad {
        name: "unknown key",
        edit: |t| t.replacen("header_timeout", "header_timeuot", 1),
        key: "header_timeuot",
    },
    Bad {
        name: "unknown section",
        edit: |t| format!("{t}\n[gatway]\nlisten = \"127.0.0.1:1\"\n"),
        key: "gatway",
    },
    Bad {
        name: "bad listen",
        edit: |t| t.replacen("listen = \"127.0.0.1:0\"", "listen = \"localhost-8443\"", 1),
        key: "gateway.listen",
    },
    Bad {
        name: "bad admin listen",
        edit: |t| {
            t.replace(
                "[admin]\nlisten = \"127.0.0.1:0\"",
                "[admin]\nlisten = \"0.0.0.0:9443\"",
            )
        },
        key: "admin.listen",
    },
    Bad {
        name: "bad upstream",
        edit: |t| t.replacen("http://127.0.0.1:3000", "ftp://127.0.0.1:3000/x", 1),
        key: "apps[0].upstream",
    },
    Bad {
        name: "duplicate app name",
        edit: |t| t.replacen("name = \"wiki\"", "name = \"echo\"", 1),
        key: "apps[1].name",
    },
    Bad {
        name: "bad duration",
        edit: |t| {
            t.replacen(
                "header_timeout = \"2s\"",
                "header_timeout = \"two seconds\"",
                1,
            )
        },
        key: "gateway.header_timeout",
    },
    Bad {
        name: "zero duration",
        edit: |t| t.replacen("upstream_timeout = \"5s\"", "upstream_timeout = \"0s\"", 1),
        key: "gateway.upstream_timeout",
    },
    Bad {
        name: "absurd session lifetime",
        edit: |t| t.replacen("session_ttl = \"1h\"", "session_ttl = \"999999999999h\"", 1),
        key: "identity.session_ttl",
    },
    Bad {
        name: "idle timeout over its maximum",
        edit: |t| t.replacen("idle_timeout = \"20s\"", "idle_timeout = \"3h\"", 1),
        key: "gateway.idle_timeout",
    },
    Bad {
        name: "admin on the gateway's address",
        edit: |t| {
            t.replacen(
                "listen = \"127.0.0.1:0\"",
                "listen = \"127.0.0.1:18443\"",
                1,
            )
            .replace(
                "[admin]\nlisten = \"127.0.0.1:0\"",
                "[admin]\nlisten = \"127.0.0.1:18443\"",
            )
        },
        key: "admin.listen",
    },
    Bad {
        name: "bastion on the wildcard of the gateway's port",
        edit: |t| {
            t.replacen("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:18443\"", 1)
                .replace(
                    "[bastion]\nenabled = false\nlisten = \"127.0.0.1:0\"",
                    "[bastion]\nenabled = true\nlisten = \"127.0.0.1:18443\"",
                )
        },
        key: "bastion.listen",
    },
    Bad {
        name: "missing certificate file",
        edit: |t| t.replacen("certs/gateway.crt", "certs/nope.crt", 1),
        key: "`gateway.tls_cert`",
    },
    Bad {
        name: "missing key file",
        edit: |t| t.replacen("certs/gateway.key", "certs/nope.key", 1),
        key: "`gateway.tls_key`",
    },
    Bad {
        name: "an allowed origin with a path",
        edit: |t| {
            t.replacen(
                "upstream = \"http://127.0.0.1:3000\"",
                "upstream = \"http://127.0.0.1:3000\"\nallowed_origins = [\"https://x.example/app\"]",
                1,
            )
        },
        key: "apps[0].allowed_origins",
    },
    Bad {
        name: "TOML syntax error",
        edit: |t| t.replacen("[gateway]", "[gateway", 1),
        key: "line",
    },
];

#[test]
fn malformed_configs_are_rejected_naming_file_and_key() {
    let good = good_spec().to_toml();
    let mut failures = Vec::new();
    for bad in BAD {
        let text = (bad.edit)(good.clone());
        assert_ne!(text, good, "{}: the edit changed nothing", bad.name);
        let (code, out, err, file, _dir) = check(&text);
        let mut problems = Vec::new();
        if code != Some(1) {
            problems.push(format!("exit {code:?}, want 1"));
        }
        if !err.contains(bad.key) {
            problems.push(format!("stderr does not name `{}`", bad.key));
        }
        if !err.contains(file.to_str().unwrap()) {
            problems.push("stderr does not name the file".to_string());
        }
        if out.contains(": ok") {
            problems.push("stdout says ok".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  stdout: {out}\n  stderr: {err}",
                bad.name,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "check-config:\n{}",
        failures.join("\n")
    );
}

#[test]
fn validation_errors_say_how_to_fix_them() {
    let text = good_spec()
        .to_toml()
        .replacen("http://127.0.0.1:3000", "127.0.0.1:3000", 1);
    let (code, _out, err, _file, _dir) = check(&text);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("apps[0].upstream") && err.contains("fix"),
        "stderr: {err}"
    );
    assert!(
        err.contains("127.0.0.1:3000"),
        "stderr names the bad value: {err}"
    );
}

#[test]
fn missing_config_file_is_rejected() {
    let dir = TestDir::new("cfg-missing");
    let file = dir.join("nope.toml");
    let (code, _out, err) = check_config(&file);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(err.contains("nope.toml"), "stderr: {err}");
}

#[test]
fn malformed_policy_files_are_rejected_naming_the_file() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "too few fields",
            "policy.csv",
            "p, group:staff, app:echo/*\n",
        ),
        (
            "unknown effect",
            "policy.csv",
            "p, group:staff, app:echo/*, GET, alow\n",
        ),
        (
            "unknown line type",
            "policy.csv",
            "x, group:staff, app:echo/*, GET, allow\n",
        ),
        (
            "broken model",
            "model.conf",
            "[request_definition]\nr = sub, obj\n[matchers\n",
        ),
    ];
    let mut failures = Vec::new();
    for (name, file, text) in cases {
        let dir = TestDir::new("cfg-policy");
        let _pki = support::Pki::new(&dir.join("certs"));
        good_spec().write_policies(&dir);
        dir.write(format!("policies/{file}"), text);
        let config = dir.write("gatehouse.toml", good_spec().to_toml());
        let (code, out, err) = check_config(&config);
        if code != Some(1) || !err.contains(file) || out.contains(": ok") {
            failures.push(format!(
                "{name}: exit {code:?} (want 1, stderr naming {file})\n  stdout: {out}\n  stderr: {err}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `[[identity.oidc]]` blocks: a good one passes without contacting the provider; a missing
/// secret variable or an http issuer is refused naming the key and the fix, never the secret.
#[test]
fn sso_provider_blocks_are_checked_offline_and_never_echo_the_secret() {
    let dir = TestDir::new("cfg-oidc");
    let _pki = support::Pki::new(&dir.join("certs"));
    good_spec().write_policies(&dir);
    let block = |issuer: &str| {
        format!(
            "{}\n[[identity.oidc]]\nname = \"corp\"\nissuer = \"{issuer}\"\nclient_id = \"gatehouse\"\nclient_secret_env = \"GH_TEST_OIDC_SECRET\"\n",
            good_spec().to_toml()
        )
    };
    let run = |text: &str, secret: Option<&str>| {
        let file = dir.write("gatehouse.toml", text);
        let mut cmd = std::process::Command::new(support::gatehouse::binary());
        cmd.arg("check-config").arg("--config").arg(&file);
        cmd.env_remove("GH_TEST_OIDC_SECRET");
        if let Some(s) = secret {
            cmd.env("GH_TEST_OIDC_SECRET", s);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // An unresolvable issuer: check-config does not try to reach it.
    let started = std::time::Instant::now();
    let (code, out, err) = run(
        &block("https://idp.invalid/realms/staff"),
        Some("s3cr3t-zz"),
    );
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let (code, _out, err) = run(&block("https://idp.invalid"), None);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("identity.oidc[0].client_secret_env")
            && err.contains("GH_TEST_OIDC_SECRET")
            && err.contains("fix"),
        "stderr: {err}"
    );
    let (code, out, err) = run(&block("http://idp.example.com"), Some("s3cr3t-zz"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("identity.oidc[0].issuer") && err.contains("http://idp.example.com"),
        "{err}"
    );
    assert!(
        !err.contains("s3cr3t") && !out.contains("s3cr3t"),
        "secret echoed: {out}{err}"
    );
}
