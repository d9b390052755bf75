//! The SSO users seen so far (`<data_dir>/sso-users.toml`): issuer + subject (the stable
//! identity), the policy name, the provider, the groups of the last login, the encrypted
//! TOTP secret, the administrator's lock, first and last login.
//!
//! Threat: SSO taking over another account's name (and so its grants, SSH keys and TOTP):
//! a provider user whose name is a local user's, another provider's user's, or another
//! subject's at the same provider. Mitigation: a name is bound to the first (issuer,
//! subject) that uses it and refused to every other, and never to a name in `users.toml`;
//! the check and the write happen under the users file's lock and then this file's lock (the
//! same order as `user add`, which refuses names recorded here), so two logins or a login
//! and an `user add` cannot both win. Written atomically, mode 0600; a corrupt file is an
//! error, never "no users".

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::claims::valid_sso_name;
use crate::error::IdentityError;
use crate::identity::{TotpCipher, Users, validate_group_name};

/// The registry's file name under the data directory.
pub const SSO_USERS_FILE: &str = "sso-users.toml";

/// One SSO user as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SsoUserRecord {
    /// The policy name (from the provider's `username_claim`, lowercased).
    pub name: String,
    /// The configured provider's name at the last login.
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// Groups of the last login (shown by `user list`; a login always reads them afresh).
    #[serde(default)]
    pub groups: Vec<String>,
    /// `base64(nonce || AES-256-GCM ciphertext)`, associated data = name; empty until the
    /// user enrols at a first SSO login (or after `user totp-reset`).
    #[serde(default)]
    pub totp_secret: String,
    #[serde(default)]
    pub locked: bool,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_login: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    users: Vec<SsoUserRecord>,
}

/// Who already holds a name an SSO login asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameOwner {
    LocalUser,
    /// Another subject, of this provider or another (its provider's name).
    SsoUser {
        provider: String,
    },
}

/// An SSO login as seen by the registry.
#[derive(Debug, Clone)]
pub(crate) struct Seen<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub issuer: &'a str,
    pub subject: &'a str,
    pub groups: &'a [String],
    pub now: u64,
}

/// The outcome of recording a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Recorded (new, or updated); the record as it now stands. `renamed_from` when the
    /// subject came with a new name.
    Ok {
        record: SsoUserRecord,
        renamed_from: Option<String>,
    },
    Taken(NameOwner),
    Locked,
}

/// The registry, loaded in memory.
#[derive(Debug, Clone)]
pub struct SsoUsers {
    path: PathBuf,
    users: Vec<SsoUserRecord>,
}

