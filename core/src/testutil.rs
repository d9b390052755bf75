//! Test helpers: a deterministic PRNG, temporary directories and a real `redis-server` on a free
//! loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small deterministic PRNG (xorshift) so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut r = [0u8; 8];
        aws_lc_rs::rand::fill(&mut r).unwrap();
        let p =
            std::env::temp_dir().join(format!("gatehouse-{tag}-{}", crate::secret::hex_lower(r)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real redis-server started for one test, killed on drop. A missing binary panics (a test
/// failure, never a skip).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Its working directory (where `SAVE` writes and a restart reads `dump.rdb`).
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            dir: TempDir::new("redis"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let port = self.port;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn dir_path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server again on the same port and directory: it loads the data of its
    /// last `SAVE` (none: empty), as after a crash of a server that persists snapshots.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The old socket may linger for a moment.
            if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "port {} stays busy", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spawn();
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("redis://127.0.0.1:{}/0", self.port)).unwrap()
    }

    /// Waits until the server answers PING, with a deadline.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 7];
                    if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server now (for the store-down test).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
