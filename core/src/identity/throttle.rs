//! Login throttling: the rules of the three failure counters and the steps every login flow
//! takes with them (admit, fail, settle).
//!
//! Threat: guessing passwords and codes (from one address, or spread over many), and the
//! reverse — an attacker turning the lockout on a victim, or an honest client tripping it.
//! Mitigation (the trade-off is in the README, "Login throttling"): a guess is admitted only
//! when the counters of the user at this address, of this address, and of the user allow it,
//! and is counted as a failure in the same atomic store step; delays grow with each failure
//! and the first two counters end in a lockout. The user's own counter only slows addresses
//! that already failed for that user, and its delay is capped: failures from elsewhere never
//! refuse a user at an address that has not failed (the TOTP code still stands behind a
//! guessed password). A replayed code is refused and taken back (not a guess); a success
//! forgets the user's failures at that address. Every refusal is audited (`login_failure`);
//! reaching a lock raises a `lockout` alert, guessing of one user from many addresses a
//! `user_throttled` alert.

use std::net::IpAddr;
use std::time::Duration;

use super::AuthMethod;
use super::authenticator::Authenticator;
use crate::audit::{AuditEvent, new_incident_id};
use crate::error::AuthError;
use crate::store::{AttemptKey, Counts, Gate, Schedule, Schedules, Scope, Settle, now_ms};

/// Most entries in a schedule: past it, the last delay repeats.
const MAX_SCHEDULE: u64 = 64;

/// One counter's rule: `free` failures without delay, then `first_delay` doubling with each
/// failure up to `max_delay`; with `lock_after`, that many failures lock for `lock_for`.
/// Delays run from the last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    pub free: u64,
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub lock_after: Option<u64>,
    pub lock_for: Duration,
}

impl ThrottleRule {
    /// The wait after each number of failures.
    pub fn schedule(&self) -> Schedule {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (first, max) = (ms(self.first_delay), ms(self.max_delay));
        let mut out = Vec::new();
        for n in 1..=MAX_SCHEDULE {
            if self.lock_after.is_some_and(|l| n >= l) {
                out.push(ms(self.lock_for));
                break;
            }
            if n < self.free {
                out.push(0);
                continue;
            }
            let shift = u32::try_from(n - self.free).unwrap_or(u32::MAX).min(40);
            let d = first.saturating_mul(1u64 << shift).min(max);
            out.push(d);
            if d == max && self.lock_after.is_none() {
                break;
            }
        }
        Schedule(out)
    }

    fn locks_at(&self, failures: u64) -> bool {
        self.lock_after.is_some_and(|l| failures >= l)
    }
}

/// The throttling rules. `Default` is what Gatehouse runs with (README, "Login throttling").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// The user's failures at one client address (an IPv6 /64 counts as one address).
    pub user_at_address: ThrottleRule,
    /// Failures at one address, for any user.
    pub address: ThrottleRule,
    /// The user's failures from every address: never locks; its (capped) delay applies only
    /// at addresses that failed for the user.
    pub user: ThrottleRule,
    /// A counter is forgotten this long after its first failure (or when its lock ends, if
    /// later).
    pub window: Duration,
    /// The user's failures (all addresses) that raise a `user_throttled` alert.
    pub user_alert_at: u64,
}

impl Default for LockoutPolicy {
    /// At one address, a user gets 3 failures free (OpenSSH asks three times), then waits
    /// 1 s, 2 s, 4 s, 8 s, 16 s, and the 8th failure locks for 15 minutes. An address gets 10
    /// failures free (an office behind one NAT), then 1 s doubling up to a minute, and the
    /// 30th locks it for 15 minutes. A user failing from many addresses makes each address
    /// that failed for them wait up to a minute between guesses (5 free). Counters last an
    /// hour from their first failure.
    fn default() -> Self {
        let lock_for = Duration::from_secs(15 * 60);
        LockoutPolicy {
            user_at_address: ThrottleRule {
                free: 3,
                first_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(300),
                lock_after: Some(8),
                lock_for,
            },
            address: ThrottleRule {
                free: 10,
                first_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                lock_after: Some(30),
                lock_for,
            },
            user: ThrottleRule {
                free: 5,
                first_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                lock_after: None,
                lock_for: Duration::ZERO,
            },
            window: Duration::from_secs(3600),
            user_alert_at: 20,
        }
    }
}

impl LockoutPolicy {
    pub fn schedules(&self) -> Schedules {
        Schedules {
            user_at_address: self.user_at_address.schedule(),
            address: self.address.schedule(),
            user: self.user.schedule(),
            window: self.window,
        }
    }

    fn rule(&self, scope: Scope) -> &ThrottleRule {
        match scope {
            Scope::UserAtAddress => &self.user_at_address,
            Scope::Address => &self.address,
            Scope::User => &self.user,
        }
    }
}

/// A guess admitted by the throttle and counted as a failure until settled.
#[derive(Debug)]
pub(super) struct Attempt {
    key: AttemptKey,
    counts: Counts,
}

fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Authenticator {
    /// Admits a guess by `user` from `client` and counts it as a failure, or refuses it while
    /// a counter's delay or lock runs (audited as a `login_failure`).
    pub(super) async fn admit(
        &self,
        user: &str,
        client: Option<IpAddr>,
        method: AuthMethod,
    ) -> Result<Attempt, AuthError> {
        let key = AttemptKey::new(user, client);
        match self.gate(&key, true).await? {
            Gate::Open(counts) => Ok(Attempt { key, counts }),
            Gate::Closed {
                scope,
                wait,
                counts,
            } => Err(self
                .refuse_throttled(user, client, method, scope, wait, counts)
                .await?),
        }
    }

    /// Refuses (audited) while `user` from `client` is locked out; counts nothing (a step
    /// that is no guess, such as offering an SSH key). A mere delay is left to the guess that
    /// follows (whose prompt can say how long to wait).
    pub(super) async fn check_lockout(
        &self,
        user: &str,
        client: Option<IpAddr>,
        method: AuthMethod,
    ) -> Result<(), AuthError> {
        let key = AttemptKey::new(user, client);
        match self.gate(&key, false).await? {
            Gate::Closed {
                scope,
                wait,
                counts,
            } if self.inner.lockout.rule(scope).locks_at(counts.of(scope)) => Err(self
                .refuse_throttled(user, client, method, scope, wait, counts)
                .await?),
            _ => Ok(()),
        }
    }

    /// The wait before `user` from `client` may guess again (no audit, nothing counted):
    /// what a prompt tells the user.
    pub async fn throttle_wait(
        &self,
        user: &str,
        client: Option<IpAddr>,
    ) -> Result<Option<Duration>, AuthError> {
        let key = AttemptKey::new(user, client);
        Ok(match self.gate(&key, false).await? {
            Gate::Open(_) => None,
            Gate::Closed { wait, .. } => Some(wait),
        })
    }

    async fn gate(&self, key: &AttemptKey, reserve: bool) -> Result<Gate, AuthError> {
        self.inner
            .store
            .attempt_gate(key, &self.inner.schedules, now_ms(), reserve)
            .await
            .map_err(AuthError::Store)
    }

    async fn refuse_throttled(
        &self,
        user: &str,
        client: Option<IpAddr>,
        method: AuthMethod,
        scope: Scope,
        wait: Duration,
        counts: Counts,
    ) -> Result<AuthError, AuthError> {
        let failures = counts.of(scope);
        let locked = self.inner.lockout.rule(scope).locks_at(failures);
        let secs = secs_up(wait).max(1);
        let reason = if locked {
            format!(
                "locked out: {} ({failures} failures), {secs} s left",
                scope.describe()
            )
        } else {
            format!(
                "slowed: {} ({failures} failures), retry in {secs} s",
                scope.describe()
            )
        };
        self.audit(AuditEvent::LoginFailure {
            user: user.to_string(),
            method: method.as_str().into(),
            reason,
            client_addr: client,
        })
        .await?;
        Ok(AuthError::LockedOut {
            remaining_secs: secs,
            scope,
            locked,
        })
    }

    /// An admitted guess failed: it stays counted. The failure that locks a counter raises
    /// a `lockout` alert; guessing of one user from many addresses a `user_throttled` one.
    pub(super) async fn failed(&self, attempt: &Attempt) -> Result<(), AuthError> {
        let policy = &self.inner.lockout;
        for scope in [Scope::UserAtAddress, Scope::Address] {
            let rule = policy.rule(scope);
            let failures = attempt.counts.of(scope);
            if rule.lock_after == Some(failures) {
                self.audit(AuditEvent::Lockout {
                    key: attempt.key.name(scope),
                    failures,
                    locked_secs: rule.lock_for.as_secs(),
                    incident_id: new_incident_id(),
                    user: (scope == Scope::UserAtAddress).then(|| attempt.key.user.clone()),
                    client_addr: attempt.key.addr,
                })
                .await?;
            }
        }
        if attempt.counts.user == policy.user_alert_at {
            self.audit(AuditEvent::UserThrottled {
                user: attempt.key.user.clone(),
                failures: attempt.counts.user,
                max_delay_secs: policy.user.max_delay.as_secs(),
                incident_id: new_incident_id(),
            })
            .await?;
        }
        Ok(())
    }

    /// An admitted guess that was no failure: taken back from the counters.
    pub(super) async fn settle(&self, attempt: &Attempt, how: Settle) -> Result<(), AuthError> {
        self.inner
            .store
            .settle_attempt(&attempt.key, how)
            .await
            .map_err(AuthError::Store)
    }
}

/// A policy for unit tests: the user at an address locks at its 3rd failure (no delay
/// before); the address and the user counters are out of the way unless a test sets them.
#[cfg(test)]
pub(crate) fn test_policy() -> LockoutPolicy {
    let lax = ThrottleRule {
        free: 1000,
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
        lock_after: None,
        lock_for: Duration::ZERO,
    };
    LockoutPolicy {
        user_at_address: ThrottleRule {
            free: 3,
            first_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            lock_after: Some(3),
            lock_for: Duration::from_secs(60),
        },
        address: lax,
        user: lax,
        window: Duration::from_secs(600),
        user_alert_at: 1000,
    }
}

#[cfg(test)]
mod flows;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedules() {
        let p = LockoutPolicy::default();
        let s = |v: &[u64]| Schedule(v.to_vec());
        assert_eq!(
            p.user_at_address.schedule(),
            s(&[0, 0, 1000, 2000, 4000, 8000, 16_000, 900_000])
        );
        let a = p.address.schedule();
        assert_eq!(a.0.len(), 30);
        assert_eq!(a.delay_ms(9), 0);
        assert_eq!(a.delay_ms(10), 1000);
        assert_eq!(a.delay_ms(16), 60_000);
        assert_eq!(a.delay_ms(29), 60_000);
        assert_eq!(a.delay_ms(30), 900_000);
        assert_eq!(a.delay_ms(31), 900_000);
        // The user's delay is capped and never a lock.
        let u = p.user.schedule();
        assert_eq!(
            u,
            s(&[0, 0, 0, 0, 1000, 2000, 4000, 8000, 16_000, 32_000, 60_000])
        );
        assert_eq!(u.delay_ms(10_000), 60_000);
    }
}
