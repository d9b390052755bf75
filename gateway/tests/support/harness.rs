//! Test harness: a real gateway on loopback port 0 with generated dev certificates, real TLS
//! clients, and small real upstreams. No sleeps as synchronisation: readiness comes from the
//! bound listeners, upstream events come through channels, and every wait has a deadline.
//!
//! Authentication is real: the harness builds the real services (memory store, users file,
//! casbin policy, audit log, signer), logs a user in through the core `Authenticator`
//! (password + current TOTP code) and starts a session; requests made with [`get`],
//! [`get_h2`], [`Harness::h1`], [`Harness::h2`] and [`Harness::raw`] carry its cookie.
//!
//! Temp dirs, upstreams, ports and TLS client configs come from the shared test kit
//! (`gatehouse-testkit`); this file holds only the in-process gateway.

#![allow(dead_code, unused_imports)] // each test crate uses a different part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::Config;
use gatehouse_core::audit::{AuditKey, AuditLog};
use gatehouse_core::identity::{Authenticator, NewUser, TotpCipher, Users, VerifiedIdentity};
use gatehouse_core::policy::PolicyHandle;
use gatehouse_core::secret::SecretKey;
use gatehouse_core::store::{MemoryStore, Store};
use gatehouse_gateway::web::assertion::AssertionSigner;
use gatehouse_gateway::web::csrf::CsrfKey;
use gatehouse_gateway::{
    Bound, DrainReport, Gateway, GatewayError, PolicyReloader, Reloader, Services,
};
use gatehouse_testkit::pki::{client_config_for, read_pem_cert};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

pub use gatehouse_testkit::tempdir::TestDir;
pub use gatehouse_testkit::upstream::recording::{Seen, silent_upstream, upstream};

pub const DEADLINE: Duration = Duration::from_secs(15);
pub const HOST: &str = "app.gatehouse.localhost";
/// The logged-in test user (group `staff`) and its password.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct-horse-7-battery";
/// A second user of group `staff`, not logged in (for the login tests).
pub const OTHER: &str = "bob";

thread_local! {
    /// The session cookie of the harness started on this test's thread (`#[tokio::test]`
    /// runs on one thread), added by [`get`] and [`get_h2`].
    static COOKIE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The `Cookie` header value of the current test's session.
pub fn cookie() -> String {
    COOKIE.with(|c| c.borrow().clone())
}

pub struct Harness {
    pub bound: Bound,
    pub reloader: Reloader,
    pub policy_reloader: PolicyReloader,
    pub services: Services,
    pub users: Users,
    pub cipher: TotpCipher,
    /// `__Host-gatehouse=<session id>` of the logged-in user, valid on [`HOST`].
    pub cookie: String,
    /// The logged-in user's identity (to start sessions on other hosts).
    pub identity: VerifiedIdentity,
    pub stop: CancellationToken,
    pub run: Option<JoinHandle<Result<DrainReport, GatewayError>>>,
    pub dir: TestDir,
}

/// Writes a config (gateway keys from `gateway_extra`, one app per `(name, host, upstream)`),
/// generates certificates, binds and runs the gateway.
pub async fn start(gateway_extra: &str, apps: &[(&str, &str, SocketAddr)]) -> Harness {
    start_with(gateway_extra, apps, Arc::new(MemoryStore::new())).await
}

/// [`start`] over the given store (e.g. a real Redis).
pub async fn start_with(
    gateway_extra: &str,
    apps: &[(&str, &str, SocketAddr)],
    store: Arc<dyn Store>,
) -> Harness {
    let dir = TestDir::new("gw");
    let certs = dir.0.join("certs");
    let cert = certs.join("gateway.crt");
    let key = certs.join("gateway.key");
    gatehouse_gateway::devcert::ensure(&certs, &cert, &key).unwrap();
    let mut toml = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nhttp_redirect_listen = \"127.0.0.1:0\"\n\
         public_url = \"https://gatehouse.localhost:8443\"\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\n{gateway_extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [bastion]\nenabled = false\n",
        cert.display(),
        key.display()
    );
    for (name, host, up) in apps {
        toml.push_str(&format!(
            "[[apps]]\nname = \"{name}\"\nhost = \"{host}\"\nupstream = \"http://{up}\"\n"
        ));
    }
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/model.conf");
    let mut policy = String::new();
    for (name, _, _) in apps {
        policy.push_str(&format!(
            "p, group:staff, app:{name}/*, *, allow\np, group:staff, app:{name}/denied/*, *, deny\n"
        ));
    }
    policy.push_str(&format!(
        "g, {USER}, group:staff\ng, {OTHER}, group:staff\n"
    ));
    std::fs::write(dir.0.join("policy.csv"), policy).unwrap();
    let data = dir.0.join("data");
    toml.push_str(&format!(
        "[identity]\nusers_file = \"{data}/users.toml\"\n\
         [policy]\nmodel = \"{model}\"\npolicy = \"{dir}/policy.csv\"\n[audit]\ndir = \"{data}/audit\"\n",
        data = data.display(),
        model = model.display(),
        dir = dir.0.display(),
    ));
    // A top-level key must come before every table.
    let toml = format!("data_dir = \"{}\"\n{toml}", data.display());
    let path = dir.0.join("gatehouse.toml");
    std::fs::write(&path, &toml).unwrap();
    let config = Config::load(&path).unwrap();
    gatehouse_gateway::check(&config).unwrap();
    let (services, users, cipher) = services(&config, store).await;
    let (cookie, identity) = login(&services, &users, &cipher).await;
    COOKIE.with(|c| *c.borrow_mut() = cookie.clone());
    let gw = Gateway::bind(Arc::new(config), services.clone())
        .await
        .unwrap();
    let bound = gw.bound();
    let reloader = gw.reloader();
    let policy_reloader = gw.policy_reloader();
    let stop = CancellationToken::new();
    let run = tokio::spawn(gw.run(stop.clone()));
    Harness {
        bound,
        reloader,
        policy_reloader,
        services,
        users,
        cipher,
        cookie,
        identity,
        stop,
        run: Some(run),
        dir,
    }
}

