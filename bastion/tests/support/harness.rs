//! Test harness: a real OpenSSH `sshd` as the target, the bastion in-process on real core
//! objects (the authenticator over a users file and a memory store, a policy loaded from a
//! casbin file, an audit log in a temp dir), and the real OpenSSH client (`ssh`, `scp`,
//! `sftp`) driving it. Every component is started on a free loopback port in a temp dir,
//! waited on with a deadline, and stopped on drop. A missing component fails the test.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_bastion::{Bastion, Limits, Registry, Services};
use gatehouse_core::audit::{AuditEvent, AuditKey, AuditLog};
use gatehouse_core::identity::{Authenticator, LockoutPolicy, NewUser, TotpCipher, Users};
use gatehouse_core::policy::PolicyHandle;
use gatehouse_core::recording::{RecordingKey, Recordings, RecordingsOptions};
use gatehouse_core::secret::SecretKey;
use gatehouse_core::store::{MemoryStore, Store};
use gatehouse_testkit::ssh::{Client, Sshd, keygen, pinned, wait_ssh_banner};
use tokio_util::sync::CancellationToken;

pub use gatehouse_testkit::net::free_port;
pub use gatehouse_testkit::process::{
    read_until, run_with_deadline, sha256_file, text, wait_output, wait_output_parts, write_all,
};
pub use gatehouse_testkit::tempdir::TestDir as TempDir;

/// The test users' password (never used over SSH; `user add` wants a strong one).
pub const PASSWORD: &str = "correct-Horse-7-battery";
/// The master key of the test's audit MAC and TOTP encryption.
pub const SECRET: [u8; 32] = [7; 32];

/// Everything a test needs: target sshd, bastion, keys, and the core objects behind it.
pub struct Env {
    pub tmp: TempDir,
    pub sshd: Sshd,
    pub addr: SocketAddr,
    pub registry: Registry,
    pub user: String,
    pub user_key: PathBuf,
    pub other_key: PathBuf,
    pub recordings: PathBuf,
    pub known_hosts: PathBuf,
    pub audit_dir: PathBuf,
    pub users_file: PathBuf,
    pub store: Arc<dyn Store>,
    cipher: TotpCipher,
    shutdown: CancellationToken,
    run: Option<tokio::task::JoinHandle<()>>,
}

pub struct Options {
    pub limits: Limits,
    /// Extra rules on top of: ssh+sftp on db-prod-1, staging, multi, badkey; nothing on denied.
    pub port_forward: bool,
    pub recording_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits {
                idle_timeout: Duration::from_secs(600),
                max_session: Duration::from_secs(3600),
            },
            port_forward: false,
            recording_dir: None,
        }
    }
}

/// The policy file of a test: the user may use ssh and sftp on every target but `denied`.
fn policy_csv(user: &str, port_forward: bool) -> String {
    let mut csv = String::new();
    for target in ["db-prod-1", "staging", "multi", "badkey"] {
        csv += &format!("p, {user}, ssh:{target}/*, ssh|sftp, allow\n");
    }
    if port_forward {
        csv += &format!("p, {user}, ssh:staging/*, port-forward, allow\n");
    }
    csv
}

/// The core services on files under `dir`: users (one user with `user_pub`), policy, audit.
async fn core_services(
    dir: &Path,
    user: &str,
    user_pub: &str,
    port_forward: bool,
    recordings: &Path,
) -> (Services, TotpCipher, Arc<dyn Store>) {
    let key = SecretKey::from_bytes(SECRET);
    let cipher = TotpCipher::new(&key).unwrap();
    let users_file = dir.join("users.toml");
    Users::load(&users_file)
        .unwrap()
        .add(
            NewUser {
                name: user,
                groups: &["sre".to_string()],
                password: PASSWORD,
                ssh_keys: &[user_pub.to_string()],
            },
            &cipher,
        )
        .unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/model.conf");
    let policy_file = dir.join("policy.csv");
    std::fs::write(&policy_file, policy_csv(user, port_forward)).unwrap();
    let policy = PolicyHandle::load(&model, &policy_file).await.unwrap();
    let audit = AuditLog::open(&dir.join("audit"), AuditKey::new(&key)).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let authenticator = Authenticator::new(
        users_file,
        TotpCipher::new(&key).unwrap(),
        store.clone(),
        audit.clone(),
        Duration::from_secs(3600),
        Duration::from_secs(600),
        LockoutPolicy::default(),
    );
    let recordings = Recordings::open(
        recordings,
        RecordingsOptions {
            key: Some(RecordingKey::new(&key)),
            ..RecordingsOptions::default()
        },
        true,
    )
    .unwrap();
    let services = Services {
        authenticator,
        policy: Arc::new(policy),
        audit,
        recordings,
    };
    (services, cipher, store)
}

