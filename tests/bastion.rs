//! The SSH bastion inside the real `gatehouse serve`: a real `sshd` target on loopback, users
//! made with the real CLI (`user add --ssh-key`), the real `ssh`/`scp` clients answering TOTP
//! through keyboard-interactive, the shared store (Redis) for `session list`/`session revoke`,
//! one audit log for both doors that `gatehouse audit verify` checks, and a recording left
//! playable by a `kill -9`. Its `Env` also serves bastion_throttle.rs (the login throttle
//! shared with the web login), bastion_preauth.rs (pre-authentication slots) and
//! bastion_live.rs (changes to users.toml on live connections).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::support;
pub(crate) use crate::support::sshd;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::client::{H1, H1Conn, empty, full};
use crate::support::gatehouse::{GatehouseSpec, binary, serve_command, spawn_until_ready};
use crate::support::identity::{
    LOGIN_COOKIE, LOGIN_PATH, PUBLIC_HOST, csrf_in, form, fresh_totp_window, otpauth_in,
    random_password, set_cookie, totp_from_base32, unix_now,
};
use crate::support::{Pki, QUICK, Redis, TestDir, within};
use serde_json::Value;
use sshd::{Client, Sshd, keygen, pub_path, text};
use totp_rs::Totp;

/// The policy: `sre` may use `db-prod-1` and `staging`; nobody may use `denied`.
const POLICY: &str = "p, group:sre, ssh:db-prod-1/root, ssh|sftp, allow\n\
                      p, group:sre, ssh:staging/root, ssh|sftp, allow\n";

/// A `gatehouse serve` with the bastion on, a target sshd and (optionally) Redis.
pub(crate) struct Env {
    pub(crate) child: Child,
    pub(crate) bastion: SocketAddr,
    pub(crate) gateway: SocketAddr,
    /// The admin listener (health, metrics).
    pub(crate) admin: SocketAddr,
    pub(crate) pki: Pki,
    secret_key: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    pub(crate) user_key: PathBuf,
    _sshd: Sshd,
    _redis: Option<Redis>,
    pub(crate) dir: TestDir,
}

/// A user made through the CLI.
pub(crate) struct User {
    pub(crate) name: String,
    password: String,
    totp: Totp,
}

impl User {
    /// The code of the step `offset` steps from now (-1, 0, 1 are accepted; each once).
    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    pub(crate) fn code(&self, offset: i64) -> String {
        let t = unix_now().saturating_add_signed(offset * 30);
        self.totp.generate(t).to_string()
    }
}

impl Env {
    pub(crate) fn start(redis: bool) -> Env {
        Self::start_with(redis, "")
    }

    /// [`Env::start`] with extra `[recording]` keys (e.g. `encrypt = true`).
    pub(crate) fn start_with(redis: bool, recording: &str) -> Env {
        Self::start_full(redis, recording, "", None)
    }

    /// [`Env::start_with`] with `policy` lines added to the bastion's [`POLICY`], and the
    /// gateway on `gateway_port` (a browser's `Origin` carries it: the gateway must know it).
    pub(crate) fn start_full(
        redis: bool,
        recording: &str,
        policy: &str,
        gateway_port: Option<u16>,
    ) -> Env {
        let dir = TestDir::new("bastion");
        let redis = redis.then(Redis::start);
        let pki = Pki::new(&dir.join("certs"));
        let cred = dir.join("target_cred");
        let cred_pub = keygen(&cred);
        let user_key = dir.join("alice_ed25519");
        keygen(&user_key);
        let sshd = Sshd::start(dir.path(), &[&cred_pub]);
        let spec = GatehouseSpec {
            store_url: redis.as_ref().map_or("memory://".into(), Redis::url),
            policy_csv: Some(format!("{POLICY}{policy}")),
            gateway_port,
            ..GatehouseSpec::default()
        };
        let rec = "[recording]\ndir = \"data/recordings\"\n";
        let toml = spec.to_toml();
        assert!(toml.contains(rec), "harness config changed:\n{toml}");
        let toml = toml.replace(rec, &format!("{rec}{recording}\n"));
        let off = "[bastion]\nenabled = false\n";
        assert!(toml.contains(off), "harness config changed:\n{toml}");
        let mut toml = toml.replace(off, "[bastion]\nhost_key = \"certs/bastion_ed25519\"\n");
        let target = |name: &str, totp: bool| {
            format!(
                "\n[[targets]]\nname = \"{name}\"\naddress = \"{}\"\nhost_key = \"{}\"\n\
                 logins = [\"root\"]\ncredential = \"{}\"\nrequire_totp = {totp}\n",
                sshd.addr,
                sshd.pinned,
                cred.display()
            )
        };
        toml.push_str(&target("db-prod-1", true));
        toml.push_str(&target("staging", false));
        toml.push_str(&target("denied", true));
        dir.write("gatehouse.toml", toml);
        spec.write_policies(&dir);
        let cmd = serve_command(Path::new(binary()), dir.path(), &spec.secret_key);
        let (child, ready, stdout, stderr) = spawn_until_ready(cmd);
        let bastion = ready.bastion.unwrap_or_else(|| {
            panic!("no bastion= on the ready line:\n{}", stdout.lock().unwrap())
        });
        sshd::wait_ssh_banner(bastion, sshd::BANNER_DEADLINE, "bastion");
        Env {
            child,
            bastion,
            gateway: ready.gateway,
            admin: ready.admin,
            pki,
            secret_key: spec.secret_key,
            stdout,
            stderr,
            user_key,
            _sshd: sshd,
            _redis: redis,
            dir,
        }
    }

