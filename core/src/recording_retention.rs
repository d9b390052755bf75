//! Retention of session recordings (`[recording] retention_days`, default the audit log's):
//! a recording whose files were all last written more than that many days ago is removed,
//! whole. Self-contained (it knows recordings only as files named `<id>.<ext...>`, in the
//! recordings directory or below it), so it serves whatever layout the recording writer uses.
//!
//! A recording is the group of files sharing an id (the name up to its first `.`) in one
//! directory — a cast and its metadata or index files go together — and is removed only when
//! its newest file is past the limit, so a live recording (written as it happens) is never
//! touched. Hidden files (lock files, temporary files) are left alone. Directories emptied by
//! the removal are removed too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What a pruning removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Ids of the removed recordings (relative directory and id, e.g. `2026/01/abc123`).
    pub removed: Vec<String>,
    pub files: usize,
    pub bytes: u64,
}

/// The files of each recording under `dir` (recursively), by (directory, id).
type Groups = BTreeMap<(PathBuf, String), Vec<(PathBuf, SystemTime, u64)>>;

fn collect(dir: &Path, groups: &mut Groups, depth: usize) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_dir() {
            // Date-sharded layouts are a few levels deep; symlinks are never followed.
            if depth < 4 {
                collect(&e.path(), groups, depth + 1)?;
            }
        } else if ft.is_file() {
            let meta = e.metadata()?;
            let id = name.split('.').next().unwrap_or_default().to_string();
            if id.is_empty() {
                continue;
            }
            groups.entry((dir.to_path_buf(), id)).or_default().push((
                e.path(),
                meta.modified()?,
                meta.len(),
            ));
        }
    }
    Ok(())
}

/// Removes the recordings under `dir` last written more than `days` days before `now`.
pub fn prune(dir: &Path, days: u32, now: SystemTime) -> std::io::Result<PruneReport> {
    let cutoff = now
        .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut groups = Groups::new();
    collect(dir, &mut groups, 0)?;
    let mut report = PruneReport::default();
    let mut touched = Vec::new();
    for ((parent, id), files) in groups {
        let newest = files.iter().map(|f| f.1).max().unwrap_or(now);
        if newest >= cutoff {
            continue;
        }
        for (path, _, len) in &files {
            std::fs::remove_file(path)?;
            report.files += 1;
            report.bytes += len;
        }
        let rel = parent.strip_prefix(dir).unwrap_or(Path::new(""));
        report
            .removed
            .push(rel.join(&id).to_string_lossy().into_owned());
        touched.push(parent);
    }
    // Emptied sub-directories go too (never `dir` itself).
    touched.sort();
    touched.dedup();
    for mut d in touched {
        while d != dir && d.starts_with(dir) {
            if std::fs::remove_dir(&d).is_err() {
                break;
            }
            if !d.pop() {
                break;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, days: u64) {
        let t = SystemTime::now() - Duration::from_secs(days * 86_400);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn old_recordings_go_whole_and_live_ones_stay() {
        let dir = crate::testutil::TempDir::new("recret");
        let root = dir.path();
        std::fs::create_dir_all(root.join("2025/01")).unwrap();
        let files = [
            ("old.cast", 400),
            ("old.json", 400),
            ("mixed.cast", 400),
            ("mixed.json", 1), // still being written to: the recording stays
            ("new.cast", 3),
            ("2025/01/sharded.cast", 500),
            (".lock", 900),
        ];
        for (f, days) in files {
            std::fs::write(root.join(f), "x").unwrap();
            age(&root.join(f), days);
        }
        let r = prune(root, 380, SystemTime::now()).unwrap();
        assert_eq!(
            r.removed,
            vec!["old".to_string(), "2025/01/sharded".to_string()]
        );
        assert_eq!(r.files, 3);
        for gone in ["old.cast", "old.json", "2025"] {
            assert!(!root.join(gone).exists(), "{gone}");
        }
        for kept in ["mixed.cast", "mixed.json", "new.cast", ".lock"] {
            assert!(root.join(kept).exists(), "{kept}");
        }
        assert!(root.exists());
        assert_eq!(
            prune(&root.join("absent"), 1, SystemTime::now()).unwrap(),
            PruneReport::default()
        );
    }
}