impl Env {
    pub async fn start(tag: &str) -> Env {
        Self::start_with(tag, Options::default()).await
    }

    pub async fn start_with(tag: &str, opts: Options) -> Env {
        let tmp = TempDir::new(tag);
        let dir = tmp.path().to_path_buf();
        let user_key = dir.join("user_ed25519");
        let user_pub = keygen(&user_key);
        let other_key = dir.join("other_ed25519");
        keygen(&other_key);
        let cred = dir.join("target_cred");
        let cred_pub = keygen(&cred);
        let sshd = Sshd::start(&dir, &[&cred_pub]);
        let wrong_key = dir.join("wrong_host");
        let wrong_pinned = pinned(&keygen(&wrong_key));
        let recordings = opts
            .recording_dir
            .clone()
            .unwrap_or_else(|| dir.join("recordings"));
        let target = |name: &str, logins: &str, key: &str, totp: bool| {
            format!(
                "[[targets]]\nname = \"{name}\"\naddress = \"{addr}\"\nhost_key = \"{key}\"\nlogins = {logins}\ncredential = \"{cred}\"\nrequire_totp = {totp}\n\n",
                addr = sshd.addr,
                cred = cred.display()
            )
        };
        let pinned = sshd.pinned.clone();
        let mut toml = format!(
            "data_dir = \"{d}/data\"\n[bastion]\nlisten = \"127.0.0.1:0\"\nhost_key = \"{d}/bastion_host_key\"\n[recording]\ndir = \"{r}\"\n[audit]\ndir = \"{d}/audit\"\n\n",
            d = dir.display(),
            r = recordings.display()
        );
        toml += &target("db-prod-1", "[\"root\"]", &pinned, true);
        toml += &target("staging", "[\"root\"]", &pinned, false);
        toml += &target("multi", "[\"root\", \"daemon\"]", &pinned, false);
        toml += &target("denied", "[\"root\"]", &pinned, false);
        toml += &target("badkey", "[\"root\"]", &wrong_pinned, false);
        let cfg_path = dir.join("gatehouse.toml");
        std::fs::write(&cfg_path, &toml).unwrap();
        let config = Arc::new(
            gatehouse_core::Config::from_toml(&toml, Some(&cfg_path)).expect("valid test config"),
        );

        let user = format!("u{}", tag.replace('_', "-"));
        let (services, cipher, store) =
            core_services(&dir, &user, &user_pub, opts.port_forward, &recordings).await;
        let bastion = Bastion::bind_with_limits(config, services, opts.limits)
            .await
            .expect("bastion binds");
        let addr = bastion.local_addr().unwrap();
        let registry = bastion.registry();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let run = tokio::spawn(async move {
            bastion.run(token).await.unwrap();
        });
        wait_ssh_banner(addr, Duration::from_secs(10), "bastion");
        let known_hosts = dir.join("known_hosts");
        Env {
            audit_dir: dir.join("audit"),
            users_file: dir.join("users.toml"),
            tmp,
            sshd,
            addr,
            registry,
            user,
            user_key,
            other_key,
            recordings,
            known_hosts,
            store,
            cipher,
            shutdown,
            run: Some(run),
        }
    }

    /// The user's TOTP code now.
    pub fn code(&self) -> String {
        Users::load(&self.users_file)
            .unwrap()
            .current_totp_code(&self.user, &self.cipher)
            .unwrap()
    }

    /// The audit log's events so far, oldest first.
    pub fn events(&self) -> Vec<AuditEvent> {
        audit_events(&self.audit_dir)
    }

