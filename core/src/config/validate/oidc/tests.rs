//! `[[identity.oidc]]` validation, table-driven: each bad block is refused with its key, and
//! its value unless secret; good blocks get their defaults.

use std::path::Path;

use secrecy::ExposeSecret;

use crate::config::{Config, SecretSource};
use crate::testutil::TempDir;

/// An environment variable that is set in every test environment (its value stands in for
/// a secret here) and one that never is.
const SET_VAR: &str = "PATH";
const UNSET_VAR: &str = "GATEHOUSE_TEST_NEVER_SET_4F1C";

struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = TempDir::new("oidc-config");
        let f = Files { dir };
        f.write_mode("secret", "s3cr3t-value\n", 0o600);
        f.write_mode("open-secret", "s3cr3t-value\n", 0o644);
        f.write_mode("empty-secret", "\n", 0o600);
        let ca = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&ca).unwrap();
        f.write_mode("ca.pem", &cert.pem(), 0o644);
        f.write_mode(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            0o644,
        );
        f.write_mode("key-only.pem", &ca.serialize_pem(), 0o644);
        f
    }

    fn write_mode(&self, name: &str, text: &str, mode: u32) {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
    }

    fn load(&self, text: &str) -> Result<Config, crate::ConfigError> {
        Config::from_toml(text, Some(&self.dir.path().join("gatehouse.toml")))
    }
}

/// A provider block with `extra` lines; the secret from a 0600 file unless `extra` says
/// otherwise.
fn block(extra: &str) -> String {
    let secret = if extra.contains("client_secret") {
        ""
    } else {
        "client_secret_file = \"secret\"\n"
    };
    let issuer = if extra.contains("issuer") {
        ""
    } else {
        "issuer = \"https://idp.example.com/realms/staff\"\n"
    };
    let name = if extra.contains("name =") && !extra.contains("_name") {
        ""
    } else {
        "name = \"corp\"\n"
    };
    format!("[[identity.oidc]]\n{name}{issuer}client_id = \"gatehouse\"\n{secret}{extra}\n")
}

#[test]
fn a_minimal_provider_gets_the_documented_defaults() {
    let f = Files::new();
    let c = f.load(&block("")).unwrap();
    let p = &c.identity.oidc[0];
    assert_eq!(p.name, "corp");
    assert_eq!(p.issuer, "https://idp.example.com/realms/staff");
    assert!(!p.insecure_loopback);
    assert_eq!(p.groups_claim, "groups");
    assert_eq!(p.username_claim, "preferred_username");
    assert!(!p.trust_mfa);
    assert!(p.ca.is_none());
    assert_eq!(p.scopes, ["openid", "profile", "email"]);
    assert_eq!(p.client_secret.expose_secret(), "s3cr3t-value");
    assert_eq!(
        p.client_secret_source,
        SecretSource::File(f.dir.path().join("secret"))
    );
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("s3cr3t"), "Debug shows the secret: {dbg}");
}

#[test]
fn every_key_is_read() {
    let f = Files::new();
    let text = format!(
        "{}{}",
        block(
            "issuer = \"http://127.0.0.1:9000\"\ngroups_claim = \"https://example.com/groups\"\n\
             username_claim = \"email\"\ntrust_mfa = true\nca_file = \"ca.pem\"\n\
             scopes = [\"profile\", \"groups\", \"profile\"]"
        ),
        block(&format!(
            "name = \"other\"\nclient_secret_env = \"{SET_VAR}\"\nissuer = \"http://[::1]:9000/x\""
        )),
    );
    let c = f.load(&text).unwrap();
    let p = &c.identity.oidc[0];
    assert!(p.insecure_loopback);
    assert_eq!(p.groups_claim, "https://example.com/groups");
    assert_eq!(p.username_claim, "email");
    assert!(p.trust_mfa);
    assert_eq!(p.ca.as_ref().unwrap().certs.len(), 1);
    assert_eq!(p.scopes, ["openid", "profile", "groups"]);
    let q = &c.identity.oidc[1];
    assert_eq!(q.name, "other");
    assert!(q.insecure_loopback);
    assert_eq!(q.client_secret_source, SecretSource::Env(SET_VAR.into()));
    assert!(!q.client_secret.expose_secret().is_empty());
}

