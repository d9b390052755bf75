//! Every test file of a crate's `tests/` is a module of its `tests/e2e.rs` (`autotests =
//! false` builds only that one binary): a file left out would silently never run. Included by
//! each crate's `tests/e2e.rs`; `CARGO_MANIFEST_DIR` names the including crate.

use std::path::Path;

#[test]
fn every_test_file_is_a_module_of_e2e() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let root = std::fs::read_to_string(dir.join("e2e.rs")).expect("read tests/e2e.rs");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("list tests/") {
        let path = entry.expect("list tests/").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name");
        if stem == "e2e" {
            continue;
        }
        files += 1;
        assert!(
            root.lines().any(|l| l.trim() == format!("mod {stem};")),
            "tests/{stem}.rs is not listed in {}: add `mod {stem};`",
            dir.join("e2e.rs").display()
        );
    }
    assert!(files > 0, "no test files found in {}", dir.display());
}
