//! `users.toml`: local users. Written atomically (temp file + fsync + rename, mode 0600) so a
//! crash never leaves a half-written file; a corrupt file is an error, never "no users".

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::totp::{self, Enrolment, TotpCipher};
use super::{password, sshkey, validate_group_name, validate_user_name};
use crate::error::IdentityError;

/// One local user as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// argon2id PHC string.
    pub password_hash: String,
    /// `base64(nonce || AES-256-GCM ciphertext)` of the TOTP secret; associated data = name.
    /// Empty when the user has no second factor yet (after [`Users::clear_totp`]): such a
    /// user can only enrol (web login), never log in with the password alone.
    #[serde(default)]
    pub totp_secret: String,
    #[serde(default)]
    pub locked: bool,
    /// OpenSSH public key lines.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserRecord>,
}

/// What `user list` shows: no hashes, no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub name: String,
    pub groups: Vec<String>,
    pub locked: bool,
    pub ssh_keys: usize,
    pub created_at: u64,
}

/// A user to create. The password is checked for strength and hashed; it is not kept.
pub struct NewUser<'a> {
    pub name: &'a str,
    pub groups: &'a [String],
    pub password: &'a str,
    pub ssh_keys: &'a [String],
}

/// The local users file, loaded in memory.
#[derive(Debug, Clone)]
pub struct Users {
    path: PathBuf,
    users: Vec<UserRecord>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An exclusive lock on `<users file>.lock`, held across load-modify-save so two admin
/// commands never lose each other's change. Released on drop.
#[derive(Debug)]
pub struct UsersLock(#[allow(dead_code)] std::fs::File);

impl Users {
    /// Takes the update lock of a users file (blocking until other writers are done).
    pub fn lock_for_update(path: &Path) -> Result<UsersLock, IdentityError> {
        let mut name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        let lock_path = path.with_file_name(name);
        let werr = |source| IdentityError::Write {
            path: lock_path.clone(),
            source,
        };
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(werr)?;
        f.lock().map_err(werr)?;
        Ok(UsersLock(f))
    }

    /// Loads the users file; a missing file is an empty user list.
    pub fn load(path: &Path) -> Result<Users, IdentityError> {
        Self::parse(path, &Self::read_text(path)?)
    }

    /// The users file's text; a missing file is empty.
    pub(crate) fn read_text(path: &Path) -> Result<String, IdentityError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(IdentityError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The users in `text`, read from `path` (named in errors), validated.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Users, IdentityError> {
        let file: UsersFile = toml::from_str(text).map_err(|e| IdentityError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let parse_err = |message: String| IdentityError::Parse {
            path: path.to_path_buf(),
            message,
        };
        for (i, u) in file.users.iter().enumerate() {
            validate_user_name(&u.name).map_err(|e| parse_err(format!("users[{i}].name: {e}")))?;
            if file.users.iter().filter(|o| o.name == u.name).count() > 1 {
                return Err(parse_err(format!(
                    "users[{i}].name: `{}` appears twice",
                    u.name
                )));
            }
            for g in &u.groups {
                validate_group_name(g).map_err(|e| parse_err(format!("users[{i}].groups: {e}")))?;
            }
            for k in &u.ssh_keys {
                sshkey::parse_ssh_public_key(k)
                    .map_err(|e| parse_err(format!("users[{i}].ssh_keys: {e}")))?;
            }
        }
        Ok(Users {
            path: path.to_path_buf(),
            users: file.users,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// No users (what a file that does not load leaves a running process with).
    pub(crate) fn empty(path: &Path) -> Users {
        Users {
            path: path.to_path_buf(),
            users: Vec::new(),
        }
    }

    pub(crate) fn records(&self) -> &[UserRecord] {
        &self.users
    }

    /// Changes one user's record with `f` and saves (tests standing in for an administrator
    /// editing the file).
    #[cfg(test)]
    pub(crate) fn edit(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut UserRecord),
    ) -> Result<(), IdentityError> {
        let u = self
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| IdentityError::NoSuchUser(name.to_string()))?;
        f(u);
        self.save()
    }

    /// Removes a user and saves (tests).
    #[cfg(test)]
    pub(crate) fn remove_for_test(&mut self, name: &str) -> Result<(), IdentityError> {
        self.users.retain(|u| u.name != name);
        self.save()
    }

    pub fn get(&self, name: &str) -> Option<&UserRecord> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn list(&self) -> Vec<UserSummary> {
        self.users
            .iter()
            .map(|u| UserSummary {
                name: u.name.clone(),
                groups: u.groups.clone(),
                locked: u.locked,
                ssh_keys: u.ssh_keys.len(),
                created_at: u.created_at,
            })
            .collect()
    }

    /// Adds a user (validated name, groups, keys; strong password), saves the file and
    /// returns the TOTP enrolment to show once.
    pub fn add(
        &mut self,
        new: NewUser<'_>,
        cipher: &TotpCipher,
    ) -> Result<Enrolment, IdentityError> {
        validate_user_name(new.name)?;
        if self.get(new.name).is_some() {
            return Err(IdentityError::UserExists(new.name.to_string()));
        }
        let mut groups = Vec::new();
        for g in new.groups {
            validate_group_name(g)?;
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        let mut ssh_keys = Vec::new();
        for k in new.ssh_keys {
            let parsed = sshkey::parse_ssh_public_key(k)?;
            let line = if parsed.comment.is_empty() {
                parsed.to_openssh()
            } else {
                format!("{} {}", parsed.to_openssh(), parsed.comment)
            };
            ssh_keys.push(line);
        }
        password::check_password_strength(new.name, new.password)?;
        let password_hash = password::hash_password(new.password)?;
        let secret = totp::new_secret()?;
        let enrolment = totp::enrolment(new.name, &secret)?;
        self.users.push(UserRecord {
            name: new.name.to_string(),
            groups,
            password_hash,
            totp_secret: cipher.encrypt(new.name, &secret)?,
            locked: false,
            ssh_keys,
            created_at: now_secs(),
        });
        self.save()?;
        Ok(enrolment)
    }

    /// Locks (or unlocks) a user and saves. A locked user cannot authenticate.
    pub fn set_locked(&mut self, name: &str, locked: bool) -> Result<(), IdentityError> {
        let u = self
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| IdentityError::NoSuchUser(name.to_string()))?;
        u.locked = locked;
        self.save()
    }

    /// Replaces a user's TOTP secret, saves, and returns the new enrolment.
    pub fn reset_totp(
        &mut self,
        name: &str,
        cipher: &TotpCipher,
    ) -> Result<Enrolment, IdentityError> {
        let u = self
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| IdentityError::NoSuchUser(name.to_string()))?;
        let secret = totp::new_secret()?;
        let enrolment = totp::enrolment(name, &secret)?;
        u.totp_secret = cipher.encrypt(name, &secret)?;
        self.save()?;
        Ok(enrolment)
    }

    /// Removes a user's TOTP secret and saves: the user must enrol a new authenticator at
    /// the next web login (password, then a QR code and a first valid code).
    pub fn clear_totp(&mut self, name: &str) -> Result<(), IdentityError> {
        let u = self
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| IdentityError::NoSuchUser(name.to_string()))?;
        u.totp_secret.clear();
        self.save()
    }

    /// Stores a freshly enrolled (already encrypted) TOTP secret, only while the user has
    /// none: two racing enrolments cannot overwrite each other. Returns false otherwise.
    pub(crate) fn set_totp_if_empty(
        &mut self,
        name: &str,
        sealed: String,
    ) -> Result<bool, IdentityError> {
        let Some(u) = self.users.iter_mut().find(|u| u.name == name) else {
            return Ok(false);
        };
        if !u.totp_secret.is_empty() {
            return Ok(false);
        }
        u.totp_secret = sealed;
        self.save()?;
        Ok(true)
    }

    /// The current TOTP code of a user (quick-start demo user and tests only: it decrypts
    /// the secret).
    pub fn current_totp_code(
        &self,
        name: &str,
        cipher: &TotpCipher,
    ) -> Result<String, IdentityError> {
        let u = self
            .get(name)
            .ok_or_else(|| IdentityError::NoSuchUser(name.to_string()))?;
        let secret = cipher.decrypt(name, &u.totp_secret)?;
        totp::current_code(name, &secret, now_secs())
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self) -> Result<(), IdentityError> {
        let werr = |source| IdentityError::Write {
            path: self.path.clone(),
            source,
        };
        let mut text = toml::to_string_pretty(&UsersFile {
            users: self.users.clone(),
        })
        .map_err(|e| IdentityError::Parse {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        super::private_file::write_atomic(&self.path, text.as_bytes()).map_err(werr)
    }
}
