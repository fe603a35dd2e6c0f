//! Section 6: the result scanner (issue 13): precision and recall on the labelled set of
//! results (monitor/tests/data/results) and the scan's cost per KiB, from the release binary.
use std::{fmt::Write as _, process::Command};

use anyhow::Context as _;
use serde_json::Value;

use crate::util;

pub fn run() -> anyhow::Result<Value> {
    let out = Command::new(super::testkit()).arg("results").arg(util::root().join("monitor/tests/data/results")).output().context("mcpmon-testkit results")?;
    anyhow::ensure!(out.status.success(), "mcpmon-testkit results: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub fn markdown(s: &mut String, v: &Value) {
    if v.is_null() {
        return;
    }
    let l = &v["labelled"];
    let _ = writeln!(s, "\n## 6. Results of tool calls: injection and secrets\n");
    let _ = writeln!(s, "The result scanner on the labelled set in `monitor/tests/data/results`: {} benign results (real outputs: git logs, `ls -la`, manual pages, Debian READMEs, a licence, logs, JSON, HTML and the fetch server's markdown of real pages, source code) and {} malicious ones (injected and secret-bearing, varied wording).\n", l["benign"], l["malicious"]);
    let _ = writeln!(s, "| figure | value | goal |\n|---|---|---|");
    let recall = l["recall"].as_f64().unwrap_or(0.0);
    let _ = writeln!(s, "| recall (malicious results flagged) | {recall:.3} ({} of {}) | ≥ 0.9: {} |", l["true_positives"], l["malicious"], if recall >= 0.9 { "yes" } else { "**no**" });
    let _ = writeln!(s, "| precision | {:.3} | |", l["precision"].as_f64().unwrap_or(0.0));
    let fp = l["false_positives"].as_u64().unwrap_or(u64::MAX);
    let _ = writeln!(s, "| false positives on the benign set | {fp} of {} | 0: {} |", l["benign"], if fp == 0 { "yes" } else { "**no**" });
    let _ = writeln!(s, "| scan cost, benign text (a manual page repeated to 256 KiB) | {:.1} µs/KiB ({:.1} ms for the 256 KiB capture) | |", v["scan_us_per_kib_benign"].as_f64().unwrap_or(0.0), v["scan_ms_256kib_benign"].as_f64().unwrap_or(0.0));
    let _ = writeln!(s, "| scan cost, malicious text (the malicious set repeated to 256 KiB) | {:.1} µs/KiB | |", v["scan_us_per_kib_malicious"].as_f64().unwrap_or(0.0));
    if let Some(m) = l["missed"].as_array().filter(|m| !m.is_empty()) {
        let _ = writeln!(s, "\nMissed: {}", m.iter().map(|x| format!("\"{}\"", x.as_str().unwrap_or_default())).collect::<Vec<_>>().join("; "));
    }
}
