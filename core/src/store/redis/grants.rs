//! Grants in Redis: `gatehouse:grant:<id>` holds the MAC'd record (expiring with the grant),
//! `gatehouse:grant-ids` indexes them, `gatehouse:grants-generation` counts changes. A change
//! is written in one `MULTI` and then published on the revocation channel.
//!
//! Each instance's policy keeps its own copy of the grants (`crate::grant::follow`) and
//! polls [`crate::store::Store::grants_generation`] for changes the channel missed: that
//! answer comes from this instance's tracked copy of the generation (no round trip while the
//! link serves; see [`super::copies`]) and is refused ([`StoreError::Unsynced`]) while the
//! link is down, so the policy drops its grants at once instead of keeping a stale copy.
//! Grant records are read on the link, so a change to one behind gatehouse's back (or its
//! expiry) also changes the generation answered.
//!
//! The index is not authenticated: an id removed from it by someone who can write to Redis
//! only hides a grant (less access, never more); an id added to it names a record that must
//! still carry a valid MAC for its own key.

use redis::AsyncCommands;

use super::super::grants::{Grant, sort};
use super::copies::{GENERATION_COPY, mono_ms};
use super::{GRANT_PREFIX, GRANTS_GENERATION, PREFIX, RedisStore, within};
use crate::error::StoreError;
use crate::store::{RevocationEvent, now_ms};

fn grant_key(id: &str) -> String {
    format!("{GRANT_PREFIX}{id}")
}

fn ids_key() -> String {
    format!("{PREFIX}grant-ids")
}

fn generation_key() -> String {
    GRANTS_GENERATION.to_string()
}

impl RedisStore {
    /// The grant stored at `key`: `None` when its MAC fails (as if absent), an error when a
    /// record with a valid MAC does not parse or names another id.
    fn decode_grant(&self, id: &str, raw: &[u8]) -> Result<Option<Grant>, StoreError> {
        let key = grant_key(id);
        let Some(json) = self.records.open(&key, raw) else {
            return Ok(None);
        };
        let g: Grant =
            serde_json::from_slice(json).map_err(|_| StoreError::Corrupt { key: key.clone() })?;
        if g.id != id {
            return Err(StoreError::Corrupt { key });
        }
        Ok(Some(g))
    }

    pub(super) async fn put_grant_impl(&self, grant: &Grant) -> Result<(), StoreError> {
        let key = grant_key(&grant.id);
        let sealed = self.encode(&key, grant)?;
        let px = grant.expires_ms.saturating_sub(now_ms()).max(1);
        let mut con = self.con.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(sealed)
            .arg("PX")
            .arg(px)
            .ignore()
            .cmd("SADD")
            .arg(ids_key())
            .arg(&grant.id)
            .ignore()
            .cmd("INCR")
            .arg(generation_key())
            .ignore();
        within("put_grant", pipe.query_async::<()>(&mut con)).await?;
        // The link's invalidation may trail this answer: forget the generation here now.
        self.link.copies.grant_changed();
        self.publish(RevocationEvent::Grants { revoked: None }, Vec::new())
            .await
    }

    pub(super) async fn list_grants_impl(&self) -> Result<Vec<Grant>, StoreError> {
        let mut con = self.con.clone();
        // Records read on the link are tracked (see the module's note); the CLI's store,
        // like any instance whose link is down, reads them on the command connection.
        let mut link = self.link.conn().ok().map(|(_, c)| c);
        let ids: Vec<String> = within("list_grants", con.smembers(ids_key())).await?;
        let ids: Vec<String> = ids.into_iter().filter(|id| Grant::is_id(id)).collect();
        let now = now_ms();
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for chunk in ids.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|id| grant_key(id)).collect();
            let mget = redis::cmd("MGET").arg(&keys).clone();
            let vals: Vec<Option<Vec<u8>>> = match &mut link {
                Some(c) => within("list_grants", mget.query_async(c)).await?,
                None => within("list_grants", mget.query_async(&mut con)).await?,
            };
            for (id, v) in chunk.iter().zip(vals) {
                match v {
                    None => gone.push(id.clone()),
                    Some(raw) => {
                        if let Some(g) = self.decode_grant(id, &raw)?
                            && g.is_live(now)
                        {
                            out.push(g);
                        }
                    }
                }
            }
        }
        if !gone.is_empty() {
            // Expired records left their ids behind: tidy the index (best effort).
            let _ = within("list_grants", con.srem::<_, _, i64>(ids_key(), gone)).await;
        }
        sort(&mut out);
        Ok(out)
    }

    pub(super) async fn revoke_grant_impl(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        if !Grant::is_id(id) {
            return Ok(None);
        }
        let key = grant_key(id);
        let mut con = self.con.clone();
        // GETDEL: removed whatever it holds, a forged record included.
        let raw: Option<Vec<u8>> = within(
            "revoke_grant",
            redis::cmd("GETDEL").arg(&key).query_async(&mut con),
        )
        .await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SREM")
            .arg(ids_key())
            .arg(id)
            .ignore()
            .cmd("INCR")
            .arg(generation_key())
            .ignore();
        within("revoke_grant", pipe.query_async::<()>(&mut con)).await?;
        self.link.copies.grant_changed();
        let removed = match raw {
            Some(raw) => self.decode_grant(id, &raw)?.filter(|g| g.is_live(now_ms())),
            None => None,
        };
        if removed.is_some() {
            self.publish(
                RevocationEvent::Grants {
                    revoked: Some(id.to_string()),
                },
                Vec::new(),
            )
            .await?;
        }
        Ok(removed)
    }

    /// The generation of the grants, plus the grant records' invalidations seen here: from
    /// the copy while the link serves, else read on the link (filing a copy); refused while
    /// the link is down.
    pub(super) async fn grants_generation_impl(&self) -> Result<u64, StoreError> {
        let copies = &self.link.copies;
        let local = || {
            copies
                .grant_changes
                .load(std::sync::atomic::Ordering::Acquire)
        };
        if self.link.state.serving(mono_ms())
            && let Some(g) = copies.grants_generation.get(GENERATION_COPY)
        {
            return Ok(g.wrapping_add(local()));
        }
        let (generation, mut c) = self.link.conn()?;
        let ticket = copies.grants_generation.ticket(generation, GENERATION_COPY);
        let n: Option<u64> = within("grants_generation", c.get(generation_key())).await?;
        let n = n.unwrap_or(0);
        copies
            .grants_generation
            .file(ticket, &self.link.state, GENERATION_COPY, n);
        Ok(n.wrapping_add(local()))
    }
}
