//! The configurations compared on untracked processes, started and stopped around each sample.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use super::{mcpmon, stats, testkit, workloads::{Workloads, NAMES}};
use crate::util;

/// A pid no process has (pid_max is at most 2^22): the filter every tracer is given.
const NO_PID: &str = "4194303";

/// The tracepoints mcpmon has attached while a server is tracked, from its program table, as
/// `category:name`, once each (sendto carries two programs): what bpftrace is given, so the
/// comparison is on the same hooks: the syscall ones, and the process-tree ones the daemon keeps
/// for its whole life (fork, exec, exit, io_uring set-up), which a list of syscall hooks alone
/// left to mcpmon (as a shorter hand-kept list once left close, accept and recvfrom).
pub fn tracked_tracepoints() -> Vec<&'static str> {
    use monitor_common::programs::{of_kind, Kind};
    let mut v: Vec<&'static str> = of_kind(Kind::TracePoint).flat_map(|p| p.hooks.iter().copied()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The syscalls behind those tracepoints, for audit (which filters by syscall, not by hook).
fn tracked_syscalls() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = tracked_tracepoints().into_iter().filter_map(|h| h.strip_prefix("syscalls:sys_enter_").or_else(|| h.strip_prefix("syscalls:sys_exit_"))).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// bpftrace running `script`, once it has said it attaches, and its output from there on.
pub fn bpftrace(script: &str) -> anyhow::Result<(Child, BufReader<std::process::ChildStdout>)> {
    let mut c = Command::new("bpftrace").arg("-e").arg(script).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut r = BufReader::new(c.stdout.take().context("bpftrace stdout")?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.contains("Attaching") {
        bail!("bpftrace: {line}");
    }
    Ok((c, r))
}

/// Returns once the daemon `pid` has drained its events: its CPU time stops growing.
pub fn wait_drained(pid: u32) {
    let (mut c, _) = usage(pid);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let (c1, _) = usage(pid);
        if c1 - c < 0.01 {
            return;
        }
        c = c1;
    }
}

/// Whether tracefs has this tracepoint (an optional hook, such as `open`, may be absent).
fn tracepoint_exists(hook: &str) -> bool {
    let (cat, name) = hook.split_once(':').unwrap_or(("", hook));
    ["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"].iter().any(|d| Path::new(d).join(cat).join(name).exists())
}

pub fn install_peers() -> anyhow::Result<()> {
    let missing = crate::setup::missing(&["bpftrace", "auditd", "git"]);
    if missing.is_empty() {
        return Ok(());
    }
    // Keep the audit daemon from starting at install: audit must come last in the run.
    std::fs::write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions("/usr/sbin/policy-rc.d", std::fs::Permissions::from_mode(0o755))?;
    let r = crate::setup::apt_install(&missing);
    let _ = std::fs::remove_file("/usr/sbin/policy-rc.d");
    r
}

pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub events: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// `mcpmon run` with the default rules; events to `events` (or /dev/null).
    pub fn start(extra: &[&str], keep_events: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("s.sock");
        let events = if keep_events { dir.path().join("events.jsonl") } else { PathBuf::from("/dev/null") };
        let child = Command::new(mcpmon())
            .arg("run")
            .arg("--events")
            .arg(&events)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--metrics-addr", "none"])
            .args(extra)
            .env("MCPMON_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let d = Self { child, socket, events, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.servers().map(|s| s.is_array()).unwrap_or(false) {
            if Instant::now() > deadline {
                bail!("mcpmon run did not come up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    pub fn servers(&self) -> Option<Value> {
        let out = Command::new(mcpmon()).args(["servers", "--json", "--socket"]).arg(&self.socket).output().ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exec(&self, name: &str, cmd: &[&str]) -> Command {
        let mut c = Command::new(mcpmon());
        c.args(["exec", "--name", name, "--require-monitor", "--socket"]).arg(&self.socket).arg("--").args(cmd);
        c
    }

    /// SIGTERM and wait; the events written (when kept).
    pub fn stop(mut self) -> anyhow::Result<Vec<Value>> {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the child is not reaped yet
        // (waited just below), so its pid cannot have been reused by another process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        if self.events == Path::new("/dev/null") {
            return Ok(vec![]);
        }
        let text = std::fs::read_to_string(&self.events)?;
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }
}

/// A bench that bails midway (a producer failed) must not leave its daemon behind: a stray
/// daemon keeps its open gate and discovery, and refuses the next test's secrets as its own.
impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // stopped already
        }
        // SAFETY: as in `stop`: plain integers, and the child is not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// (CPU seconds, RSS bytes) of a process.
pub fn usage(pid: u32) -> (f64, u64) {
    let (user, system) = cpu_times(pid);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()).and_then(|k| k.parse::<u64>().ok()))
        .unwrap_or(0);
    (user + system, rss * 1024)
}

