//! The labelled set of results (`monitor/tests/data/results`): benign outputs of real tools
//! (`benign/*`, each file one result) and malicious results (`malicious.json`: injected and
//! secret-bearing, with varied wording). Scores the result scanner on it: the unit tests hold it
//! to its targets and `cargo xtask bench` reports it, with the scan's cost per KiB.
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use super::results::{texts, Scanner};

#[derive(Debug, thiserror::Error)]
pub enum LabelledError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Json(String, serde_json::Error),
}

/// The texts of one result: (JSON path, text).
pub type Texts = Vec<(String, String)>;

#[derive(Debug, Default, Serialize)]
pub struct Score {
    pub malicious: usize,
    pub benign: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub recall: f64,
    pub precision: f64,
    /// Malicious results missed, and benign ones flagged (file name and finding).
    pub missed: Vec<String>,
    pub flagged_benign: Vec<String>,
}

/// Tools a client session would have seen announced (the benchmark server's and real ones).
pub fn known_tools() -> Vec<String> {
    ["get_weather_forecast", "read_text_file", "list_directory", "fetch", "send_email"].map(String::from).to_vec()
}

/// Benign results as the scanner sees them: each file as a text content item, and JSON files
/// also as structured content.
pub fn benign(dir: &Path) -> Result<Vec<(String, Texts)>, LabelledError> {
    let d = dir.join("benign");
    let rd = std::fs::read_dir(&d).map_err(|e| LabelledError::Io(d.display().to_string(), e))?;
    let mut files: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let t = std::fs::read_to_string(&f).map_err(|e| LabelledError::Io(f.display().to_string(), e))?;
        let mut x = vec![("result.content[0].text".to_string(), t.clone())];
        if let Ok(v) = serde_json::from_str::<Value>(&t) {
            x.extend(texts(&json!({ "structuredContent": v })));
        }
        out.push((f.file_name().unwrap_or_default().to_string_lossy().into_owned(), x));
    }
    Ok(out)
}

pub fn score(dir: &Path) -> Result<Score, LabelledError> {
    let scanner = Scanner::default();
    let known = known_tools();
    let mut s = Score::default();
    for (name, x) in benign(dir)? {
        s.benign += 1;
        let r = scanner.scan(&x, &known);
        if !r.is_empty() {
            s.false_positives += 1;
            s.flagged_benign.push(format!("{name}: {:?} {:?}", r.injections.first(), r.secrets.first()));
        }
    }
    let p = dir.join("malicious.json");
    let text = std::fs::read_to_string(&p).map_err(|e| LabelledError::Io(p.display().to_string(), e))?;
    let set: Vec<Value> = serde_json::from_str(&text).map_err(|e| LabelledError::Json(p.display().to_string(), e))?;
    for m in set {
        let t = m["text"].as_str().unwrap_or_default();
        s.malicious += 1;
        let r = scanner.scan(&[("result.content[0].text".into(), t.into())], &known);
        let hit = if m["label"] == "injection" { !r.injections.is_empty() } else { !r.secrets.is_empty() };
        if hit {
            s.true_positives += 1;
        } else {
            s.missed.push(t.to_string());
        }
    }
    s.recall = s.true_positives as f64 / s.malicious.max(1) as f64;
    s.precision = s.true_positives as f64 / (s.true_positives + s.false_positives).max(1) as f64;
    Ok(s)
}

/// Microseconds per KiB to scan `text` (best of `rounds`).
pub fn cost_per_kib(text: &str, rounds: usize) -> f64 {
    let scanner = Scanner::default();
    let x = vec![("result.content[0].text".to_string(), text.to_string())];
    let known = known_tools();
    (0..rounds.max(1))
        .map(|_| {
            let t0 = std::time::Instant::now();
            std::hint::black_box(scanner.scan(&x, &known));
            t0.elapsed().as_secs_f64() * 1e6 / (text.len() as f64 / 1024.0)
        })
        .fold(f64::INFINITY, f64::min)
}

/// `mcpmon-testkit results DIR`: the figures `cargo xtask bench` reports.
pub fn bench(dir: &Path) -> Result<Value, LabelledError> {
    let s = score(dir)?;
    // Benign text (a manual page) and the malicious set, each repeated to the capture's 256 KiB.
    let page = benign(dir)?.into_iter().find(|(n, _)| n == "man-ssh.txt").map(|(_, x)| x[0].1.clone()).unwrap_or_default();
    let mal = std::fs::read_to_string(dir.join("malicious.json")).map_err(|e| LabelledError::Io("malicious.json".into(), e))?;
    let fill = |t: &str| t.chars().cycle().take(256 * 1024).collect::<String>();
    Ok(json!({
        "labelled": s,
        "scan_us_per_kib_benign": cost_per_kib(&fill(&page), 5),
        "scan_us_per_kib_malicious": cost_per_kib(&fill(&mal), 5),
        "scan_ms_256kib_benign": cost_per_kib(&fill(&page), 5) * 256.0 / 1000.0,
    }))
}
