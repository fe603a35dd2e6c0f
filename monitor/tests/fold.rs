//! Floods cost little (issue 16 item 2): the kernel folds identical opens of one thread within
//! one tool call into the first open plus a count, so a million-open loop reaches the daemon as
//! a handful of records whose counts add up exactly, and the ring never overflows. Anything a
//! rule could judge differently (another path, another result, an open the kernel acted on)
//! ends the run and goes out in full.
mod common;

use serde_json::Value;

use common::daemon::{exec_cmd, Daemon};

/// The open lines of `path` by server `server`, and the opens they stand for.
fn opens(recs: &[Value], server: &str, path: &str) -> (Vec<Value>, u64) {
    let lines: Vec<Value> = recs.iter().filter(|v| v["kind"] == "open" && v["server"] == server && v["path"] == path).cloned().collect();
    // A line with `folded` stands for its count of repeats; any other line for one open.
    let total = lines.iter().map(|v| v["folded"]["count"].as_u64().unwrap_or(1)).sum();
    (lines, total)
}

#[test]
fn a_million_opens_arrive_as_a_handful_of_records_with_the_exact_count() {
    if !common::can_load_ebpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flood-target");
    std::fs::write(&file, "x").unwrap();
    let path = file.display().to_string();
    let d = Daemon::start(&[]);
    let out = exec_cmd(&d.socket, "flooder", &[], &[env!("CARGO_BIN_EXE_mcpmon"), "bench-loop", "open", "1000000", &path]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    d.expect("server_gone", |v| v["kind"] == "server_gone" && v["server"] == "flooder");
    let (err, recs) = d.stop_with_records();
    let (lines, total) = opens(&recs, "flooder", &path);
    assert_eq!(total, 1_000_000, "the counts add up to every open: {} lines", lines.len());
    assert!(lines.len() <= 64, "a handful of records, not a flood: {}", lines.len());
    let folded: Vec<&Value> = lines.iter().filter(|v| v["folded"].is_object()).collect();
    assert!(!folded.is_empty(), "runs were folded");
    for f in &folded {
        assert!(f["folded"]["first"].as_str() <= f["folded"]["last"].as_str(), "{f}");
        assert_eq!(f["mcp"]["state"], "idle", "the folded line keeps its attribution: {f}");
    }
    assert!(!recs.iter().any(|v| v["rule"]["id"] == "blind-spot" || v["kind"] == "lost"), "nothing lost: {err}");
    let stats = recs.iter().rev().find(|v| v["kind"] == "stats").unwrap();
    assert!(stats["events"]["open"].as_u64().unwrap() >= 1_000_000, "the daemon counts every open: {stats}");
}

#[test]
fn each_thread_folds_its_own_run_and_the_counts_stay_exact() {
    if !common::can_load_ebpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("target");
    std::fs::write(&file, "x").unwrap();
    let path = file.display().to_string();
    let d = Daemon::start(&[]);
    let script = format!(
        "import os, threading\n\
         def loop():\n    for _ in range(25000):\n        os.close(os.open({path:?}, os.O_RDONLY))\n\
         ts = [threading.Thread(target=loop) for _ in range(4)]\n\
         [t.start() for t in ts]\n[t.join() for t in ts]\n"
    );
    let out = exec_cmd(&d.socket, "threads", &[], &[common::python(), "-c", &script]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    d.expect("server_gone", |v| v["kind"] == "server_gone" && v["server"] == "threads");
    let (_, recs) = d.stop_with_records();
    let (lines, total) = opens(&recs, "threads", &path);
    assert_eq!(total, 100_000, "4 threads × 25 000 opens, every one counted: {} lines", lines.len());
    let tids: std::collections::BTreeSet<u64> = lines.iter().filter_map(|v| v["tid"].as_u64()).collect();
    assert!(tids.len() >= 2, "runs are per thread: {tids:?}");
    assert!(lines.len() < 1000, "folded: {}", lines.len());
}

#[test]
fn anything_that_differs_ends_the_run_and_a_window_of_zero_folds_nothing() {
    if !common::can_load_ebpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let missing = dir.path().join("missing").display().to_string();
    // a ×1000, b once, a ×1000, then 500 failed opens: the open of b and the failures are other
    // events, so the order of runs is kept.
    let script = format!(
        "import os\n\
         for _ in range(1000): os.close(os.open({a:?}, os.O_RDONLY))\n\
         os.close(os.open({b:?}, os.O_RDONLY))\n\
         for _ in range(1000): os.close(os.open({a:?}, os.O_RDONLY))\n\
         for _ in range(500):\n    try: os.open({missing:?}, os.O_RDONLY)\n    except OSError: pass\n"
    );
    let d = Daemon::start(&[]);
    let out = exec_cmd(&d.socket, "mixed", &[], &[common::python(), "-c", &script]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    d.expect("server_gone", |v| v["kind"] == "server_gone" && v["server"] == "mixed");
    let (_, recs) = d.stop_with_records();
    let seq: Vec<(String, u64)> = recs
        .iter()
        .filter(|v| v["kind"] == "open" && v["server"] == "mixed" && [&a, &b, &missing].iter().any(|p| v["path"] == p.as_str()))
        .map(|v| (v["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string(), v["folded"]["count"].as_u64().unwrap_or(0)))
        .collect();
    let want: Vec<(String, u64)> = [("a", 0), ("a", 999), ("b", 0), ("a", 0), ("a", 999), ("missing", 0), ("missing", 499)].iter().map(|(p, n)| (p.to_string(), *n)).collect();
    assert_eq!(seq, want);
    let missing_line = recs.iter().find(|v| v["path"] == missing.as_str() && v["folded"].is_object()).unwrap();
    assert_eq!(missing_line["result"]["errno"], "ENOENT", "a failed open folds only with failures: {missing_line}");

    // Off: every open is its own line.
    let d = Daemon::start(&["--fold-window-ms", "0"]);
    let out = exec_cmd(&d.socket, "unfolded", &[], &[common::python(), "-c", &script]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    d.expect("server_gone", |v| v["kind"] == "server_gone" && v["server"] == "unfolded");
    let (_, recs) = d.stop_with_records();
    let (lines, total) = opens(&recs, "unfolded", &a);
    assert_eq!((lines.len(), total), (2000, 2000));
}
