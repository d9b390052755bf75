//! The local users as the running process knows them: `users.toml` read once, indexed by
//! name, and read again when the file changes (polled, like the policy files), so both doors
//! share one copy instead of reading the file on every login step and every new channel.
//! A change is told by the file's stamp (modification time, length, inode) and, while the
//! stamp is too recent to be trusted (a rewrite within the timestamp's granularity), by the
//! digest of its bytes.
//!
//! Threat: a change an administrator makes to `users.toml` (a user locked or removed, a
//! group or an SSH key taken away) not reaching sessions and connections that are already
//! live; a half-written or broken file opening or closing everything. Mitigation: every web
//! request and every new SSH channel re-checks the user against this copy (see
//! `Authenticator::recheck`), and each reload publishes the users whose access narrowed so
//! that live connections are re-checked at once (ended when no longer allowed). A file that
//! does not load is logged and the running copy stays (like a bad policy file); the file is
//! read on a blocking thread, never on the request path.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::sshkey;
use super::users::{UserRecord, Users};
use crate::error::IdentityError;

/// How often `users.toml` is checked for changes: a change reaches live sessions and
/// connections within this (plus the time to re-check them).
pub const USERS_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Capacity of the change feed; a receiver that lags re-checks every user.
const CHANGES_CAPACITY: usize = 64;
/// A file modified this recently may be modified again within its timestamp's granularity
/// without its stamp changing (same length, same inode): its bytes are compared instead.
const RACY: Duration = Duration::from_secs(2);

/// What identifies a version of the file on disk (modification time, length, inode).
type Stamp = Option<(SystemTime, u64, u64)>;

/// What the last look at the file found: its stamp and the digest of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    stamp: Stamp,
    digest: [u8; 32],
}

/// Whether a stamp is old enough to stand for the file's bytes (no write can still hide
/// behind it); a missing file never is (reading nothing is cheap).
fn settled(stamp: Stamp) -> bool {
    stamp.is_some_and(|(modified, _, _)| {
        SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age >= RACY)
    })
}

