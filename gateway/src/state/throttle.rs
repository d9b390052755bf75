//! A per-address budget of SSO starts and callbacks.
//!
//! Threat: an anonymous client creating login transactions in the shared store (each kept
//! for ten minutes) or writing `sso_failure` audit records as fast as it can send requests.
//! Mitigation: at most [`PER_ADDRESS`] SSO requests per client address (an IPv6 client by
//! its /64) per [`WINDOW`], far more than a person signing in needs; beyond it a 429,
//! before the store or the audit log is touched. The table is bounded ([`MAX_TRACKED`]):
//! when it is full of live windows, a new address is refused too (fail closed).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The budget's window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// SSO requests (starts and callbacks) per address per [`WINDOW`].
pub const PER_ADDRESS: u32 = 30;
/// Addresses remembered at most.
pub const MAX_TRACKED: usize = 16_384;

/// The budget of every address (one per gateway).
#[derive(Debug, Default)]
pub struct SsoThrottle {
    map: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The key of `addr`: itself, or for IPv6 its /64 (one client often holds a whole /64).
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl SsoThrottle {
    /// Counts one request of `addr`; false when its budget for this window is spent.
    pub fn allow(&self, addr: IpAddr) -> bool {
        self.allow_at(key(addr), Instant::now())
    }

    fn allow_at(&self, addr: IpAddr, now: Instant) -> bool {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((start, n)) = map.get_mut(&addr) {
            if now.duration_since(*start) >= WINDOW {
                *start = now;
                *n = 1;
                return true;
            }
            if *n >= PER_ADDRESS {
                return false;
            }
            *n += 1;
            return true;
        }
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if map.len() >= MAX_TRACKED {
                return false;
            }
        }
        map.insert(addr, (now, 1));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_budget_per_window() {
        let t = SsoThrottle::default();
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..PER_ADDRESS {
            assert!(t.allow_at(a, now));
        }
        assert!(!t.allow_at(a, now), "spent");
        assert!(t.allow_at(b, now), "another address is not affected");
        assert!(t.allow_at(a, now + WINDOW), "a new window");
    }

    #[test]
    fn an_ipv6_client_is_one_address_per_64() {
        let t = SsoThrottle::default();
        for i in 0..PER_ADDRESS {
            assert!(t.allow(format!("2001:db8:1:2::{i:x}").parse().unwrap()));
        }
        assert!(!t.allow("2001:db8:1:2:ffff::1".parse().unwrap()));
        assert!(t.allow("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_full_table_refuses_new_addresses_until_windows_end() {
        let t = SsoThrottle::default();
        let now = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            assert!(t.allow_at(IpAddr::V4(i.into()), now));
        }
        let late: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(!t.allow_at(late, now), "fail closed when full");
        assert!(t.allow_at(late, now + WINDOW), "old windows make room");
    }
}
