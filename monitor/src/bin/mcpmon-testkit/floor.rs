//! `mcpmon-testkit floor`: the floor program alone on every hook mcpmon has attached while a
//! server is tracked (its tracepoints, the process-tree ones included, and the raw sys_exit of
//! the ia32 hook), until stdin closes: what the benchmark sets against mcpmon as the least any
//! eBPF monitor on those hooks costs.
use std::io::{BufRead, Write};

use anyhow::Context as _;
use monitor::probes;
use monitor_common::programs::{of_kind, Kind, Program};

pub fn run_floor() -> anyhow::Result<()> {
    let tracefs = probes::tracefs::ensure_mounted()?;
    let mut ebpf = aya::Ebpf::load(probes::object())?;
    let prog: &mut aya::programs::TracePoint = ebpf.program_mut("mcpm_floor").context("no mcpm_floor")?.try_into()?;
    prog.load()?;
    let mut n = 0;
    // Two programs may share a tracepoint (sendto: net and http); the floor goes on it once (a
    // second link of the same program is EEXIST).
    let mut seen = std::collections::HashSet::new();
    for p in of_kind(Kind::TracePoint) {
        for &hook in p.hooks {
            let (category, name) = Program::tracepoint(hook);
            if probes::tracefs::exists(&tracefs, category, name) && seen.insert((category, name)) {
                prog.attach(category, name).with_context(|| format!("{category}:{name}"))?;
                n += 1;
            }
        }
    }
    let raw: &mut aya::programs::RawTracePoint = ebpf.program_mut("mcpm_floor_raw").context("no mcpm_floor_raw")?.try_into()?;
    raw.load()?;
    // On the ia32 hook's tracepoint: a plain raw program (the kernel runs `tp_btf` and raw
    // tracepoint programs through the same call), since the floor reads no argument.
    for tp in of_kind(Kind::BtfTracePoint).flat_map(|p| p.hooks) {
        raw.attach(tp).with_context(|| format!("raw tracepoint {tp}"))?;
        n += 1;
    }
    println!("ready {n}");
    std::io::stdout().flush()?;
    // Until the benchmark closes our stdin.
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    Ok(())
}
