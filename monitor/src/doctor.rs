//! `mcpmon doctor`: one screen an SRE can paste into a ticket. What this kernel offers and which
//! path each hook family and each enforcement takes, whether the rules load and their fixtures
//! pass, the control socket's and state directory's ownership and modes, and whether a daemon
//! answers and keeps up (its loss counters, from the metrics endpoint). Every line is a check:
//! `ok`, `warn` (works, worse) or `FAIL`; the exit code is 1 when any check failed.
use std::{
    io::{Read as _, Write as _},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{json, Value};

use crate::cli::DoctorArgs;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Report {
    lines: Vec<(&'static str, Level, String, String)>,
}

impl Report {
    fn add(&mut self, section: &'static str, level: Level, what: impl Into<String>, detail: impl Into<String>) {
        self.lines.push((section, level, what.into(), detail.into()));
    }

    fn worst(&self) -> Level {
        self.lines.iter().map(|l| l.1).max().unwrap_or(Level::Ok)
    }

    fn json(&self) -> Value {
        let lvl = |l: Level| match l {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        json!(self.lines.iter().map(|(s, l, w, d)| json!({"section": s, "level": lvl(*l), "check": w, "detail": d})).collect::<Vec<_>>())
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let mut last = "";
        for (s, l, w, d) in &self.lines {
            if *s != last {
                out.push_str(&format!("{s}\n"));
                last = s;
            }
            let tag = match l {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            out.push_str(&format!("  [{tag}] {w:<28} {d}\n"));
        }
        out
    }
}

pub fn run(args: &DoctorArgs) -> std::process::ExitCode {
    let mut r = Report { lines: vec![] };
    kernel(&mut r);
    rules(&mut r, &args.rules_dir(), &args.passwd);
    files(&mut r, &args.socket, &args.state_dir);
    service(&mut r, &args.socket, &args.metrics_addr);
    if args.json {
        println!("{}", json!({"version": env!("CARGO_PKG_VERSION"), "checks": r.json()}));
    } else {
        println!("mcpmon {} doctor\n{}", env!("CARGO_PKG_VERSION"), r.text());
    }
    if r.worst() == Level::Fail { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}

fn kernel(r: &mut Report) {
    const S: &str = "kernel";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        r.add(S, Level::Fail, "root", "not root: the kernel checks need root (sudo mcpmon doctor)");
        return;
    }
    let tracefs = match crate::probes::tracefs::ensure_mounted() {
        Ok(t) => t,
        Err(e) => {
            r.add(S, Level::Fail, "tracefs", e.to_string());
            return;
        }
    };
    let f = crate::probes::features::probe(&tracefs);
    r.add(S, Level::Ok, "release", f.kernel.clone());
    let need = |r: &mut Report, what: &'static str, p: &crate::probes::features::Probe, required: bool| {
        let level = if p.available { Level::Ok } else if required { Level::Fail } else { Level::Warn };
        r.add(S, level, what, p.detail.clone());
    };
    need(r, "BTF", &f.btf, true);
    need(r, "ring buffer", &f.ringbuf, true);
    need(r, "tracepoints", &f.tracepoint, true);
    need(r, "fentry (fast path)", &f.fentry, false);
    need(r, "BPF LSM (deny, keep alive)", &f.bpf_lsm, false);
    need(r, "cgroup sock_addr (net deny)", &f.cgroup_sock_addr, false);
    for h in &f.hooks {
        let level = if h.fallback_reason.is_some() { Level::Warn } else { Level::Ok };
        r.add(S, level, format!("hooks: {}", h.family), format!("{}{}", h.observe, h.fallback_reason.as_ref().map(|w| format!(" ({w})")).unwrap_or_default()));
    }
    for (name, p) in &f.enforcement {
        r.add(S, if p.available { Level::Ok } else { Level::Warn }, format!("enforce: {name}"), p.detail.clone());
    }
    for (what, flags) in [
        ("open gate (fanotify perm)", libc::FAN_CLASS_CONTENT | libc::FAN_REPORT_TID),
        ("persistence watch", libc::FAN_CLASS_NOTIF | libc::FAN_REPORT_DFID_NAME | libc::FAN_REPORT_TID),
    ] {
        // SAFETY: plain syscall; the fd is closed at once.
        let fd = unsafe { libc::fanotify_init(flags | libc::FAN_CLOEXEC, libc::O_RDONLY as u32) };
        if fd >= 0 {
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
            r.add(S, Level::Ok, what, "available");
        } else {
            r.add(S, Level::Warn, what, format!("unavailable: {}", std::io::Error::last_os_error()));
        }
    }
}

fn rules(r: &mut Report, dir: &Path, passwd: &Path) {
    const S: &str = "rules";
    let homes = crate::rules::load::homes_from_passwd(&std::fs::read_to_string(passwd).unwrap_or_default());
    match crate::rules::load_dir(dir, &homes) {
        Ok(set) => {
            let failures = set.check_fixtures();
            let level = if failures.is_empty() { Level::Ok } else { Level::Fail };
            r.add(S, level, dir.display().to_string(), format!("{} files, {} rules, {} fixture failures", set.files.len(), set.rules.len(), failures.len()));
            for (id, why) in failures.iter().take(5) {
                r.add(S, Level::Fail, format!("rule {id}"), why.clone());
            }
        }
        Err(e) => r.add(S, Level::Fail, dir.display().to_string(), e.to_string()),
    }
}

fn mode_line(p: &Path) -> Option<(u32, u32, u32)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.permissions().mode() & 0o7777, m.uid(), m.gid()))
}