    pub(crate) fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        support::gatehouse::cli(
            Path::new(binary()),
            self.dir.path(),
            &self.secret_key,
            args,
            stdin,
        )
    }

    /// `gatehouse user add NAME --groups G --ssh-key KEY.pub --password-stdin`.
    pub(crate) fn add_user(&self, name: &str, groups: &str) -> User {
        let password = random_password();
        let key = pub_path(&self.user_key);
        let out = self.cli(
            &[
                "user",
                "add",
                name,
                "--groups",
                groups,
                "--ssh-key",
                key.to_str().unwrap(),
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        );
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "user add: {stdout}\n{}",
            text(&out.stderr)
        );
        let (_, secret) = otpauth_in(&stdout).expect("an otpauth URI in `user add` output");
        User {
            name: name.to_string(),
            password,
            totp: totp_from_base32(&secret),
        }
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(self.dir.path(), self.bastion, &self.user_key)
    }

    /// Audit events (the `event` object of each line), oldest first.
    pub(crate) fn audit(&self) -> Vec<Value> {
        support::audit::audit_events_in(&self.dir.join("data/audit"))
    }

    /// Waits (deadline [`QUICK`]) for an audit event matching `pred`.
    pub(crate) fn expect_audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let events = self.audit();
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                start.elapsed() < QUICK,
                "no audit event {what}; events: {events:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The recordings (any format, read through core's reader), each as its JSON lines.
    pub(crate) fn casts(&self) -> Vec<Vec<Value>> {
        use gatehouse_core::recording::{RecordingId, RecordingKey, Recordings, RecordingsOptions};
        let dir = self.dir.join("data/recordings");
        let key = gatehouse_core::secret::SecretKey::from_base64(&self.secret_key).unwrap();
        let rec = Recordings::open(
            &dir,
            RecordingsOptions {
                key: Some(RecordingKey::new(&key)),
                ..RecordingsOptions::default()
            },
            false,
        )
        .unwrap();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".meta.json") else {
                continue;
            };
            let mut o = rec.open_cast(&RecordingId::parse(id).unwrap()).unwrap();
            let mut lines = vec![serde_json::to_value(o.reader.header()).unwrap()];
            while let Some(e) = o.reader.next_event().unwrap() {
                lines.push(serde_json::json!([e.time, e.code.as_str(), e.data]));
            }
            out.push(lines);
        }
        out
    }

    /// `POST /.gatehouse/login` with the whole form flow; the response status.
    pub(crate) async fn web_login(&self, user: &User, code: &str) -> u16 {
        self.web_session(user, code).await.0
    }

    /// [`Env::web_login`] on the public host: the status and the session cookie
    /// (`NAME=VALUE`) when one was set.
    pub(crate) async fn web_session(&self, user: &User, code: &str) -> (u16, Option<String>) {
        let cfg = self.pki.client_config(&[H1], None);
        let mut c = H1Conn::connect(self.gateway, PUBLIC_HOST, cfg.clone()).await;
        let req = c.request("GET", LOGIN_PATH, &[("accept", "text/html")], empty());
        let page = within(QUICK, "GET login form", c.send(req)).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let cookie = format!(
            "{LOGIN_COOKIE}={}",
            set_cookie(&page, LOGIN_COOKIE).expect("login cookie")
        );
        let csrf = csrf_in(&page.text()).expect("csrf field");
        let body = form(&[
            ("csrf", &csrf),
            ("user", &user.name),
            ("password", &user.password),
            ("code", code),
        ]);
        let mut c = H1Conn::connect(self.gateway, PUBLIC_HOST, cfg).await;
        let req = c.request(
            "POST",
            LOGIN_PATH,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &cookie),
            ],
            full(body),
        );
        let r = within(QUICK, "POST login", c.send(req)).await;
        let session = set_cookie(&r, crate::support::identity::SESSION_COOKIE)
            .map(|v| format!("{}={v}", crate::support::identity::SESSION_COOKIE));
        (r.status.as_u16(), session)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("GATEHOUSE_TEST_LOG").is_some() {
            eprintln!(
                "--- gatehouse stdout ---\n{}\n--- gatehouse stderr ---\n{}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
        }
    }
}

