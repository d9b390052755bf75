//! Loopback ports: a free one to hand to a component that binds it itself, and a closed one
//! (nothing listens) for "upstream down" tests.
//!
//! A port picked by binding `:0` and closing may be taken again before the component binds
//! it: launchers that use [`free_port`] retry on a bind failure (see [`crate::redis`]).

use std::net::{SocketAddr, TcpListener};

/// A loopback port nothing listened on a moment ago.
pub fn free_port() -> u16 {
    closed_port().port()
}

/// A loopback address nothing listens on (for "upstream down").
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
