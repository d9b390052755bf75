//! SSH pieces of the kit under this tree's names: the target sshd, keys, the OpenSSH client,
//! and the process helpers the SSH tests use.

pub use gatehouse_testkit::net::free_port;
pub use gatehouse_testkit::process::{run_with_deadline as run, sha256_file, text, wait_output};
pub use gatehouse_testkit::ssh::*;
