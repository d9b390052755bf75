//! Login throttling counters: what the store keeps for each login attempt and the one rule
//! that decides from them whether an attempt may run now.
//!
//! Threat: password and code guessing, from one address or spread over many; and the reverse,
//! an attacker making a victim's own logins fail. Mitigation: three failure counters per
//! attempt — the user at this client address, this address (all users), and the user (all
//! addresses) — each with a delay schedule that grows with its failures. The user-at-address
//! and address counters may end in a lockout; the user counter never refuses anyone by
//! itself: it only lengthens the delays at addresses that have already failed for that user
//! (capped), so failures from elsewhere never refuse the user at an address that has not
//! failed. An attempt is counted as a failure when it is admitted (checked and counted in one
//! atomic step, so concurrent attempts cannot all slip through one free slot) and taken back
//! when it succeeds or was no guess (a replayed code).

use std::net::IpAddr;
use std::time::Duration;

use super::dur_ms;

/// The counters of one login attempt: `user` at client `addr` (`None`: unknown address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptKey {
    pub user: String,
    pub addr: Option<IpAddr>,
}

impl AttemptKey {
    pub fn new(user: &str, addr: Option<IpAddr>) -> AttemptKey {
        AttemptKey {
            user: user.to_string(),
            addr: addr.map(crate::preauth::source_key),
        }
    }

    fn addr_text(&self) -> String {
        self.addr
            .map_or_else(|| "unknown".to_string(), |a| a.to_string())
    }

    /// The counter's name in the store and in `lockout` audit records.
    pub fn name(&self, scope: Scope) -> String {
        match scope {
            Scope::UserAtAddress => format!("user:{}@{}", self.user, self.addr_text()),
            Scope::Address => format!("addr:{}", self.addr_text()),
            Scope::User => format!("user:{}", self.user),
        }
    }

    /// The three counter names, in [`Scope::ALL`] order.
    pub(crate) fn names(&self) -> [String; 3] {
        Scope::ALL.map(|s| self.name(s))
    }
}

/// Which counter an attempt was refused by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The user's failures at this address.
    UserAtAddress,
    /// Failures at this address, for any user.
    Address,
    /// The user's failures at every address (slows addresses that failed for the user).
    User,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::UserAtAddress, Scope::Address, Scope::User];

    pub fn describe(self) -> &'static str {
        match self {
            Scope::UserAtAddress => "this user at this address",
            Scope::Address => "this address",
            Scope::User => "this user, failing from several addresses",
        }
    }
}

/// Delays after failures, in milliseconds: entry `n - 1` is the wait after `n` failures
/// (from the last attempt); past the end, the last entry repeats. Empty: never a delay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule(pub Vec<u64>);

impl Schedule {
    /// The wait after `failures` failures.
    pub fn delay_ms(&self, failures: u64) -> u64 {
        if failures == 0 {
            return 0;
        }
        let i = usize::try_from(failures - 1).unwrap_or(usize::MAX);
        self.0
            .get(i)
            .or_else(|| self.0.last())
            .copied()
            .unwrap_or(0)
    }
}

/// The schedules of an attempt's three counters, and how long a counter lives (from its
/// first failure, longer while its delay or lock runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedules {
    pub user_at_address: Schedule,
    pub address: Schedule,
    /// Already capped: it never refuses for longer than its last entry.
    pub user: Schedule,
    pub window: Duration,
}

impl Schedules {
    pub(crate) fn of(&self, scope: Scope) -> &Schedule {
        match scope {
            Scope::UserAtAddress => &self.user_at_address,
            Scope::Address => &self.address,
            Scope::User => &self.user,
        }
    }

    pub(crate) fn window_ms(&self) -> u64 {
        dur_ms(self.window).max(1)
    }
}

/// A counter as stored: failures in its window, and the time of the last counted attempt
/// (unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    pub failures: u64,
    pub last_ms: u64,
}

/// Failures of each counter, this attempt included once admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub user_at_address: u64,
    pub address: u64,
    pub user: u64,
}

impl Counts {
    pub fn of(&self, scope: Scope) -> u64 {
        match scope {
            Scope::UserAtAddress => self.user_at_address,
            Scope::Address => self.address,
            Scope::User => self.user,
        }
    }
}

/// Whether an attempt may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Admitted (and, when reserved, counted as a failure until settled).
    Open(Counts),
    /// Refused: the attempt may come back after `wait`.
    Closed {
        scope: Scope,
        wait: Duration,
        counts: Counts,
    },
}

/// How an admitted attempt ended, when it was not a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Logged in: the user's failures at this address are forgotten; the attempt is taken
    /// back from the address and user counters.
    Success,
    /// No guess (a replayed code, refused whatever it was): taken back from every counter.
    NotAGuess,
}

