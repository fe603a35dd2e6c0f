//! bench/results.md from the JSON figures, with each goal marked met or missed.
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::workloads::NAMES;

pub fn machine() -> Value {
    let uname = crate::util::output("uname", &["-r"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu.lines().find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())).unwrap_or_default();
    let cores = cpu.lines().filter(|l| l.starts_with("processor")).count();
    json!({"kernel": uname.trim(), "cpu": model, "cores": cores, "date": crate::util::output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default().trim()})
}

fn med(v: &Value) -> f64 {
    v["median"].as_f64().unwrap_or(f64::NAN)
}

fn ratio(o: &Value, config: &str, w: &str) -> f64 {
    med(&o["configs"][config][w]["ratio"])
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// A ratio goal judged with its spread: met when every median is within the bound; inconclusive
/// when a median is over it but that configuration's own samples reach below it (the machine's
/// noise is larger than the margin); missed otherwise.
fn verdict(o: &Value, config: &str, loads: &[&str], bound: impl Fn(&str) -> f64) -> &'static str {
    let r = |w: &str| &o["configs"][config][w]["ratio"];
    if loads.iter().all(|w| med(r(w)) <= bound(w)) {
        "met"
    } else if loads.iter().all(|w| r(w)["min"].as_f64().unwrap_or(f64::NAN) <= bound(w)) {
        "inconclusive: over the bound at the median, but within the run-to-run spread"
    } else {
        "**missed**"
    }
}

