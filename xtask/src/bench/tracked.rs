//! Loops inside a tracked tree: every operation is an event the daemon decodes, correlates and
//! evaluates. Cost per event, sustained rate, and loss accounting with several producers.
use std::{process::Stdio, time::Instant};

use anyhow::bail;
use serde_json::{json, Value};

use super::{configs::{usage, user_cpu, Daemon}, stats, testkit, workloads::loop_ns};

fn stats_record(recs: &[Value]) -> Value {
    recs.iter().rev().find(|v| v["kind"] == "stats").cloned().unwrap_or(Value::Null)
}

fn lost_total(st: &Value) -> u64 {
    st["lost"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0)
}

pub fn run(_work: &std::path::Path, quick: bool) -> anyhow::Result<Value> {
    let n: u64 = if quick { 50_000 } else { 200_000 };
    // The single producer's loop is longer, and run more often: the daemon's user time is read
    // in 10 ms ticks, and 200000 events (a quarter of a second of its CPU) left the median a
    // few ticks from the bound; 5 rounds give a median that one odd round does not move.
    let single = if quick { n } else { 600_000 };
    let rounds = if quick { 2 } else { 5 };
    let mut per_event = Vec::new();
    let mut rate = Vec::new();
    let mut one = Vec::new();
    let mut cpu_load = Vec::new();
    let mut processed = Vec::new();
    let mut lag = Vec::new();
    let mut rss_load = Vec::new();
    let mut daemon_ns = Vec::new();
    let mut daemon_user_ns = Vec::new();
    for _ in 0..rounds {
        // Same daemon, hooks attached (a server alive): untracked vs tracked loop. Folding off:
        // this measures the daemon's cost per event, so every open must reach it.
        let d = Daemon::start(&["--fold-window-ms", "0"], true)?;
        let mut keep = d.exec("bench-keepalive", &["sleep", "100000"]).stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let untracked = loop_ns("open", n)?;
        let (c0, _) = usage(d.pid());
        let u0 = user_cpu(d.pid());
        let t = Instant::now();
        let out = d.exec("bench-loop", &[testkit().to_str().unwrap(), "loop", "open", &single.to_string()]).output()?;
        let wall = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("tracked loop: {}", String::from_utf8_lossy(&out.stderr));
        }
        let tracked: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        // The daemon has drained when its CPU time stops growing: that is when the last event
        // was processed. Its processing rate is events over that whole window.
        let (mut c1, mut rss) = usage(d.pid());
        let mut u1 = user_cpu(d.pid());
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let (c, r) = usage(d.pid());
            if c - c1 < 0.01 {
                break;
            }
            (c1, rss) = (c, r);
            u1 = user_cpu(d.pid());
        }
        let drained = t.elapsed().as_secs_f64().max(wall) - 0.2;
        let _ = keep.kill();
        let _ = keep.wait();
        let recs = d.stop()?;
        let st = stats_record(&recs);
        let opens = recs.iter().filter(|v| v["kind"] == "open" && v["server"] == "bench-loop").count() as u64;
        per_event.push(tracked - untracked);
        rate.push(1e9 / tracked);
        // What the daemon handled is what reached it (delivered), not what the loop did.
        processed.push(opens as f64 / drained);
        // Its own cost: CPU time (user and system, all its threads) per event it handled.
        daemon_ns.push((c1 - c0) * 1e9 / opens.max(1) as f64);
        // Of which in its own code: the rest is the kernel's (writing the event file, waking it).
        daemon_user_ns.push((u1 - u0) * 1e9 / opens.max(1) as f64);
        lag.push((drained - wall).max(0.0));
        cpu_load.push((c1 - c0) / drained);
        rss_load.push(rss as f64);
        let events: u64 = st["events"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
        one.push(json!({"ops": single, "open_events_delivered": opens, "lost": st["lost"], "untracked_ns": untracked, "tracked_ns": tracked, "daemon_events": events, "stage_ns": st["stage_ns"]}));
    }

    let profile = profiled(if quick { 200_000 } else { 1_000_000 })?;
    let allocations = super::allocs::run(if quick { 50_000 } else { 200_000 })?;

    // Several producers at once: past the limit, every lost event must be counted.
    let producers = 4;
    let d = Daemon::start(&["--ringbuf-mib", "1", "--fold-window-ms", "0"], true)?;
    let mut kids = Vec::new();
    for i in 0..producers {
        kids.push(d.exec(&format!("bench-producer-{i}"), &[testkit().to_str().unwrap(), "loop", "open", &n.to_string()]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?);
    }
    // A producer that did not run tracked generated nothing: the accounting below would miss
    // its share for no fault of the daemon's.
    for k in kids {
        let out = k.wait_with_output()?;
        if !out.status.success() {
            bail!("a producer failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let recs = d.stop()?;
    let st = stats_record(&recs);
    let delivered = recs.iter().filter(|v| v["kind"] == "open" && v["server"].as_str().is_some_and(|s| s.starts_with("bench-producer"))).count() as u64;
    let lost = lost_total(&st);
    let folded = folded_flood(if quick { 200_000 } else { 1_000_000 })?;
    let scale = super::scale::run(quick)?;
    Ok(json!({
        "folded": folded,
        "profile": profile,
        "allocations": allocations,
        "scale": scale,
        "single_producer": {
            "cost_per_event_ns": stats(&per_event),
            "events_per_s": stats(&rate),
            "daemon_events_per_s": stats(&processed),
            "drain_lag_s": stats(&lag),
            "runs": one,
            "daemon_cpu_cores": stats(&cpu_load),
            "daemon_cpu_ns_per_event": stats(&daemon_ns),
            "daemon_user_ns_per_event": stats(&daemon_user_ns),
            "daemon_rss_bytes": stats(&rss_load),
        },
        "several_producers": {
            "producers": producers, "ops_each": n, "ringbuf_mib": 1,
            "open_events_delivered": delivered, "lost_counted": st["lost"],
            "accounted": delivered + lost, "generated_at_least": producers as u64 * n,
        },
    }))
}

/// The same loop with the default fold window (issue 16 item 2): how many records a flood costs,
/// whether the counts add up, and the daemon's CPU for it.
fn folded_flood(n: u64) -> anyhow::Result<Value> {
    let d = Daemon::start(&[], true)?;
    let (c0, _) = usage(d.pid());
    let t = Instant::now();
    let out = d.exec("bench-flood", &[testkit().to_str().unwrap(), "loop", "open", &n.to_string()]).output()?;
    if !out.status.success() {
        bail!("folded loop: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let wall = t.elapsed().as_secs_f64();
    let (c1, _) = usage(d.pid());
    let recs = d.stop()?;
    let lines: Vec<&Value> = recs.iter().filter(|v| v["kind"] == "open" && v["server"] == "bench-flood" && v["path"] == "/etc/hostname").collect();
    let counted: u64 = lines.iter().map(|v| v["folded"]["count"].as_u64().unwrap_or(1)).sum();
    Ok(json!({"ops": n, "records": lines.len(), "opens_counted": counted, "lost": lost_total(&stats_record(&recs)), "daemon_cpu_s": c1 - c0, "wall_s": wall}))
}

/// The same loop in a run of its own with `perf` sampling the daemon (flame.rs): perf's
/// copying of stacks slows the daemon, so none of the figures above come from this run. Writes
/// bench/daemon-flame.svg and target/bench/daemon.folded.
fn profiled(n: u64) -> anyhow::Result<Value> {
    let d = Daemon::start(&["--fold-window-ms", "0"], true)?;
    let mut keep = d.exec("bench-keepalive", &["sleep", "100000"]).stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let work = crate::util::root().join("target/bench");
    std::fs::create_dir_all(&work)?;
    let rec = super::flame::record(d.pid(), &work.join("daemon.perf.data"))?;
    let out = d.exec("bench-loop", &[testkit().to_str().unwrap(), "loop", "open", &n.to_string()]).output()?;
    super::configs::wait_drained(d.pid());
    let folded = rec.finish()?;
    let _ = keep.kill();
    let _ = keep.wait();
    d.stop()?;
    if !out.status.success() {
        bail!("profiled loop: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text: String = folded.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    std::fs::write(work.join("daemon.folded"), text)?;
    let title = format!("mcpmon run: every thread, {n} tracked opens (folding off, shipped rules)");
    std::fs::write(crate::util::root().join("bench/daemon-flame.svg"), super::flame::svg(&folded, &title))?;
    let mut s = super::flame::summary(&folded);
    s["ops"] = json!(n);
    Ok(s)
}
