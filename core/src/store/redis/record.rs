//! Records in Redis carry a MAC.
//!
//! Threat: anyone who can write to Redis (a shared instance, a leaked password, another
//! tenant, an SSRF into it) minting a session for any name (`SET gatehouse:session:<hash of
//! a token they chose> {"user":"admin",...}`), editing a live session's user or groups, or
//! copying another user's valid record under their own session's key; the same with handoff
//! tickets. Mitigation: every session and handoff record is stored as `v1:<mac>:<json>`,
//! where the MAC is HMAC-SHA256, keyed by a key derived from the secret key (which is not in
//! Redis), over the record's Redis key and its JSON; it is checked on every read, in
//! constant time. A record that fails — forged, altered, moved to another key, or written
//! before MACs — is treated as no session (logged), never as an error that could be retried
//! into a pass.

use aws_lc_rs::hmac;

use crate::secret::{SecretKey, hex_lower};
use crate::store::ct_eq;

/// Key-derivation label of the record MAC key.
const KEY_LABEL: &str = "gatehouse/store-record/v1";
/// What the key-check record MACs: a fixed label, so it says nothing but "this key".
const KEY_CHECK_LABEL: &[u8] = b"gatehouse/key-check/v1";
/// The format tag of a MACed record.
const TAG: &[u8] = b"v1:";
/// Length of the hex MAC.
const MAC_HEX: usize = 64;

/// The key that authenticates records in the shared store. Instances sharing a store must
/// share the secret key (as they already must for TOTP secrets and the audit chain).
#[derive(Clone)]
pub struct RecordKey(hmac::Key);

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(..)")
    }
}

impl RecordKey {
    pub fn new(master: &SecretKey) -> RecordKey {
        let raw = zeroize::Zeroizing::new(master.derive(KEY_LABEL));
        RecordKey(hmac::Key::new(hmac::HMAC_SHA256, raw.as_slice()))
    }

    fn mac(&self, redis_key: &str, json: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(redis_key.as_bytes());
        ctx.update(&[0]);
        ctx.update(json);
        hex_lower(ctx.sign())
    }

    /// The stored form of `json` under `redis_key`.
    pub(super) fn seal(&self, redis_key: &str, json: &[u8]) -> Vec<u8> {
        let mac = self.mac(redis_key, json);
        let mut out = Vec::with_capacity(TAG.len() + MAC_HEX + 1 + json.len());
        out.extend_from_slice(TAG);
        out.extend_from_slice(mac.as_bytes());
        out.push(b':');
        out.extend_from_slice(json);
        out
    }

    /// The key-check record stored at `redis_key`: the same for every instance with this
    /// secret key, and different for any other (see `check_key`).
    pub(super) fn key_check(&self, redis_key: &str) -> Vec<u8> {
        self.seal(redis_key, KEY_CHECK_LABEL)
    }

    /// The JSON of a stored record read from `redis_key`, when its MAC holds; `None` (and a
    /// log line) when it does not.
    pub(super) fn open<'a>(&self, redis_key: &str, stored: &'a [u8]) -> Option<&'a [u8]> {
        let opened = stored
            .strip_prefix(TAG)
            .and_then(|rest| Some((rest.get(..MAC_HEX)?, rest.get(MAC_HEX..)?)))
            .and_then(|(mac, rest)| Some((mac, rest.strip_prefix(b":")?)))
            .filter(|(mac, json)| {
                std::str::from_utf8(mac).is_ok_and(|m| ct_eq(m, &self.mac(redis_key, json)))
            })
            .map(|(_, json)| json);
        if opened.is_none() {
            tracing::error!(key = %redis_key, "store record fails its MAC (forged, altered or moved in the store); treated as absent");
        }
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_unchanged_under_their_own_key_and_secret() {
        let k = RecordKey::new(&SecretKey::from_bytes([1; 32]));
        let json = br#"{"user":"alice"}"#;
        let sealed = k.seal("gatehouse:session:aa", json);
        assert_eq!(k.open("gatehouse:session:aa", &sealed), Some(&json[..]));
        // Another key, another secret, an altered byte, a plain record, truncations.
        assert_eq!(k.open("gatehouse:session:bb", &sealed), None);
        let other = RecordKey::new(&SecretKey::from_bytes([2; 32]));
        assert_eq!(other.open("gatehouse:session:aa", &sealed), None);
        let mut altered = sealed.clone();
        if let Some(b) = altered.iter_mut().rev().find(|b| **b == b'a') {
            *b = b'b';
        }
        assert_eq!(k.open("gatehouse:session:aa", &altered), None);
        assert_eq!(k.open("gatehouse:session:aa", json), None);
        for cut in [0, 2, 3, 40, 67, 68] {
            assert_eq!(
                k.open("gatehouse:session:aa", &sealed[..cut]),
                None,
                "{cut}"
            );
        }
        let mut upper = sealed.clone();
        upper[3..67].make_ascii_uppercase();
        assert_eq!(k.open("gatehouse:session:aa", &upper), None);
    }
}
