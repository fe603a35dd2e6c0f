//! The privileged integration tests the VM runs: tests/vm/itests.txt names them, `cargo test
//! --no-run` builds them here (the VM reads the binaries, and the mcpmon they start, over 9p).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::util;

/// (test binary, test name) for each line of tests/vm/itests.txt.
pub fn build(root: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let list = std::fs::read_to_string(root.join("tests/vm/itests.txt")).context("tests/vm/itests.txt")?;
    let wanted: Vec<(&str, &str)> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').with_context(|| format!("itests.txt: {l:?} is not \"TEST-FILE TEST-NAME\"")))
        .collect::<anyhow::Result<_>>()?;
    eprintln!("vm-test: building the test binaries for the VM");
    let out = util::cargo_cmd()
        // The selection `cargo xtask test` builds, so that after it nothing is rebuilt (-p monitor
        // alone can unify features differently and rebuild the crate).
        .args(["test", "--workspace", "--exclude", "monitor-ebpf", "--no-run", "--message-format=json"])
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed");
    }
    // The executable of each integration test target, from cargo's artifact messages.
    let mut binaries = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_test = v["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test"))
            && v["manifest_path"].as_str().is_some_and(|m| Path::new(m) == root.join("monitor/Cargo.toml"));
        if let (true, Some(name), Some(exe)) = (is_test, v["target"]["name"].as_str(), v["executable"].as_str()) {
            binaries.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    wanted
        .into_iter()
        .map(|(file, test)| {
            let bin = binaries.get(file).with_context(|| format!("itests.txt: no test target monitor/tests/{file}.rs"))?;
            Ok((bin.clone(), test.trim().to_string()))
        })
        .collect()
}
