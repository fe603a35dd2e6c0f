//! Section 7: the tool-description (poisoning) checks (issue 12): precision and recall on the
//! labelled tool lists (monitor/tests/data/tools), the held-out slice apart, from the release
//! binary.
use std::{fmt::Write as _, process::Command};

use anyhow::Context as _;
use serde_json::Value;

use crate::util;

pub fn run() -> anyhow::Result<Value> {
    let out = Command::new(super::testkit()).arg("descriptions").arg(util::root().join("monitor/tests/data/tools")).output().context("mcpmon-testkit descriptions")?;
    anyhow::ensure!(out.status.success(), "mcpmon-testkit descriptions: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn cats(slice: &Value) -> String {
    slice["by_category"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k} {}/{}", v[1], v[0])).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

pub fn markdown(s: &mut String, v: &Value) {
    if v.is_null() {
        return;
    }
    let l = &v["labelled"];
    let (t, h) = (&l["tuned"], &l["heldout"]);
    let _ = writeln!(s, "\n## 7. Tool descriptions: poisoning\n");
    let _ = writeln!(s, "The description checks on the labelled set in `monitor/tests/data/tools`: the real `tools/list` output of {} public servers ({} tools, captured with the official SDK; every server's tools known to the others, as when they run side by side) and {} poisoned tools of varied wording the checks were written against, plus a held-out slice of {} written after the checks were finished.\n", l["benign_servers"], l["benign_tools"], t["poisoned"], h["poisoned"]);
    let _ = writeln!(s, "| figure | value | goal |\n|---|---|---|");
    let recall = t["recall"].as_f64().unwrap_or(0.0);
    let _ = writeln!(s, "| recall (poisoned tools flagged) | {recall:.3} ({} of {}) | ≥ 0.9: {} |", t["detected"], t["poisoned"], if recall >= 0.9 { "yes" } else { "**no**" });
    let _ = writeln!(s, "| precision | {:.3} | |", l["precision"].as_f64().unwrap_or(0.0));
    let fp = l["false_positives"].as_u64().unwrap_or(u64::MAX);
    let _ = writeln!(s, "| false positives on the real servers' tools | {fp} of {} | 0: {} |", l["benign_tools"], if fp == 0 { "yes" } else { "**no**" });
    let _ = writeln!(s, "| recall on the held-out slice | {:.3} ({} of {}) | reported, not tuned |", h["recall"].as_f64().unwrap_or(0.0), h["detected"], h["poisoned"]);
    let _ = writeln!(s, "| scan cost | {:.1} µs per tool | |", v["scan_us_per_tool"].as_f64().unwrap_or(0.0));
    let _ = writeln!(s, "\nBy category (flagged/total): {}. Held out: {}.", cats(t), cats(h));
    let _ = writeln!(s, "\nEach held-out slice is scored once, then folded into the tuned set once the checks were generalised on its misses (the history is in `monitor/tests/data/tools/README.md`): the held-out recall, not the tuned one, is the figure for wording the checks have not seen.");
    if let Some(m) = h["missed"].as_array().filter(|m| !m.is_empty()) {
        let _ = writeln!(s, "\nMissed in the held-out slice: {}.", m.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "));
    }
}
