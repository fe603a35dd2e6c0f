//! bench/results.md from the JSON figures, with each goal marked met or missed.
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{configs::{CONFIGS, PASSES}, workloads::{BATCHES, NAMES}};

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

/// Fewest rounds a verdict is drawn from: with 5, even the widest interval (the smallest and the
/// largest difference) covers the median with only 94% confidence.
const MIN_ROUNDS: usize = 6;

/// The median of paired per-round differences and its distribution-free 95% confidence interval
/// (the sign test's): the order statistics d(k) and d(n + 1 − k), for the largest k with
/// P(Binomial(n, ½) < k) ≤ 2.5%. It assumes nothing of the noise's shape, so one outlying round
/// (a sample that ran while the host was busy) moves it by one order statistic, not by its size.
/// None under `MIN_ROUNDS` finite differences (no such k).
pub fn paired_ci(d: &[f64]) -> Option<(f64, f64, f64)> {
    let mut d: Vec<f64> = d.iter().copied().filter(|x| x.is_finite()).collect();
    d.sort_by(f64::total_cmp);
    let n = d.len();
    // P(X = i) for X ~ Binomial(n, ½), summed from i = 0 while the tail stays within 2.5%.
    let (mut k, mut tail, mut p) = (0, 0.0, 0.5f64.powi(n as i32));
    while k < n / 2 && tail + p <= 0.025 {
        tail += p;
        p = p * (n - k) as f64 / (k + 1) as f64;
        k += 1;
    }
    if k == 0 {
        return None;
    }
    let median = if n % 2 == 1 { d[n / 2] } else { (d[n / 2 - 1] + d[n / 2]) / 2.0 };
    Some((median, d[k - 1], d[n - k]))
}

