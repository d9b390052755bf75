use super::*;

const GOOD: &str = r#"
data_dir = "data"
[gateway]
listen = "127.0.0.1:8443"
public_url = "https://gatehouse.localhost:8443"
tls_profile = "modern"
header_timeout = "5s"
[store]
url = "redis://127.0.0.1:6379/0"
[[apps]]
name = "grafana"
host = "Grafana.Gatehouse.localhost"
upstream = "http://127.0.0.1:3000"
[[apps]]
name = "wiki"
host = "tools.gatehouse.localhost"
path_prefix = "/wiki/"
upstream = "http://127.0.0.1:3001"
[[targets]]
name = "db-prod-1"
address = "10.0.0.5:22"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
logins = ["deploy"]
credential = "certs/targets/deploy_ed25519"
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Some(Path::new("/etc/gatehouse/gatehouse.toml")))
}

#[test]
fn good_config_validates_and_resolves_paths() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.gateway.tls_profile, TlsProfile::Modern);
    assert_eq!(c.gateway.header_timeout, Duration::from_secs(5));
    assert_eq!(c.apps[0].host, "grafana.gatehouse.localhost");
    assert_eq!(c.apps[1].path_prefix.as_deref(), Some("/wiki"));
    assert_eq!(c.data_dir, PathBuf::from("/etc/gatehouse/data"));
    assert!(c.targets[0].require_totp);
    assert!(matches!(c.store, StoreConfig::Redis(_)));
}

#[test]
fn quickstart_is_valid() {
    let c = Config::quickstart().unwrap();
    assert_eq!(c.gateway.tls_profile, TlsProfile::Intermediate);
    assert_eq!(c.store, StoreConfig::Memory);
}

#[test]
fn bad_configs_name_key_and_fix() {
    let cases: &[(&str, &str)] = &[
        ("bogus = 1", "unknown field `bogus`"),
        ("[gateway]\nlisten = \"nope\"", "gateway.listen"),
        ("[gateway]\ntls_profile = \"old\"", "gateway.tls_profile"),
        (
            "[gateway]\nheader_timeout = \"5 parsecs\"",
            "gateway.header_timeout",
        ),
        (
            "[gateway]\nheader_timeout = \"0s\"",
            "gateway.header_timeout",
        ),
        (
            "[gateway]\nheader_timeout = \"5m\"",
            "gateway.header_timeout",
        ),
        ("[gateway]\npublic_url = \"http://x\"", "gateway.public_url"),
        (
            "[gateway]\nlistne = \"127.0.0.1:1\"",
            "unknown field `listne`",
        ),
        ("[admin]\nlisten = \"0.0.0.0:9000\"", "admin.listen"),
        ("[store]\nurl = \"redis://:hunter2@h:1/0\"", "store.url"),
        (
            "[[apps]]\nname = \"x\"\nhost = \"x.y\"\nupstream = \"ftp://a\"",
            "apps[0].upstream",
        ),
        (
            "[[apps]]\nname = \"X Y\"\nhost = \"x.y\"\nupstream = \"http://a:1\"",
            "apps[0].name",
        ),
        (
            "[[apps]]\nname = \"x\"\nhost = \"x/y\"\nupstream = \"http://a:1\"",
            "apps[0].host",
        ),
        (
            "[[apps]]\nname = \"x\"\nhost = \"x.y\"\npath_prefix = \"/a/../b\"\nupstream = \"http://a:1\"",
            "apps[0].path_prefix",
        ),
        (
            "[[apps]]\nname = \"x\"\nhost = \"x.y\"\nupstream = \"http://a:1\"\n[[apps]]\nname = \"x\"\nhost = \"z.y\"\nupstream = \"http://a:1\"",
            "apps[1].name",
        ),
        (
            "[[targets]]\nname = \"t\"\naddress = \"h:22\"\nlogins = [\"d\"]\ncredential = \"k\"",
            "targets[0].host_key",
        ),
        (
            "[[targets]]\nname = \"t\"\naddress = \"h\"\nhost_key = \"ssh-ed25519 AAAAAAAAAAAAAAAAAAAA\"\nlogins = [\"d\"]\ncredential = \"k\"",
            "targets[0].address",
        ),
        (
            "[[targets]]\nname = \"t\"\naddress = \"h:22\"\nhost_key = \"ssh-ed25519 AAAAAAAAAAAAAAAAAAAA\"\nlogins = []\ncredential = \"k\"",
            "targets[0].logins",
        ),
        ("[audit]\nretention_days = 0", "audit.retention_days"),
        ("[recording]\nstream_cap = \"0\"", "recording.stream_cap"),
        ("[recording]\nstream_cap = \"lots\"", "recording.stream_cap"),
        ("[recording]\nstream_cap = \"5PB\"", "recording.stream_cap"),
        (
            "[recording]\nstream_cap = \"99999999999TiB\"",
            "recording.stream_cap",
        ),
        ("[recording]\nencrypt = \"yes\"", "invalid type"),
        (
            "[identity]\nidle_timeout = \"13h\"",
            "identity.idle_timeout",
        ),
        ("[gateway\nlisten = 1", "TOML parse error"),
        ("[gateway]\nlisten = 1", "invalid type"),
    ];
    for (text, needle) in cases {
        let err = load(text).expect_err(text).to_string();
        assert!(
            err.contains("/etc/gatehouse/gatehouse.toml"),
            "{text}: {err}"
        );
        assert!(err.contains(needle), "{text}: expected {needle:?} in {err}");
    }
}

