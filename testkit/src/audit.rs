//! The audit log read back as JSON: each `.jsonl` segment of a log directory, oldest first.
//! The log's own checks (MAC, chain) are `gatehouse audit verify`'s; here a test reads what
//! was recorded. Trees that know core's types parse the `event` objects into them.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The `.jsonl` segments of the audit log in `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    files.sort();
    files
}

/// Every record line of the log in `dir` as JSON, oldest first.
pub fn records_in(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for f in segments(dir) {
        for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("audit line in {} is not JSON ({e}): {line}", f.display())
            });
            out.push(v);
        }
    }
    out
}

/// Every audit event in the log directory `dir` (the `event` object of each JSON line),
/// oldest first.
pub fn audit_events_in(dir: &Path) -> Vec<Value> {
    records_in(dir)
        .into_iter()
        .map(|v| match v.get("event") {
            Some(ev) if ev.is_object() => ev.clone(),
            _ => v,
        })
        .collect()
}