fn per_round(o: &Value, config: &str, w: &str) -> Vec<f64> {
    o["configs"][config][w]["per_round"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

/// A configuration's ratio in round `i` (NaN where it has none): a bound taken from the same round.
fn in_round(o: &Value, config: &str, w: &str, i: usize) -> f64 {
    o["configs"][config][w]["per_round"].get(i).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// "open A vs LABEL B, fork+exec A vs B, connect A vs B": configuration `a`'s median ratios
/// beside its bound's, `b`, on the three loops.
fn vs(o: &Value, a: &str, b: &str, label: &str) -> String {
    let label = if label.is_empty() { String::new() } else { format!("{label} ") };
    format!(
        "open {:.3} vs {label}{:.3}, fork+exec {:.3} vs {:.3}, connect {:.3} vs {:.3}",
        ratio(o, a, "open_close"),
        ratio(o, b, "open_close"),
        ratio(o, a, "fork_exec"),
        ratio(o, b, "fork_exec"),
        ratio(o, a, "connect"),
        ratio(o, b, "connect")
    )
}

/// A ratio goal judged by a paired comparison across rounds: in each round, the configuration's
/// ratio minus that round's bound (`bound(workload, round)`); met when the 95% interval of the
/// mean difference lies at or below 0, missed when it lies above, inconclusive when it straddles
/// 0 (the machine's noise is larger than the margin) or there are fewer than `MIN_ROUNDS`.
fn verdict(o: &Value, config: &str, loads: &[&str], bound: impl Fn(&str, usize) -> f64) -> String {
    let diffs: Vec<(&str, Vec<f64>)> = loads
        .iter()
        .map(|w| {
            let r = per_round(o, config, w);
            (*w, r.iter().enumerate().map(|(i, x)| x - bound(w, i)).collect())
        })
        .collect();
    judge(&diffs, "ratio − bound")
}

/// "Below bpftrace and auditd": each paired by round with mcpmon (all three alternate in every
/// round), and met only when mcpmon is below both.
fn below_peers(o: &Value, loops: &[&str]) -> String {
    let against = |peer: &str| {
        let d: Vec<(&str, Vec<f64>)> = loops.iter().map(|w| (*w, per_round(o, "mcpmon_server", w).iter().zip(per_round(o, peer, w)).map(|(m, p)| m - p).collect())).collect();
        intervals(d.iter().map(|(w, d)| (*w, paired(d))))
    };
    let (bpf_word, bpf_parts) = against("bpftrace");
    let (audit_word, audit_parts) = against("auditd");
    let both = [bpf_word, audit_word];
    let overall = if both.contains(&"**missed**") {
        "**missed**"
    } else if both.iter().all(|w| *w == "met") {
        "met"
    } else {
        "inconclusive"
    };
    format!(
        "{overall}; bpftrace: {bpf_word}; mcpmon − bpftrace (paired), median [95% CI] over rounds: {}; auditd: {audit_word}; mcpmon − auditd (paired), median [95% CI] over rounds: {}",
        bpf_parts.join(", "),
        audit_parts.join(", ")
    )
}

/// The paired interval of per-round differences, or why there is none.
fn paired(d: &[f64]) -> Result<(f64, f64, f64), String> {
    // `paired_ci` itself has no interval under `MIN_ROUNDS` finite differences.
    match paired_ci(d) {
        Some(ci) => Ok(ci),
        None if d.is_empty() => Err("no per-round figures in this results.json".into()),
        None => Err(format!("{} rounds, fewer than {MIN_ROUNDS}", d.len())),
    }
}

/// The word and the per-workload text of a verdict over intervals of (figure − bound): met when
/// every interval lies at or below 0, missed when any lies above, else inconclusive.
fn intervals<'a>(cis: impl Iterator<Item = (&'a str, Result<(f64, f64, f64), String>)>) -> (&'static str, Vec<String>) {
    let mut parts = Vec::new();
    let (mut met, mut missed) = (true, false);
    for (w, ci) in cis {
        match ci {
            Ok((m, lo, hi)) => {
                parts.push(format!("{w} {m:+.3} [{lo:+.3}, {hi:+.3}]"));
                met &= hi <= 0.0;
                missed |= lo > 0.0;
            }
            Err(why) => {
                parts.push(format!("{w}: {why}"));
                met = false;
            }
        }
    }
    let word = if missed {
        "**missed**"
    } else if met {
        "met"
    } else {
        "inconclusive"
    };
    (word, parts)
}

/// The verdict over per-round differences from a bound, by workload (see [`verdict`]).
fn judge(diffs: &[(&str, Vec<f64>)], what: &str) -> String {
    let (word, parts) = intervals(diffs.iter().map(|(w, d)| (*w, paired(d))));
    format!("{word}; {what}, median [95% CI] over rounds: {}", parts.join(", "))
}

pub fn markdown(v: &Value) -> String {
    let mut s = String::new();
    let m = &v["machine"];
    let _ = writeln!(s, "# mcpmon benchmark results\n\n`cargo xtask bench`, {} on kernel {}, {} ({} cores). Every figure is a ratio or rate measured side by side in this run: configurations alternate within each round (order rotated), the ratio is per round against \"no monitor\", and the table shows the median with min–max.\n", m["date"].as_str().unwrap_or(""), m["kernel"].as_str().unwrap_or(""), m["cpu"].as_str().unwrap_or(""), m["cores"]);
    let _ = writeln!(s, "**How goals are judged.** A ratio goal compares, round by round, the configuration's ratio with its bound in the same round (the floor's own ratio in that round, where the bound is the floor): the differences are paired by round, and the verdict comes from their median and its distribution-free 95% confidence interval (the sign test's: two order statistics of the differences, chosen by the binomial distribution; it assumes nothing of the noise's shape, so one round that ran while the host was busy cannot swing it, where it could swing an interval of the mean). *Met*: the whole interval is at or below 0. *Missed*: the whole interval is above 0. *Inconclusive*: the interval straddles 0, that is, this machine's round-to-round noise is larger than the margin, or there were fewer than {MIN_ROUNDS} rounds. The interval is printed with each verdict. A loop's sample is its fastest of {BATCHES} equal batches (nanoseconds per operation), and each configuration's sample in a round the fastest of {PASSES} passes over the workloads: the rest of the machine (another tenant of the host, the other CPU, the scheduler) only ever adds time, so the fastest is the operation's own cost with the least of that noise, while what a monitor adds is in every batch alike.\n");
    let o = &v["overhead"];
    let _ = writeln!(s, "## 1. Overhead on processes mcpmon does not track ({} rounds)\n", o["rounds"]);
    let _ = write!(s, "| configuration |");
    for w in NAMES {
        let _ = write!(s, " {w} |");
    }
    let _ = writeln!(s, "\n|---|{}", "---|".repeat(NAMES.len()));
    for c in CONFIGS.iter().filter(|c| o["configs"].get(**c).is_some()) {
        let _ = write!(s, "| {c} |");
        for w in NAMES {
            let r = &o["configs"][c][w]["ratio"];
            let _ = write!(s, " {:.3} ({:.3}–{:.3}) |", med(r), r["min"].as_f64().unwrap_or(f64::NAN), r["max"].as_f64().unwrap_or(f64::NAN));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\nAbsolute medians of \"no monitor\" (for scale only): open+close {:.0} ns, fork+exec {:.0} µs, connect {:.1} µs, git status {:.1} ms, cargo build {:.0} ms.", med(&o["configs"]["none"]["open_close"]["ns"]), med(&o["configs"]["none"]["fork_exec"]["ns"]) / 1e3, med(&o["configs"]["none"]["connect"]["ns"]) / 1e3, med(&o["configs"]["none"]["git_status"]["ns"]) / 1e6, med(&o["configs"]["none"]["cargo_build"]["ns"]) / 1e6);
    if let Some(m) = o["measured_separately"].as_object() {
        let _ = writeln!(s, "\nSection 1 was measured in a run of its own (`cargo xtask bench --overhead-only`, {}); its configurations alternate within each round as always.", run_of(m));
    }
    let _ = writeln!(s, "\nauditd: `auditd -n` with one `always,exit` rule on the syscalls mcpmon hooks, filtered to a pid no process has. Once audit has been enabled, every process forked afterwards is audited (the slow syscall path) until reboot, audit on or off; when auditd stops, the bench adds the audit rule `-a task,never`, which the kernel checks at each fork, so the configurations after it run on an untouched machine. The rule stays when the bench ends (many distributions ship it by default).\n");
    if o["configs"].get("marks").is_some() {
        let _ = writeln!(s, "marks: the open gate's two fanotify marks (permission, and directory entries: `gate/fanotify.rs`, `gate/persist.rs`) on an empty directory of the loop file's filesystem, held by `mcpmon-testkit marks`, with no program and no daemon; floor_marks: the floor with those marks. A filesystem with any mark takes each open and close through fsnotify's checks, whichever file it is; mcpmon keeps the marks for its whole life, as a server its handshake finds is tracked while it runs, with no time to place them first.\n");
    }
    let loops = ["open_close", "fork_exec", "connect"];
    let idle_v = verdict(o, "mcpmon_idle", &loops, |_, _| 1.01);
    // The floor measured in the same round: the pair shares that round's machine state.
    let floor_v = verdict(o, "mcpmon_server", &loops, |w, i| in_round(o, "floor", w, i) * 1.03);
    let real_v = verdict(o, "mcpmon_idle", &["git_status", "cargo_build"], |_, _| 1.02);
    let below = below_peers(o, &loops);
    let _ = writeln!(s, "| goal | result |\n|---|---|");
    let _ = writeln!(s, "| no server alive: within 1% of no monitor (loops) | {} (open {:.3}, fork+exec {:.3}, connect {:.3}) |", idle_v, ratio(o, "mcpmon_idle", "open_close"), ratio(o, "mcpmon_idle", "fork_exec"), ratio(o, "mcpmon_idle", "connect"));
    let _ = writeln!(s, "| server alive: within 3% of the floor (loops) | {floor_v} ({}) |", vs(o, "mcpmon_server", "floor", "floor"));
    let cmp: Vec<String> = loops
        .iter()
        .map(|w| format!("{w}: mcpmon {:.3}, bpftrace {:.3}, auditd {:.3}", ratio(o, "mcpmon_server", w), ratio(o, "bpftrace", w), ratio(o, "auditd", w)))
        .collect();
    let _ = writeln!(s, "| server alive: below bpftrace and auditd (loops) | {below} (medians: {}) |", cmp.join("; "));
    let _ = writeln!(s, "| realistic jobs within 2% of no monitor | {} (git status {:.3}, cargo build {:.3}) |", real_v, ratio(o, "mcpmon_idle", "git_status"), ratio(o, "mcpmon_idle", "cargo_build"));
    if o["configs"].get("floor_marks").is_some() {
        // What mcpmon costs beyond its gate's marks (same round), idle and with a server: its
        // programs, its daemon, everything but the kernel's fsnotify checks.
        let with = |c: &'static str| move |w: &str, i: usize| in_round(o, c, w, i) * 1.01;
        let idle_m = verdict(o, "mcpmon_idle", &loops, with("marks"));
        let server_m = verdict(o, "mcpmon_server", &loops, with("floor_marks"));
        let _ = writeln!(s, "| no server alive: within 1% of the gate's marks alone (loops) | {idle_m} ({}) |", vs(o, "mcpmon_idle", "marks", "marks"));
        let _ = writeln!(s, "| server alive: within 1% of the floor with the gate's marks (loops) | {server_m} ({}) |", vs(o, "mcpmon_server", "floor_marks", ""));
    }
    if o["configs"].get("mcpmon_pipelines").is_some() {
        // Handshake discovery keeps the read hooks on while piped processes are young: bounded by
        // the floor, with the pipelines' own load (none_pipelines, same round) factored in.
        let pipe_v = verdict(o, "mcpmon_pipelines", &loops, |w, i| {
            in_round(o, "floor", w, i) * in_round(o, "none_pipelines", w, i) * 1.03
        });
        let _ = writeln!(
            s,
            "| non-MCP pipelines running, no server: within 3% of the floor (× the pipelines' own load) | {pipe_v} ({}) |",
            vs(o, "mcpmon_pipelines", "none_pipelines", "none+pipelines")
        );
    }
    prog_time(&mut s, &o["prog_time"]);

    let t = &v["tracked"];
    let sp = &t["single_producer"];
    let lost_single: u64 = sp["runs"].as_array().map(|r| r.iter().map(|x| x["lost"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum::<u64>()).unwrap_or(0)).sum()).unwrap_or(0);
    let cores = med(&sp["daemon_cpu_cores"]);
    let _ = writeln!(s, "\n## 2. Tracked processes\n");
    let _ = writeln!(s, "One open+close loop at full speed inside a tracked tree (every open decoded, correlated, evaluated against the shipped rules and written as a JSON line):\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let _ = writeln!(s, "| cost per event to the producer (tracked − untracked loop, same daemon) | {:.0} ns (min {:.0}, max {:.0}) |", med(&sp["cost_per_event_ns"]), sp["cost_per_event_ns"]["min"].as_f64().unwrap_or(0.0), sp["cost_per_event_ns"]["max"].as_f64().unwrap_or(0.0));
    let _ = writeln!(s, "| cost per event to the daemon (its CPU time, every thread, per event it handled) | {:.0} ns (min {:.0}, max {:.0}) |", med(&sp["daemon_cpu_ns_per_event"]), sp["daemon_cpu_ns_per_event"]["min"].as_f64().unwrap_or(f64::NAN), sp["daemon_cpu_ns_per_event"]["max"].as_f64().unwrap_or(f64::NAN));
    if sp["daemon_user_ns_per_event"].is_object() {
        let u = &sp["daemon_user_ns_per_event"];
        let _ = writeln!(s, "| of which in user space (its own code; the rest is the kernel writing the event file and waking it; 10 ms ticks) | {:.0} ns (min {:.0}, max {:.0}) |", med(u), u["min"].as_f64().unwrap_or(f64::NAN), u["max"].as_f64().unwrap_or(f64::NAN));
    }
    let _ = writeln!(s, "| rate of the producer (tracked loop) | {:.0} events/s |", med(&sp["events_per_s"]));
    let _ = writeln!(s, "| rate the daemon processed them (until drained) | {:.0} events/s |", med(&sp["daemon_events_per_s"]));
    let _ = writeln!(s, "| time the daemon needed after the producer ended (events waited in the ring) | {:.2} s |", med(&sp["drain_lag_s"]));
    let _ = writeln!(s, "| events lost (all runs) | {lost_single} |");
    let _ = writeln!(s, "| daemon CPU over the window (loop + drain) | {:.2} cores |", cores);
    let _ = writeln!(s, "| daemon RSS under that load | {:.1} MiB |", med(&sp["daemon_rss_bytes"]) / 1048576.0);
    let al = &t["allocations"];
    if al.is_object() {
        let calls = al["calls"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")).unwrap_or_default();
        let _ = writeln!(s, "| allocator calls per event on the event path (uprobes on the daemon's C library, a run of its own: {} tracked opens, {} events; {calls}; allocs.rs says what counts) | {:.3} |", al["ops"], al["open_events"], al["per_event"].as_f64().unwrap_or(f64::NAN));
        if let Some(p) = al["periodic_calls"].as_u64() {
            let w = al["window_s"].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(s, "| allocator calls of the periodic jobs in the same window (rescans, config checks: they run with or without events) | {p} in {w:.1} s ({:.0} per s); with them, {:.3} per event |", p as f64 / w, al["per_event_all"].as_f64().unwrap_or(f64::NAN));
        }
    }
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
    flame(&mut s, &t["profile"]);
    let sev = &t["several_producers"];
    let _ = writeln!(s, "\nPast the limit ({} producers × {} opens, 1 MiB ring): {} open events delivered, lost counted {}, delivered + lost = {} for at least {} generated.\n", sev["producers"], sev["ops_each"], sev["open_events_delivered"], sev["lost_counted"], sev["accounted"], sev["generated_at_least"]);
    let keeps_up = med(&sp["daemon_events_per_s"]) >= 0.95 * med(&sp["events_per_s"]);
    let _ = writeln!(s, "| goal | result |\n|---|---|\n| fastest single producer with zero loss, under one core | {} ({} lost, {:.2} cores) |", mark(lost_single == 0 && cores < 1.0), lost_single, cores);
    let _ = writeln!(s, "| daemon processes as fast as the producer produces (no backlog) | {} ({:.0} vs {:.0} events/s) |", mark(keeps_up), med(&sp["daemon_events_per_s"]), med(&sp["events_per_s"]));
    let acc = sev["accounted"].as_u64().unwrap_or(0) >= sev["generated_at_least"].as_u64().unwrap_or(u64::MAX);
    let _ = writeln!(s, "| past the limit, every lost event counted | {} |", mark(acc));
    // The goal's "user-space cost per event" is the daemon's own CPU per event, not what the
    // producer pays in the kernel (the row above).
    let per_event = med(&sp["daemon_cpu_ns_per_event"]);
    // How fast the daemon could go, not how fast it went: a daemon that keeps up handles events
    // at the producer's rate whatever its headroom, so the rate it processed them can never
    // show 2×. Its capacity is the events one core of it handles per second: 1 s over its CPU
    // time per event.
    let capacity = if per_event > 0.0 { 1e9 / per_event } else { 0.0 };
    let speed = capacity / med(&sp["events_per_s"]);
    let twice = speed >= 2.0 && lost_single == 0 && cores < 0.5 && per_event <= 1000.0;
    // Judged on all of its CPU, the kernel's work for it included; its own code's share is shown
    // beside it, not used to pass.
    // Read as the daemon's own code alone (its user time), the 1 µs holds or not on its own:
    // said beside the judgement, which stays on the whole CPU. Met only when every round is
    // within it, missed when none is; rounds on both sides are inconclusive.
    let u = &sp["daemon_user_ns_per_event"];
    let user = match (med(u), u["min"].as_f64().unwrap_or(f64::NAN), u["max"].as_f64().unwrap_or(f64::NAN)) {
        (m, lo, hi) if m > 0.0 => {
            let verdict = if hi <= 1000.0 { "met" } else if lo > 1000.0 { "missed" } else { "inconclusive (rounds on both sides)" };
            format!(", of which {m:.0} ns in user space (rounds {lo:.0}-{hi:.0}): ≤ 1 µs {verdict} for the daemon's own code alone")
        }
        _ => String::new(),
    };
    let _ = writeln!(s, "| the daemon at 2× the fastest producer: 0 loss, < 0.5 core, ≤ 1 µs per event (folding off) | {} (capacity {:.0} events per CPU-second = {:.2}× the producer, {} lost, {:.2} cores, {:.0} ns of daemon CPU per event{user}) |", mark(twice), capacity, speed, lost_single, cores, per_event);
    if let Some(per) = t["allocations"]["per_event"].as_f64() {
        // Counted, not timed: on the event path, per batch of events stays (the reader's batch,
        // the writer's buffers), so "none per event" is fewer than one call per ten events. The
        // periodic jobs are beside the path and reported on their own row above.
        let _ = writeln!(s, "| no allocation per event on the hot path (fewer than one allocator call per 10 events on the event path; what remains is per batch) | {} ({per:.3} calls per event) |", mark(per < 0.1));
    }
    let f = &t["folded"];
    if f.is_object() {
        let exact = f["opens_counted"] == f["ops"] && f["lost"] == 0;
        let _ = writeln!(s, "| a flood with the default fold window: a handful of records, every open counted, nothing lost | {} ({} opens → {} records, {} counted, {} lost; daemon {:.2} CPU-s in {:.1} s) |", mark(exact && f["records"].as_u64().unwrap_or(u64::MAX) <= 64), f["ops"], f["records"], f["opens_counted"], f["lost"], f["daemon_cpu_s"].as_f64().unwrap_or(f64::NAN), f["wall_s"].as_f64().unwrap_or(f64::NAN));
    }
    let sc = &t["scale"];
    if sc.is_object() {
        let _ = writeln!(s, "\nWith {} servers tracked at once (sleeping processes taken under watch through the control socket):\n\n| figure | value |\n|---|---|", sc["servers"]);
        let _ = writeln!(s, "| daemon RSS before / with them | {:.1} / {:.1} MiB ({:.1} KiB per server) |", sc["daemon_rss_bytes_before"].as_f64().unwrap_or(0.0) / 1048576.0, sc["daemon_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0, sc["rss_per_server_bytes"].as_f64().unwrap_or(0.0) / 1024.0);
        let _ = writeln!(s, "| daemon CPU at rest with them | {:.3} cores |", sc["daemon_cpu_cores_at_rest"].as_f64().unwrap_or(f64::NAN));
        let _ = writeln!(s, "| taking all of them under watch | {:.1} s, {:.2} CPU-s of the daemon |", sc["track_all_s"].as_f64().unwrap_or(f64::NAN), sc["daemon_cpu_s_to_track_all"].as_f64().unwrap_or(f64::NAN));
    }
    if let Some(m) = t["measured_separately"].as_object() {
        let _ = writeln!(s, "\nSection 2 was measured in a run of its own ({}).", run_of(m));
    }

    let e = &v["enforcement"];
    let _ = writeln!(s, "\n## 3. Enforcement ({} trials each)\n", e["trials"]);
    if let Some(m) = e["measured_separately"].as_object() {
        let _ = writeln!(s, "Measured in a run of its own (`cargo xtask bench --enforcement-only`), {}: these are counts of trials and bytes, not ratios against the other sections.\n", run_of(m));
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

/// Section 1's program-time part (progtime.rs): ns per operation of the programs each
/// configuration loaded, the goals judged on them, and what mcpmon's programs are.
fn prog_time(s: &mut String, p: &Value) {
    if p.is_null() {
        return;
    }
    let c = &p["configs"];
    let loops = ["open_close", "fork_exec", "connect"];
    let _ = writeln!(s, "\n### The programs' own run time per operation ({} rounds)\n", p["rounds"]);
    let _ = writeln!(s, "With `kernel.bpf_stats_enabled`, the kernel adds up each program's runs and run time; summed over the programs a configuration loaded and divided by the loop's operations, that is what its programs add to each operation, measured to a few nanoseconds where the loops' wall-clock ratios above vary by 10–20% from round to round. It leaves out the kernel's dispatch to each hook (the same for every configuration on the same hooks). Configurations alternate within each round; medians with min–max.\n");
    if let Some(m) = p["measured_separately"].as_object() {
        let _ = writeln!(s, "Measured in a run of its own (`cargo xtask bench --prog-time-only`, {}).\n", run_of(m));
    }
    let _ = writeln!(s, "| loop | operation, no monitor | floor | mcpmon, server alive | bpftrace |\n|---|---|---|---|---|");
    let cell = |cfg: &str, w: &str| {
        let v = &c[cfg][w]["prog_ns_per_op"];
        format!("{:.0} ns ({:.0}–{:.0})", med(v), v["min"].as_f64().unwrap_or(f64::NAN), v["max"].as_f64().unwrap_or(f64::NAN))
    };
    let op = |w: &str| -> Vec<f64> { c["none"][w]["op_ns_per_round"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default() };
    let per_round = |cfg: &str, w: &str, key: &str| -> Vec<f64> { c[cfg][w][key].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default() };
    let rounds = |cfg: &str, w: &str| per_round(cfg, w, "prog_per_round");
    // The programs on hooks bpftrace has too (progtime.rs).
    let shared = |cfg: &str, w: &str| per_round(cfg, w, "tracing_hooks_per_round");
    for w in loops {
        let o = op(w);
        let mut m = o.clone();
        m.sort_by(|a, b| a.total_cmp(b));
        let _ = writeln!(s, "| {w} | {:.0} ns | {} | {} | {} |", m.get(m.len() / 2).copied().unwrap_or(f64::NAN), cell("floor", w), cell("mcpmon_server", w), cell("bpftrace", w));
    }
    // Per round: mcpmon's program time minus the other's, as a share of the operation's own
    // time (no monitor, same round), against the bound.
    let share_of = |mine: &dyn Fn(&str, &str) -> Vec<f64>, other: &str, bound: f64| -> Vec<(&str, Vec<f64>)> {
        loops
            .iter()
            .map(|w| {
                let (m, b, o) = (mine("mcpmon_server", w), rounds(other, w), op(w));
                (*w, m.iter().zip(&b).zip(&o).map(|((m, b), o)| (m - b) / o - bound).collect())
            })
            .collect()
    };
    let _ = writeln!(s, "\n| goal | result |\n|---|---|");
    let _ = writeln!(s, "| server alive: programs within 3% of the floor's (share of the operation) | {} |", judge(&share_of(&rounds, "floor", 0.03), "(mcpmon − floor) / operation − 0.03"));
    let _ = writeln!(s, "| server alive: programs below bpftrace's on the same hooks (mcpmon's programs on tracing hooks) | {} |", judge(&share_of(&shared, "bpftrace", 0.0), "(mcpmon − bpftrace) / operation"));
    let _ = writeln!(s, "| the same, with mcpmon's cgroup connect and sendmsg programs too (the in-kernel deny: a hook bpftrace has no equivalent of) | {} |", judge(&share_of(&rounds, "bpftrace", 0.0), "(mcpmon − bpftrace) / operation"));
    let _ = writeln!(
        s,
        "\nWhat each configuration's programs cost per operation, hook by hook (median ns over the rounds; programs under 5 ns per operation left out). bpftrace names a program after its probe, cut to 15 bytes: its `sched_process_e` is its exec and exit programs together, its `sys_exit` the ia32 hook's counterpart (a perf-event tracepoint, whose record the kernel builds outside the program's time), and the floor's `mcpm_floor_raw` a bare program on the ia32 hook's own raw tracepoint.\n\n| loop | configuration | programs |\n|---|---|---|"
    );
    for w in loops {
        for cfg in ["mcpmon_server", "bpftrace", "floor"] {
            let mut by: Vec<(String, f64)> = c[cfg][w]["by_program"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), med(v))).collect()).unwrap_or_default();
            by.sort_by(|a, b| b.1.total_cmp(&a.1));
            let list: Vec<String> = by.iter().filter(|(_, ns)| *ns >= 5.0).map(|(k, ns)| format!("`{k}` {ns:.0}")).collect();
            let _ = writeln!(s, "| {w} | {} | {} |", cfg.replace('_', " "), list.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overhead(per_round: &[f64]) -> Value {
        json!({"configs": {"m": {"open_close": {"per_round": per_round}}}})
    }

    #[test]
    fn verdicts_come_from_the_interval_not_from_one_round() {
        let v = |r: &[f64]| verdict(&overhead(r), "m", &["open_close"], |_, _| 1.03);
        assert!(v(&[1.00, 1.01, 1.00, 1.02, 1.01, 1.00]).starts_with("met"));
        assert!(v(&[1.06, 1.07, 1.05, 1.08, 1.06, 1.07]).starts_with("**missed**"));
        // Under the bound at the median, but the noise reaches far over it: not a pass.
        assert!(v(&[1.00, 1.10, 0.98, 1.09, 1.01, 1.02]).starts_with("inconclusive"), "{}", v(&[1.00, 1.10, 0.98, 1.09, 1.01, 1.02]));
        assert!(v(&[1.00, 1.00, 1.00, 1.00, 1.00]).starts_with("inconclusive"), "too few rounds");
        // The sign test's interval: for 15 rounds, the 4th and 12th smallest differences (the
        // binomial tail below 4 is 1.8%, below 5 it is 5.9%); for 6, the extremes; for 5, none.
        let d: Vec<f64> = (1..=15).rev().map(f64::from).collect();
        assert_eq!(paired_ci(&d), Some((8.0, 4.0, 12.0)));
        assert_eq!(paired_ci(&[6.0, 1.0, 2.0, 5.0, 3.0, 4.0]), Some((3.5, 1.0, 6.0)));
        assert_eq!(paired_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]), None);
        // One wild round among fifteen a little under the bound: the verdict stands.
        let mut r = vec![1.01, 1.02, 1.00, 1.015, 1.01, 1.02, 1.005, 1.01, 1.02, 1.00, 1.015, 1.01, 1.02, 1.005];
        r.push(1.70);
        assert!(v(&r).starts_with("met"), "{}", v(&r));
        // Half the rounds over the bound, however tidy: not met.
        assert!(v(&[1.02, 1.04, 1.02, 1.04, 1.02, 1.04, 1.02, 1.04]).starts_with("inconclusive"));
    }
    #[test]
    fn the_gate_marks_rows_pair_mcpmon_with_the_marks_of_the_same_round() {
        let cfg = |r: &[f64]| {
            let w = json!({"per_round": r, "ratio": {"median": r[r.len() / 2], "min": 0.0, "max": 0.0}});
            json!({"open_close": w, "fork_exec": w, "connect": w})
        };
        let marks = [1.02, 1.03, 1.02, 1.05, 1.02, 1.03, 1.02, 1.02];
        let floor_marks = [1.36, 1.37, 1.36, 1.40, 1.36, 1.37, 1.36, 1.36];
        // Idle: 0.5% over the marks of each round (the marks' own swings are shared); with a
        // server: 2% over the floor with marks, every round.
        let idle: Vec<f64> = marks.iter().map(|m| m + 0.005).collect();
        let server: Vec<f64> = floor_marks.iter().map(|m| m + 0.02).collect();
        let v = json!({"overhead": {"rounds": 8, "configs": {"none": cfg(&[1.0; 8]), "mcpmon_idle": cfg(&idle), "mcpmon_server": cfg(&server), "floor": cfg(&[1.35; 8]), "marks": cfg(&marks), "floor_marks": cfg(&floor_marks)}}});
        let md = markdown(&v);
        let row = |goal: &str| md.lines().find(|l| l.starts_with(&format!("| {goal}"))).map(str::to_string).unwrap_or_default();
        assert!(row("no server alive: within 1% of the gate's marks alone").contains("| met;"), "{md}");
        assert!(row("server alive: within 1% of the floor with the gate's marks").contains("| **missed**;"), "{md}");
        assert!(md.contains("| floor_marks | 1.360"), "{md}");
    }
    #[test]
    fn below_the_peers_is_paired_with_bpftrace_and_auditd() {
        let o = |m: &[f64], b: &[f64], a: &[f64]| {
            let w = |r: &[f64]| json!({"per_round": r});
            json!({"configs": {"mcpmon_server": {"open_close": w(m)}, "bpftrace": {"open_close": w(b)}, "auditd": {"open_close": w(a)}}})
        };
        let v = |m: &[f64], b: &[f64], a: &[f64]| below_peers(&o(m, b, a), &["open_close"]);
        // Below both in every round: met. The machine's speed moves all three together.
        let good = v(&[1.10, 1.20, 1.12, 1.25, 1.13, 1.16], &[1.15, 1.26, 1.18, 1.28, 1.19, 1.20], &[1.40, 1.45, 1.42, 1.50, 1.44, 1.41]);
        assert!(good.starts_with("met;"), "{good}");
        // Over bpftrace in every round, by a little: missed, though the medians alone say little.
        let over = v(&[1.15, 1.56, 1.26, 1.83, 1.36, 1.21], &[1.10, 1.50, 1.20, 1.80, 1.30, 1.19], &[2.0; 6]);
        assert!(over.starts_with("**missed**") && over.contains("bpftrace: **missed**"), "{over}");
        // A lower median, but rounds on both sides: inconclusive, never met.
        let noisy = v(&[1.2, 1.6, 1.1, 1.9, 1.3, 1.2], &[1.3, 1.4, 1.5, 1.5, 1.4, 1.4], &[2.0; 6]);
        assert!(noisy.starts_with("inconclusive"), "{noisy}");
        // Over auditd in every round, with auditd's rounds as noisy as the machine: paired by
        // round, the margin shows; below bpftrace does not make up for it.
        let audit = v(&[1.30, 1.60, 1.35, 1.90, 1.40, 1.33], &[1.40, 1.70, 1.45, 2.00, 1.50, 1.41], &[1.25, 1.55, 1.31, 1.84, 1.36, 1.30]);
        assert!(audit.starts_with("**missed**") && audit.contains("auditd: **missed**") && audit.contains("bpftrace: met"), "{audit}");
        // Fewer rounds of auditd than of mcpmon (a run cut short): no verdict from them.
        let short = v(&[1.1; 6], &[1.2; 6], &[1.3; 3]);
        assert!(short.starts_with("inconclusive") && short.contains("fewer than"), "{short}");
    }
    #[test]
    fn program_time_is_judged_per_round_against_the_operation() {
        // mcpmon's programs 5 ns over the floor's on a 1000 ns operation (0.5%), every round:
        // within 3%; 100 ns over bpftrace's: not below it.
        let per = |prog: f64| json!({"prog_ns_per_op": {"median": prog, "min": prog, "max": prog}, "prog_per_round": vec![prog; 6], "op_ns_per_round": vec![1000.0; 6], "by_program": {"mcpm_openat_e": {"median": prog}}, "tracing_hooks_per_round": vec![prog; 6]});
        let all = |v: f64| json!({"open_close": per(v), "fork_exec": per(v), "connect": per(v)});
        let cfgs = |m: f64, f: f64, b: f64| json!({"none": all(0.0), "mcpmon_server": all(m), "floor": all(f), "bpftrace": all(b)});
        let mut s = String::new();
        prog_time(&mut s, &json!({"rounds": 6, "configs": cfgs(105.0, 100.0, 5.0)}));
        let line = |s: &str, goal: &str| s.lines().find(|l| l.contains(goal)).unwrap_or_default().to_string();
        assert!(line(&s, "within 3% of the floor").contains("| met; ") && line(&s, "within 3% of the floor").contains("open_close -0.025"), "{s}");
        assert!(line(&s, "below bpftrace").contains("**missed**"), "{s}");
        assert!(s.contains("`mcpm_openat_e` 105"), "{s}");
        let mut s = String::new();
        prog_time(&mut s, &json!({"rounds": 6, "configs": cfgs(200.0, 100.0, 300.0)}));
        assert!(line(&s, "within 3% of the floor").contains("**missed**") && line(&s, "below bpftrace").contains("| met; "), "{s}");
        // Of mcpmon's 105 ns, 100 on its cgroup deny hooks: below bpftrace's 5 on the hooks both
        // have, over it with them, and the two rows say so apart.
        let mut c = cfgs(105.0, 100.0, 5.0);
        for w in ["open_close", "fork_exec", "connect"] {
            c["mcpmon_server"][w]["tracing_hooks_per_round"] = json!([3.0, 4.0, 3.5, 3.0, 4.0, 3.5]);
        }
        let mut s = String::new();
        prog_time(&mut s, &json!({"rounds": 6, "configs": c}));
        assert!(line(&s, "below bpftrace's on the same hooks").contains("| met; "), "{s}");
        assert!(line(&s, "with mcpmon's cgroup connect").contains("**missed**"), "{s}");
    }
}

/// Section 2's profile (flame.rs): what the stage timers do not show.
fn flame(s: &mut String, p: &Value) {
    if !p.is_object() {
        return;
    }
    let pct = |x: &Value| x.as_f64().unwrap_or(0.0) * 100.0;
    let _ = writeln!(s, "\nWhere the daemon's CPU goes as sampled by `perf` (every thread, {} samples, a run of its own: {} tracked opens, folding off; the flame graph is [`bench/daemon-flame.svg`](daemon-flame.svg)). In the kernel: {:.1}% of the samples. By thread: {}.\n", p["samples"], p["ops"], pct(&p["in_kernel"]), p["threads"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k} {:.1}%", pct(v))).collect::<Vec<_>>().join(", ")).unwrap_or_default());
    let _ = writeln!(s, "| the daemon's own functions (samples whose stack holds them) | share |\n|---|---|");
    for f in p["inclusive_own"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "| `{}` | {:.1}% |", f["frame"].as_str().unwrap_or("").replace('|', "\\|"), pct(&f["share"]));
    }
    let _ = writeln!(s, "\n| where the samples were taken (innermost frame) | share |\n|---|---|");
    for f in p["self_top"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "| `{}` | {:.1}% |", f["frame"].as_str().unwrap_or("").replace('|', "\\|"), pct(&f["share"]));
    }
}

/// When, on which kernel and on which processor a section was measured: the figures of
/// sections measured apart are of their own machine (the same work took half the daemon's time
/// on one 2-core machine that it took on another).
fn run_of(m: &serde_json::Map<String, Value>) -> String {
    let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let cores = m.get("cores").and_then(Value::as_u64).map_or(String::new(), |n| format!(", {n} cores"));
    format!("{}, kernel {}, {}{cores}", get("date"), get("kernel"), get("cpu"))
}
