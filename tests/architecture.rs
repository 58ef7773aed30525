//! ARCHITECTURE.md's file table names exactly the files of the crate:
//! every file under `src/`, `tests/` and `examples/` has a row, and every
//! row names a path that exists. Runs in CI as part of `cargo test`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first column of the table under `## Files`, without backticks.
fn named_in_table(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_files = false;
    for line in text.lines() {
        if line.starts_with("## ") {
            in_files = line.trim() == "## Files";
            continue;
        }
        if !in_files || !line.starts_with('|') {
            continue;
        }
        let first = line
            .trim_start_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim();
        if first.starts_with('`') && first.ends_with('`') && first.len() > 2 {
            names.push(first.trim_matches('`').to_string());
        }
    }
    names
}

/// Every `.rs` file under `dir`, as a path relative to the crate root.
fn rust_files(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root()).expect("under the crate root");
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
}

#[test]
fn file_table_names_exactly_the_files() {
    let text = fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let named = named_in_table(&text);
    assert!(named.len() > 10, "no file table found under '## Files'");

    let missing_on_disk: Vec<&String> = named.iter().filter(|n| !root().join(n).exists()).collect();
    assert!(
        missing_on_disk.is_empty(),
        "ARCHITECTURE.md names files that do not exist: {missing_on_disk:?}"
    );

    let named: BTreeSet<String> = named.into_iter().collect();
    let mut on_disk = BTreeSet::new();
    for dir in ["src", "tests", "examples"] {
        rust_files(&root().join(dir), &mut on_disk);
    }
    let unnamed: Vec<&String> = on_disk.iter().filter(|f| !named.contains(*f)).collect();
    assert!(
        unnamed.is_empty(),
        "files ARCHITECTURE.md's table does not name: {unnamed:?}"
    );
}

#[test]
fn the_table_parser_sees_rows_and_only_rows() {
    let text = "# x\n\n## Files\n\n| file | part |\n|---|---|\n| `src/a.rs` | a |\n| `b/` | b |\n\n## Other\n\n| `src/c.rs` | not a file row |\n";
    assert_eq!(named_in_table(text), vec!["src/a.rs", "b/"]);
}