/// Every duration has a documented maximum; listeners never share an address; WebSocket
/// origins are origins. `None`: valid; `Some(key)`: refused naming that key.
#[test]
fn limits_collisions_and_origins_table() {
    let cases: &[(&str, Option<&str>)] = &[
        // Durations: the maxima of `defaults`, one past them, absurd values.
        ("[identity]\nsession_ttl = \"7d\"", None),
        (
            "[identity]\nsession_ttl = \"999999999999h\"",
            Some("identity.session_ttl"),
        ),
        (
            "[identity]\nsession_ttl = \"8d\"",
            Some("identity.session_ttl"),
        ),
        (
            "[identity]\nsession_ttl = \"7d\"\nidle_timeout = \"24h\"",
            None,
        ),
        (
            "[identity]\nsession_ttl = \"7d\"\nidle_timeout = \"25h\"",
            Some("identity.idle_timeout"),
        ),
        ("[gateway]\nheader_timeout = \"30s\"", None),
        (
            "[gateway]\nheader_timeout = \"31s\"",
            Some("gateway.header_timeout"),
        ),
        (
            "[gateway]\ntls_handshake_timeout = \"61s\"",
            Some("gateway.tls_handshake_timeout"),
        ),
        ("[gateway]\nidle_timeout = \"1h\"", None),
        (
            "[gateway]\nidle_timeout = \"2h\"",
            Some("gateway.idle_timeout"),
        ),
        (
            "[gateway]\nupstream_timeout = \"1000000h\"",
            Some("gateway.upstream_timeout"),
        ),
        (
            "[gateway]\nupstream_connect_timeout = \"2m\"",
            Some("gateway.upstream_connect_timeout"),
        ),
        (
            "[gateway]\nshutdown_grace = \"1d\"",
            Some("gateway.shutdown_grace"),
        ),
        // Listeners: the same port on overlapping addresses collides; port 0 never does.
        ("[admin]\nlisten = \"127.0.0.1:8443\"", Some("admin.listen")),
        (
            "[bastion]\nlisten = \"127.0.0.1:8443\"",
            Some("bastion.listen"),
        ),
        (
            "[bastion]\nenabled = false\nlisten = \"127.0.0.1:8443\"",
            None,
        ),
        (
            "[gateway]\nhttp_redirect_listen = \"127.0.0.1:8443\"",
            Some("gateway.http_redirect_listen"),
        ),
        ("[gateway]\nlisten = \"0.0.0.0:9443\"", Some("admin.listen")),
        ("[gateway]\nlisten = \"[::]:2222\"", Some("bastion.listen")),
        ("[gateway]\nlisten = \"127.0.0.2:9443\"", None),
        ("[gateway]\nlisten = \"[::1]:9443\"", None),
        (
            "[gateway]\nlisten = \"127.0.0.1:0\"\nhttp_redirect_listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[bastion]\nlisten = \"127.0.0.1:0\"",
            None,
        ),
        // WebSocket origins.
        (
            "[[apps]]\nname = \"x\"\nhost = \"x.y\"\nupstream = \"http://a:1\"\nallowed_origins = [\"https://Tools.Example.com\", \"https://a.b:8443\", \"http://localhost:3000\"]",
            None,
        ),
        (
            "[[apps]]\nname = \"x\"\nhost = \"x.y\"\nupstream = \"http://a:1\"\nallowed_origins = [\"https://a.b/path\"]",
            Some("apps[0].allowed_origins"),
        ),
        (
            "[[apps]]\nname = \"x\"\nhost = \"x.y\"\nupstream = \"http://a:1\"\nallowed_origins = [\"*\"]",
            Some("apps[0].allowed_origins"),
        ),
        (
            "[[apps]]\nname = \"x\"\nhost = \"x.y\"\nupstream = \"http://a:1\"\nallowed_origins = [\"tools.example.com\"]",
            Some("apps[0].allowed_origins"),
        ),
        (
            "[[apps]]\nname = \"x\"\nhost = \"x.y\"\nupstream = \"http://a:1\"\nallowed_origins = [\"https://u@a.b\"]",
            Some("apps[0].allowed_origins"),
        ),
        (
            "[[apps]]\nname = \"x\"\nhost = \"x.y\"\nupstream = \"http://a:1\"\nallowed_origins = [\"https://a.b?x\"]",
            Some("apps[0].allowed_origins"),
        ),
        ("[gateway]\ntls_allow_expired = true", None),
    ];
    for (text, want) in cases {
        match (load(text), want) {
            (Ok(_), None) => {}
            (Ok(_), Some(key)) => panic!("{text}: accepted, want a refusal naming {key}"),
            (Err(e), None) => panic!("{text}: refused: {e}"),
            (Err(e), Some(key)) => {
                let e = e.to_string();
                assert!(e.contains(&format!("`{key}`")), "{text}: want {key} in {e}");
                assert!(e.contains("fix:"), "{text}: no fix in {e}");
            }
        }
    }
    let valid_origins = cases
        .iter()
        .find(|(t, w)| t.contains("Tools.Example.com") && w.is_none())
        .unwrap();
    let c = load(valid_origins.0).unwrap();
    assert_eq!(
        c.apps[0].allowed_origins,
        [
            "https://tools.example.com",
            "https://a.b:8443",
            "http://localhost:3000"
        ]
    );
    assert!(
        load("[gateway]\ntls_allow_expired = true")
            .unwrap()
            .gateway
            .tls_allow_expired
    );
    assert!(!load("").unwrap().gateway.tls_allow_expired);
}