/// CPU seconds `pid` spent in user space (its own code), all threads.
pub fn user_cpu(pid: u32) -> f64 {
    cpu_times(pid).0
}

/// CPU seconds `pid` spent in user space and in the kernel, all threads (`/proc/PID/stat`).
fn cpu_times(pid: u32) -> (f64, f64) {
    // SAFETY: sysconf takes an integer name and touches no memory; an error (-1) is clamped by max(1).
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) / tick, field(12) / tick)
}

pub enum Running {
    None,
    /// A configuration with non-MCP shell pipelines looping beside the workload.
    Pipelines(Box<Running>, Child),
    Daemon(Daemon, Option<Child>),
    Child(Child),
    /// A configuration with the open gate's marks held beside it (`mcpmon-testkit marks`).
    Marks(Box<Running>, Child),
    Audit(Child),
}

pub const CONFIGS: &[&str] = &["none", "mcpmon_idle", "mcpmon_server", "floor", "bpftrace", "auditd", "none_pipelines", "mcpmon_pipelines", "marks", "floor_marks"];

/// The file the open+close loop opens (the testkit's default), and where the marks of the
/// `marks` configurations go: an empty directory on the same filesystem, as the gate's marks on
/// key directories share a filesystem with most of what untracked processes open.
const LOOP_FILE: &str = "/etc/hostname";
const MARKS_DIR: &str = "/var/tmp/mcpmon-bench-marks";

/// The audit task rule the auditd configuration leaves behind (see `stop`).
const NEVER_TASK: &[&str] = &["-a", "task,never"];

/// Refuses to touch a machine's own audit setup: the auditd configuration replaces the kernel's
/// audit rules, so there must be none but the task rule it leaves itself, and no audit daemon.
fn audit_rules_are_ours() -> anyhow::Result<()> {
    let rules = util::output("auditctl", &["-l"]).context("auditctl -l failed")?;
    let rules = rules.trim();
    if rules != "No rules" && rules != "-a never,task" {
        bail!("this machine has audit rules of its own (auditctl -l: {rules}); the bench would replace them");
    }
    let status = util::output("auditctl", &["-s"]).context("auditctl -s failed")?;
    // The kernel forgets a dead daemon's pid only when it next fails to send to it.
    let pid = status.lines().find_map(|l| l.strip_prefix("pid ")).and_then(|p| p.trim().parse::<u32>().ok()).unwrap_or(0);
    if pid != 0 && Path::new(&format!("/proc/{pid}")).exists() {
        bail!("an audit daemon is running (pid {pid}); stop it first");
    }
    Ok(())
}

/// Shell pipelines that are not MCP, five a second, each middle stage with pipes on stdin and
/// stdout: what handshake discovery sees on a developer machine (`git log | grep`, text through
/// `cat`), and what keeps its read hooks attached while nothing is tracked.
fn pipelines() -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let root = util::root();
    let script = format!(
        "while :; do git -C '{}' log --oneline -200 | grep -i e | cat | wc -l > /dev/null; seq 1 2000 | cat | grep 7 | cat > /dev/null; sleep 0.2; done",
        root.display()
    );
    // A process group of its own, killed whole by `stop`.
    Ok(Command::new("/bin/sh").args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0).spawn()?)
}

/// A testkit helper that prints `ready` once its hooks or marks are in place.
fn ready_child(args: &[&str]) -> anyhow::Result<Child> {
    let mut c = Command::new(testkit()).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(c.stdout.take().context("testkit stdout")?).read_line(&mut line)?;
    if !line.starts_with("ready") {
        let _ = c.kill();
        let _ = c.wait();
        bail!("mcpmon-testkit {}: {line}", args.join(" "));
    }
    Ok(c)
}

/// The open gate's two marks alone (permission and directory entries), on [`MARKS_DIR`].
fn marks() -> anyhow::Result<Child> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(MARKS_DIR)?;
    let dev = |p: &str| std::fs::metadata(p).map(|m| m.dev()).with_context(|| p.to_string());
    if dev(MARKS_DIR)? != dev(LOOP_FILE)? {
        bail!("{MARKS_DIR} is not on the filesystem of {LOOP_FILE}: the marks would cost the loop nothing");
    }
    ready_child(&["marks", MARKS_DIR])
}

