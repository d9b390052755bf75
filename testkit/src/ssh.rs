//! SSH pieces for the bastion's tests (in-process and in the real binary): a real OpenSSH
//! `sshd` as the target on a free loopback port (readiness by its banner, with a deadline;
//! stderr printed when the test fails; killed on drop), keys made with `ssh-keygen`, and the
//! real `ssh`/`scp`/`sftp` client answering the TOTP prompt through `SSH_ASKPASS`
//! (`SSH_ASKPASS_REQUIRE=force`). A missing OpenSSH binary is a test failure, never a skip.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::process::run_with_deadline;

/// How long sshd (or the bastion) may take to send its banner.
pub const BANNER_DEADLINE: Duration = Duration::from_secs(15);
/// How long one client command may run.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install {package}"
    );
}

/// Makes an ed25519 key pair at `path` (`path.pub` too); returns the public key line.
pub fn keygen(path: &Path) -> String {
    require("/usr/bin/ssh-keygen", "openssh-client");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen");
    assert!(st.success(), "ssh-keygen failed for {}", path.display());
    std::fs::read_to_string(pub_path(path))
        .unwrap()
        .trim()
        .to_string()
}

/// `KEY.pub` beside `KEY`.
pub fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_os_string();
    s.push(".pub");
    PathBuf::from(s)
}

/// Waits until `addr` sends an SSH banner.
pub fn wait_ssh_banner(addr: SocketAddr, deadline: Duration, what: &str) {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 7];
            if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-2.0" {
                return;
            }
        }
        assert!(
            Instant::now() < end,
            "{what} on {addr} sent no SSH banner within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ssh-ed25519 AAAA...` of a public key line (its comment dropped): a pinned host key.
pub fn pinned(public_key_line: &str) -> String {
    public_key_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A real OpenSSH server (the target), accepting `authorized` keys for every login;
/// forwarding, agent forwarding, `AcceptEnv LANG LC_* TERM GH_*` and the sftp subsystem on.
pub struct Sshd {
    child: Child,
    pub addr: SocketAddr,
    /// `ssh-ed25519 AAAA...` (no comment): the value of a target's `host_key`.
    pub pinned: String,
    stderr_path: PathBuf,
}

impl Sshd {
    pub fn start(dir: &Path, authorized: &[&str]) -> Sshd {
        require("/usr/sbin/sshd", "openssh-server");
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd (privilege separation)");
        let sdir = dir.join(format!("sshd-{}", unique()));
        std::fs::create_dir_all(&sdir).unwrap();
        let host_key = sdir.join("host_ed25519");
        let pinned = pinned(&keygen(&host_key));
        let ak = sdir.join("authorized_keys");
        std::fs::write(&ak, authorized.join("\n") + "\n").unwrap();
        let port = free_port();
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nUsePAM no\n\
             StrictModes no\nPidFile none\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\n\
             AllowAgentForwarding yes\nX11Forwarding no\nAcceptEnv LANG LC_* TERM GH_*\n\
             Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxSessions 20\nMaxStartups 100\n",
            hk = host_key.display(),
            ak = ak.display()
        );
        let cfg_path = sdir.join("sshd_config");
        std::fs::write(&cfg_path, cfg).unwrap();
        let stderr_path = sdir.join("stderr.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("starting /usr/sbin/sshd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut s = Sshd {
            child,
            addr,
            pinned,
            stderr_path,
        };
        let ok = std::panic::catch_unwind(|| wait_ssh_banner(addr, BANNER_DEADLINE, "sshd"));
        if ok.is_err() || matches!(s.child.try_wait(), Ok(Some(_))) {
            let _ = s.child.kill();
            panic!("sshd did not start:\n{}", s.stderr());
        }
        s
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- target sshd stderr ---\n{}", self.stderr());
        }
    }
}

/// The OpenSSH client, isolated from the machine's configuration, talking to `bastion`.
pub struct Client {
    pub bastion: SocketAddr,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub dir: PathBuf,
}

impl Client {
    pub fn new(dir: &Path, bastion: SocketAddr, key: &Path) -> Client {
        Client {
            bastion,
            key: key.to_path_buf(),
            known_hosts: dir.join(format!("known_hosts-{}", unique())),
            dir: dir.to_path_buf(),
        }
    }

    /// A script printing `code`, for `SSH_ASKPASS`.
    pub fn askpass(&self, code: &str) -> PathBuf {
        let p = self.dir.join(format!("askpass-{}.sh", unique()));
        std::fs::write(&p, format!("#!/bin/sh\necho '{code}'\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    }

    /// `program` (`ssh` or `scp`) with `-o` options `first` (OpenSSH keeps the first value
    /// of an option); `totp` answers keyboard-interactive, `None` runs in batch mode.
    pub fn command(&self, program: &str, totp: Option<&str>, first: &[&str]) -> Command {
        require(&format!("/usr/bin/{program}"), "openssh-client");
        let mut c = Command::new(program);
        c.arg("-F").arg("/dev/null");
        for o in first {
            c.arg("-o").arg(o);
        }
        c.arg(if program == "ssh" { "-p" } else { "-P" })
            .arg(self.bastion.port().to_string());
        c.arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()));
        c.args([
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "LogLevel=ERROR",
        ]);
        c.arg("-i").arg(&self.key);
        match totp {
            Some(code) => {
                c.env("SSH_ASKPASS", self.askpass(code))
                    .env("SSH_ASKPASS_REQUIRE", "force")
                    .env("DISPLAY", ":0")
                    .args([
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

    /// `ssh USER:LOGIN@TARGET@127.0.0.1 CMD`.
    pub fn ssh(&self, dest: &str, totp: Option<&str>, cmd: &str) -> Output {
        let mut c = self.command("ssh", totp, &[]);
        c.arg(format!("{dest}@127.0.0.1")).arg(cmd);
        run_with_deadline(c, CLIENT_DEADLINE)
    }
}
