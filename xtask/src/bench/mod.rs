//! `cargo xtask bench`: mcpmon's cost, measured side by side in one run.
//!
//! 1. Overhead on untracked processes: open+close, fork+exec and loopback-connect loops, `git
//!    status` on a large tree and a small `cargo build`, under: no monitor; `mcpmon run` with no
//!    server alive; the same with one tracked server alive; the floor (one lookup on the same
//!    hooks); bpftrace (same hooks, pid filter); auditd (same syscalls, pid filter; it leaves a
//!    `task,never` audit rule so that processes forked after it do not stay audited); and no
//!    monitor and `mcpmon run` with non-MCP shell pipelines looping beside the workload (what
//!    handshake discovery watches); the open gate's fanotify marks alone, and the floor with
//!    them (what the kernel's fsnotify checks cost apart from mcpmon). Configurations alternate within each round; a loop's sample
//!    is its fastest of 100 batches, and of 3 passes over the workloads (`configs::PASSES`);
//!    each figure is the median of the per-round ratios to "no monitor", with the spread.
//!    Beside them, the run time of each configuration's eBPF programs per operation of the
//!    loops, from the kernel's counters (progtime.rs).
//! 2. Tracked processes: the same loops inside a tracked tree: cost per event, sustained event
//!    rate and loss for one producer and for several (folding off), where the daemon's CPU goes
//!    (a flame graph of a run of its own, flame.rs), a flood with the default fold window, and
//!    the daemon's RSS and CPU with 1000 servers tracked.
//! 3. Enforcement: in-kernel kill, user-space kill (event → death), connect deny, over many trials.
//! 4. The daemon itself: RSS and CPU idle and under load.
//! 5. The fast path (fentry/fexit), which this kernel lacks: ratios inside the VM of vm-test.
//! 6. The result scanner: precision/recall on the labelled set, scan cost per KiB.
//! 7. The tool-description (poisoning) checks: precision/recall on the labelled tool lists.
//! Writes bench/results.json and bench/results.md.
mod allocs;
mod configs;
mod descriptions;
mod enforce;
mod flame;
mod progtime;
mod report;
mod results;
mod scale;
mod tracked;
mod vmfast;
mod workloads;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::util;

pub struct Opts {
    pub rounds: usize,
    pub quick: bool,
    /// Only rewrite results.md from results.json.
    pub report_only: bool,
    /// Only measure the fast path in the VM, replacing that part of results.json.
    pub fast_path_only: bool,
    /// Only measure section 3 (enforcement, attacks on secrets), replacing it in results.json.
    pub enforcement_only: bool,
    /// Only the text scanners (sections 6 and 7), replacing them in results.json.
    pub scanners_only: bool,
    /// Only section 2 (tracked processes: throughput, folding, scale), replacing it.
    pub tracked_only: bool,
    /// Only section 1 (overhead on untracked processes), replacing it.
    pub overhead_only: bool,
    /// Only section 1's program run times (progtime.rs), replacing them.
    pub prog_time_only: bool,
}

pub fn mcpmon() -> PathBuf {
    util::root().join("target/release/mcpmon")
}

/// The loops, victims, attackers and the floor program: built with `mcpmon`, never shipped.
pub fn testkit() -> PathBuf {
    util::root().join("target/release/mcpmon-testkit")
}

