//! Core-level SSO fixture: a config with `[[identity.oidc]]` blocks (secrets in 0600 files),
//! an in-memory store, a real audit log and users file in a temp dir, and the core's [`Sso`]
//! built from them exactly as the server builds it. Used by the tests that drive SSO against
//! the real provider and against the hostile double, without the gateway's pages.

use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_core::Config;
use gatehouse_core::SsoError;
use gatehouse_core::audit::{AuditKey, AuditLog};
use gatehouse_core::error::SsoCheck;
use gatehouse_core::identity::oidc::{CALLBACK_PATH, Sso, SsoUsers};
use gatehouse_core::identity::oidc::{SsoCallback, SsoLogin};
use gatehouse_core::identity::{Authenticator, NewUser, TotpCipher, Users};
use gatehouse_core::secret::SecretKey;
use gatehouse_core::store::{MemoryStore, Store};
use serde_json::Value;

use super::oidc_double::{CLIENT_ID, CLIENT_SECRET, ProviderDouble};

use super::identity::audit_events_in;
use super::tempdir::TestDir;

/// The public URL the fixture's config names (the callback is under it).
pub const PUBLIC_URL: &str = "https://gatehouse.localhost:8443";

/// The redirect URI to register at a provider for this fixture.
pub fn callback_url() -> String {
    format!("{PUBLIC_URL}{CALLBACK_PATH}")
}

/// One `[[identity.oidc]]` block.
#[derive(Debug, Clone)]
pub struct ProviderConf {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// More TOML lines for the block (`trust_mfa = true`, `scopes = [...]`, ...).
    pub extra: String,
}

impl ProviderConf {
    pub fn new(name: &str, issuer: &str, client_id: &str, client_secret: &str) -> ProviderConf {
        ProviderConf {
            name: name.into(),
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            extra: String::new(),
        }
    }

    pub fn with(mut self, line: &str) -> ProviderConf {
        self.extra.push_str(line);
        self.extra.push('\n');
        self
    }
}

pub struct SsoFixture {
    pub dir: TestDir,
    pub config: Config,
    pub auth: Authenticator,
    pub sso: Sso,
    cipher: TotpCipher,
}

impl SsoFixture {
    pub fn new(providers: &[ProviderConf]) -> SsoFixture {
        let dir = TestDir::new("sso");
        let mut text = format!("data_dir = \"data\"\n[gateway]\npublic_url = \"{PUBLIC_URL}\"\n");
        text.push_str("[identity]\nusers_file = \"users.toml\"\n");
        for p in providers {
            let secret = dir.write(format!("{}.secret", p.name), &p.client_secret);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            text.push_str(&format!(
                "[[identity.oidc]]\nname = \"{}\"\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\n{}",
                p.name,
                p.issuer,
                p.client_id,
                secret.display(),
                p.extra
            ));
        }
        let file = dir.write("gatehouse.toml", &text);
        let config = Config::load(&file).unwrap_or_else(|e| panic!("fixture config: {e}\n{text}"));
        // The key file the CLI reads too, so both write one audit chain.
        let key = SecretKey::load_or_create_file(&config.identity.secret_key_file).unwrap();
        let audit = AuditLog::open(&config.audit.dir, AuditKey::new(&key)).unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let auth = Authenticator::from_config(&config, &key, store, audit).unwrap();
        let sso = Sso::new(&config, auth.clone()).unwrap();
        SsoFixture {
            dir,
            config,
            auth,
            sso,
            cipher: TotpCipher::new(&key).unwrap(),
        }
    }

    /// Adds a local user (users.toml) named `name`.
    pub fn add_local_user(&self, name: &str) {
        let path = &self.config.identity.users_file;
        let mut users = Users::load(path).unwrap();
        users
            .add(
                NewUser {
                    name,
                    groups: &[],
                    password: "correct-Horse-7-battery",
                    ssh_keys: &[],
                },
                &self.cipher,
            )
            .unwrap();
    }

    /// The config file (for `gatehouse ... --config`).
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("gatehouse.toml")
    }

    pub fn registry_path(&self) -> PathBuf {
        SsoUsers::path_in(&self.config.data_dir)
    }

    pub fn registry(&self) -> SsoUsers {
        SsoUsers::load(&self.registry_path()).unwrap()
    }

    pub fn audit_events(&self) -> Vec<Value> {
        audit_events_in(&self.config.audit.dir)
    }

    /// The audit events of kind `kind`.
    pub fn audit_of(&self, kind: &str) -> Vec<Value> {
        self.audit_events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }
}

/// The value of query parameter `name` in `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

// Logins through the hostile double (`super::oidc_double`).

/// The browser binding of logins through the double.
pub const BROWSER: &str = "the-browser";

/// A fixture with the double as provider `evil` (and `extra` lines in its block).
pub fn double_fixture(double: &ProviderDouble, extra: &[&str]) -> SsoFixture {
    let mut c = ProviderConf::new("evil", &double.issuer, CLIENT_ID, CLIENT_SECRET);
    for line in extra {
        c = c.with(line);
    }
    SsoFixture::new(&[c])
}

/// One login through the double: start, queue the token `make(nonce)` crafts, call back.
pub async fn attempt(
    fx: &SsoFixture,
    double: &ProviderDouble,
    make: impl FnOnce(&str) -> String,
) -> Result<SsoLogin, SsoError> {
    let start = fx.sso.start_login("evil", BROWSER, None).await.unwrap();
    let state = query_param(&start.url, "state").unwrap();
    let nonce = query_param(&start.url, "nonce").unwrap();
    double.next_id_token(make(&nonce));
    let cb = SsoCallback::from_query(&format!("state={state}&code=the-code"));
    fx.sso.finish_login(&cb, Some(BROWSER), None).await
}

/// `claims` with `edits` applied (a null value removes the claim).
pub fn with(mut claims: Value, edits: &[(&str, Value)]) -> Value {
    for (k, v) in edits {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(*k);
        } else {
            claims[*k] = v.clone();
        }
    }
    claims
}

/// Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts `r` was refused by `check`, audited, and registered nobody.
pub fn refused(fx: &SsoFixture, r: Result<SsoLogin, SsoError>, check: SsoCheck, case: &str) {
    match r {
        Err(e) => assert_eq!(e.check(), Some(check), "{case}: {e}"),
        Ok(l) => panic!("{case}: signed in: {:?}", l.step),
    }
    let last = fx
        .audit_of("sso_failure")
        .pop()
        .unwrap_or_else(|| panic!("{case}: no audit"));
    assert_eq!(last["check"], check.as_str(), "{case}: {last}");
    assert!(
        fx.registry().list().is_empty(),
        "{case}: a user was recorded"
    );
    assert!(fx.audit_of("sso_authenticated").is_empty(), "{case}");
    assert!(fx.audit_of("login_success").is_empty(), "{case}");
}
