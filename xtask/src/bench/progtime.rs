//! The eBPF programs' own run time per operation of an untracked loop, by configuration.
//!
//! Why beside the loops' wall-clock ratios: on a shared 2-core VM a loop's round-to-round noise
//! (±10–20%) hides differences of a few percent, so "within 3% of the floor" comes out
//! inconclusive whatever the programs do. The kernel counts each program's runs and run time
//! (`kernel.bpf_stats_enabled`): summed over the programs a configuration loaded, per loop
//! operation, that is the work the monitor adds to every syscall on its hooks, measured to a
//! few nanoseconds, and it names the program that costs more than the floor's single lookup.
//!
//! What it leaves out: the kernel's own dispatch to a hook (building a syscall tracepoint's
//! record, the same for every configuration on the same hooks), and effects on caches.
//! Counting adds two clock reads per run to every configuration alike.
//!
//! Each round also sums the programs on hooks bpftrace can attach to: mcpmon's cgroup
//! `sock_addr` programs (the in-kernel connect and sendmsg deny) run on hooks no tracing tool
//! has, so "below bpftrace on the same hooks" is judged without them, and the report shows the
//! total with them beside it.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    process::Command,
};

use anyhow::Context as _;
use serde_json::{json, Value};

use super::{configs, stats, workloads};

/// Loops measured, with the operations each runs.
const LOOPS: &[(&str, &str)] = &[("open_close", "open"), ("fork_exec", "forkexec"), ("connect", "connect")];

/// Compared side by side; "none" gives the operation's own time for the share.
pub const CONFIGS: &[&str] = &["none", "mcpmon_server", "floor", "bpftrace"];

/// One loaded program's counters.
#[derive(Clone)]
struct Prog {
    name: String,
    /// bpftool's program type (`tracepoint`, `raw_tracepoint`, `cgroup_sock_addr`, …).
    kind: String,
    runs: u64,
    ns: u64,
}

/// Whether a program of this type runs on a hook a tracing tool (bpftrace) can attach to.
fn tracing_hook(kind: &str) -> bool {
    !kind.starts_with("cgroup")
}

fn programs() -> anyhow::Result<HashMap<u64, Prog>> {
    let out = Command::new("bpftool").args(["prog", "show", "--json"]).output().context("bpftool prog show")?;
    anyhow::ensure!(out.status.success(), "bpftool prog show: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = p["id"].as_u64()?;
            let name = p["name"].as_str().unwrap_or("?").to_string();
            let kind = p["type"].as_str().unwrap_or("?").to_string();
            Some((id, Prog { name, kind, runs: p["run_cnt"].as_u64().unwrap_or(0), ns: p["run_time_ns"].as_u64().unwrap_or(0) }))
        })
        .collect())
}

/// Sets the kernel's per-program counters on or off for its lifetime, and back to what they were.
pub struct BpfStats(String);

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn set(value: &str) -> anyhow::Result<Self> {
        let was = std::fs::read_to_string(STATS).context(STATS)?.trim().to_string();
        std::fs::write(STATS, value).context(STATS)?;
        Ok(Self(was))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS, &self.0);
    }
}

/// One configuration's figures on one loop, a value per round.
#[derive(Default)]
struct Per {
    /// Its programs' ns per operation.
    prog: Vec<f64>,
    /// The loop's own ns per operation.
    op: Vec<f64>,
    /// Each program's ns per operation, by name.
    by_program: BTreeMap<String, Vec<f64>>,
    /// The ns per operation of its programs on tracing hooks (`tracing_hook`).
    tracing: Vec<f64>,
}

/// Per configuration and loop: per round the programs' ns per operation and the loop's ns per
/// operation, and (all rounds) each program's ns per operation.
pub fn run(w: &workloads::Workloads, rounds: usize) -> anyhow::Result<Value> {
    let _on = BpfStats::set("1")?;
    let n_of = |l: &str| match l {
        "open" => w.open_n,
        "forkexec" => w.fork_n,
        _ => w.connect_n,
    };
    let mut res: BTreeMap<&str, BTreeMap<&str, Per>> = BTreeMap::new();
    for round in 0..rounds {
        for k in 0..CONFIGS.len() {
            let c = CONFIGS[(k + round) % CONFIGS.len()];
            let before: HashSet<u64> = programs()?.into_keys().collect();
            let r = configs::start(c).with_context(|| format!("starting {c}"))?;
            // The configuration's programs: those loaded since it started.
            let mine = |all: &HashMap<u64, Prog>| -> HashMap<u64, Prog> { all.iter().filter(|(id, _)| !before.contains(id)).map(|(id, p)| (*id, p.clone())).collect() };
            for (name, kind) in LOOPS {
                let n = n_of(kind);
                let a = mine(&programs()?);
                let op_ns = workloads::loop_ns(kind, n)?;
                let b = mine(&programs()?);
                let e = res.entry(c).or_default().entry(name).or_default();
                let (mut total, mut shared) = (0u64, 0u64);
                let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
                for (id, p) in &b {
                    let (runs0, ns0) = a.get(id).map(|q| (q.runs, q.ns)).unwrap_or((0, 0));
                    if p.runs > runs0 {
                        total += p.ns - ns0;
                        if tracing_hook(&p.kind) {
                            shared += p.ns - ns0;
                        }
                        *by_name.entry(p.name.clone()).or_default() += p.ns - ns0;
                    }
                }
                e.prog.push(total as f64 / n as f64);
                e.op.push(op_ns);
                e.tracing.push(shared as f64 / n as f64);
                for (pn, ns) in by_name {
                    e.by_program.entry(pn).or_default().push(ns as f64 / n as f64);
                }
            }
            configs::stop(r)?;
            eprintln!("bench: program time, round {}/{rounds}: {c} done", round + 1);
        }
    }
    let mut out = serde_json::Map::new();
    for (c, loops) in res {
        let mut per = serde_json::Map::new();
        for (l, Per { prog, op, by_program, tracing }) in loops {
            let by: serde_json::Map<String, Value> = by_program.into_iter().map(|(k, v)| (k, stats(&v))).collect();
            per.insert(
                l.to_string(),
                json!({"prog_ns_per_op": stats(&prog), "prog_per_round": prog, "op_ns_per_round": op, "by_program": by, "tracing_hooks_per_round": tracing}),
            );
        }
        out.insert(c.to_string(), Value::Object(per));
    }
    Ok(json!({"configs": out, "rounds": rounds}))
}