/// The real services over a memory store, with one user (`alice`, group `staff`).
pub async fn services(config: &Config, store: Arc<dyn Store>) -> (Services, Users, TotpCipher) {
    let key = SecretKey::generate().unwrap();
    let cipher = TotpCipher::new(&key).unwrap();
    let mut users = Users::load(&config.identity.users_file).unwrap();
    users
        .add(
            NewUser {
                name: USER,
                groups: &["staff".to_string()],
                password: PASSWORD,
                ssh_keys: &[],
            },
            &cipher,
        )
        .unwrap();
    users
        .add(
            NewUser {
                name: OTHER,
                groups: &["staff".to_string()],
                password: PASSWORD,
                ssh_keys: &[],
            },
            &cipher,
        )
        .unwrap();
    let audit = AuditLog::open(&config.audit.dir, AuditKey::new(&key)).unwrap();
    let authenticator =
        Authenticator::from_config(config, &key, store.clone(), audit.clone()).unwrap();
    let sso = gatehouse_core::identity::oidc::Sso::new(config, authenticator.clone()).unwrap();
    let services = Services {
        store,
        authenticator,
        policy: Arc::new(PolicyHandle::from_config(&config.policy).await.unwrap()),
        audit,
        signer: Arc::new(
            AssertionSigner::load_or_create(&config.data_dir, &config.gateway.public_url).unwrap(),
        ),
        csrf: CsrfKey::generate().unwrap(),
        sso,
        recordings: gatehouse_core::recording::Recordings::open(
            &config.recording.dir,
            gatehouse_core::recording::RecordingsOptions::default(),
            true,
        )
        .unwrap(),
        end_ssh: None,
    };
    (services, users, cipher)
}

/// Logs `alice` in through the authenticator (password + current code); returns the session
/// cookie header value for [`HOST`] and the verified identity (for sessions on other hosts,
/// [`Harness::cookie_for`]).
pub async fn login(
    services: &Services,
    users: &Users,
    cipher: &TotpCipher,
) -> (String, VerifiedIdentity) {
    let code = users.current_totp_code(USER, cipher).unwrap();
    let id = services
        .authenticator
        .verify_password_and_totp(USER, PASSWORD, &code, None)
        .await
        .unwrap();
    (session_cookie(services, &id, HOST).await, id)
}

