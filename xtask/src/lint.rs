//! Source lints run by `cargo test -p xtask`.

use std::path::{Path, PathBuf};

/// Source trees whose `unsafe` blocks and impls must say why they are sound.
const TREES: &[&str] = &["monitor/src", "monitor-ebpf/src", "monitor-common/src", "xtask/src"];
/// A `SAFETY:` comment counts on the opening line or on this many lines above it.
const LOOKBACK: usize = 4;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `file:line` of every `unsafe` block or impl without a `SAFETY:` comment.
fn unsafe_without_safety(root: &Path) -> Vec<String> {
    // Built at run time so that this file's own text holds no match.
    let block = format!("{} {{", "unsafe");
    let imp = format!("{} impl", "unsafe");
    let mut files = Vec::new();
    for tree in TREES {
        rust_files(&root.join(tree), &mut files);
    }
    files.sort();
    let mut missing = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("//") || !(line.contains(&block) || line.contains(&imp)) {
                continue;
            }
            if !lines[i.saturating_sub(LOOKBACK)..=i].iter().any(|l| l.contains("SAFETY:")) {
                let rel = file.strip_prefix(root).unwrap_or(file);
                missing.push(format!("{}:{}", rel.display(), i + 1));
            }
        }
    }
    missing
}

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let missing = unsafe_without_safety(&root);
    assert!(
        missing.is_empty(),
        "{} unsafe block(s)/impl(s) without a `// SAFETY:` comment on the line or the {LOOKBACK} lines above:\n{}",
        missing.len(),
        missing.join("\n")
    );
}
