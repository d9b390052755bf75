//! A real OpenID Connect provider for the SSO tests: panva's `oidc-provider` (npm, pinned in
//! `tests/oidc/package-lock.json`, installed by `./test.sh`) run by node with
//! `tests/oidc/provider.mjs` and a generated JSON config: a free loopback port (plain http,
//! or https with the test CA), the clients and accounts (groups, `amr`, `email_verified`)
//! a test asks for. Readiness is its `oidc-provider ready:` line under a deadline; stderr is
//! printed when the test fails; the process is killed on drop. `stop` and `restart` (same
//! port and issuer) serve outage tests. A missing node or package is a test failure.
//!
//! [`crate::oidc_browser::ProviderBrowser`] completes the provider's login and consent pages with a
//! cookie-keeping HTTP client (no browser), up to the redirect back to Gatehouse.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::{Captured, spawn_until_line};
use crate::tempdir::TestDir;

/// How long node may take to load oidc-provider and listen.
pub const PROVIDER_READY_DEADLINE: Duration = Duration::from_secs(30);

/// The directory holding `provider.mjs` and its `node_modules`.
pub fn provider_dir() -> PathBuf {
    crate::repo_root().join("tests/oidc")
}

/// One client registered at the provider.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// `RS256` (default), `ES256` or `EdDSA`.
    pub id_token_alg: Option<String>,
}

impl ClientSpec {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> ClientSpec {
        ClientSpec {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: Vec::new(),
            id_token_alg: None,
        }
    }
}

/// One test account: its login (and password), subject, `amr` and claims.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    pub login: String,
    pub password: String,
    pub sub: Option<String>,
    pub amr: Option<Vec<String>>,
    pub claims: Value,
}

impl AccountSpec {
    /// `login` with password `pw-LOGIN`, `preferred_username = login`, these groups.
    pub fn new(login: &str, groups: &[&str]) -> AccountSpec {
        AccountSpec {
            login: login.into(),
            password: format!("pw-{login}"),
            sub: None,
            amr: None,
            claims: json!({ "preferred_username": login, "groups": groups }),
        }
    }

    #[allow(clippy::should_implement_trait)] // named after the `sub` claim it sets
    pub fn sub(mut self, sub: &str) -> AccountSpec {
        self.sub = Some(sub.into());
        self
    }

    pub fn amr(mut self, amr: &[&str]) -> AccountSpec {
        self.amr = Some(amr.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn claim(mut self, name: &str, value: Value) -> AccountSpec {
        self.claims[name] = value;
        self
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ProviderSpec {
    pub clients: Vec<ClientSpec>,
    pub accounts: Vec<AccountSpec>,
    /// Scope claims in the ID token too (default: only from userinfo).
    pub claims_in_id_token: bool,
    /// No consent page.
    pub auto_consent: bool,
    /// Serve https with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ProviderSpec {
    fn to_json(&self, port: u16) -> Value {
        let clients: Vec<Value> = self
            .clients
            .iter()
            .map(|c| {
                let mut v = json!({
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "redirect_uris": c.redirect_uris,
                    "post_logout_redirect_uris": c.post_logout_redirect_uris,
                });
                if let Some(alg) = &c.id_token_alg {
                    v["id_token_signed_response_alg"] = json!(alg);
                }
                v
            })
            .collect();
        let mut accounts = serde_json::Map::new();
        for a in &self.accounts {
            let mut v = json!({ "password": a.password, "claims": a.claims });
            if let Some(s) = &a.sub {
                v["sub"] = json!(s);
            }
            if let Some(amr) = &a.amr {
                v["amr"] = json!(amr);
            }
            accounts.insert(a.login.clone(), v);
        }
        let mut v = json!({
            "port": port,
            "clients": clients,
            "accounts": accounts,
            "claimsInIdToken": self.claims_in_id_token,
            "autoConsent": self.auto_consent,
        });
        if let Some((cert, key)) = &self.tls {
            v["tls"] = json!({ "cert": cert, "key": key });
        }
        v
    }
}

/// A running oidc-provider.
pub struct OidcProvider {
    child: Option<Child>,
    pub issuer: String,
    pub port: u16,
    spec: ProviderSpec,
    dir: TestDir,
    /// Output of every run (restarts append).
    out: Captured,
}

fn parse_ready(line: &str) -> Option<(String, u16)> {
    let rest = line.strip_prefix("oidc-provider ready: ")?;
    let v: Value = serde_json::from_str(rest).ok()?;
    Some((
        v["issuer"].as_str()?.to_string(),
        u16::try_from(v["port"].as_u64()?).ok()?,
    ))
}

impl OidcProvider {
    /// Starts the provider on a free port and waits for its ready line.
    pub fn start(spec: ProviderSpec) -> OidcProvider {
        let mut p = OidcProvider {
            child: None,
            issuer: String::new(),
            port: 0,
            spec,
            dir: TestDir::new("oidc-provider"),
            out: Captured::default(),
        };
        if let Err(e) = p.spawn(0) {
            panic!("{e}");
        }
        p
    }

    /// [`OidcProvider::start`] from async code.
    pub async fn start_async(spec: ProviderSpec) -> OidcProvider {
        tokio::task::spawn_blocking(move || OidcProvider::start(spec))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Starts node on `port` (0: any) and waits for the ready line; why not otherwise.
    fn spawn(&mut self, port: u16) -> Result<(), String> {
        let dir = provider_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed in {}: run ./test.sh (npm ci --prefix tests/oidc)",
            dir.display()
        );
        let config = self
            .dir
            .write("provider.json", self.spec.to_json(port).to_string());
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("provider.mjs"))
            .arg(&config)
            .current_dir(&dir)
            .env("NODE_ENV", "test");
        let (child, (issuer, port)) = spawn_until_line(
            cmd,
            "oidc-provider",
            PROVIDER_READY_DEADLINE,
            parse_ready,
            &self.out,
        )?;
        self.issuer = issuer;
        self.port = port;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the provider and waits until its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "oidc-provider still listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same port (same issuer; new keys, no sessions).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running provider");
        let (issuer, port) = (self.issuer.clone(), self.port);
        let start = Instant::now();
        // The port may be taken for a moment by someone else: retry within the deadline.
        while let Err(e) = self.spawn(port) {
            assert!(
                start.elapsed() < PROVIDER_READY_DEADLINE,
                "oidc-provider could not be restarted on port {port}: {e}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(self.issuer, issuer, "same port, same issuer");
    }

    pub fn stderr(&self) -> String {
        self.out.stderr()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() || std::env::var_os("GATEHOUSE_TEST_LOG").is_some() {
            eprintln!(
                "--- oidc-provider ({}) stderr ---\n{}",
                self.issuer,
                self.stderr()
            );
        }
    }
}