/// A new session of `id` valid on `host`, as a `Cookie` header value.
pub async fn session_cookie(services: &Services, id: &VerifiedIdentity, host: &str) -> String {
    let token = services
        .authenticator
        .start_session(id, None, host)
        .await
        .unwrap();
    format!("__Host-gatehouse={}", token.expose())
}

impl Harness {
    /// A session of the logged-in user valid on `host`, as a `Cookie` header value (a
    /// session is refused on any other host than the one it was issued to).
    pub async fn cookie_for(&self, host: &str) -> String {
        session_cookie(&self.services, &self.identity, host).await
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.0.join("certs").join("ca.crt")
    }

    pub fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        connector(&self.ca(), alpn, None)
    }

    pub async fn tls(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.bound.https).await.unwrap();
        let name = ServerName::try_from(HOST).unwrap();
        self.connector(alpn).connect(name, tcp).await.unwrap()
    }

    /// Sends raw bytes over TLS (the session cookie added after the request line) and reads
    /// until the server closes (with a deadline).
    pub async fn raw(&self, bytes: &[u8]) -> String {
        self.raw_anonymous(&with_cookie_line(bytes, &self.cookie))
            .await
    }

    /// Sends raw bytes as they are (no cookie).
    pub async fn raw_anonymous(&self, bytes: &[u8]) -> String {
        let mut s = self.tls(&[b"http/1.1"]).await;
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
            .await
            .expect("server did not close the connection")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// One HTTP/1.1 request on a fresh connection, as sent (no cookie unless it has one).
    pub async fn h1(&self, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
        let io = TokioIo::new(self.tls(&[b"http/1.1"]).await);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        let resp = tokio::time::timeout(DEADLINE, send.send_request(req))
            .await
            .unwrap()
            .unwrap();
        collect(resp).await
    }

    /// One HTTP/2 request on a fresh connection.
    pub async fn h2(&self, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
        let io = TokioIo::new(self.tls(&[b"h2"]).await);
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = tokio::time::timeout(DEADLINE, send.send_request(req))
            .await
            .unwrap()
            .unwrap();
        collect(resp).await
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        plain_get(self.bound.admin, path, "localhost").await
    }

    pub async fn shutdown(&mut self) -> DrainReport {
        self.stop.cancel();
        let run = self.run.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

/// A TLS connector trusting the CA in the PEM file `ca`.
pub fn connector(
    ca: &Path,
    alpn: &[&[u8]],
    versions: Option<&[&'static rustls::SupportedProtocolVersion]>,
) -> TlsConnector {
    TlsConnector::from(client_config_for(&read_pem_cert(ca), alpn, versions))
}

pub async fn collect(resp: Response<Incoming>) -> (Response<()>, Bytes) {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (Response::from_parts(parts, ()), body)
}

/// Inserts `Cookie: <cookie>` after the first line of a raw HTTP/1 request.
pub fn with_cookie_line(bytes: &[u8], cookie: &str) -> Vec<u8> {
    match bytes.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            let mut out = bytes[..i + 2].to_vec();
            out.extend_from_slice(format!("Cookie: {cookie}\r\n").as_bytes());
            out.extend_from_slice(&bytes[i + 2..]);
            out
        }
        None => bytes.to_vec(),
    }
}

/// A GET with the current test's session cookie.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", HOST)
        .header("cookie", cookie())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A GET without any cookie.
pub fn get_anonymous(path: &str, accept: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", HOST);
    if let Some(a) = accept {
        b = b.header("accept", a);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// An HTTP/2 request: the authority goes in the URI (`:authority`), no Host header.
pub fn get_h2(path: &str) -> Request<Full<Bytes>> {
    let uri: Uri = format!("https://{HOST}{path}").parse().unwrap();
    Request::builder()
        .version(Version::HTTP_2)
        .uri(uri)
        .header("cookie", cookie())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A plain-HTTP GET (the admin listener): status and body text.
pub async fn plain_get(addr: SocketAddr, path: &str, host: &str) -> (StatusCode, String) {
    let r = gatehouse_testkit::client::plain_get(addr, host, path).await;
    (r.status, r.text())
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    gatehouse_testkit::net::closed_port()
}

/// The audit log's lines, oldest first.
pub fn audit_lines(h: &Harness) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(h.dir.0.join("data/audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}
