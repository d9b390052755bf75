//! The `gatehouse` binary under test: a generated config in a temp dir, readiness by the
//! `gatehouse ready:` stdout line (with a deadline), ports read from that line, stderr captured
//! and printed when the test fails, the process killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{H1, H1Conn, H2, H2Conn, RawConn};
use super::pki::Pki;
use super::tempdir::TestDir;

/// How long the binary may take to print its ready line (debug build, 2 busy cores).
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

#[derive(Clone, Debug)]
pub struct AppSpec {
    pub name: String,
    pub host: String,
    pub path_prefix: Option<String>,
    pub upstream: String,
}

impl AppSpec {
    pub fn new(name: &str, host: &str, upstream: &str) -> AppSpec {
        AppSpec {
            name: name.to_string(),
            host: host.to_string(),
            path_prefix: None,
            upstream: upstream.to_string(),
        }
    }

    pub fn prefix(mut self, p: &str) -> AppSpec {
        self.path_prefix = Some(p.to_string());
        self
    }
}

/// What goes into the generated `gatehouse.toml`. Short timeouts keep the suite fast.
#[derive(Clone, Debug)]
pub struct GatehouseSpec {
    pub apps: Vec<AppSpec>,
    pub tls_profile: Option<String>,
    pub header_timeout: String,
    pub idle_timeout: String,
    pub upstream_timeout: String,
    pub upstream_connect_timeout: String,
    pub shutdown_grace: String,
    pub tls_handshake_timeout: String,
    pub redirect: bool,
}

impl Default for GatehouseSpec {
    fn default() -> Self {
        GatehouseSpec {
            apps: Vec::new(),
            tls_profile: None,
            header_timeout: "2s".into(),
            idle_timeout: "20s".into(),
            upstream_timeout: "5s".into(),
            upstream_connect_timeout: "2s".into(),
            shutdown_grace: "5s".into(),
            tls_handshake_timeout: "5s".into(),
            redirect: false,
        }
    }
}

impl GatehouseSpec {
    pub fn with_app(mut self, app: AppSpec) -> Self {
        self.apps.push(app);
        self
    }

    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        s.push_str("data_dir = \"data\"\n\n[gateway]\nlisten = \"127.0.0.1:0\"\n");
        s.push_str("public_url = \"https://gatehouse.localhost\"\n");
        s.push_str("tls_cert = \"certs/gateway.crt\"\ntls_key = \"certs/gateway.key\"\n");
        if let Some(p) = &self.tls_profile {
            s.push_str(&format!("tls_profile = \"{p}\"\n"));
        }
        if self.redirect {
            s.push_str("http_redirect_listen = \"127.0.0.1:0\"\n");
        }
        s.push_str(&format!(
            "header_timeout = \"{}\"\nidle_timeout = \"{}\"\nupstream_timeout = \"{}\"\n\
             upstream_connect_timeout = \"{}\"\nshutdown_grace = \"{}\"\ntls_handshake_timeout = \"{}\"\n",
            self.header_timeout,
            self.idle_timeout,
            self.upstream_timeout,
            self.upstream_connect_timeout,
            self.shutdown_grace,
            self.tls_handshake_timeout
        ));
        s.push_str("\n[bastion]\nenabled = false\nlisten = \"127.0.0.1:0\"\n");
        s.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
        s.push_str("\n[audit]\ndir = \"data/audit\"\n\n[recording]\ndir = \"data/recordings\"\n");
        s.push_str("\n[log]\nlevel = \"info,gatehouse_gateway=debug\"\n");
        for a in &self.apps {
            s.push_str(&format!(
                "\n[[apps]]\nname = \"{}\"\nhost = \"{}\"\nupstream = \"{}\"\n",
                a.name, a.host, a.upstream
            ));
            if let Some(p) = &a.path_prefix {
                s.push_str(&format!("path_prefix = \"{p}\"\n"));
            }
        }
        s
    }
}

/// Addresses announced on the ready line.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub redirect: Option<SocketAddr>,
}

/// Parses `gatehouse ready: gateway=https://IP:PORT admin=http://IP:PORT[ redirect=http://IP:PORT]`.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.trim().strip_prefix("gatehouse ready:")?;
    let mut gateway = None;
    let mut admin = None;
    let mut redirect = None;
    for word in rest.split_whitespace() {
        if let Some(v) = word.strip_prefix("gateway=https://") {
            gateway = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("admin=http://") {
            admin = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("redirect=http://") {
            redirect = v.parse().ok();
        }
    }
    Some(Ready {
        gateway: gateway?,
        admin: admin?,
        redirect,
    })
}

/// A running `gatehouse` process.
pub struct Gatehouse {
    child: Child,
    pub ready: Ready,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub pki: Pki,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
    // Dropped last: the process must be gone before its directory is.
    pub dir: TestDir,
}

/// Spawns `cmd` with piped output and waits for its ready line.
pub fn spawn_until_ready(
    mut cmd: Command,
) -> (Child, Ready, Arc<Mutex<String>>, Arc<Mutex<String>>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", binary()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let stdout = Arc::new(Mutex::new(String::new()));
    let mut err_pipe = child.stderr.take().unwrap();
    let err_buf = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = err_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            err_buf
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let out_pipe = child.stdout.take().unwrap();
    let out_buf = stdout.clone();
    let (tx, rx) = mpsc::channel::<Ready>();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out_pipe).lines() {
            let Ok(line) = line else { break };
            out_buf.lock().unwrap().push_str(&format!("{line}\n"));
            if !sent && let Some(r) = parse_ready(&line) {
                sent = true;
                let _ = tx.send(r);
            }
        }
    });
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => return (child, r, stdout, stderr),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Give the reader threads a moment to drain the pipes (they end at EOF).
            let _ = rx.recv_timeout(Duration::from_millis(300));
            panic!(
                "gatehouse exited ({status}) before printing its ready line\n--- stdout ---\n{}\n--- stderr ---\n{}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        }
        if start.elapsed() > READY_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gatehouse printed no ready line within {READY_DEADLINE:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        }
    }
}

impl Gatehouse {
    /// Writes certs and config into a fresh temp dir and starts `gatehouse serve --config`.
    pub async fn start(spec: GatehouseSpec) -> Gatehouse {
        tokio::task::spawn_blocking(move || Gatehouse::start_blocking(spec))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    pub fn start_blocking(spec: GatehouseSpec) -> Gatehouse {
        let dir = TestDir::new("gw");
        let pki = Pki::new(&dir.join("certs"));
        let config = dir.write("gatehouse.toml", spec.to_toml());
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path());
        let (child, ready, stdout, stderr) = spawn_until_ready(cmd);
        Gatehouse {
            child,
            gateway: ready.gateway,
            admin: ready.admin,
            ready,
            pki,
            stderr,
            stdout,
            exit: None,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("gatehouse.toml")
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
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

    pub async fn h1(&self, host: &str) -> H1Conn {
        H1Conn::connect(self.gateway, host, self.client_config(&[H1])).await
    }

    pub async fn h2(&self, host: &str) -> H2Conn {
        H2Conn::connect(self.gateway, host, self.client_config(&[H2])).await
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
                "--- gatehouse (pid {}) stdout ---\n{}\n--- gatehouse stderr ---\n{}",
                self.child.id(),
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
        }
    }
}

/// Runs `gatehouse check-config --config FILE`: `(exit code, stdout, stderr)`.
pub fn check_config(file: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(binary())
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