pub fn markdown(v: &Value) -> String {
    let mut s = String::new();
    let m = &v["machine"];
    let _ = writeln!(s, "# mcpmon benchmark results\n\n`cargo xtask bench`, {} on kernel {}, {} ({} cores). Every figure is a ratio or rate measured side by side in this run: configurations alternate within each round (order rotated), the ratio is per round against \"no monitor\", and the table shows the median with min–max.\n", m["date"].as_str().unwrap_or(""), m["kernel"].as_str().unwrap_or(""), m["cpu"].as_str().unwrap_or(""), m["cores"]);
    let o = &v["overhead"];
    let _ = writeln!(s, "## 1. Overhead on processes mcpmon does not track ({} rounds)\n", o["rounds"]);
    let _ = write!(s, "| configuration |");
    for w in NAMES {
        let _ = write!(s, " {w} |");
    }
    let _ = writeln!(s, "\n|---|{}", "---|".repeat(NAMES.len()));
    let cfgs = ["none", "mcpmon_idle", "mcpmon_server", "floor", "bpftrace"];
    for c in cfgs {
        let _ = write!(s, "| {c} |");
        for w in NAMES {
            let r = &o["configs"][c][w]["ratio"];
            let _ = write!(s, " {:.3} ({:.3}–{:.3}) |", med(r), r["min"].as_f64().unwrap_or(f64::NAN), r["max"].as_f64().unwrap_or(f64::NAN));
        }
        let _ = writeln!(s);
    }
    let a = &o["auditd"];
    let _ = write!(s, "| auditd¹ |");
    for w in NAMES {
        let _ = write!(s, " {:.3} |", med(&a[w]["ratio"]));
    }
    let _ = writeln!(s, "\n\nAbsolute medians of \"no monitor\" (for scale only): open+close {:.0} ns, fork+exec {:.0} µs, connect {:.1} µs, git status {:.1} ms, cargo build {:.0} ms.", med(&o["configs"]["none"]["open_close"]["ns"]), med(&o["configs"]["none"]["fork_exec"]["ns"]) / 1e3, med(&o["configs"]["none"]["connect"]["ns"]) / 1e3, med(&o["configs"]["none"]["git_status"]["ns"]) / 1e6, med(&o["configs"]["none"]["cargo_build"]["ns"]) / 1e6);
    let _ = writeln!(s, "\n¹ auditd runs after everything else (enabling audit slows every new process until reboot), alternating with its own \"no monitor\" samples taken after audit was first enabled.\n");
    let loops = ["open_close", "fork_exec", "connect"];
    let idle_v = verdict(o, "mcpmon_idle", &loops, |_| 1.01);
    let floor_v = verdict(o, "mcpmon_server", &loops, |w| ratio(o, "floor", w) * 1.05);
    let real_v = verdict(o, "mcpmon_idle", &["git_status", "cargo_build"], |_| 1.02);
    let below = loops.iter().all(|w| ratio(o, "mcpmon_server", w) < ratio(o, "bpftrace", w) && ratio(o, "mcpmon_server", w) < med(&a[*w]["ratio"]));
    let _ = writeln!(s, "| goal | result |\n|---|---|");
    let _ = writeln!(s, "| no server alive: within 1% of no monitor (loops) | {} (open {:.3}, fork+exec {:.3}, connect {:.3}) |", idle_v, ratio(o, "mcpmon_idle", "open_close"), ratio(o, "mcpmon_idle", "fork_exec"), ratio(o, "mcpmon_idle", "connect"));
    let _ = writeln!(s, "| server alive: within 5% of the floor (loops) | {} (open {:.3} vs floor {:.3}, fork+exec {:.3} vs {:.3}, connect {:.3} vs {:.3}) |", floor_v, ratio(o, "mcpmon_server", "open_close"), ratio(o, "floor", "open_close"), ratio(o, "mcpmon_server", "fork_exec"), ratio(o, "floor", "fork_exec"), ratio(o, "mcpmon_server", "connect"), ratio(o, "floor", "connect"));
    let cmp: Vec<String> = loops
        .iter()
        .map(|w| format!("{w}: mcpmon {:.3}, bpftrace {:.3}, auditd {:.3}", ratio(o, "mcpmon_server", w), ratio(o, "bpftrace", w), med(&a[*w]["ratio"])))
        .collect();
    let _ = writeln!(s, "| server alive: below bpftrace and auditd (loops) | {} ({}) |", mark(below), cmp.join("; "));
    let _ = writeln!(s, "| realistic jobs within 2% of no monitor | {} (git status {:.3}, cargo build {:.3}) |", real_v, ratio(o, "mcpmon_idle", "git_status"), ratio(o, "mcpmon_idle", "cargo_build"));

    let t = &v["tracked"];
    let sp = &t["single_producer"];
    let lost_single: u64 = sp["runs"].as_array().map(|r| r.iter().map(|x| x["lost"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum::<u64>()).unwrap_or(0)).sum()).unwrap_or(0);
    let cores = med(&sp["daemon_cpu_cores"]);
    let _ = writeln!(s, "\n## 2. Tracked processes\n");
    let _ = writeln!(s, "One open+close loop at full speed inside a tracked tree (every open decoded, correlated, evaluated against the shipped rules and written as a JSON line):\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let _ = writeln!(s, "| cost per event (tracked − untracked loop, same daemon) | {:.0} ns (min {:.0}, max {:.0}) |", med(&sp["cost_per_event_ns"]), sp["cost_per_event_ns"]["min"].as_f64().unwrap_or(0.0), sp["cost_per_event_ns"]["max"].as_f64().unwrap_or(0.0));
    let _ = writeln!(s, "| rate of the producer (tracked loop) | {:.0} events/s |", med(&sp["events_per_s"]));
    let _ = writeln!(s, "| rate the daemon processed them (until drained) | {:.0} events/s |", med(&sp["daemon_events_per_s"]));
    let _ = writeln!(s, "| time the daemon needed after the producer ended (events waited in the ring) | {:.2} s |", med(&sp["drain_lag_s"]));
    let _ = writeln!(s, "| events lost (all runs) | {lost_single} |");
    let _ = writeln!(s, "| daemon CPU over the window (loop + drain) | {:.2} cores |", cores);
    let _ = writeln!(s, "| daemon RSS under that load | {:.1} MiB |", med(&sp["daemon_rss_bytes"]) / 1048576.0);
    // The profile: where the daemon's time per event goes (its own stage timers, first run).
    if let Some(run) = sp["runs"].as_array().and_then(|r| r.first()) {
        let n = run["daemon_events"].as_f64().unwrap_or(0.0).max(1.0);
        if let Some(stages) = run["stage_ns"].as_object() {
            let _ = writeln!(s, "\nWhere the daemon's time per event goes (its stage timers, first run, {} events; decoding and the JSON writer run in their own tasks and are not in these):\n\n| stage | ns per event |\n|---|---|", n);
            let mut v: Vec<(&String, f64)> = stages.iter().map(|(k, x)| (k, x.as_f64().unwrap_or(0.0) / n)).collect();
            v.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
            for (k, x) in v {
                let _ = writeln!(s, "| {k} | {x:.0} |");
            }
        }
    }
    let sev = &t["several_producers"];
    let _ = writeln!(s, "\nPast the limit ({} producers × {} opens, 1 MiB ring): {} open events delivered, lost counted {}, delivered + lost = {} for at least {} generated.\n", sev["producers"], sev["ops_each"], sev["open_events_delivered"], sev["lost_counted"], sev["accounted"], sev["generated_at_least"]);
    let keeps_up = med(&sp["daemon_events_per_s"]) >= 0.95 * med(&sp["events_per_s"]);
    let _ = writeln!(s, "| goal | result |\n|---|---|\n| fastest single producer with zero loss, under one core | {} ({} lost, {:.2} cores) |", mark(lost_single == 0 && cores < 1.0), lost_single, cores);
    let _ = writeln!(s, "| daemon processes as fast as the producer produces (no backlog) | {} ({:.0} vs {:.0} events/s) |", mark(keeps_up), med(&sp["daemon_events_per_s"]), med(&sp["events_per_s"]));
    let acc = sev["accounted"].as_u64().unwrap_or(0) >= sev["generated_at_least"].as_u64().unwrap_or(u64::MAX);
    let _ = writeln!(s, "| past the limit, every lost event counted | {} |", mark(acc));

    let e = &v["enforcement"];
    let _ = writeln!(s, "\n## 3. Enforcement ({} trials each)\n", e["trials"]);
    if let Some(m) = e["measured_separately"].as_object() {
        let _ = writeln!(s, "Measured in a run of its own (`cargo xtask bench --enforcement-only`), {} on kernel {}: these are counts of trials and bytes, not ratios against the other sections.\n", m.get("date").and_then(Value::as_str).unwrap_or("?"), m.get("kernel").and_then(Value::as_str).unwrap_or("?"));
    }
    let _ = writeln!(s, "| path | result |\n|---|---|");
    let _ = writeln!(s, "| in-kernel kill (open of an SSH key) | {} of {} victims read a byte ({} kills) |", e["kernel_kill"]["victims_that_read_the_file"], e["trials"], e["kernel_kill"]["kills"]);
    let u = &e["userspace_kill"];
    let _ = writeln!(s, "| user-space kill (pidfd, after the event) | {} of {} victims read the file first; event → signal p50 {:.0} µs, p99 {:.0} µs; event → death p50 {:.0} µs, p99 {:.0} µs |", u["victims_that_read_the_file"], e["trials"], u["event_to_signal_us"]["p50"].as_f64().unwrap_or(f64::NAN), u["event_to_signal_us"]["p99"].as_f64().unwrap_or(f64::NAN), u["event_to_death_us"]["p50"].as_f64().unwrap_or(f64::NAN), u["event_to_death_us"]["p99"].as_f64().unwrap_or(f64::NAN));
    let _ = writeln!(s, "| connect deny (cgroup sock_addr) | {} of {} connects got EPERM |", e["connect_deny"]["denied"], e["trials"]);
    let a = &e["secret_attacks"];
    if a.is_object() {
        let row = |s: &mut String, what: &str, x: &Value| {
            let ok = x["bytes_leaked"].as_u64() == Some(0);
            let _ = writeln!(s, "| {what} | {} of {} victims read, {} bytes leaked: {} |", x["victims_that_read"], x["trials"], x["bytes_leaked"], mark(ok));
        };
        row(&mut s, "key written, then opened at once by a tracked process", &a["new_key_then_open"]);
        row(&mut s, "protected key renamed to `.pub`, then read", &a["renamed_to_pub"]);
        for mode in ["inline", "async", "openat2"] {
            row(&mut s, &format!("io_uring read ({mode}; io_uring granted, the open gate stops it)"), &a["io_uring"][mode]);
        }
        let w = &a["write_race"];
        if !w.is_null() {
            let _ = writeln!(s, "| write race (persistence file, kill at the open's exit on the tracepoint path): 3 threads, {} runs | {} runs landed a write, {} bytes (unmonitored control: {} bytes): {} |", w["runs"], w["runs_that_landed"], w["bytes_landed"], w["control_unmonitored_bytes_landed"], if w["bytes_landed"].as_u64() == Some(0) { "none landed" } else { "the documented window: the fentry kill at security_file_open closes it where trampolines exist" });
        }
        let r = &a["fd_race"];
        let _ = writeln!(s, "| fd race: 3 threads, {} opens per run, sendfile/copy_file_range on any fd | {} of {} runs leaked, {} bytes (unmonitored control: {} bytes): {} |", r["opens_per_run"], r["runs_that_leaked"], r["runs"], r["bytes_leaked"], r["control_unmonitored_bytes_leaked"], mark(r["bytes_leaked"].as_u64() == Some(0)));
    }

    let i = &e["daemon_idle"];
    let rss = i["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0;
    let cpu = i["cpu_cores"].as_f64().unwrap_or(0.0);
    let _ = writeln!(s, "\n## 4. The daemon itself\n\n| figure | value | goal |\n|---|---|---|");
    let _ = writeln!(s, "| RSS idle (shipped rules loaded) | {rss:.1} MiB | < 40 MiB: {} |", mark(rss < 40.0));
    let _ = writeln!(s, "| CPU idle ({} s window) | {:.3}% of a core | < 0.5%: {} |", i["window_s"], cpu * 100.0, mark(cpu < 0.005));
    let _ = writeln!(s, "| CPU under the load of section 2 | {:.2} cores | |", cores);
    let _ = writeln!(s, "| RSS under the load of section 2 | {:.1} MiB | |", med(&sp["daemon_rss_bytes"]) / 1048576.0);
    fast_path(&mut s, v);
    super::results::markdown(&mut s, &v["results"]);
    super::descriptions::markdown(&mut s, &v["descriptions"]);
    s
}

/// Section 5: fentry/fexit against tracepoints inside the VM, next to the host's fallback figure.
fn fast_path(s: &mut String, v: &Value) {
    let f = &v["fast_path"];
    if f.is_null() {
        return;
    }
    let _ = writeln!(s, "
## 5. Fast path (fentry/fexit) against the fallback (syscall tracepoints), inside the VM ({} rounds)
", f["rounds"]);
    let _ = writeln!(s, "This machine's kernel has no BPF trampolines, so the fast path is measured in the VM `cargo xtask vm-test` boots: Debian's kernel {} under qemu TCG, one server tracked so the on-demand hooks are attached, an untracked process's loops timed. TCG emulates the CPU: compare the ratios within this table, not its nanoseconds with the host's.\n", f["kernel"].as_str().unwrap_or("?"));
    let _ = writeln!(s, "| configuration | open+close | connect | getppid (never hooked) |\n|---|---|---|---|");
    for c in super::vmfast::CONFIGS {
        let _ = write!(s, "| mcpmon, server alive, {c} |");
        for lp in super::vmfast::LOOPS {
            let r = &f["configs"][c][lp]["ratio"];
            let _ = write!(s, " {:.3} ({:.3}–{:.3}) |", med(r), r["min"].as_f64().unwrap_or(f64::NAN), r["max"].as_f64().unwrap_or(f64::NAN));
        }
        let _ = writeln!(s);
    }
    let o = &v["overhead"];
    let _ = writeln!(s, "| host (this kernel, tracepoints: the fallback), server alive | {:.3} | {:.3} | not measured |", ratio(o, "mcpmon_server", "open_close"), ratio(o, "mcpmon_server", "connect"));
    let r = |c: &str, lp: &str| med(&f["configs"][c][lp]["ratio"]);
    let _ = writeln!(s, "\n| goal | result |\n|---|---|");
    let _ = writeln!(s, "| fast path cheaper than the tracepoints for untracked processes (open+close, same VM) | {} ({:.3} vs {:.3}) |", mark(r("fentry", "open") < r("tracepoint", "open")), r("fentry", "open"), r("tracepoint", "open"));
    let _ = writeln!(s, "| syscalls mcpmon does not hook pay nothing on the fast path (getppid within 2%) | {} ({:.3}; tracepoints {:.3}) |", mark(r("fentry", "getppid") <= 1.02), r("fentry", "getppid"), r("tracepoint", "getppid"));
}
