//! The kit's `gatehouse` launcher bound to this package's binary: a library crate cannot see
//! `CARGO_BIN_EXE_gatehouse`, so this tree passes it in. [`Gatehouse`] derefs to the kit's
//! launcher (ports, cookie, h1/h2, CLI, restart); this tree adds its own flows to it
//! (`identity`, `handoff`).

use std::ops::{Deref, DerefMut};
use std::path::Path;

pub use gatehouse_testkit::gatehouse::*;

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

/// A running `gatehouse` process of this package.
pub struct Gatehouse(gatehouse_testkit::gatehouse::Gatehouse);

impl Gatehouse {
    /// Writes certs and config into a fresh temp dir and starts `gatehouse serve --config`.
    pub async fn start(spec: GatehouseSpec) -> Gatehouse {
        Gatehouse(gatehouse_testkit::gatehouse::Gatehouse::start(Path::new(binary()), spec).await)
    }

    pub fn start_blocking(spec: GatehouseSpec) -> Gatehouse {
        Gatehouse(gatehouse_testkit::gatehouse::Gatehouse::start_blocking(
            Path::new(binary()),
            spec,
        ))
    }
}

impl Deref for Gatehouse {
    type Target = gatehouse_testkit::gatehouse::Gatehouse;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Gatehouse {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Runs `gatehouse check-config --config FILE`: `(exit code, stdout, stderr)`.
pub fn check_config(file: &Path) -> (Option<i32>, String, String) {
    gatehouse_testkit::gatehouse::check_config(Path::new(binary()), file)
}

/// Runs `gatehouse [--config CONFIG] ARGS...` in `cwd` with no secret key and no `RUST_LOG` in
/// the environment (the CLI reads or creates the key file); `stdin` piped in.
pub fn run_cli(
    cwd: &Path,
    config: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    gatehouse_testkit::gatehouse::run_cli(Path::new(binary()), cwd, config, args, stdin)
}