#[test]
fn bad_provider_blocks_name_key_value_and_fix() {
    // (block lines, key named, value named (None: must not appear, e.g. a secret))
    let two = format!("{}{}", block(""), block(""));
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        (
            "[[identity.oidc]]\nissuer = \"https://i\"\nclient_id = \"c\"\nclient_secret_file = \"secret\"".into(),
            "identity.oidc[0].name",
            Some("missing"),
        ),
        (block("name = \"Corp IdP\""), "identity.oidc[0].name", Some("Corp IdP")),
        (block("name = \"a/b\""), "identity.oidc[0].name", Some("a/b")),
        (two, "identity.oidc[1].name", Some("`corp` is used by another provider")),
        (block("issuer = \"http://idp.example.com\""), "identity.oidc[0].issuer", Some("http://idp.example.com")),
        (block("issuer = \"http://10.0.0.1:8080\""), "identity.oidc[0].issuer", Some("non-loopback")),
        (block("issuer = \"ftp://idp.example.com\""), "identity.oidc[0].issuer", Some("ftp://")),
        (block("issuer = \"idp.example.com\""), "identity.oidc[0].issuer", Some("idp.example.com")),
        (block("issuer = \"https://idp.example.com/?x=1\""), "identity.oidc[0].issuer", Some("query")),
        (block("issuer = \"https://u:p@idp.example.com\""), "identity.oidc[0].issuer", Some("credentials")),
        (
            "[[identity.oidc]]\nname = \"corp\"\nclient_id = \"c\"\nclient_secret_file = \"secret\"".into(),
            "identity.oidc[0].issuer",
            Some("missing"),
        ),
        (
            "[[identity.oidc]]\nname = \"corp\"\nissuer = \"https://i\"\nclient_secret_file = \"secret\"".into(),
            "identity.oidc[0].client_id",
            Some("missing"),
        ),
        (
            "[[identity.oidc]]\nname = \"corp\"\nissuer = \"https://i\"\nclient_id = \"c\"".into(),
            "identity.oidc[0].client_secret_env",
            Some("neither"),
        ),
        (
            block(&format!("client_secret_env = \"{SET_VAR}\"\nclient_secret_file = \"secret\"")),
            "identity.oidc[0].client_secret_env",
            Some("both"),
        ),
        (
            block(&format!("client_secret_env = \"{UNSET_VAR}\"")),
            "identity.oidc[0].client_secret_env",
            Some(UNSET_VAR),
        ),
        (
            block("client_secret_env = \"hunter2 with spaces\""),
            "identity.oidc[0].client_secret_env",
            Some("not an environment variable name"),
        ),
        (
            block("client_secret_file = \"open-secret\""),
            "identity.oidc[0].client_secret_file",
            Some("readable by group or others"),
        ),
        (
            block("client_secret_file = \"empty-secret\""),
            "identity.oidc[0].client_secret_file",
            Some("empty"),
        ),
        (
            block("client_secret_file = \"no-such-file\""),
            "identity.oidc[0].client_secret_file",
            Some("no-such-file"),
        ),
        (block("groups_claim = \"\""), "identity.oidc[0].groups_claim", Some("not a claim name")),
        (block("groups_claim = \"my groups\""), "identity.oidc[0].groups_claim", Some("my groups")),
        (block("username_claim = \"iss\""), "identity.oidc[0].username_claim", Some("`iss` is a protocol claim")),
        (block("username_claim = \"email_verified\""), "identity.oidc[0].username_claim", Some("email_verified")),
        (
            block("username_claim = \"roles\"\ngroups_claim = \"roles\""),
            "identity.oidc[0].groups_claim",
            Some("also the username_claim"),
        ),
        (block("trust_mfa = \"yes\""), "trust_mfa", Some("invalid type")),
        (block("ca_file = \"missing.pem\""), "identity.oidc[0].ca_file", Some("missing.pem")),
        (block("ca_file = \"garbage.pem\""), "identity.oidc[0].ca_file", Some("malformed PEM")),
        (block("ca_file = \"key-only.pem\""), "identity.oidc[0].ca_file", Some("no PEM certificate")),
        (block("ca_file = \"secret\""), "identity.oidc[0].ca_file", Some("no PEM certificate")),
        (block("scopes = [\"openid profile\"]"), "identity.oidc[0].scopes", Some("openid profile")),
        (block("scopes = [\"\"]"), "identity.oidc[0].scopes", Some("not a scope")),
        (block("client_secret = \"inline\""), "unknown field `client_secret`", None),
        (block("claims = \"x\""), "unknown field `claims`", None),
    ];
    let f = Files::new();
    for (text, key, value) in &cases {
        let err = f.load(text).expect_err(text).to_string();
        assert!(err.contains(key), "{text}\nexpected key {key:?} in: {err}");
        if let Some(v) = value {
            assert!(err.contains(v), "{text}\nexpected {v:?} in: {err}");
        }
        assert!(
            err.contains("gatehouse.toml"),
            "{text}\nno file named: {err}"
        );
        assert!(!err.contains("s3cr3t"), "{text}\nsecret echoed: {err}");
        if err.contains("`identity.oidc") {
            assert!(err.contains("fix:"), "{text}\nno fix in: {err}");
        }
    }
}

#[test]
fn loopback_rule_accepts_only_loopback_for_plain_http() {
    let f = Files::new();
    for (issuer, ok) in [
        ("http://127.0.0.1:1", true),
        ("http://127.9.9.9:1", true),
        ("http://localhost:1", true),
        ("http://[::1]:1", true),
        ("http://128.0.0.1:1", false),
        ("http://[::2]:1", false),
        ("http://localhost.example.com", false),
        ("https://10.0.0.1", true),
    ] {
        let r = f.load(&block(&format!("issuer = \"{issuer}\"")));
        assert_eq!(r.is_ok(), ok, "{issuer}: {r:?}");
    }
    assert!(Path::new(&f.dir.path().join("secret")).exists());
}
