//! Just-in-time grants as the store keeps them, and the in-process (`memory://`) table.
//!
//! A grant is shared state like a session: every instance decides with it, so it lives in
//! the store, and every change bumps a generation and is published on the revocation
//! channel ([`super::RevocationEvent::Grants`]) so each instance refreshes its own copy (the
//! policy decides from that copy, never with a store round trip per request).
//!
//! Threat: anyone who can write to the store minting or extending a grant. Mitigation: in
//! Redis a grant is a MAC'd record like a session (see `redis::record`); a record that fails
//! its MAC is no grant. Expired grants are never returned.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Longest grant id accepted in a lookup (`g-` and 16 hex digits are made).
pub const MAX_GRANT_ID: usize = 64;

/// One just-in-time grant: `user` may use `object` (a `group:NAME` to join, or an object
/// pattern like `app:wiki/*`) for `action` until `expires_ms`, for `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `g-` and 16 lowercase hex digits.
    pub id: String,
    pub user: String,
    /// `group:NAME`, or an object pattern (`*` only at the end).
    pub object: String,
    /// `*` or alternatives (`GET|HEAD`, `ssh|sftp`); `*` for a group.
    pub action: String,
    /// Why: required, shown in `grant list` and carried by every access it allows.
    pub reason: String,
    /// Who granted it (`cli:USER`).
    pub granted_by: String,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub expires_ms: u64,
}

impl Grant {
    /// True until its expiry (`expires_ms` itself is already expired).
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }

    /// A fresh grant id: `g-` and 64 random bits in hex.
    pub fn new_id() -> Result<String, StoreError> {
        let mut raw = [0u8; 8];
        crate::secret::random_bytes(&mut raw).map_err(|_| StoreError::Random)?;
        Ok(format!("g-{}", crate::secret::hex_lower(raw)))
    }

    /// A well-formed id (what a lookup accepts): `g-` and lowercase hex.
    pub fn is_id(id: &str) -> bool {
        id.len() <= MAX_GRANT_ID
            && id.strip_prefix("g-").is_some_and(|hex| {
                !hex.is_empty()
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
    }
}

#[derive(Debug, Default)]
struct Table {
    grants: HashMap<String, Grant>,
    generation: u64,
}

/// The in-process grants table of [`super::MemoryStore`]. A std `Mutex` never held across
/// an `.await`.
#[derive(Debug, Default)]
pub(crate) struct MemoryGrants {
    table: Mutex<Table>,
}

impl MemoryGrants {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `grant` (replacing one with its id); the new generation.
    pub(crate) fn put(&self, grant: &Grant, now_ms: u64) -> u64 {
        let mut t = self.lock();
        t.grants.retain(|_, g| g.is_live(now_ms));
        t.grants.insert(grant.id.clone(), grant.clone());
        t.generation += 1;
        t.generation
    }

    /// Live grants, oldest first.
    pub(crate) fn list(&self, now_ms: u64) -> Vec<Grant> {
        let mut v: Vec<Grant> = self
            .lock()
            .grants
            .values()
            .filter(|g| g.is_live(now_ms))
            .cloned()
            .collect();
        sort(&mut v);
        v
    }

    /// Removes grant `id`: the grant when it was live.
    pub(crate) fn revoke(&self, id: &str, now_ms: u64) -> Option<Grant> {
        let mut t = self.lock();
        let removed = t.grants.remove(id).filter(|g| g.is_live(now_ms));
        if removed.is_some() {
            t.generation += 1;
        }
        removed
    }

    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }
}

/// Oldest first, then by id (a stable order for listings).
pub(crate) fn sort(v: &mut [Grant]) {
    v.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_checked() {
        let a = Grant::new_id().unwrap();
        let b = Grant::new_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 18);
        for ok in [a.as_str(), "g-0", "g-deadbeef"] {
            assert!(Grant::is_id(ok), "{ok}");
        }
        for bad in ["", "g-", "g-XY", "g-12 ", "h-12", "g-../x", &"f".repeat(70)] {
            assert!(!Grant::is_id(bad), "{bad}");
        }
    }
}