    /// Waits until an audit event matching `pred` is in the log, or `timeout` passes.
    pub async fn wait_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&AuditEvent) -> bool,
    ) -> Option<AuditEvent> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if Instant::now() > end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Revokes every session of `user` in the store (as `gatehouse session revoke` does).
    pub async fn revoke(&self, user: &str) -> u64 {
        self.store.revoke_user(user).await.unwrap()
    }

    /// `ssh` (or `scp`/`sftp`) with the isolating options; `totp` answers keyboard-interactive.
    pub fn client(&self, program: &str, key: &Path, totp: Option<&str>) -> Command {
        self.client_opts(program, key, totp, &[])
    }

    /// [`Env::client`] with `-o` options placed first (OpenSSH keeps the first value given).
    pub fn client_opts(
        &self,
        program: &str,
        key: &Path,
        totp: Option<&str>,
        first: &[&str],
    ) -> Command {
        let client = Client {
            bastion: self.addr,
            key: key.to_path_buf(),
            known_hosts: self.known_hosts.clone(),
            dir: self.tmp.path().to_path_buf(),
        };
        client.command(program, totp, first)
    }

    /// `ssh` to `dest` (e.g. `USER:root@staging`) running `cmd`.
    pub fn ssh(&self, dest: &str, totp: Option<&str>, cmd: &str) -> Output {
        let mut c = self.client("ssh", &self.user_key.clone(), totp);
        c.arg(format!("{dest}@127.0.0.1")).arg(cmd);
        run_with_deadline(c, Duration::from_secs(60))
    }

    pub fn dest(&self, rest: &str) -> String {
        format!("{}:{rest}", self.user)
    }

    /// The recording files (`.cast`, `.cast.gz`, `.cast.enc`), sorted.
    pub fn cast_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.recordings)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| {
                        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        [".cast", ".cast.gz", ".cast.enc"]
                            .iter()
                            .any(|x| n.ends_with(x))
                            && !n.starts_with('.')
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A recording's events as plain asciicast lines (decompressed, decrypted), read through
    /// core's reader by the id in the file name.
    pub fn cast_lines(&self, path: &Path) -> Vec<serde_json::Value> {
        let name = path.file_name().unwrap().to_str().unwrap();
        let id = gatehouse_core::recording::RecordingId::parse(&name[..32]).unwrap();
        let rec = Recordings::open(
            &self.recordings,
            RecordingsOptions {
                key: Some(RecordingKey::new(&SecretKey::from_bytes(SECRET))),
                ..RecordingsOptions::default()
            },
            false,
        )
        .unwrap();
        let mut o = rec.open_cast(&id).unwrap();
        let mut lines = vec![serde_json::to_value(o.reader.header()).unwrap()];
        while let Some(e) = o.reader.next_event().unwrap() {
            lines.push(serde_json::json!([e.time, e.code.as_str(), e.data]));
        }
        lines
    }

    /// The recording whose header title contains `needle` (waits for it to be complete).
    pub fn cast_with_title(&self, needle: &str) -> (PathBuf, Vec<serde_json::Value>) {
        for p in self.cast_files() {
            let lines = self.cast_lines(&p);
            if lines
                .first()
                .and_then(|h| h["title"].as_str())
                .is_some_and(|t| t.contains(needle))
            {
                return (p, lines);
            }
        }
        panic!("no recording titled {needle:?} in {:?}", self.cast_files());
    }

    pub async fn stop(mut self) {
        self.drain().await;
    }

    /// Shuts the bastion down and waits for it to drain (the temp dir stays until drop).
    pub async fn drain(&mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.run.take() {
            tokio::time::timeout(Duration::from_secs(40), r)
                .await
                .expect("bastion drains")
                .unwrap();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The events of the audit log in `dir` (every segment, oldest first). The log's own checks
/// (MAC, chain) are `gatehouse audit verify`'s; here each line's `event` is read back as
/// core's typed event, so a record core cannot read fails the test.
pub fn audit_events(dir: &Path) -> Vec<AuditEvent> {
    gatehouse_testkit::audit::records_in(dir)
        .into_iter()
        .map(|v| {
            serde_json::from_value(v["event"].clone())
                .unwrap_or_else(|e| panic!("an audit event core cannot read ({e}): {v}"))
        })
        .collect()
}
