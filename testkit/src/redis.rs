//! A real `redis-server` on a free loopback port, for the shared store: no persistence but
//! an explicit `SAVE` (which `restart` loads; `forget_data` drops it), its own working directory, readiness by `PING` with a deadline (never a sleep), `stop` and
//! `restart` on the same port (store-outage tests), killed on drop. A missing binary is a
//! test failure, never a skip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::tempdir::TestDir;

/// How long redis-server may take to answer its first PING.
pub const REDIS_READY_DEADLINE: Duration = Duration::from_secs(20);

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: TestDir,
}

/// One `PING` over a fresh connection: true on `+PONG`.
pub fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG"),
        Err(_) => false,
    }
}

impl Redis {
    /// Starts redis-server on a free port and waits for it to answer PING.
    pub fn start() -> Redis {
        // A port picked by binding :0 may be taken again before redis binds it: retry.
        for _ in 0..5 {
            let mut r = Redis {
                child: None,
                port: free_port(),
                dir: TestDir::new("redis"),
            };
            if r.spawn_and_wait() {
                return r;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    /// `redis://127.0.0.1:PORT/0` for `[store] url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn_and_wait(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ])
        .arg("--dir")
        .arg(self.dir.path())
        .arg("--logfile")
        .arg(self.dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawning redis-server (is the redis-server package installed?): {e}")
        });
        let start = Instant::now();
        loop {
            if ping(self.port) {
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let out = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                eprintln!(
                    "redis-server on port {} exited ({status}) before answering PING:\n{out}",
                    self.port
                );
                return false;
            }
            if start.elapsed() > REDIS_READY_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-server on port {} did not answer PING within {REDIS_READY_DEADLINE:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills redis-server and waits until the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let start = Instant::now();
        while ping(self.port) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis on port {} still answers after being killed",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts redis-server again on the same port and directory: empty, unless a `SAVE`
    /// left a snapshot there, which it then loads (a crash after a snapshot).
    ///
    /// (Nothing is persisted otherwise: `--save ''`, no AOF.)
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running redis");
        let start = Instant::now();
        // The old socket may linger briefly; redis binds with SO_REUSEADDR, so retry only
        // while the port is still busy.
        while !self.spawn_and_wait() {
            assert!(
                start.elapsed() < REDIS_READY_DEADLINE,
                "redis-server could not be restarted on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Deletes the snapshot a `SAVE` left, so the next restart is empty.
    pub fn forget_data(&self) {
        match std::fs::remove_file(self.dir.join("dump.rdb")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing redis's dump.rdb: {e}"),
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
