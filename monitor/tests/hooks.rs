//! The hooks attached only while something is tracked come and go at run time. Re-attaching
//! them races with the release of the previous links (on the daemon's background thread, or
//! held for a moment by a child forked between its fork and exec); a lost race used to fail
//! the track with EEXIST, leave the deny programs off while tracking went on, or hold the
//! track's answer until `mcpmon exec` gave up.
mod common;

use std::{os::unix::process::CommandExt, process::Command, time::Duration};

use common::{Gated, Harness};
use monitor::{events::Body, probes::cgroup::DenyPath};

/// Tracks a gated shell that opens a marker file and expects the open (a syscall-hook event),
/// proving the re-attached hooks report.
async fn hooks_report(h: &mut Harness, marker: &str) {
    let mut sh = Gated::spawn(&format!("cat {marker} 2>/dev/null; exit 0"));
    h.track(sh.pid(), "reattach");
    sh.go();
    h.expect("open after re-attach", |e| matches!(&e.body, Body::Open(o) if &*o.path == marker)).await;
    sh.wait();
}

fn assert_deny_attached(h: &Harness) {
    let (cgroup, lsm) = h.sensors.deny_hooks_attached();
    if matches!(h.sensors.deny, DenyPath::Cgroup { .. }) {
        assert!(cgroup, "connect deny programs not attached after re-attach");
    }
    assert_eq!(lsm, h.sensors.lsm_deny, "BPF-LSM open deny attached state");
}

#[tokio::test]
async fn reattach_while_a_forked_child_still_holds_the_old_links() {
    let Some(mut h) = Harness::start().await else { return };
    h.sensors.attach_syscall_hooks().unwrap();
    // A child that sits between fork and exec for a while: it holds copies of every link fd
    // (close-on-exec only closes them at the exec), as any child forked by another thread does.
    let holder = std::thread::spawn(|| {
        let mut c = Command::new("/bin/true");
        unsafe {
            c.pre_exec(|| {
                std::thread::sleep(Duration::from_millis(600));
                Ok(())
            });
        }
        c.status().unwrap()
    });
    std::thread::sleep(Duration::from_millis(150));
    h.sensors.detach_syscall_hooks().unwrap();
    assert!(!h.sensors.syscall_hooks_active());
    h.sensors.attach_syscall_hooks().expect("re-attach while the forked child holds the old links");
    assert!(holder.join().unwrap().success());
    assert!(h.sensors.syscall_hooks_active());
    assert_deny_attached(&h);
    hooks_report(&mut h, "/tmp/mcpmon-reattach-fork-marker").await;
}

#[tokio::test]
async fn track_right_after_the_background_detach() {
    let Some(mut h) = Harness::start().await else { return };
    for round in 0..3 {
        h.sensors.attach_syscall_hooks().unwrap();
        // What the daemon does after its idle grace period; a server tracked a moment later
        // must find every hook back in place.
        // Something appeared by the daemon's last look: nothing comes off.
        assert!(!h.sensors.detach_syscall_hooks_in_background(|_| false).unwrap(), "not idle: kept");
        assert!(h.sensors.syscall_hooks_active(), "round {round}: hooks kept");
        assert!(h.sensors.detach_syscall_hooks_in_background(|_| true).unwrap(), "still idle: detached");
        h.sensors.attach_syscall_hooks().unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_deny_attached(&h);
        hooks_report(&mut h, &format!("/tmp/mcpmon-reattach-bg-marker-{round}")).await;
        h.sensors.detach_syscall_hooks().unwrap();
    }
}