fn files(r: &mut Report, socket: &Path, state: &Path) {
    const S: &str = "files";
    match mode_line(socket) {
        Some((mode, uid, _)) => {
            // Any user may ask to be tracked; the daemon checks who asks (peer credentials).
            let level = if uid == 0 { Level::Ok } else { Level::Fail };
            r.add(S, level, format!("socket {}", socket.display()), format!("mode {mode:o}, owner uid {uid}{}", if uid != 0 { " (not root: someone else may answer as the daemon)" } else { "" }));
        }
        None => r.add(S, Level::Warn, format!("socket {}", socket.display()), "absent (no daemon, or another --socket)"),
    }
    match mode_line(state) {
        Some((mode, uid, _)) => {
            let level = if uid == 0 && mode & 0o022 == 0 { Level::Ok } else { Level::Fail };
            r.add(S, level, format!("state {}", state.display()), format!("mode {mode:o}, owner uid {uid}{}", if level == Level::Fail { " (pins and quarantine must be root's alone)" } else { "" }));
        }
        None => r.add(S, Level::Warn, format!("state {}", state.display()), "absent (made at the first run)"),
    }
}

fn service(r: &mut Report, socket: &Path, metrics: &str) {
    const S: &str = "service";
    match crate::control::client::ping(socket, Duration::from_secs(2)) {
        Ok(_) => {
            r.add(S, Level::Ok, "daemon", "answers on the control socket");
            if let Ok(v) = crate::control::client::servers(socket) {
                let n = v["servers"].as_array().map(|a| a.len()).unwrap_or(0);
                r.add(S, Level::Ok, "tracked servers", n.to_string());
            }
        }
        Err(e) => {
            r.add(S, Level::Fail, "daemon", format!("no answer: {e}"));
            return;
        }
    }
    if metrics == "none" {
        r.add(S, Level::Warn, "keeping up", "metrics endpoint off: loss counters not readable");
        return;
    }
    match scrape(metrics) {
        Some(text) => {
            let mut lost = 0.0;
            for l in text.lines().filter(|l| l.starts_with("mcpmon_events_lost_total{") || l.starts_with("mcpmon_blind_spot_events_total{")) {
                lost += l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            }
            let level = if lost == 0.0 { Level::Ok } else { Level::Warn };
            r.add(S, level, "keeping up", if lost == 0.0 { "no event lost since start".to_string() } else { format!("{lost} events lost since start (see mcpmon_events_lost_total, blind-spot alerts)") });
        }
        None => r.add(S, Level::Warn, "keeping up", format!("metrics endpoint {metrics} did not answer")),
    }
}

/// GET /metrics over plain HTTP/1.0 (loopback; no client library needed for one request).
fn scrape(addr: &str) -> Option<String> {
    let a: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

impl DoctorArgs {
    pub fn rules_dir(&self) -> PathBuf {
        crate::cli::rules_dir(self.rules.as_deref())
    }
}