pub fn run(opts: Opts) -> anyhow::Result<()> {
    if opts.report_only {
        let dir = util::root().join("bench");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json"))?)?;
        std::fs::write(dir.join("results.md"), report::markdown(&v))?;
        print!("{}", report::markdown(&v));
        return Ok(());
    }
    if !util::is_root() {
        anyhow::bail!("the benchmark loads eBPF, bpftrace and audit rules: run it as root");
    }
    crate::setup::run()?;
    if opts.fast_path_only {
        return replace_sections(|v| {
            v["fast_path"] = vmfast::run(opts.rounds, opts.quick)?;
            Ok(())
        });
    }
    if opts.scanners_only {
        return replace_sections(|v| {
            v["results"] = results::run()?;
            v["descriptions"] = descriptions::run()?;
            Ok(())
        });
    }
    if opts.overhead_only {
        configs::install_peers()?;
        return replace_sections(|v| {
            let work = bench_work()?;
            let w = workloads::Workloads::prepare(&work, opts.quick)?;
            let mut o = configs::overhead(&w, &work, opts.rounds)?;
            o["prog_time"] = progtime::run(&w, opts.rounds)?;
            o["measured_separately"] = report::machine();
            v["overhead"] = o;
            Ok(())
        });
    }
    if opts.prog_time_only {
        configs::install_peers()?;
        return replace_sections(|v| {
            let w = workloads::Workloads::prepare(&bench_work()?, opts.quick)?;
            let mut p = progtime::run(&w, opts.rounds)?;
            p["measured_separately"] = report::machine();
            v["overhead"]["prog_time"] = p;
            Ok(())
        });
    }
    if opts.tracked_only {
        // bpftrace counts the daemon's allocator calls (allocs.rs).
        configs::install_peers()?;
        return replace_sections(|v| {
            let mut t = tracked::run(&bench_work()?, opts.quick)?;
            t["measured_separately"] = report::machine();
            v["tracked"] = t;
            Ok(())
        });
    }
    if opts.enforcement_only {
        return replace_sections(|v| {
            let mut e = enforce::run(&bench_work()?, opts.quick)?;
            // Counts of trials, not ratios: measured in a run of their own, and said so.
            e["measured_separately"] = report::machine();
            v["enforcement"] = e;
            Ok(())
        });
    }
    configs::install_peers()?;
    util::cargo(&["build", "--release", "-p", "monitor"])?;
    let work = bench_work()?;
    let w = workloads::Workloads::prepare(&work, opts.quick)?;
    let mut out = BTreeMap::new();
    out.insert("machine".to_string(), report::machine());

    eprintln!("bench: 1/5 overhead on untracked processes ({} rounds)", opts.rounds);
    let mut overhead = configs::overhead(&w, &work, opts.rounds)?;
    overhead["prog_time"] = progtime::run(&w, opts.rounds)?;
    out.insert("overhead".into(), overhead);
    eprintln!("bench: 2/5 tracked processes");
    out.insert("tracked".into(), tracked::run(&work, opts.quick)?);
    eprintln!("bench: 3/5 enforcement");
    out.insert("enforcement".into(), enforce::run(&work, opts.quick)?);
    eprintln!("bench: 4/5 fast path (fentry/fexit) against tracepoints, inside the VM of vm-test");
    out.insert("fast_path".into(), vmfast::run(opts.rounds, opts.quick)?);
    out.insert("results".into(), results::run()?);
    out.insert("descriptions".into(), descriptions::run()?);
    write(&Value::Object(out.into_iter().collect()))
}

/// One part of the benchmark on its own: builds mcpmon, lets `run` replace its sections of the
/// last bench/results.json, and writes both results files again.
fn replace_sections(run: impl FnOnce(&mut Value) -> anyhow::Result<()>) -> anyhow::Result<()> {
    util::cargo(&["build", "--release", "-p", "monitor"])?;
    let dir = util::root().join("bench");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).context("bench/results.json (run the whole benchmark once)")?)?;
    run(&mut v)?;
    write(&v)
}

/// The benchmark's scratch directory.
fn bench_work() -> anyhow::Result<PathBuf> {
    let work = util::root().join("target/bench");
    std::fs::create_dir_all(&work)?;
    Ok(work)
}

fn write(v: &Value) -> anyhow::Result<()> {
    let dir = util::root().join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(v)?)?;
    std::fs::write(dir.join("results.md"), report::markdown(v))?;
    eprintln!("bench: wrote bench/results.md and bench/results.json");
    print!("{}", report::markdown(v));
    Ok(())
}

/// Median and spread of samples.
pub fn stats(v: &[f64]) -> Value {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return json!(null);
    }
    let med = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    json!({"median": med, "min": s[0], "max": s[s.len() - 1], "n": s.len()})
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}
