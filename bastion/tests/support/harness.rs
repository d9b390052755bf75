//! Test harness: a real OpenSSH `sshd` as the target, the bastion in-process on real core
//! objects (the authenticator over a users file and a memory store, a policy loaded from a
//! casbin file, an audit log in a temp dir), and the real OpenSSH client (`ssh`, `scp`,
//! `sftp`) driving it. Every component is started on a free loopback port in a temp dir,
//! waited on with a deadline, and stopped on drop. A missing component fails the test.
#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_bastion::{Bastion, Limits, Registry, Services};
use gatehouse_core::audit::{AuditEvent, AuditKey, AuditLog};
use gatehouse_core::identity::{Authenticator, LockoutPolicy, NewUser, TotpCipher, Users};
use gatehouse_core::policy::PolicyHandle;
use gatehouse_core::recording::{RecordingKey, Recordings, RecordingsOptions};
use gatehouse_core::secret::SecretKey;
use gatehouse_core::store::{MemoryStore, Store};
use tokio_util::sync::CancellationToken;

/// The test users' password (never used over SSH; `user add` wants a strong one).
pub const PASSWORD: &str = "correct-Horse-7-battery";
/// The master key of the test's audit MAC and TOTP encryption.
pub const SECRET: [u8; 32] = [7; 32];

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 = rand::random();
        let p = std::env::temp_dir().join(format!("gh-bastion-{tag}-{n:016x}"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("GH_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn keygen(path: &Path) -> String {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen must be installed (openssh-client)");
    assert!(st.success(), "ssh-keygen failed");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// Waits until `addr` accepts and sends an SSH banner.
pub fn wait_ssh_banner(addr: SocketAddr, deadline: Duration, what: &str) {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 8];
            if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0") {
                return;
            }
        }
        assert!(
            Instant::now() < end,
            "{what} on {addr} did not answer with an SSH banner in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real OpenSSH server as the target.
pub struct Sshd {
    child: Child,
    pub addr: SocketAddr,
    pub host_key_pub: String,
    stderr_path: PathBuf,
}

impl Sshd {
    pub fn start(dir: &Path, authorized: &[&str]) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "openssh-server must be installed (/usr/sbin/sshd)"
        );
        std::fs::create_dir_all("/run/sshd").expect("privilege separation directory /run/sshd");
        let sdir = dir.join(format!("sshd-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&sdir).unwrap();
        let host_key = sdir.join("host_ed25519");
        let host_key_pub = keygen(&host_key);
        std::fs::write(sdir.join("authorized_keys"), authorized.join("\n") + "\n").unwrap();
        let port = free_port();
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nUsePAM no\nStrictModes no\nPidFile none\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             AllowTcpForwarding yes\nAllowAgentForwarding yes\nX11Forwarding no\nAcceptEnv LANG LC_* TERM GH_*\nSubsystem sftp internal-sftp\n\
             LogLevel ERROR\nMaxSessions 20\nMaxStartups 100\n",
            hk = host_key.display(),
            ak = sdir.join("authorized_keys").display()
        );
        let cfg_path = sdir.join("sshd_config");
        std::fs::write(&cfg_path, cfg).unwrap();
        let stderr_path = sdir.join("stderr.log");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("cannot start /usr/sbin/sshd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut s = Sshd {
            child,
            addr,
            host_key_pub,
            stderr_path,
        };
        if std::panic::catch_unwind(|| wait_ssh_banner(addr, Duration::from_secs(15), "sshd"))
            .is_err()
        {
            let _ = s.child.kill();
            panic!(
                "sshd did not start: {}",
                std::fs::read_to_string(&s.stderr_path).unwrap_or_default()
            );
        }
        if let Ok(Some(st)) = s.child.try_wait() {
            panic!(
                "sshd exited ({st}): {}",
                std::fs::read_to_string(&s.stderr_path).unwrap_or_default()
            );
        }
        s
    }

    /// The host key as a pinned line (`ssh-ed25519 AAAA...` without comment).
    pub fn pinned(&self) -> String {
        self.host_key_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let wrong_pub = keygen(&wrong_key);
        let wrong_pinned: String = wrong_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
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
        let pinned = sshd.pinned();
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

    /// Writes an askpass script that answers the TOTP prompt with `code`.
    pub fn askpass(&self, code: &str) -> PathBuf {
        let p = self
            .tmp
            .path()
            .join(format!("askpass-{:08x}.sh", rand::random::<u32>()));
        std::fs::write(&p, format!("#!/bin/sh\necho '{code}'\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        p
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
        assert!(
            Path::new(&format!("/usr/bin/{program}")).exists(),
            "openssh-client must be installed ({program})"
        );
        let mut c = Command::new(program);
        c.arg("-F").arg("/dev/null");
        for o in first {
            c.arg("-o").arg(o);
        }
        if program == "ssh" {
            c.arg("-p").arg(self.addr.port().to_string());
        } else {
            c.arg("-P").arg(self.addr.port().to_string());
        }
        c.arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()));
        c.args([
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=20",
        ]);
        c.args([
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "LogLevel=ERROR",
        ]);
        c.arg("-i").arg(key);
        match totp {
            Some(code) => {
                c.env("SSH_ASKPASS", self.askpass(code))
                    .env("SSH_ASKPASS_REQUIRE", "force")
                    .env("DISPLAY", ":0");
                c.args([
                    "-o",
                    "KbdInteractiveAuthentication=yes",
                    "-o",
                    "BatchMode=no",
                ]);
            }
            None => {
                c.args(["-o", "BatchMode=yes"]);
            }
        }
        c.stdin(Stdio::null());
        c
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

/// Runs a client with a deadline; the output includes what it printed.
pub fn run_with_deadline(mut c: Command, deadline: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("client starts");
    wait_output(child, deadline)
}

pub fn wait_output(mut child: Child, deadline: Duration) -> Output {
    let end = Instant::now() + deadline;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn sha256_file(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Reads lines from a child's stdout until one contains `needle` (with a deadline).
pub fn read_until(reader: &mut impl BufRead, needle: &str, deadline: Duration) -> String {
    let end = Instant::now() + deadline;
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap_or(0);
        all.push_str(&line);
        if all.contains(needle) {
            return all;
        }
        assert!(
            n > 0 && Instant::now() < end,
            "did not see {needle:?}; got {all:?}"
        );
    }
}

pub fn write_all(w: &mut impl Write, s: &str) {
    w.write_all(s.as_bytes()).unwrap();
    w.flush().unwrap();
}

/// Waits for a child whose stdout is already wrapped; returns (stdout rest, stderr).
pub fn wait_output_parts(
    mut child: Child,
    mut stdout: impl Read + Send + 'static,
    mut stderr: impl Read + Send + 'static,
    deadline: Duration,
) -> (String, String) {
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        text(&s)
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        text(&s)
    });
    let end = Instant::now() + deadline;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (out_t.join().unwrap(), err_t.join().unwrap())
}

/// The events of the audit log in `dir` (every segment, oldest first). The log's own checks
/// (MAC, chain) are `gatehouse audit verify`'s; here each line's `event` is read back as
/// core's typed event, so a record core cannot read fails the test.
pub fn audit_events(dir: &Path) -> Vec<AuditEvent> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("audit lines are JSON");
            let event = serde_json::from_value(v["event"].clone())
                .unwrap_or_else(|e| panic!("an audit event core cannot read ({e}): {line}"));
            out.push(event);
        }
    }
    out
}
