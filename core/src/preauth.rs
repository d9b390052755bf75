//! Pre-authentication slots of both doors: bounds on connections that have not yet brought a
//! request (HTTPS) or finished authenticating (SSH).
//!
//! Threat: a client that opens connections and stalls in the TLS or SSH handshake, before
//! its first request or in authentication, holds a slot each until its deadline; from one
//! address, enough of them fill the door's capacity and lock every other client out.
//! Mitigation: from accept until it is past that stage, a connection holds a
//! pre-authentication slot; one source (an IPv4 address, an IPv6 /64) may hold at most
//! `per_source` and all sources together `total`, so a flood from one source never denies
//! another. A connection over either bound is closed at accept, before any TLS or SSH work;
//! each refusal is counted (`gatehouse_preauth_refused_total{reason}` for HTTPS,
//! `gatehouse_ssh_preauth_refused_total{reason}` for SSH) and audited, rate-limited: one
//! `preauth_refused` record per door, source and [`AUDIT_WINDOW`] with the count. The
//! deadlines are each door's (TLS handshake and first request; SSH banner and key exchange,
//! then authentication).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, AuditLog};

/// Refusals are summed per source over this window, then audited.
pub const AUDIT_WINDOW: Duration = Duration::from_secs(5);
/// Sources audited one by one per window; refusals from further sources are summed into one
/// record (the list's memory stays bounded under a distributed flood).
const AUDITED_SOURCES: usize = 64;
/// Further sources counted (distinct) per window; beyond, the count says "at least".
const COUNTED_SOURCES: usize = 4096;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refused {
    /// Its source already holds [`PER_SOURCE`] slots.
    PerSource,
    /// Every slot is taken.
    Total,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::PerSource => "per_source",
            Refused::Total => "total",
        }
    }
}

/// The label of `gatehouse_*preauth_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// A door's pre-authentication series: slots in use and refusals by reason (handles to
/// series registered by whoever serves the metrics; cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct PreauthMetrics {
    pub connections: Gauge,
    pub refused: Family<ReasonLabels, Counter>,
}

/// The key a source is counted under: an IPv4 address (also written IPv4-mapped), or an
/// IPv6 address's /64 (one subscriber gets a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// The slots in use at one door.
#[derive(Debug)]
pub struct Preauth {
    /// `https` or `ssh`: the `door` of its audit records.
    door: &'static str,
    per_source: usize,
    total: usize,
    in_use: AtomicUsize,
    by_source: Mutex<HashMap<IpAddr, usize>>,
    refusals: Mutex<Refusals>,
    metrics: PreauthMetrics,
}

/// Refusals since the last audit record.
#[derive(Debug, Default)]
struct Refusals {
    by_source: HashMap<(IpAddr, Refused), u64>,
    /// Beyond [`AUDITED_SOURCES`]: refusals and sources (up to [`COUNTED_SOURCES`]) per reason.
    others: HashMap<Refused, (u64, HashSet<IpAddr>)>,
}

/// A held slot, given back on drop.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<Preauth>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .by_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
        self.owner.in_use.fetch_sub(1, Ordering::AcqRel);
        self.owner.metrics.connections.dec();
    }
}

impl Preauth {
    /// Bounds for `door` (`https`, `ssh`): at most `per_source` slots per source and `total`
    /// in all (each at least 1); `metrics` follows the slots and counts the refusals.
    pub fn new(
        door: &'static str,
        per_source: usize,
        total: usize,
        metrics: PreauthMetrics,
    ) -> Arc<Preauth> {
        Arc::new(Preauth {
            door,
            per_source: per_source.max(1),
            total: total.max(1),
            in_use: AtomicUsize::new(0),
            by_source: Mutex::new(HashMap::new()),
            refusals: Mutex::new(Refusals::default()),
            metrics,
        })
    }

    /// A slot for a connection from `ip`, or why not (the refusal is counted and noted for
    /// the audit).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = source_key(ip);
        let refused = {
            let mut map = self
                .by_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let held = map.get(&key).copied().unwrap_or(0);
            if held >= self.per_source {
                Some(Refused::PerSource)
            } else if self.in_use.load(Ordering::Acquire) >= self.total {
                Some(Refused::Total)
            } else {
                map.insert(key, held + 1);
                self.in_use.fetch_add(1, Ordering::AcqRel);
                self.metrics.connections.inc();
                None
            }
        };
        match refused {
            None => Ok(Slot {
                owner: self.clone(),
                key,
            }),
            Some(why) => {
                self.metrics
                    .refused
                    .get_or_create(&ReasonLabels {
                        reason: why.as_str(),
                    })
                    .inc();
                self.note(key, why);
                Err(why)
            }
        }
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    fn note(&self, key: IpAddr, why: Refused) {
        let mut r = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = r.by_source.get_mut(&(key, why)) {
            *n += 1;
        } else if r.by_source.len() < AUDITED_SOURCES {
            r.by_source.insert((key, why), 1);
        } else {
            let e = r.others.entry(why).or_default();
            e.0 += 1;
            if e.1.len() < COUNTED_SOURCES {
                e.1.insert(key);
            }
        }
    }

