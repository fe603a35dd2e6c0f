//! The labelled set of tool descriptions (`monitor/tests/data/tools`): the real `tools/list`
//! output of public servers (`benign/*.json`, captured with the official SDK by `capture.py`)
//! and poisoned tools written with varied wording (`poisoned.json`), plus a held-out slice
//! written after the detector was finished (`poisoned-heldout.json`), scored apart so the figure
//! says how the checks do on wording they were not tuned on. The unit tests hold the scanner to
//! its targets; `cargo xtask bench` reports the figures.
use std::{collections::BTreeMap, path::Path};

use serde::Serialize;
use serde_json::{json, Value};

use super::{labelled::LabelledError, poison::Scanner, tools_from_list_result, Tool};

/// One real server's tool list.
pub struct Server {
    /// File name without `.json`.
    pub name: String,
    pub tools: Vec<Tool>,
}

#[derive(Debug, Default, Serialize)]
pub struct Slice {
    pub poisoned: usize,
    pub detected: usize,
    pub recall: f64,
    /// Category → (poisoned, detected).
    pub by_category: BTreeMap<String, (usize, usize)>,
    /// Tools missed: name and category.
    pub missed: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Score {
    pub benign_servers: usize,
    pub benign_tools: usize,
    pub false_positives: usize,
    /// Benign tools flagged: server/tool and the first finding.
    pub flagged_benign: Vec<String>,
    pub tuned: Slice,
    pub heldout: Slice,
    /// Over the tuned slice (the benign tools and the poisoned ones the patterns were written
    /// against).
    pub precision: f64,
}

fn read(p: &Path) -> Result<Value, LabelledError> {
    let text = std::fs::read_to_string(p).map_err(|e| LabelledError::Io(p.display().to_string(), e))?;
    serde_json::from_str(&text).map_err(|e| LabelledError::Json(p.display().to_string(), e))
}

pub fn benign(dir: &Path) -> Result<Vec<Server>, LabelledError> {
    let d = dir.join("benign");
    let rd = std::fs::read_dir(&d).map_err(|e| LabelledError::Io(d.display().to_string(), e))?;
    let mut files: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let v = read(&f)?;
            Ok(Server { name: f.file_stem().unwrap_or_default().to_string_lossy().into_owned(), tools: tools_from_list_result(&v) })
        })
        .collect()
}

/// Poisoned tools of one file: (category, tool).
pub fn poisoned(path: &Path) -> Result<Vec<(String, Tool)>, LabelledError> {
    let v = read(path)?;
    let items = v.as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|x| {
            let tool = tools_from_list_result(&json!({ "tools": [x["tool"].clone()] })).pop()?;
            Some((x["category"].as_str().unwrap_or("uncategorised").to_string(), tool))
        })
        .collect())
}

/// Every benign server's tools as the daemon would know them: (server, tool name).
fn all_tools(servers: &[Server]) -> Vec<(String, String)> {
    servers.iter().flat_map(|s| s.tools.iter().map(move |t| (s.name.clone(), t.name.clone()))).collect()
}

fn slice(scanner: &Scanner, set: &[(String, Tool)], others: &[(String, String)]) -> Slice {
    let mut s = Slice::default();
    for (cat, tool) in set {
        s.poisoned += 1;
        let e = s.by_category.entry(cat.clone()).or_default();
        e.0 += 1;
        // The poisoned server runs next to every benign one.
        if scanner.scan(tool, std::slice::from_ref(&tool.name), others).is_empty() {
            s.missed.push(format!("{} ({cat})", tool.name));
        } else {
            s.detected += 1;
            e.1 += 1;
        }
    }
    s.recall = s.detected as f64 / s.poisoned.max(1) as f64;
    s
}

pub fn score(dir: &Path) -> Result<Score, LabelledError> {
    let scanner = Scanner::default();
    let servers = benign(dir)?;
    let everything = all_tools(&servers);
    let mut s = Score { benign_servers: servers.len(), ..Default::default() };
    for srv in &servers {
        // Installed together: every other server's tools are known, as in the daemon.
        let own: Vec<String> = srv.tools.iter().map(|t| t.name.clone()).collect();
        let others: Vec<(String, String)> = everything.iter().filter(|(n, _)| n != &srv.name).cloned().collect();
        for t in &srv.tools {
            s.benign_tools += 1;
            if let Some(f) = scanner.scan(t, &own, &others).first() {
                s.false_positives += 1;
                s.flagged_benign.push(format!("{}/{}: {:?} {} ({})", srv.name, t.name, f.kind, f.detail, f.excerpt));
            }
        }
    }
    s.tuned = slice(&scanner, &poisoned(&dir.join("poisoned.json"))?, &everything);
    let held = dir.join("poisoned-heldout.json");
    if held.exists() {
        s.heldout = slice(&scanner, &poisoned(&held)?, &everything);
    }
    s.precision = s.tuned.detected as f64 / (s.tuned.detected + s.false_positives).max(1) as f64;
    Ok(s)
}

/// `mcpmon-testkit descriptions DIR`: the figures `cargo xtask bench` reports, with the scan's cost
/// per tool (every benign tool scanned, best of five rounds).
pub fn bench(dir: &Path) -> Result<Value, LabelledError> {
    let s = score(dir)?;
    let servers = benign(dir)?;
    let everything = all_tools(&servers);
    let scanner = Scanner::default();
    let per_tool_us = (0..5)
        .map(|_| {
            let t0 = std::time::Instant::now();
            for srv in &servers {
                for t in &srv.tools {
                    std::hint::black_box(scanner.scan(t, &[], &everything));
                }
            }
            t0.elapsed().as_secs_f64() * 1e6 / s.benign_tools.max(1) as f64
        })
        .fold(f64::INFINITY, f64::min);
    Ok(json!({ "labelled": s, "scan_us_per_tool": per_tool_us }))
}
