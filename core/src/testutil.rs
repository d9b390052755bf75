//! Core's unit-test helpers: a deterministic PRNG, and the shared test kit's temporary
//! directories and real `redis-server` under the names core's tests use. The kit depends on
//! no gatehouse crate, so core can use it as a dev-dependency without a cycle.

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

/// The test kit's temp dir (removed on drop) under core's old name.
pub use gatehouse_testkit::tempdir::TestDir as TempDir;

/// The test kit's redis-server (a missing binary is a test failure, never a skip), with its
/// URL as core's config type.
pub struct RedisServer(gatehouse_testkit::Redis);

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer(gatehouse_testkit::Redis::start())
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&self.0.url()).unwrap()
    }
}

impl std::ops::Deref for RedisServer {
    type Target = gatehouse_testkit::Redis;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
