//! Allocations per event (issue 16's route: no allocation per event on the hot path), counted
//! rather than timed: bpftrace uprobes on the C library's allocator, filtered to the daemon,
//! while a tracked open loop runs with folding off. A count does not move with the machine's
//! speed, where the nanoseconds of section 2 do. Everything the daemon allocates in the window
//! is counted, its periodic work (rescans of protected files, client configs) included.
use std::{io::BufRead, process::Stdio, time::Duration};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use super::{configs::{bpftrace, wait_drained, Daemon}, testkit};

/// The C library the daemon has mapped (the allocator it calls).
fn libc_of(pid: u32) -> anyhow::Result<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-")))
        .map(str::to_string)
        .context("no libc mapped in the daemon")
}

/// `@name: N` lines of bpftrace's exit print.
fn counts(out: &str) -> std::collections::BTreeMap<String, u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix('@')?.split_once(": "))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

pub fn run(n: u64) -> anyhow::Result<Value> {
    let d = Daemon::start(&["--fold-window-ms", "0"], true)?;
    let mut keep = d.exec("bench-keepalive", &["sleep", "100000"]).stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let libc = libc_of(d.pid())?;
    let probes: Vec<String> = ["malloc", "calloc", "realloc"].iter().map(|f| format!("uprobe:{libc}:{f} /pid == {} / {{ @{f} = count(); }}", d.pid())).collect();
    let (mut bt, r) = bpftrace(&probes.join("\n"))?;
    std::thread::sleep(Duration::from_secs(2));
    let out = d.exec("bench-loop", &[testkit().to_str().unwrap(), "loop", "open", &n.to_string()]).output()?;
    wait_drained(d.pid());
    // SAFETY: kill(2) with the pid of our bpftrace child, not reaped yet: it prints its maps and exits.
    unsafe { libc::kill(bt.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    for l in r.lines() {
        rest.push_str(&l?);
        rest.push('\n');
    }
    bt.wait()?;
    let _ = keep.kill();
    let _ = keep.wait();
    let recs = d.stop()?;
    if !out.status.success() {
        bail!("tracked loop: {}", String::from_utf8_lossy(&out.stderr));
    }
    let events = recs.iter().filter(|v| v["kind"] == "open" && v["server"] == "bench-loop").count() as u64;
    let c = counts(&rest);
    let total: u64 = c.values().sum();
    Ok(json!({"ops": n, "open_events": events, "calls": c, "per_event": total as f64 / events.max(1) as f64}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bpftrace_counts_are_read_by_name() {
        let c = super::counts("Attaching 3 probes...\n\n\n@calloc: 3\n@malloc: 41234\n@realloc: 17\n");
        assert_eq!((c["malloc"], c["calloc"], c["realloc"], c.len()), (41234, 3, 17, 3));
    }
}