#[test]
fn recording_settings_default_to_in_full_and_clear() {
    let c = load(GOOD).unwrap();
    assert!(!c.recording.encrypt);
    assert_eq!(c.recording.stream_cap, None);
    for (cap, bytes) in [
        ("1048576", 1u64 << 20),
        ("64KiB", 64 << 10),
        ("512MiB", 512 << 20),
        ("2 GiB", 2 << 30),
        ("3g", 3 << 30),
    ] {
        let c = load(&format!(
            "{GOOD}\n[recording]\nencrypt = true\nstream_cap = \"{cap}\""
        ))
        .unwrap();
        assert!(c.recording.encrypt);
        assert_eq!(c.recording.stream_cap, Some(bytes), "{cap}");
    }
}

#[test]
fn secrets_are_not_echoed() {
    let err = load("[store]\nurl = \"redis://:hunter2@h:1/0\"")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn routing_prefers_longest_prefix_and_respects_segments() {
    let c = load(GOOD).unwrap();
    let apps = vec![
        AppConfig {
            name: "root".into(),
            host: "h".into(),
            path_prefix: None,
            upstream: c.apps[0].upstream.clone(),
            allowed_origins: Vec::new(),
        },
        AppConfig {
            name: "a".into(),
            host: "h".into(),
            path_prefix: Some("/a".into()),
            upstream: c.apps[0].upstream.clone(),
            allowed_origins: Vec::new(),
        },
    ];
    assert_eq!(route(&apps, "h", "/a/x").unwrap().name, "a");
    assert_eq!(route(&apps, "h", "/a").unwrap().name, "a");
    assert_eq!(route(&apps, "h", "/ab").unwrap().name, "root");
    assert!(route(&apps, "other", "/").is_none());
}

#[test]
fn secret_key_file_defaults_under_data_dir() {
    let c = Config::from_toml(
        "data_dir = \"d\"",
        Some(Path::new("/etc/gh/gatehouse.toml")),
    )
    .unwrap();
    assert_eq!(
        c.identity.secret_key_file,
        Path::new("/etc/gh/d/secret.key")
    );
    let c = Config::from_toml(
        "[identity]\nsecret_key_file = \"/run/keys/gh.key\"",
        Some(Path::new("/etc/gh/gatehouse.toml")),
    )
    .unwrap();
    assert_eq!(c.identity.secret_key_file, Path::new("/run/keys/gh.key"));
    let e = Config::from_toml("[identity]\nsecret_key_file = \" \"", None).unwrap_err();
    assert!(e.to_string().contains("identity.secret_key_file"), "{e}");
}

#[test]
fn audit_alerts_and_recording_keys() {
    use crate::config::SyslogTarget;
    let c = Config::from_toml(
        "data_dir = \"d\"",
        Some(Path::new("/etc/gh/gatehouse.toml")),
    )
    .unwrap();
    assert_eq!(
        c.audit.signing_key_file,
        Path::new("/etc/gh/d/audit-signing.key")
    );
    assert_eq!(c.audit.head_file, Path::new("/etc/gh/d/audit-head.json"));
    assert_eq!(
        c.audit.checkpoint_interval,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(
        (c.audit.syslog.clone(), c.alerts.webhook_url.clone()),
        (None, None)
    );
    assert_eq!(c.recording.retention_days, 380);
    let c = load("[audit]\nretention_days = 30\nsyslog = \"udp://siem.example:514\"\n[alerts]\nwebhook_url = \"https://hooks.example.com/g\"\n").unwrap();
    assert_eq!(
        c.recording.retention_days, 30,
        "recordings follow the audit retention"
    );
    assert_eq!(
        c.audit.syslog,
        Some(SyslogTarget::Udp("siem.example:514".into()))
    );
    assert_eq!(
        c.alerts.webhook_url.unwrap().as_str(),
        "https://hooks.example.com/g"
    );
    let c = load("[audit]\nsyslog = \"unix:///dev/log\"\n[alerts]\nwebhook_url = \"http://127.0.0.1:9000/hook\"\n[recording]\nretention_days = 90").unwrap();
    assert_eq!(c.audit.syslog, Some(SyslogTarget::Unix("/dev/log".into())));
    assert!(c.alerts.webhook_url.is_some(), "plain http on loopback");
    assert_eq!(c.recording.retention_days, 90);
    // Table: bad value -> the key the error names.
    let cases = [
        ("[audit]\nsyslog = \"tcp://h:514\"", "audit.syslog"),
        ("[audit]\nsyslog = \"udp://h\"", "audit.syslog"),
        ("[audit]\nsyslog = \"unix://dev/log\"", "audit.syslog"),
        (
            "[audit]\ncheckpoint_interval = \"5m\"",
            "audit.checkpoint_interval",
        ),
        (
            "[audit]\ncheckpoint_interval = \"0s\"",
            "audit.checkpoint_interval",
        ),
        ("[audit]\nstream_max_len = 10", "audit.stream_max_len"),
        ("[audit]\nsigning_key_file = \"\"", "audit.signing_key_file"),
        (
            "[alerts]\nwebhook_url = \"http://hooks.example.com/g\"",
            "alerts.webhook_url",
        ),
        (
            "[alerts]\nwebhook_url = \"ftp://127.0.0.1/g\"",
            "alerts.webhook_url",
        ),
        (
            "[alerts]\nwebhook_url = \"not a url\"",
            "alerts.webhook_url",
        ),
        ("[alerts]\nbogus = 1", "unknown field"),
        (
            "[recording]\nretention_days = 0",
            "recording.retention_days",
        ),
    ];
    for (text, needle) in cases {
        let err = load(text).expect_err(text).to_string();
        assert!(err.contains(needle), "{text}: expected {needle:?} in {err}");
    }
    // A webhook URL may carry a token: it is never echoed.
    let err = load("[alerts]\nwebhook_url = \"https://u:s3cret@hooks.example.com/g?token=t0ken\"")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cret") && !err.contains("t0ken"), "{err}");
}

#[test]
fn grants_max_duration_table() {
    const DAY: u64 = 24 * 3600;
    // (TOML, Ok(seconds) or Err(text in the error))
    let table: &[(&str, Result<u64, &str>)] = &[
        ("", Ok(7 * DAY)),
        ("[grants]\nmax_duration = \"1d\"", Ok(DAY)),
        ("[grants]\nmax_duration = \"4h\"", Ok(4 * 3600)),
        ("[grants]\nmax_duration = \"90d\"", Ok(90 * DAY)),
        (
            "[grants]\nmax_duration = \"91d\"",
            Err("grants.max_duration"),
        ),
        (
            "[grants]\nmax_duration = \"0s\"",
            Err("grants.max_duration"),
        ),
        (
            "[grants]\nmax_duration = \"soon\"",
            Err("is not a duration"),
        ),
        ("[grants]\nmax = \"1d\"", Err("unknown field `max`")),
    ];
    for (text, want) in table {
        match (load(text), want) {
            (Ok(c), Ok(secs)) => {
                assert_eq!(c.grants.max_duration, Duration::from_secs(*secs), "{text}")
            }
            (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{text}: {e}"),
            (got, want) => panic!("{text}: want {want:?}, got {got:?}"),
        }
    }
}
