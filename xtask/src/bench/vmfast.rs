//! 5. The fast observation path, which this machine's kernel cannot run (no BPF trampolines):
//! measured inside the VM `cargo xtask vm-test` boots (Debian's kernel under qemu TCG) by
//! `tests/vm/bench.sh`. An untracked process's open+close and loopback connect loops, with no
//! monitor, and with mcpmon tracking one server through fentry/fexit and through syscall
//! tracepoints, and a getppid loop (a syscall mcpmon never hooks: with tracepoints attached it
//! still takes the slow path, with trampolines it does not). TCG emulates the CPU, so nanoseconds mean little; the ratios per round between
//! configurations of the same VM run are the figures.
use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use super::stats;

pub const LOOPS: &[&str] = &["open", "connect", "getppid"];
pub const CONFIGS: &[&str] = &["fentry", "tracepoint"];

pub fn run(rounds: usize, quick: bool) -> anyhow::Result<Value> {
    let n = if quick { 5_000 } else { 10_000 };
    let text = crate::vm::bench(rounds, n)?;
    parse(&text, rounds)
}

/// `VMBENCH <round> <config> <loop> <ns>` lines into per-round ratios against `none`.
fn parse(text: &str, rounds: usize) -> anyhow::Result<Value> {
    if let Some(l) = text.lines().find(|l| l.starts_with("VMBENCH FAIL")) {
        bail!("VM benchmark: {l}");
    }
    let mut ns: BTreeMap<(usize, String, String), f64> = BTreeMap::new();
    let mut observe = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["VMBENCH", "INFO", config, rest @ ..] => {
                observe.insert(config.to_string(), rest.join(" "));
            }
            ["VMBENCH", round, config, lp, v] => {
                let v: f64 = v.parse().with_context(|| format!("bad figure in {l:?}"))?;
                ns.insert((round.parse()?, config.to_string(), lp.to_string()), v);
            }
            _ => {}
        }
    }
    let mut configs = serde_json::Map::new();
    for c in CONFIGS {
        let mut per_loop = serde_json::Map::new();
        for lp in LOOPS {
            let ratios: Vec<f64> = (1..=rounds)
                .filter_map(|r| Some(ns.get(&(r, c.to_string(), lp.to_string()))? / ns.get(&(r, "none".into(), lp.to_string()))?))
                .collect();
            if ratios.len() != rounds {
                bail!("VM benchmark: {c}/{lp}: {} of {rounds} rounds complete", ratios.len());
            }
            per_loop.insert(lp.to_string(), json!({"ratio": stats(&ratios)}));
        }
        configs.insert(c.to_string(), Value::Object(per_loop));
    }
    let none: serde_json::Map<String, Value> =
        LOOPS.iter().map(|lp| (lp.to_string(), stats(&(1..=rounds).filter_map(|r| ns.get(&(r, "none".into(), lp.to_string())).copied()).collect::<Vec<_>>()))).collect();
    let kernel = text.lines().find_map(|l| l.strip_prefix("VMTEST BOOT ")).unwrap_or("").to_string();
    Ok(json!({"rounds": rounds, "kernel": kernel, "observe": observe, "configs": configs, "none_ns": none}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ratios_per_round_against_no_monitor() {
        let text = "VMTEST BOOT 6.1.0 lsm=bpf\nVMBENCH INFO fentry syscall observation path=fentry/fexit\n\
            VMBENCH 1 none open 100\nVMBENCH 1 fentry open 110\nVMBENCH 1 tracepoint open 150\n\
            VMBENCH 1 none connect 1000\nVMBENCH 1 fentry connect 1000\nVMBENCH 1 tracepoint connect 1200\n\
            VMBENCH 1 none getppid 10\nVMBENCH 1 fentry getppid 10\nVMBENCH 1 tracepoint getppid 13\nVMBENCH DONE\n";
        let v = super::parse(text, 1).unwrap();
        assert!((v["configs"]["fentry"]["open"]["ratio"]["median"].as_f64().unwrap() - 1.1).abs() < 1e-9);
        assert!((v["configs"]["tracepoint"]["connect"]["ratio"]["median"].as_f64().unwrap() - 1.2).abs() < 1e-9);
        assert_eq!(v["observe"]["fentry"], "syscall observation path=fentry/fexit");
        assert!(super::parse("VMBENCH 1 none open 100\n", 1).is_err(), "incomplete rounds are an error");
    }
}
