//! `mcpmon doctor` against a running daemon and against none: the checks an SRE pastes into a
//! ticket say what is there, and the exit code says whether anything failed.
mod common;

use std::process::Command;

use common::daemon::{Daemon, MCPMON};
use serde_json::Value;

fn doctor(args: &[&str]) -> (bool, Vec<Value>) {
    let out = Command::new(MCPMON).arg("doctor").arg("--json").args(args).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (out.status.success(), v["checks"].as_array().unwrap().clone())
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks.iter().find(|c| c["check"].as_str().is_some_and(|s| s.starts_with(name))).unwrap_or_else(|| panic!("no {name} in {checks:?}"))
}

#[test]
fn doctor_reports_a_running_daemon_and_a_missing_one() {
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&[]);
    let metrics = d.metrics_url();
    let addr = metrics.trim_start_matches("http://").trim_end_matches("/metrics");
    let socket = d.socket.to_str().unwrap();
    let (ok, checks) = doctor(&["--socket", socket, "--metrics-addr", addr, "--state-dir", "/nonexistent-mcpmon-state"]);
    assert!(ok, "{checks:?}");
    assert_eq!(check(&checks, "daemon")["level"], "ok");
    assert_eq!(check(&checks, "keeping up")["level"], "ok", "{checks:?}");
    assert_eq!(check(&checks, "BTF")["level"], "ok");
    assert_eq!(check(&checks, "open gate")["level"], "ok");
    assert!(checks.iter().any(|c| c["section"] == "rules" && c["level"] == "ok" && c["detail"].as_str().unwrap().contains("0 fixture failures")), "{checks:?}");
    d.stop();
    // No daemon: the same command fails and says why.
    let (ok, checks) = doctor(&["--socket", "/nonexistent-mcpmon.sock", "--metrics-addr", "none"]);
    assert!(!ok);
    assert_eq!(check(&checks, "daemon")["level"], "fail");
}
