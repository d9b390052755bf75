//! The `gatehouse` binary under test: a generated config in a temp dir (store URL, users file,
//! casbin model + policy written beside it, audit dir, session timeouts; the secret key passed
//! as `GATEHOUSE_SECRET_KEY`), readiness by the `gatehouse ready:` stdout line (with a
//! deadline), ports read from that line, stderr captured and printed when the test fails, the
//! process killed on drop. h1/h2 connections carry the session cookie once signed in.

mod spec;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use spec::{
    AppSpec, GatehouseSpec, TEST_GROUP, TEST_USER, default_policy, random_secret_key, repo_model,
};

use crate::client::{H1, H1Conn, H2, H2Conn, RawConn};
use crate::pki::Pki;
use crate::process::{Captured, output_with_stdin, spawn_until_line};
use crate::tempdir::TestDir;

/// How long the binary may take to print its ready line (debug build, 2 busy cores).
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Addresses announced on the ready line.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub redirect: Option<SocketAddr>,
    /// The SSH bastion's address, when it is enabled.
    pub bastion: Option<SocketAddr>,
}

/// Parses `gatehouse ready: gateway=https://IP:PORT admin=http://IP:PORT[ redirect=http://IP:PORT]
/// [ bastion=IP:PORT]`.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.trim().strip_prefix("gatehouse ready:")?;
    let mut gateway = None;
    let mut admin = None;
    let mut redirect = None;
    let mut bastion = None;
    for word in rest.split_whitespace() {
        if let Some(v) = word.strip_prefix("gateway=https://") {
            gateway = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("admin=http://") {
            admin = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("redirect=http://") {
            redirect = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("bastion=") {
            bastion = v.parse().ok();
        }
    }
    Some(Ready {
        gateway: gateway?,
        admin: admin?,
        redirect,
        bastion,
    })
}

/// A running `gatehouse` process.
pub struct Gatehouse {
    binary: PathBuf,
    child: Child,
    pub ready: Ready,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub pki: Pki,
    out: Captured,
    exit: Option<ExitStatus>,
    pub spec: GatehouseSpec,
    /// The `Cookie` header value [`Gatehouse::h1`] and friends send (set by
    /// [`Gatehouse::use_cookie`]).
    cookie: Mutex<Option<String>>,
    // Dropped last: the process must be gone before its directory is.
    pub dir: TestDir,
}

/// Spawns `cmd` with piped output and waits for its ready line: the child, the addresses it
/// announced, and its stdout and stderr so far (filled on by reader threads).
pub fn spawn_until_ready(cmd: Command) -> (Child, Ready, Arc<Mutex<String>>, Arc<Mutex<String>>) {
    let out = Captured::default();
    let (child, ready) = spawn_until_line(cmd, "gatehouse", READY_DEADLINE, parse_ready, &out)
        .unwrap_or_else(|e| panic!("{e}"));
    (child, ready, out.stdout, out.stderr)
}

/// `BINARY serve --config DIR/gatehouse.toml` in `dir`, with the secret key in the
/// environment (never in argv).
pub fn serve_command(binary: &Path, dir: &Path, secret_key: &str) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("gatehouse.toml"))
        .env("GATEHOUSE_SECRET_KEY", secret_key)
        .current_dir(dir);
    cmd
}

/// Runs `BINARY --config DIR/gatehouse.toml ARGS...` in `dir` with the secret key in the
/// environment; `stdin` piped in.
pub fn cli(
    binary: &Path,
    dir: &Path,
    secret_key: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = Command::new(binary);
    cmd.arg("--config")
        .arg(dir.join("gatehouse.toml"))
        .args(args)
        .env("GATEHOUSE_SECRET_KEY", secret_key)
        .current_dir(dir);
    output_with_stdin(&mut cmd, stdin)
}

/// Runs `BINARY [--config CONFIG] ARGS...` in `cwd` with no secret key and no `RUST_LOG` in
/// the environment (the CLI reads or creates the key file); `stdin` piped in.
pub fn run_cli(
    binary: &Path,
    cwd: &Path,
    config: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = Command::new(binary);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("GATEHOUSE_SECRET_KEY")
        .env_remove("RUST_LOG");
    output_with_stdin(&mut cmd, stdin)
}

