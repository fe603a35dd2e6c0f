//! Allocations per event (issue 16's route: no allocation per event on the hot path), counted
//! rather than timed: bpftrace uprobes on the C library's allocator, filtered to the daemon,
//! while a tracked open loop runs with folding off. A count does not move with the machine's
//! speed, where the nanoseconds of section 2 do.
//!
//! The daemon's periodic jobs (rescans of protected files every 2 s, the client-config check
//! every second) run on the pipeline's thread between batches of events, and allocate whether
//! events come or not: in a window of 200,000 events they were nine calls in ten. They are
//! counted apart. On the pipeline's thread a call counts for the events while the thread is
//! inside `Pipeline::on_event` or `Emitter::flush_lines` (uprobe and uretprobe on their poll
//! functions); every call on any other thread (the ring reader, the writer) counts for the
//! events whatever it does, so an error here can only make the figure worse.
use std::{collections::BTreeMap, io::BufRead, process::Stdio, time::{Duration, Instant}};

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

/// The probes: allocator calls of the daemon `pid` (binary `exe`, C library `libc`), split into
/// the event path (`@malloc` …) and the rest of the pipeline thread (`@periodic_malloc` …).
fn script(pid: u32, exe: &str, libc: &str) -> String {
    // Legacy-mangled names of the two poll functions (the async bodies): a rename fails the
    // attach, and bpftrace's error fails the bench, rather than counting nothing.
    let mut s = String::new();
    for f in ["*Pipeline8on_event28_*", "*Emitter11flush_lines28_*"] {
        s += &format!("uprobe:{exe}:{f} /pid == {pid}/ {{ @in[tid] = @in[tid] + 1; }}\n");
        s += &format!("uretprobe:{exe}:{f} /pid == {pid}/ {{ @in[tid] = @in[tid] - 1; }}\n");
    }
    for f in ["malloc", "calloc", "realloc"] {
        s += &format!("uprobe:{libc}:{f} /pid == {pid}/ {{ if (tid != {pid} || @in[tid] > 0) {{ @{f} = count(); }} else {{ @periodic_{f} = count(); }} }}\n");
    }
    // The depth map is bookkeeping, not a count: not printed.
    s + "END { clear(@in); }\n"
}

pub fn run(n: u64) -> anyhow::Result<Value> {
    let d = Daemon::start(&["--fold-window-ms", "0"], true)?;
    let mut keep = d.exec("bench-keepalive", &["sleep", "100000"]).stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let libc = libc_of(d.pid())?;
    let exe = std::fs::read_link(format!("/proc/{}/exe", d.pid()))?.display().to_string();
    let (mut bt, r) = bpftrace(&script(d.pid(), &exe, &libc))?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let out = d.exec("bench-loop", &[testkit().to_str().unwrap(), "loop", "open", &n.to_string()]).output()?;
    wait_drained(d.pid());
    // SAFETY: kill(2) with the pid of our bpftrace child, not reaped yet: it prints its maps and exits.
    unsafe { libc::kill(bt.id() as i32, libc::SIGINT) };
    let window = t.elapsed().as_secs_f64();
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
    let (periodic, calls): (BTreeMap<_, _>, BTreeMap<_, _>) = c.into_iter().filter(|(k, _)| !k.contains('[')).partition(|(k, _)| k.starts_with("periodic_"));
    let on_path: u64 = calls.values().sum();
    let beside: u64 = periodic.values().sum();
    Ok(json!({
        "ops": n, "open_events": events, "calls": calls, "per_event": on_path as f64 / events.max(1) as f64,
        "periodic_calls": beside, "window_s": window,
        "per_event_all": (on_path + beside) as f64 / events.max(1) as f64,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bpftrace_counts_are_read_by_name() {
        let c = super::counts("Attaching 3 probes...\n\n\n@calloc: 3\n@malloc: 41234\n@realloc: 17\n");
        assert_eq!((c["malloc"], c["calloc"], c["realloc"], c.len()), (41234, 3, 17, 3));
    }

    #[test]
    fn the_script_splits_the_pipeline_thread_by_where_it_is() {
        let s = super::script(42, "/x/mcpmon", "/lib/libc.so.6");
        // Two poll functions, each entered and left; three allocator functions.
        assert_eq!(s.matches("uretprobe:/x/mcpmon:").count(), 2);
        assert!(s.contains("uprobe:/lib/libc.so.6:realloc /pid == 42/ { if (tid != 42 || @in[tid] > 0) { @realloc = count(); } else { @periodic_realloc = count(); } }"));
        assert!(s.ends_with("END { clear(@in); }\n"));
    }
}