    /// The audit records of the refusals since the last call (and forgets them).
    fn drain(&self, window: Duration) -> Vec<AuditEvent> {
        let r = std::mem::take(&mut *self.refusals.lock().unwrap_or_else(PoisonError::into_inner));
        let window_secs = window.as_secs();
        let record = |client_addr, why: Refused, refused, sources| AuditEvent::PreauthRefused {
            door: self.door.to_string(),
            client_addr,
            reason: why.as_str().to_string(),
            refused,
            sources,
            window_secs,
        };
        let mut out: Vec<AuditEvent> = r
            .by_source
            .into_iter()
            .map(|((ip, why), n)| record(Some(ip), why, n, 1))
            .collect();
        out.extend(
            r.others
                .into_iter()
                .map(|(why, (n, sources))| record(None, why, n, sources.len() as u64)),
        );
        out
    }

    /// Every [`AUDIT_WINDOW`] until `stop` (and once more then), audits the refusals of the
    /// window and logs them. A record that cannot be written is logged (the refusals
    /// themselves already happened: nothing is let through for it).
    pub async fn audit(self: Arc<Self>, audit: AuditLog, stop: CancellationToken) {
        let mut tick = tokio::time::interval(AUDIT_WINDOW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let last = tokio::select! {
                () = stop.cancelled() => true,
                _ = tick.tick() => false,
            };
            for event in self.drain(AUDIT_WINDOW) {
                if let AuditEvent::PreauthRefused {
                    client_addr,
                    reason,
                    refused,
                    ..
                } = &event
                {
                    tracing::warn!(door = self.door, client.addr = ?client_addr, reason = %reason, refused, "connections refused before authentication: pre-authentication limit full");
                }
                if let Err(e) = audit.record(event).await {
                    tracing::error!(error = %crate::error_chain(&e), "pre-authentication refusals could not be audited");
                }
            }
            if last {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn one_source_cannot_take_another_sources_slots() {
        let p = Preauth::new("https", 3, 5, PreauthMetrics::default());
        let a: Vec<Slot> = (0..3).map(|_| p.acquire(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(p.acquire(ip("10.0.0.1")).unwrap_err(), Refused::PerSource);
        // An IPv4-mapped address is the same source.
        assert_eq!(
            p.acquire(ip("::ffff:10.0.0.1")).unwrap_err(),
            Refused::PerSource
        );
        let b1 = p.acquire(ip("10.0.0.2")).unwrap();
        let _b2 = p.acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(p.in_use(), 5);
        assert_eq!(p.acquire(ip("10.0.0.3")).unwrap_err(), Refused::Total);
        drop(b1);
        let _c = p.acquire(ip("10.0.0.3")).unwrap();
        drop(a);
        assert_eq!(p.in_use(), 2);
        assert_eq!(p.metrics.connections.get(), 2);
        let refused = |r: &'static str| {
            p.metrics
                .refused
                .get_or_create(&ReasonLabels { reason: r })
                .get()
        };
        assert_eq!((refused("per_source"), refused("total")), (2, 1));
        let _a = p.acquire(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let p = Preauth::new("https", 2, 100, PreauthMetrics::default());
        let _x = p.acquire(ip("2001:db8:1:2::1")).unwrap();
        let _y = p.acquire(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            p.acquire(ip("2001:db8:1:2::abcd")).unwrap_err(),
            Refused::PerSource
        );
        assert!(p.acquire(ip("2001:db8:1:3::1")).is_ok(), "another /64");
    }

    #[test]
    fn refusals_are_summed_per_source_and_bounded() {
        let p = Preauth::new("ssh", 1, 1000, PreauthMetrics::default());
        let mut held = Vec::new();
        for i in 0..(AUDITED_SOURCES + 10) {
            let addr = ip(&format!("10.1.{}.{}", i / 250, i % 250 + 1));
            held.push(p.acquire(addr).unwrap());
            for _ in 0..3 {
                assert_eq!(p.acquire(addr).unwrap_err(), Refused::PerSource);
            }
        }
        let records = p.drain(AUDIT_WINDOW);
        assert_eq!(records.len(), AUDITED_SOURCES + 1);
        let mut total = 0;
        for r in &records {
            let AuditEvent::PreauthRefused {
                door,
                client_addr,
                refused,
                sources,
                reason,
                ..
            } = r
            else {
                panic!("{r:?}")
            };
            assert_eq!((door.as_str(), reason.as_str()), ("ssh", "per_source"));
            match client_addr {
                Some(_) => assert_eq!((*refused, *sources), (3, 1)),
                None => assert_eq!((*refused, *sources), (30, 10)),
            }
            total += refused;
        }
        assert_eq!(total, 3 * (AUDITED_SOURCES as u64 + 10));
        assert!(p.drain(AUDIT_WINDOW).is_empty(), "forgotten once audited");
    }
}