/// An OpenSSH ControlMaster connection: one TOTP code, several sessions over it.
pub(crate) struct Master {
    child: Option<Child>,
    socket: PathBuf,
}

impl Master {
    pub(crate) fn open(client: &Client, dest: &str, code: &str) -> Master {
        let socket = client.dir.join(format!("mux-{}", std::process::id()));
        let mut c = client.command(
            "ssh",
            Some(code),
            &[
                "ControlMaster=yes",
                &format!("ControlPath={}", socket.display()),
            ],
        );
        c.arg("-N")
            .arg(format!("{dest}@127.0.0.1"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("starting the ssh master");
        // Ready when the control socket answers `-O check` (authenticated).
        let start = Instant::now();
        loop {
            if Self::check(&socket) {
                break;
            }
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                panic!("ssh master exited ({st}): {err}");
            }
            assert!(
                start.elapsed() < sshd::CLIENT_DEADLINE,
                "ssh master not ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Master {
            child: Some(child),
            socket,
        }
    }

    fn check(socket: &Path) -> bool {
        socket.exists()
            && Command::new("ssh")
                .args(["-F", "/dev/null", "-o"])
                .arg(format!("ControlPath={}", socket.display()))
                .args(["-O", "check", "x"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    pub(crate) fn opt(&self) -> String {
        format!("ControlPath={}", self.socket.display())
    }

    /// Runs `cmd` in a new session over the master (no authentication).
    pub(crate) fn ssh(&self, client: &Client, cmd: &str) -> Output {
        let mut c = client.command("ssh", None, &["ControlMaster=no", &self.opt()]);
        c.arg("x@127.0.0.1").arg(cmd);
        sshd::run(c, sshd::CLIENT_DEADLINE)
    }

    /// Waits for the master process to exit (e.g. after a revocation).
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let start = Instant::now();
        while start.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_through_the_binary_exec_scp_recording_denial_sessions_and_revocation() {
    let env = tokio::task::spawn_blocking(|| Env::start(true))
        .await
        .unwrap();
    let alice = env.add_user("alice", "sre");
    let client = env.client();
    fresh_totp_window(8).await;

    tokio::task::block_in_place(|| {
        // Login with key + TOTP (keyboard-interactive via SSH_ASKPASS) as a ControlMaster.
        let mut master = Master::open(&client, "alice:root@db-prod-1", &alice.code(0));

        // exec with exit status, over the authenticated connection.
        let out = master.ssh(
            &client,
            "echo hello-from-target; echo to-stderr >&2; exit 3",
        );
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("hello-from-target"));
        assert!(text(&out.stderr).contains("to-stderr"));

        // scp upload, checked on the target through the bastion.
        let local = env.dir.join("upload.bin");
        let data: Vec<u8> = (0..1_000_003u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&local, &data).unwrap();
        let remote = env.dir.join("uploaded-on-target.bin");
        let mut scp = client.command("scp", None, &["ControlMaster=no", &master.opt()]);
        scp.arg(&local)
            .arg(format!("x@127.0.0.1:{}", remote.display()));
        let out = sshd::run(scp, sshd::CLIENT_DEADLINE);
        assert!(out.status.success(), "scp: {}", text(&out.stderr));
        // Over the same ControlMaster connection, right after the scp: the exit status must
        // reach the client before the channel closes (the bastion holds the target's EOF
        // until its exit status follows).
        let out = master.ssh(&client, &format!("sha256sum {}", remote.display()));
        assert!(
            out.status.success(),
            "sha256sum over the bastion: {} {} {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout).split_whitespace().next().unwrap_or(""),
            sshd::sha256_file(&local),
            "the uploaded file differs"
        );

        // The recording of the exec is on disk, read back.
        let casts = env.casts();
        let exec = casts
            .iter()
            .find(|c| c[0]["title"].as_str().is_some_and(|t| t.contains("exit 3")))
            .unwrap_or_else(|| panic!("no recording of the exec: {casts:#?}"));
        assert_eq!(exec[0]["version"], 2);
        assert!(
            exec[0]["title"]
                .as_str()
                .unwrap()
                .starts_with("alice:root@db-prod-1")
        );
        assert!(
            exec.iter().skip(1).any(|e| e[2]
                .as_str()
                .is_some_and(|d| d.contains("hello-from-target"))),
            "{exec:#?}"
        );

        // Audit: login through the shared authenticator, allow decisions, session records.
        env.expect_audit("login_success ssh-key+totp", |e| {
            e["event"] == "login_success" && e["user"] == "alice" && e["method"] == "ssh-key+totp"
        });
        env.expect_audit("access_allowed ssh", |e| {
            e["event"] == "access_allowed" && e["object"] == "ssh:db-prod-1/root"
        });
        let started = env.expect_audit("ssh_session_start", |e| {
            e["event"] == "ssh_session_start" && e["user"] == "alice" && e["request"] == "exec"
        });
        // Client address and session id, the same in the decision that allowed it.
        assert_eq!(started["client_addr"], "127.0.0.1", "{started}");
        let session = started["session"]
            .as_str()
            .expect("a session id")
            .to_string();
        env.expect_audit("access_allowed of the same session", |e| {
            e["event"] == "access_allowed"
                && e["session"] == session.as_str()
                && e["client_addr"] == "127.0.0.1"
        });

        // `session list` (Redis) shows the live SSH connection.
        let out = env.cli(&["session", "list"], None);
        let listed = text(&out.stdout);
        assert!(out.status.success(), "{listed}{}", text(&out.stderr));
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with("alice") && l.contains("ssh-key+totp")),
            "{listed}"
        );

        // A key-only target (require_totp = false) needs no code.
        let out = client.ssh("alice:root@staging", None, "echo key-only");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("key-only"));
        env.expect_audit("login_success ssh-key", |e| {
            e["event"] == "login_success" && e["method"] == "ssh-key"
        });

        // A target the policy does not allow: refused, audited as an alert.
        let out = client.ssh(
            "alice:root@denied",
            Some(&alice.code(1)),
            "echo must-not-run",
        );
        assert_ne!(out.status.code(), Some(0));
        assert!(!text(&out.stdout).contains("must-not-run"));
        let denied = env.expect_audit("access_denied", |e| {
            e["event"] == "access_denied" && e["object"] == "ssh:denied/root"
        });
        assert!(
            denied["incident_id"]
                .as_str()
                .is_some_and(|i| i.starts_with("inc-"))
        );

        // `session revoke alice` ends the live SSH connection.
        let out = env.cli(&["session", "revoke", "alice"], None);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            master.wait_exit(QUICK),
            "the revoked ssh connection is still open"
        );
        env.expect_audit("ssh_connection_close revoked", |e| {
            e["event"] == "ssh_connection_close" && e["reason"] == "revoked"
        });
        env.expect_audit("ssh_session_end", |e| {
            e["event"] == "ssh_session_end" && e["exit_status"] == 3
        });
        let out = env.cli(&["session", "list"], None);
        assert!(
            !text(&out.stdout).lines().any(|l| l.starts_with("alice")),
            "{}",
            text(&out.stdout)
        );
    });

    // A web login beside the SSH records: one chain, and `audit verify` passes over both.
    assert_eq!(env.web_login(&alice, &alice.code(-1)).await, 303);
    env.expect_audit("web login_success", |e| {
        e["event"] == "login_success" && e["method"] == "password+totp"
    });
    let events = env.audit();
    for kind in [
        "ssh_auth",
        "ssh_connection_open",
        "ssh_session_start",
        "login_success",
    ] {
        assert!(
            events.iter().any(|e| e["event"] == kind),
            "no {kind} in the log"
        );
    }
    let out = tokio::task::block_in_place(|| env.cli(&["audit", "verify"], None));
    assert!(
        out.status.success() && text(&out.stdout).contains("audit log ok"),
        "audit verify over a mixed web and ssh log: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gatehouse_leaves_a_playable_recording_prefix() {
    let mut env = tokio::task::spawn_blocking(|| Env::start(false))
        .await
        .unwrap();
    env.add_user("alice", "sre");
    let client = env.client();
    tokio::task::block_in_place(|| {
        // A live interactive shell on a key-only target.
        let mut c = client.command("ssh", None, &[]);
        c.arg("-tt")
            .arg("alice:root@staging@127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut ssh = c.spawn().unwrap();
        let mut stdin = ssh.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(ssh.stdout.take().unwrap());
        std::io::Write::write_all(&mut stdin, b"echo before-kill-$((6*7))\n").unwrap();
        let start = Instant::now();
        let mut seen = String::new();
        while !seen.contains("before-kill-42") {
            let mut line = String::new();
            let n = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
            assert!(
                n > 0 && start.elapsed() < QUICK,
                "no output through the bastion: {seen}"
            );
            seen.push_str(&line);
        }
        // The output is on disk as soon as it was relayed (streamed, not buffered to the end).
        let dir = env.dir.join("data/recordings");
        let cast = loop {
            let found = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("before-kill-42")));
            if let Some(p) = found {
                break p;
            }
            assert!(
                start.elapsed() < QUICK,
                "the output never reached the recording"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // SIGKILL: no drain, no flush, no clean end of the recording.
        env.child.kill().unwrap();
        env.child.wait().unwrap();
        let _ = ssh.kill();
        let _ = ssh.wait();

        let read = gatehouse_core::recording::read_cast(&cast).expect("core reads the prefix");
        assert_eq!(read.header.version, 2);
        assert!(
            read.events
                .iter()
                .any(|e| e.data.contains("before-kill-42")),
            "{read:?}"
        );
        let played = Command::new("script")
            .args([
                "-qfec",
                &format!("asciinema cat {}", cast.display()),
                "/dev/null",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("script (bsdutils) and asciinema must be installed");
        assert!(
            played.status.success() && text(&played.stdout).contains("before-kill-42"),
            "asciinema cat of the prefix: {}{}",
            text(&played.stdout),
            text(&played.stderr)
        );
    });
}

#[test]
fn check_config_reports_an_unreadable_target_credential() {
    let dir = TestDir::new("bastion-check");
    let pki = Pki::new(&dir.join("certs"));
    let _ = &pki;
    let spec = GatehouseSpec::default();
    let toml = spec.to_toml().replace(
        "[bastion]\nenabled = false\n",
        "[bastion]\nhost_key = \"certs/bastion_ed25519\"\n",
    );
    let good = dir.join("cred");
    keygen(&good);
    let target = |cred: &Path| {
        format!(
            "\n[[targets]]\nname = \"db\"\naddress = \"127.0.0.1:22\"\n\
             host_key = \"{}\"\nlogins = [\"root\"]\ncredential = \"{}\"\n",
            std::fs::read_to_string(pub_path(&good))
                .unwrap()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            cred.display()
        )
    };
    spec.write_policies(&dir);
    let ok = dir.write("ok.toml", format!("{toml}{}", target(&good)));
    let (code, out, err) = support::gatehouse::check_config(&ok);
    assert_eq!(code, Some(0), "{out}{err}");
    let missing = dir.write(
        "missing.toml",
        format!("{toml}{}", target(&dir.join("nope"))),
    );
    let (code, _, err) = support::gatehouse::check_config(&missing);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("target `db`") && err.contains("nope"), "{err}");
    dir.write("garbage", "not a key\n");
    let garbage = dir.write(
        "garbage.toml",
        format!("{toml}{}", target(&dir.join("garbage"))),
    );
    let (code, _, err) = support::gatehouse::check_config(&garbage);
    assert_eq!(code, Some(1), "{err}");
}