fn digest(text: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// One look at the file: `None` when it is the version `seen` (unless `force`), else the
/// users it holds (or why they do not load), with what was seen this time.
fn look(
    path: &Path,
    seen: Option<Seen>,
    force: bool,
) -> (Option<Seen>, Option<Result<Users, IdentityError>>) {
    let now = stamp(path);
    if let Some(s) = seen
        && !force
        && s.stamp == now
        && settled(now)
    {
        return (seen, None);
    }
    let text = match Users::read_text(path) {
        Ok(t) => t,
        // Not recorded as seen: the next look reads again.
        Err(e) => return (seen, Some(Err(e))),
    };
    let this = Seen {
        stamp: now,
        digest: digest(&text),
    };
    if !force && seen.is_some_and(|s| s.digest == this.digest) {
        return (Some(this), None);
    }
    (Some(this), Some(Users::parse(path, &text)))
}

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// Users whose access narrowed in one reload: removed, locked, or lost a group or an SSH
/// key. Live sessions and connections of these users are re-checked.
pub type NarrowedUsers = Arc<[String]>;

/// The shared copy of `users.toml`.
#[derive(Debug)]
pub struct UsersCache {
    path: PathBuf,
    current: RwLock<Arc<HashMap<String, UserRecord>>>,
    seen: Mutex<Option<Seen>>,
    changes: broadcast::Sender<NarrowedUsers>,
    /// One reload at a time: an older read never replaces a newer one.
    reloading: tokio::sync::Mutex<()>,
}

fn index(users: &Users) -> HashMap<String, UserRecord> {
    users
        .records()
        .iter()
        .map(|u| (u.name.clone(), u.clone()))
        .collect()
}

/// Whether `new` (or its absence) gives less access than `old`.
fn narrowed(old: &UserRecord, new: Option<&UserRecord>) -> bool {
    let Some(new) = new else { return true };
    let keys = |r: &UserRecord| -> HashSet<Vec<u8>> {
        r.ssh_keys
            .iter()
            .filter_map(|k| sshkey::parse_ssh_public_key(k).ok())
            .map(|k| k.blob)
            .collect()
    };
    (new.locked && !old.locked)
        || old.groups.iter().any(|g| !new.groups.contains(g))
        || !keys(old).is_subset(&keys(new))
}

impl UsersCache {
    /// Reads `path` now (blocking); a file that does not load is an error.
    pub fn load(path: &Path) -> Result<UsersCache, IdentityError> {
        match look(path, None, true) {
            (seen, Some(Ok(users))) => Ok(Self::with(path, &users, seen)),
            (_, Some(Err(e))) => Err(e),
            (_, None) => Err(IdentityError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::other("users file not read"),
            }),
        }
    }

    /// Reads `path` now (blocking); a file that does not load is logged and the copy starts
    /// empty (nobody can log in) until the file loads.
    pub fn load_or_empty(path: &Path) -> UsersCache {
        match Self::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "users file does not load; no local user can log in until it does");
                Self::with(path, &Users::empty(path), None)
            }
        }
    }

    fn with(path: &Path, users: &Users, seen: Option<Seen>) -> UsersCache {
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        UsersCache {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(index(users))),
            seen: Mutex::new(seen),
            changes,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users as last loaded.
    pub fn current(&self) -> Arc<HashMap<String, UserRecord>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `f` over the record of `name` (without copying the whole table's handle).
    pub fn with_user<T>(&self, name: &str, f: impl FnOnce(Option<&UserRecord>) -> T) -> T {
        let guard = self.current.read().unwrap_or_else(PoisonError::into_inner);
        f(guard.get(name))
    }

    /// The users whose access narrowed, as each reload finds them.
    pub fn subscribe(&self) -> broadcast::Receiver<NarrowedUsers> {
        self.changes.subscribe()
    }

    /// Reads the file again when it changed since the last look (or always, with `force`),
    /// on a blocking thread; installs it and returns the users whose access narrowed. A file
    /// that does not load is an error and the running copy stays (that version of the file
    /// is not read again: the next change is).
    pub async fn reload(&self, force: bool) -> Result<Option<NarrowedUsers>, IdentityError> {
        let _one = self.reloading.lock().await;
        let path = self.path.clone();
        let seen = *self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (now, read) = tokio::task::spawn_blocking(move || {
            let (now, read) = look(&path, seen, force);
            (now, read.map(|r| r.map(|u| index(&u))))
        })
        .await
        .map_err(|_| IdentityError::Read {
            path: self.path.clone(),
            source: std::io::Error::other("reload interrupted"),
        })?;
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = now;
        let Some(fresh) = read.transpose()? else {
            return Ok(None);
        };
        let old = self.current();
        let mut gone: Vec<String> = old
            .iter()
            .filter(|(name, rec)| narrowed(rec, fresh.get(*name)))
            .map(|(name, _)| name.clone())
            .collect();
        gone.sort();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        let gone: NarrowedUsers = gone.into();
        if !gone.is_empty() {
            // No receiver is not an error: nothing live to re-check.
            let _ = self.changes.send(gone.clone());
        }
        Ok(Some(gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{NewUser, TotpCipher};
    use crate::secret::SecretKey;
    use crate::testutil::TempDir;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeYz/7qFp5L7tsziy3gAQT/T5CI3erKWolp9s4IYk+O";

    #[tokio::test]
    async fn reloads_on_change_and_names_the_users_whose_access_narrowed() {
        let dir = TempDir::new("users-cache");
        let path = dir.path().join("users.toml");
        let cipher = TotpCipher::new(&SecretKey::from_bytes([1; 32])).unwrap();
        let mut users = Users::load(&path).unwrap();
        for (name, groups) in [("alice", vec!["sre", "staff"]), ("bob", vec!["staff"])] {
            let groups: Vec<String> = groups.into_iter().map(String::from).collect();
            users
                .add(
                    NewUser {
                        name,
                        groups: &groups,
                        password: "correct-Horse-7-battery",
                        ssh_keys: &[KEY_A.to_string()],
                    },
                    &cipher,
                )
                .unwrap();
        }
        let cache = UsersCache::load(&path).unwrap();
        let mut feed = cache.subscribe();
        assert_eq!(cache.reload(false).await.unwrap(), None, "unchanged");
        // A group added is no narrowing; one taken away is.
        users.edit("bob", |u| u.groups.push("ops".into())).unwrap();
        assert_eq!(cache.reload(false).await.unwrap().unwrap().len(), 0);
        users
            .edit("alice", |u| u.groups.retain(|g| g != "sre"))
            .unwrap();
        let got = cache.reload(false).await.unwrap().unwrap();
        assert_eq!(&*got, ["alice".to_string()]);
        assert_eq!(&*feed.recv().await.unwrap(), ["alice".to_string()]);
        assert_eq!(
            cache.with_user("alice", |u| u.unwrap().groups.clone()),
            ["staff"]
        );
        // A key removed, a lock, a removal.
        users.edit("bob", |u| u.ssh_keys.clear()).unwrap();
        assert_eq!(
            &*cache.reload(false).await.unwrap().unwrap(),
            ["bob".to_string()]
        );
        users.set_locked("alice", true).unwrap();
        users.remove_for_test("bob").unwrap();
        assert_eq!(
            &*cache.reload(false).await.unwrap().unwrap(),
            ["alice".to_string(), "bob".to_string()]
        );
        assert!(cache.with_user("bob", |u| u.is_none()));
        // A broken file: an error, and the running copy stays; that version is not read
        // again, the next one is.
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, "users = [[[").unwrap();
        assert!(cache.reload(false).await.is_err());
        assert!(cache.with_user("alice", |u| u.is_some_and(|u| u.locked)));
        assert_eq!(cache.reload(false).await.unwrap(), None);
        std::fs::write(&path, good.replace("locked = true", "locked = false")).unwrap();
        assert_eq!(cache.reload(false).await.unwrap().unwrap().len(), 0);
        assert!(cache.with_user("alice", |u| u.is_some_and(|u| !u.locked)));
    }

    #[tokio::test]
    async fn a_rewrite_that_keeps_the_stamp_is_still_seen() {
        let dir = TempDir::new("users-cache-racy");
        let path = dir.path().join("users.toml");
        let cipher = TotpCipher::new(&SecretKey::from_bytes([2; 32])).unwrap();
        let mut users = Users::load(&path).unwrap();
        for name in ["alice", "bob"] {
            users
                .add(
                    NewUser {
                        name,
                        groups: &["staff".to_string()],
                        password: "correct-Horse-7-battery",
                        ssh_keys: &[],
                    },
                    &cipher,
                )
                .unwrap();
        }
        let cache = UsersCache::load(&path).unwrap();
        // Rewritten in place within the timestamp's granularity: same length, same inode,
        // same modification time; only the bytes differ (bob renamed: removed).
        let before = stamp(&path);
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let renamed = text.replace("\"bob\"", "\"bop\"");
        assert_ne!(renamed, text);
        std::fs::write(&path, &renamed).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert_eq!(stamp(&path), before, "the stamp alone cannot tell");
        assert_eq!(
            &*cache.reload(false).await.unwrap().unwrap(),
            ["bob".to_string()]
        );
        assert!(cache.with_user("bop", |u| u.is_some()));
        assert_eq!(cache.reload(false).await.unwrap(), None, "read once");
    }
}
