//! gatehouse-gateway: the HTTPS entry point. (stub, being built)
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_core::Config;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("not yet built")]
    Todo,
}

pub fn check(_config: &Config) -> Result<(), GatewayError> { Ok(()) }

pub mod devcert {
    pub fn ensure(_dir: &std::path::Path, _cert: &std::path::Path, _key: &std::path::Path) -> Result<(), super::GatewayError> { Ok(()) }
}
pub mod demo {
    pub async fn spawn(_s: tokio_util::sync::CancellationToken) -> Result<std::net::SocketAddr, super::GatewayError> { Err(super::GatewayError::Todo) }
}

#[derive(Debug, Clone, Copy)]
pub struct Bound { pub https: SocketAddr, pub admin: SocketAddr, pub redirect: Option<SocketAddr> }
#[derive(Debug, Clone, Copy)]
pub struct DrainReport { pub drained: bool, pub remaining: usize }
#[derive(Clone)]
pub struct Reloader;
impl Reloader { pub fn reload(&self) {} }
pub struct Gateway;
impl Gateway {
    pub async fn bind(_c: Arc<Config>) -> Result<Gateway, GatewayError> { Err(GatewayError::Todo) }
    pub fn bound(&self) -> Bound { todo!() }
    pub fn reloader(&self) -> Reloader { Reloader }
    pub async fn run(self, _s: CancellationToken) -> Result<DrainReport, GatewayError> { Err(GatewayError::Todo) }
}