impl SsoUsers {
    /// The registry's path for a data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(SSO_USERS_FILE)
    }

    /// Loads the registry; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<SsoUsers, IdentityError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(IdentityError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let parse_err = |message: String| IdentityError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let file: RegistryFile =
            toml::from_str(&text).map_err(|e| parse_err(e.message().to_string()))?;
        for (i, u) in file.users.iter().enumerate() {
            if !valid_sso_name(&u.name) {
                return Err(parse_err(format!(
                    "users[{i}].name: `{}` is not valid",
                    u.name
                )));
            }
            if u.subject.is_empty() || u.issuer.is_empty() {
                return Err(parse_err(format!("users[{i}]: empty issuer or subject")));
            }
            let dup = file
                .users
                .iter()
                .filter(|o| o.name == u.name || (o.issuer == u.issuer && o.subject == u.subject));
            if dup.count() > 1 {
                return Err(parse_err(format!(
                    "users[{i}]: name or issuer+subject appears twice"
                )));
            }
            for g in &u.groups {
                validate_group_name(g).map_err(|e| parse_err(format!("users[{i}].groups: {e}")))?;
            }
        }
        Ok(SsoUsers {
            path: path.to_path_buf(),
            users: file.users,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, name: &str) -> Option<&SsoUserRecord> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn by_subject(&self, issuer: &str, subject: &str) -> Option<&SsoUserRecord> {
        self.users
            .iter()
            .find(|u| u.issuer == issuer && u.subject == subject)
    }

    /// Every recorded SSO user (no secrets: the TOTP secret is left empty).
    pub fn list(&self) -> Vec<SsoUserRecord> {
        self.users
            .iter()
            .map(|u| SsoUserRecord {
                totp_secret: String::new(),
                ..u.clone()
            })
            .collect()
    }

    /// True when `name` has enrolled a TOTP secret.
    pub fn has_totp(&self, name: &str) -> bool {
        self.get(name).is_some_and(|u| !u.totp_secret.is_empty())
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut SsoUserRecord, IdentityError> {
        self.users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| IdentityError::NoSuchUser(name.to_string()))
    }

    /// Locks (or unlocks) an SSO user and saves: no new SSO login for it.
    pub fn set_locked(&mut self, name: &str, locked: bool) -> Result<(), IdentityError> {
        self.get_mut(name)?.locked = locked;
        self.save()
    }

    /// Forgets an SSO user's TOTP secret and saves: it enrols again at its next SSO login.
    pub fn clear_totp(&mut self, name: &str) -> Result<(), IdentityError> {
        self.get_mut(name)?.totp_secret.clear();
        self.save()
    }

    /// Records a login: refuses a name held by a local user or another subject, and a
    /// locked subject; otherwise inserts or updates the subject's record (a renamed subject
    /// keeps its TOTP secret, sealed again under the new name) and saves.
    pub(crate) fn record(
        &mut self,
        seen: &Seen<'_>,
        local: &Users,
        cipher: &TotpCipher,
    ) -> Result<Recorded, IdentityError> {
        if local.get(seen.name).is_some() {
            return Ok(Recorded::Taken(NameOwner::LocalUser));
        }
        if let Some(holder) = self.get(seen.name)
            && (holder.issuer != seen.issuer || holder.subject != seen.subject)
        {
            return Ok(Recorded::Taken(NameOwner::SsoUser {
                provider: holder.provider.clone(),
            }));
        }
        let existing = self
            .users
            .iter_mut()
            .find(|u| u.issuer == seen.issuer && u.subject == seen.subject);
        let (record, renamed_from) = match existing {
            Some(u) if u.locked => return Ok(Recorded::Locked),
            Some(u) => {
                let mut renamed_from = None;
                if u.name != seen.name {
                    if !u.totp_secret.is_empty() {
                        let plain = cipher.decrypt(&u.name, &u.totp_secret)?;
                        u.totp_secret = cipher.encrypt(seen.name, &plain)?;
                    }
                    renamed_from = Some(std::mem::replace(&mut u.name, seen.name.to_string()));
                }
                u.provider = seen.provider.to_string();
                u.groups = seen.groups.to_vec();
                u.last_login = seen.now;
                (u.clone(), renamed_from)
            }
            None => {
                let u = SsoUserRecord {
                    name: seen.name.to_string(),
                    provider: seen.provider.to_string(),
                    issuer: seen.issuer.to_string(),
                    subject: seen.subject.to_string(),
                    groups: seen.groups.to_vec(),
                    totp_secret: String::new(),
                    locked: false,
                    first_seen: seen.now,
                    last_login: seen.now,
                };
                self.users.push(u.clone());
                (u, None)
            }
        };
        self.save()?;
        Ok(Recorded::Ok {
            record,
            renamed_from,
        })
    }

    /// Stores a freshly enrolled (sealed) TOTP secret for `name`, only while that name still
    /// belongs to `issuer` + `subject` and has none. False otherwise.
    pub(crate) fn set_totp_if_empty(
        &mut self,
        name: &str,
        issuer: &str,
        subject: &str,
        sealed: String,
    ) -> Result<bool, IdentityError> {
        let Some(u) = self
            .users
            .iter_mut()
            .find(|u| u.name == name && u.issuer == issuer && u.subject == subject && !u.locked)
        else {
            return Ok(false);
        };
        if !u.totp_secret.is_empty() {
            return Ok(false);
        }
        u.totp_secret = sealed;
        self.save()?;
        Ok(true)
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self) -> Result<(), IdentityError> {
        let mut text = toml::to_string_pretty(&RegistryFile {
            users: self.users.clone(),
        })
        .map_err(|e| IdentityError::Parse {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        crate::identity::private_file::write_atomic(&self.path, text.as_bytes()).map_err(|source| {
            IdentityError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

/// Loads the users file and the registry under both locks (users first, as `user add`
/// does) and records `seen`.
pub(crate) fn record_login(
    users_file: &Path,
    registry: &Path,
    seen: &Seen<'_>,
    cipher: &TotpCipher,
) -> Result<Recorded, IdentityError> {
    let _users_lock = Users::lock_for_update(users_file)?;
    let _registry_lock = Users::lock_for_update(registry)?;
    let local = Users::load(users_file)?;
    let mut reg = SsoUsers::load(registry)?;
    reg.record(seen, &local, cipher)
}

#[cfg(test)]
mod tests;
