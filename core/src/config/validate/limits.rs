//! Limits across keys: every listener on its own address.
//!
//! Threat: two listeners configured on one address — the second bind fails at start (an
//! outage found only when deploying) or, with an unspecified address (`0.0.0.0`, `[::]`),
//! one listener shadows the other. Mitigation: `check-config` (and every start) refuses a
//! configuration where two of `gateway.listen`, `gateway.http_redirect_listen`,
//! `admin.listen` and `bastion.listen` (when enabled) share a port on overlapping addresses.
//! Port 0 (any free port) never collides.

use std::net::SocketAddr;

use super::super::{BastionConfig, GatewayConfig};
use super::Ctx;
use crate::error::ConfigError;

/// True when binding both would collide: the same non-zero port, on the same address or with
/// either address unspecified (it takes the port on every address; `[::]` also takes IPv4).
pub(crate) fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.ip().is_unspecified() && (a.is_ipv6() || b.is_ipv4()))
            || (b.ip().is_unspecified() && (b.is_ipv6() || a.is_ipv4())))
}

pub(super) fn distinct_listeners(
    cx: &Ctx<'_>,
    gateway: &GatewayConfig,
    bastion: &BastionConfig,
    admin: SocketAddr,
) -> Result<(), ConfigError> {
    let mut all = vec![("gateway.listen", gateway.listen), ("admin.listen", admin)];
    if let Some(r) = gateway.http_redirect_listen {
        all.push(("gateway.http_redirect_listen", r));
    }
    if bastion.enabled {
        all.push(("bastion.listen", bastion.listen));
    }
    for (i, (key, addr)) in all.iter().enumerate() {
        if let Some((other, other_addr)) = all
            .iter()
            .take(i)
            .find(|(_, earlier)| overlap(*earlier, *addr))
        {
            return Err(cx.err(
                *key,
                format!("`{addr}` collides with {other} (`{other_addr}`)"),
                "give each listener its own port",
            ));
        }
    }
    Ok(())
}