/// The one rule, over the counters as they stand (`[user at address, address, user]`). The
/// Redis store runs the same rule in Lua (`redis/throttle.lua`); the conformance suite holds
/// both to it.
pub fn decide(counters: [Counter; 3], schedules: &Schedules, now_ms: u64) -> Gate {
    let [ua, a, u] = counters;
    let counts = Counts {
        user_at_address: ua.failures,
        address: a.failures,
        user: u.failures,
    };
    let own = schedules.user_at_address.delay_ms(ua.failures);
    // The user's failures elsewhere slow only an address that failed for the user too, and
    // from that address's own last attempt (not from the attacker's latest).
    let spread = if ua.failures >= 1 {
        schedules.user.delay_ms(u.failures)
    } else {
        0
    };
    let wait_ua = (ua.last_ms.saturating_add(own.max(spread))).saturating_sub(now_ms);
    let wait_a = (a
        .last_ms
        .saturating_add(schedules.address.delay_ms(a.failures)))
    .saturating_sub(now_ms);
    if wait_ua == 0 && wait_a == 0 {
        return Gate::Open(counts);
    }
    let (scope, wait) = if wait_a > wait_ua {
        (Scope::Address, wait_a)
    } else if spread > own {
        (Scope::User, wait_ua)
    } else {
        (Scope::UserAtAddress, wait_ua)
    };
    Gate::Closed {
        scope,
        wait: Duration::from_millis(wait),
        counts,
    }
}

/// How long a counter must still live after an attempt that left it at `failures`: the
/// delay (or lock) that follows, and a second more so it never vanishes just before its lock
/// ends; nothing without a delay. (A counter lives its window from its first failure, or
/// this if longer.)
pub(crate) fn cover_ms(schedule: &Schedule, failures: u64) -> u64 {
    match schedule.delay_ms(failures) {
        0 => 0,
        d => d.saturating_add(1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedules() -> Schedules {
        Schedules {
            user_at_address: Schedule(vec![0, 0, 1000, 2000, 900_000]),
            address: Schedule(vec![0, 0, 0, 500, 60_000]),
            user: Schedule(vec![0, 0, 3000, 8000]),
            window: Duration::from_secs(3600),
        }
    }

    fn c(failures: u64, last_ms: u64) -> Counter {
        Counter { failures, last_ms }
    }

    #[test]
    fn the_rule() {
        let s = schedules();
        let now = 1_000_000;
        // (user at address, address, user, want: None = open, Some((scope, wait ms)))
        type Case = (Counter, Counter, Counter, Option<(Scope, u64)>);
        let cases: Vec<Case> = vec![
            (c(0, 0), c(0, 0), c(0, 0), None),
            (c(2, now), c(2, now), c(2, now), None),
            // Own delays grow, from the last attempt.
            (
                c(3, now - 200),
                c(3, now - 200),
                c(2, now),
                Some((Scope::UserAtAddress, 800)),
            ),
            (c(3, now - 1000), c(3, now - 1000), c(2, now), None),
            (
                c(4, now),
                c(0, 0),
                c(0, 0),
                Some((Scope::UserAtAddress, 2000)),
            ),
            (
                c(5, now),
                c(0, 0),
                c(0, 0),
                Some((Scope::UserAtAddress, 900_000)),
            ),
            // Beyond the schedule, its last entry (the lock) repeats.
            (
                c(9, now - 100_000),
                c(0, 0),
                c(0, 0),
                Some((Scope::UserAtAddress, 800_000)),
            ),
            // The address counter, for any user.
            (
                c(0, 0),
                c(4, now - 100),
                c(0, 0),
                Some((Scope::Address, 400)),
            ),
            // Failures of the user elsewhere: nothing at an address that has not failed...
            (c(0, 0), c(0, 0), c(50, now), None),
            // ...but a failed address waits the user's (capped) delay from its own attempt.
            (
                c(1, now - 1000),
                c(1, now - 1000),
                c(50, now),
                Some((Scope::User, 7000)),
            ),
            (c(1, now - 8000), c(1, now - 8000), c(50, now), None),
        ];
        for (i, (ua, a, u, want)) in cases.into_iter().enumerate() {
            let got = decide([ua, a, u], &s, now);
            match (got, want) {
                (Gate::Open(counts), None) => {
                    assert_eq!(
                        (counts.user_at_address, counts.address, counts.user),
                        (ua.failures, a.failures, u.failures)
                    );
                }
                (Gate::Closed { scope, wait, .. }, Some((ws, wm))) => {
                    assert_eq!((scope, wait), (ws, Duration::from_millis(wm)), "case {i}");
                }
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn counters_outlive_their_lock() {
        let s = schedules();
        assert_eq!(cover_ms(&s.user_at_address, 1), 0);
        assert_eq!(cover_ms(&s.user_at_address, 3), 2000);
        assert_eq!(cover_ms(&s.user_at_address, 5), 901_000);
        assert_eq!(s.user.delay_ms(0), 0);
        assert_eq!(Schedule::default().delay_ms(7), 0);
    }

    #[test]
    fn names_key_ipv6_by_its_slash_64() {
        let k = AttemptKey::new("alice", Some("2001:db8:1:2::7".parse().unwrap()));
        assert_eq!(k.name(Scope::UserAtAddress), "user:alice@2001:db8:1:2::");
        assert_eq!(k.name(Scope::Address), "addr:2001:db8:1:2::");
        assert_eq!(k.name(Scope::User), "user:alice");
        let v4 = AttemptKey::new("bob", Some("::ffff:192.0.2.1".parse().unwrap()));
        assert_eq!(v4.name(Scope::Address), "addr:192.0.2.1");
        assert_eq!(
            AttemptKey::new("c", None).name(Scope::Address),
            "addr:unknown"
        );
    }
}