impl Gatehouse {
    /// Writes certs and config into a fresh temp dir and starts `BINARY serve --config`
    /// (`binary`: `env!("CARGO_BIN_EXE_gatehouse")` of the binary package's tests).
    pub async fn start(binary: &Path, spec: GatehouseSpec) -> Gatehouse {
        let binary = binary.to_path_buf();
        tokio::task::spawn_blocking(move || Gatehouse::start_blocking(&binary, spec))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    pub fn start_blocking(binary: &Path, spec: GatehouseSpec) -> Gatehouse {
        let dir = TestDir::new("gw");
        let pki = Pki::new(&dir.join("certs"));
        dir.write("gatehouse.toml", spec.to_toml());
        spec.write_policies(&dir);
        let out = Captured::default();
        let cmd = serve_command(binary, dir.path(), &spec.secret_key);
        let (child, ready) = spawn_until_line(cmd, "gatehouse", READY_DEADLINE, parse_ready, &out)
            .unwrap_or_else(|e| panic!("{e}"));
        Gatehouse {
            binary: binary.to_path_buf(),
            child,
            gateway: ready.gateway,
            admin: ready.admin,
            ready,
            pki,
            out,
            exit: None,
            spec,
            cookie: Mutex::new(None),
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn serve_command(&self) -> Command {
        serve_command(&self.binary, self.dir.path(), &self.spec.secret_key)
    }

    /// Runs `gatehouse --config CFG ARGS...` with the gateway's secret key; `stdin` piped in.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        cli(
            &self.binary,
            self.dir.path(),
            &self.spec.secret_key,
            args,
            stdin,
        )
    }

    /// The binary under test.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Starts `serve` again in the same directory, after the process exited or was killed
    /// (the ports are new; the session cookie is kept).
    pub fn restart_blocking(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let out = Captured::default();
        let (child, ready) = spawn_until_line(
            self.serve_command(),
            "gatehouse",
            READY_DEADLINE,
            parse_ready,
            &out,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.child = child;
        self.gateway = ready.gateway;
        self.admin = ready.admin;
        self.ready = ready;
        self.out = out;
        self.exit = None;
    }

    /// Runs `serve` in the same directory (the process must have exited) and expects it to
    /// exit without becoming ready within `limit`: its exit code, stdout and stderr.
    pub fn serve_expecting_refusal(&self, limit: Duration) -> (Option<i32>, String, String) {
        assert!(self.exit.is_some(), "the first process still runs");
        let mut child = self
            .serve_command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning gatehouse serve");
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                return (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                );
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "gatehouse serve kept running on a log it should refuse\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("gatehouse.toml")
    }

    /// The bastion's address from the ready line (`bastion=IP:PORT`), when it is enabled.
    pub fn bastion_addr(&self) -> Option<SocketAddr> {
        self.ready.bastion
    }

    pub fn stderr(&self) -> String {
        self.out.stderr()
    }

    pub fn stdout(&self) -> String {
        self.out.stdout()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.exit = Some(s);
                return Some(s);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `(VmHWM, VmRSS)` of the process in KiB, from /proc/PID/status.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.pki.client_config(alpn, None)
    }

    /// An HTTP/1.1 connection carrying the gateway's current cookie (if signed in).
    pub async fn h1(&self, host: &str) -> H1Conn {
        self.h1_anon(host).await.with_cookie(self.cookie_value())
    }

    /// An HTTP/2 connection carrying the gateway's current cookie (if signed in).
    pub async fn h2(&self, host: &str) -> H2Conn {
        self.h2_anon(host).await.with_cookie(self.cookie_value())
    }

    /// An HTTP/1.1 connection without any cookie.
    pub async fn h1_anon(&self, host: &str) -> H1Conn {
        H1Conn::connect(self.gateway, host, self.client_config(&[H1])).await
    }

    /// An HTTP/2 connection without any cookie.
    pub async fn h2_anon(&self, host: &str) -> H2Conn {
        H2Conn::connect(self.gateway, host, self.client_config(&[H2])).await
    }

    /// The `Cookie` header value h1/h2 send (`__Host-gatehouse=...`), if any.
    pub fn cookie_value(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    /// `Cookie: ...\r\n` for raw requests (empty when not signed in).
    pub fn cookie_line(&self) -> String {
        self.cookie_value()
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default()
    }

    /// From now on h1/h2 send `cookie` (a whole `Cookie` header value), or none.
    pub fn use_cookie(&self, cookie: Option<String>) {
        *self.cookie.lock().unwrap() = cookie;
    }

    pub async fn raw(&self, host: &str) -> RawConn {
        RawConn::connect(self.gateway, host, self.client_config(&[H1])).await
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() || std::env::var_os("GATEHOUSE_TEST_LOG").is_some() {
            eprintln!(
                "{}",
                self.out
                    .report(&format!("gatehouse (pid {})", self.child.id()))
            );
        }
    }
}

/// Runs `BINARY check-config --config FILE`: `(exit code, stdout, stderr)`.
pub fn check_config(binary: &Path, file: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(binary)
        .arg("check-config")
        .arg("--config")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("running gatehouse check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
