//! Lock states answered from this instance's copies (see [`super::copies`]): a login checks
//! its user's and its address's lock without a round trip while Redis keeps the copy valid.
//! Counting failures and locking stay in Redis alone (`record_failure`).

use std::time::Duration;

use redis::AsyncCommands;

use super::copies::mono_ms;
use super::{RedisStore, lock_key, within};
use crate::error::StoreError;
use crate::store::{LockoutKey, now_ms};

/// The remaining time of a lock ending at `end` (wall ms), seen at `now`.
fn remaining(end: Option<u64>, now: u64) -> Option<Duration> {
    end.filter(|e| *e > now)
        .map(|e| Duration::from_millis(e - now))
}

impl RedisStore {
    /// [`crate::store::Store::lockout_remaining`]: from the copy while the link serves, else
    /// read (on the link, filing a copy, when it is up; on the command connection when not).
    pub(super) async fn lock_remaining(
        &self,
        key: &LockoutKey,
    ) -> Result<Option<Duration>, StoreError> {
        let k = key.as_key();
        let now = now_ms();
        let copies = &self.link.copies;
        if self.link.state.serving(mono_ms())
            && let Some(end) = copies.locks.get(&k)
        {
            return Ok(remaining(end, now));
        }
        let redis_key = lock_key(key);
        let Ok((generation, mut c)) = self.link.conn() else {
            let mut con = self.con.clone();
            let pttl: i64 = within("lockout_remaining", con.pttl(&redis_key)).await?;
            return Ok(u64::try_from(pttl).ok().map(Duration::from_millis));
        };
        let ticket = copies.locks.ticket(generation, &k);
        let pttl: i64 = within("lockout_remaining", c.pttl(&redis_key)).await?;
        let end = u64::try_from(pttl).ok().map(|ms| now.saturating_add(ms));
        copies.locks.file(ticket, &self.link.state, &k, end);
        Ok(remaining(end, now))
    }
}