/// `--observe`: fentry/fexit where they load (all on-demand hooks are trampolines then), a clear
/// error naming the program and kernel function when asked for where they do not (this machine),
/// and tracepoints on request.
#[tokio::test]
async fn observation_path_is_chosen_and_reported() {
    use monitor::probes::{fast::Observe, ProbeError, SensorConfig, Sensors};
    if !common::can_load_ebpf() {
        return;
    }
    let tp = Sensors::load(&SensorConfig { observe: Observe::Tracepoint, ..Default::default() }).expect("tracepoint path");
    assert!(!tp.fast_path);
    assert!(tp.on_demand_hooks().iter().all(|h| h.starts_with("syscalls:") || h.starts_with("tp_btf:sys_")), "{:?}", tp.on_demand_hooks());
    // Where `int $0x80` works, the ia32 hook must be among them: a kernel whose verifier refused
    // it would otherwise only log that ia32 syscalls go unseen.
    if monitor::probes::ia32::emulation_off().is_none() {
        assert!(tp.on_demand_hooks().contains(&"tp_btf:sys_exit".to_string()), "{:?}", tp.on_demand_hooks());
    }
    drop(tp);
    let auto = Sensors::load(&SensorConfig::default()).expect("auto");
    match Sensors::load(&SensorConfig { observe: Observe::Fentry, ..Default::default() }) {
        Ok(f) => {
            assert!(f.fast_path && auto.fast_path, "fentry loads, so auto must take it too");
            let hooks = f.on_demand_hooks();
            // Syscall wrappers, and the kernel functions the fast path also hooks
            // (schedule_tail, security_file_open): trampolines all.
            assert!(hooks.iter().all(|h| h.starts_with("fentry:") || h.starts_with("fexit:")), "{hooks:?}");
            assert!(hooks.contains(&"fexit:__x64_sys_openat".to_string()));
        }
        Err(ProbeError::Fast(why)) => {
            assert!(!auto.fast_path, "fentry does not load, so auto must fall back");
            assert!(why.contains("mcpmf_") && why.contains("__x64_sys_"), "{why}");
            let exec = auto.report.hooks.iter().find(|h| h.family.starts_with("exec")).unwrap();
            assert!(exec.observe.starts_with("tracepoints") && exec.fallback_reason.as_deref().is_some_and(|r| r.contains("fentry")), "{exec:?}");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// A server started the moment the daemon takes its idle hooks off, as a user's next `mcpmon
/// exec` would be. Releasing the links takes seconds (3.4 s for 45 tracepoints on a loaded 2-core
/// machine: RCU grace periods under the kernel's `event_mutex`), and a track that waited for all
/// of them answered after exec's own 3 s, so `--require-monitor` refused to start the server. The
/// track now keeps the links not yet released and waits for one.
#[test]
fn a_server_started_as_the_hooks_come_off_is_not_refused() {
    use common::daemon::{is_open, Daemon, MCPMON};
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&[]);
    let marker = "/tmp/mcpmon-cut-short-marker";
    std::fs::write(marker, "x").unwrap();
    // With exec's own wait for the daemon's answer, as users run it (not the tests' stretched one).
    let exec = |name: &str, cmd: &[&str]| {
        Command::new(MCPMON).args(["exec", "--name", name, "--require-monitor", "--socket"]).arg(&d.socket).arg("--").args(cmd).output().unwrap()
    };
    let first = exec("first", &["true"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    d.expect_log("nothing tracked: detaching syscall hooks", common::patience(Duration::from_secs(30)));
    let second = exec("second", &["cat", marker]);
    assert!(second.status.success(), "refused: {}", String::from_utf8_lossy(&second.stderr));
    // Every hook back: its open is reported.
    let tracked = d.expect("the second server tracked", |r| r["kind"] == "server_tracked" && r["server"] == "second");
    d.expect("the second server's open", |r| is_open(r, marker) && r["server_id"] == tracked["server_id"]);
    let _ = std::fs::remove_file(marker);
    // And not because the release happened to beat exec's wait: the track took the links the
    // release had not reached (each costs milliseconds of grace periods; it had just begun).
    let log = d.stop();
    let line = log.lines().find(|l| l.contains("cut the previous detach short")).unwrap_or_else(|| panic!("the track waited for the whole release:\n{log}"));
    let kept: usize = line.split("kept=").nth(1).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(kept > 0, "{line}");
}