pub fn start(name: &str) -> anyhow::Result<Running> {
    if let Some(base) = name.strip_suffix("marks") {
        let inner = match base.strip_suffix('_') {
            Some(b) => start(b)?,
            None => Running::None,
        };
        return match marks() {
            Ok(m) => Ok(Running::Marks(Box::new(inner), m)),
            Err(e) => {
                let _ = stop(inner);
                Err(e)
            }
        };
    }
    if let Some(base) = name.strip_suffix("_pipelines") {
        let base = if base == "mcpmon" { "mcpmon_idle" } else { base };
        let r = start(base)?;
        let p = pipelines()?;
        // Let the first candidates appear (and mcpmon attach its hooks) before sampling.
        std::thread::sleep(Duration::from_millis(500));
        return Ok(Running::Pipelines(Box::new(r), p));
    }
    Ok(match name {
        "none" => Running::None,
        "mcpmon_idle" => Running::Daemon(Daemon::start(&[], false)?, None),
        "mcpmon_server" => {
            let d = Daemon::start(&[], false)?;
            let server = d.exec("bench-server", &["sleep", "100000"]).stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !d.servers().map(|s| s.to_string().contains("bench-server")).unwrap_or(false) {
                if Instant::now() > deadline {
                    bail!("the bench server was not tracked");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Running::Daemon(d, Some(server))
        }
        "floor" => Running::Child(ready_child(&["floor"])?),
        "bpftrace" => {
            // The same hooks as mcpmon's tracepoint path, its ia32 hook on sys_exit included (this
            // bpftrace has no raw tracepoint probes: the tracepoint of the same name).
            let probes: Vec<String> = tracked_tracepoints()
                .into_iter()
                .filter(|h| tracepoint_exists(h))
                .map(|h| format!("tracepoint:{h}"))
                .chain(std::iter::once("tracepoint:raw_syscalls:sys_exit".to_string()))
                .collect();
            let script = format!("{} /pid == {NO_PID}/ {{ @n[probe] = count(); }}", probes.join(",\n"));
            let (c, r) = bpftrace(&script)?;
            // bpftrace prints "Attaching N probes..." before attaching: give it time to finish.
            std::thread::sleep(Duration::from_secs(3));
            std::thread::spawn(move || for _ in r.lines() {});
            Running::Child(c)
        }
        "auditd" => {
            audit_rules_are_ours()?;
            // Drops the task rule `stop` left: the loops this configuration spawns are audited.
            util::run(Command::new("auditctl").arg("-D"))?;
            let c = Command::new("auditd").arg("-n").stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
            std::thread::sleep(Duration::from_millis(500));
            util::run(Command::new("auditctl").args(["-e", "1"]))?;
            let mut rule = vec!["-a", "always,exit", "-F", "arch=b64"];
            // Names this auditctl does not know (a newer syscall than its table) would fail the rule.
            let known = |s: &&str| Command::new("ausyscall").args(["x86_64", s]).output().map(|o| o.status.success()).unwrap_or(true);
            let syscalls: Vec<&str> = tracked_syscalls().into_iter().filter(known).collect();
            for s in &syscalls {
                rule.extend(["-S", s]);
            }
            rule.extend(["-F", "pid=4194303", "-k", "mcpmon_bench"]);
            util::run(Command::new("auditctl").args(&rule))?;
            Running::Audit(c)
        }
        other => bail!("unknown configuration {other}"),
    })
}

pub fn stop(r: Running) -> anyhow::Result<()> {
    match r {
        Running::None => {}
        Running::Pipelines(inner, mut p) => {
            // SAFETY: kill(2) with the negated pid of a child that leads its own process group
            // (spawned with process_group(0), not reaped yet): signals that group only.
            unsafe { libc::kill(-(p.id() as i32), libc::SIGKILL) };
            let _ = p.wait();
            return stop(*inner);
        }
        Running::Daemon(d, server) => {
            if let Some(mut s) = server {
                let _ = s.kill();
                let _ = s.wait();
            }
            d.stop()?;
        }
        Running::Marks(inner, c) => {
            stop_child(c)?;
            return stop(*inner);
        }
        Running::Child(c) => stop_child(c)?,
        Running::Audit(mut c) => {
            let _ = c.kill();
            let _ = c.wait();
            let _ = Command::new("auditctl").arg("-D").status();
            let _ = Command::new("auditctl").args(["-e", "0"]).status();
            // Once audit has been enabled, every process forked after it carries an audit
            // context and takes the slow syscall path, audit on or off, until reboot; unless a
            // task rule says never (the kernel's audit_alloc). The rule stays when the bench
            // ends, as in many distributions' default rules: audit then costs nothing to new
            // processes, and the other configurations are measured on an untouched machine.
            util::run(Command::new("auditctl").args(NEVER_TASK))?;
        }
    }
    // Detaching tracepoints waits on RCU; let the machine settle before the next sample.
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Closes a testkit helper's stdin (its signal to go), then SIGINT, then SIGKILL after 10 s.
fn stop_child(mut c: Child) -> anyhow::Result<()> {
    drop(c.stdin.take());
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `c` is not reaped yet (waited
    // below), so its pid still names that child.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Passes over the workloads per configuration and round (`sample_rounds`).
pub const PASSES: usize = 3;

/// Samples every workload under `configs`, alternating them in each round; returns per config and
/// workload the raw samples (each the fastest of `PASSES`).
fn sample_rounds(w: &Workloads, configs: &[&str], rounds: usize) -> anyhow::Result<Vec<Vec<Vec<f64>>>> {
    let mut samples = vec![vec![Vec::new(); NAMES.len()]; configs.len()];
    // Warm caches (page cache, cargo, git index) so the first sample is not an outlier.
    for name in NAMES {
        w.sample(name)?;
    }
    for round in 0..rounds {
        for k in 0..configs.len() {
            // Rotate the order each round so no configuration always runs first or last.
            let ci = (k + round) % configs.len();
            let r = start(configs[ci]).with_context(|| format!("starting {}", configs[ci]))?;
            // The fastest of a few passes over the workloads, a second or more apart: a spell
            // of the host's noise long enough to slow every batch of one sample (seen as a whole
            // configuration's sample 20–40% off in a round) rarely lasts through all of them.
            let mut best = [f64::INFINITY; NAMES.len()];
            for _ in 0..PASSES {
                for (wi, name) in NAMES.iter().enumerate() {
                    best[wi] = best[wi].min(w.sample(name)?);
                }
            }
            for (wi, b) in best.into_iter().enumerate() {
                samples[ci][wi].push(b);
            }
            stop(r)?;
            eprintln!("bench: round {}/{rounds}: {} done", round + 1, configs[ci]);
        }
    }
    Ok(samples)
}

fn ratios(samples: &[Vec<Vec<f64>>], configs: &[&str], base: usize) -> Value {
    let mut out = serde_json::Map::new();
    for (ci, c) in configs.iter().enumerate() {
        let mut per = serde_json::Map::new();
        for (wi, name) in NAMES.iter().enumerate() {
            let r: Vec<f64> = samples[ci][wi].iter().zip(samples[base][wi].iter()).map(|(a, b)| a / b).collect();
            // Per round, in round order: the verdicts pair rounds across configurations.
            per.insert(name.to_string(), json!({"ratio": stats(&r), "ns": stats(&samples[ci][wi]), "per_round": r}));
        }
        out.insert(c.to_string(), Value::Object(per));
    }
    Value::Object(out)
}

pub fn overhead(w: &Workloads, _work: &Path, rounds: usize) -> anyhow::Result<Value> {
    // The kernel's per-program counters (left on by a profiler, or by hand) time every run of
    // every BPF program: they would be charged to mcpmon, the floor and bpftrace, not to auditd.
    let _off = super::progtime::BpfStats::set("0")?;
    let samples = sample_rounds(w, CONFIGS, rounds)?;
    Ok(json!({"configs": ratios(&samples, CONFIGS, 0), "rounds": rounds}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bpftrace_and_audit_get_every_syscall_hook_mcpmon_attaches() {
        let tps = super::tracked_tracepoints();
        for h in ["syscalls:sys_enter_openat", "syscalls:sys_exit_openat", "syscalls:sys_enter_close", "syscalls:sys_exit_accept4", "syscalls:sys_enter_read", "syscalls:sys_exit_clone3"] {
            assert!(tps.contains(&h), "{h} missing from {tps:?}");
        }
        assert_eq!(tps.iter().filter(|h| **h == "syscalls:sys_enter_sendto").count(), 1, "two programs, one probe");
        let sc = super::tracked_syscalls();
        for s in ["openat", "close", "accept4", "read", "clone3", "connect", "process_vm_readv"] {
            assert!(sc.contains(&s), "{s} missing from {sc:?}");
        }
        // The process-tree hooks mcpmon keeps for its whole life are hooks it has too.
        for h in ["sched:sched_process_exec", "sched:sched_process_exit", "task:task_newtask"] {
            assert!(tps.contains(&h), "{h} missing from {tps:?}");
        }
        assert!(sc.iter().all(|s| !s.contains(':')), "audit gets syscall names only: {sc:?}");
    }
}
