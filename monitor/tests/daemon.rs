//! The real `mcpmon` binary: `run` with `exec` and `--track-pid`, JSON lines out, clean detach.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::daemon::{exec_cmd, is_open, Daemon, MCPMON};
use serde_json::Value;

/// Program ids the daemon holds, from its fds' fdinfo.
fn prog_ids_of(pid: u32) -> Vec<u32> {
    let mut ids = vec![];
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        if let Ok(info) = std::fs::read_to_string(fd.path()) {
            for line in info.lines() {
                if let Some(id) = line.strip_prefix("prog_id:") {
                    ids.push(id.trim().parse().unwrap());
                }
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

fn bpftool_prog_ids() -> Vec<u32> {
    let out = Command::new("bpftool").args(["-j", "prog", "list"]).output().expect("bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool prog list failed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap() as u32).collect()
}

/// The programs a daemon reports follow from the paths it reports: every tracepoint program, the
/// fentry/fexit twins or the ia32 `tp_btf` hook, the LSM programs with LSM deny, the cgroup
/// programs with cgroup deny.
fn expect_programs_of_the_paths_taken(loaded: &Value) {
    use monitor_common::programs::{of_kind, Kind, PROGRAMS};
    let names: Vec<&str> = loaded["programs"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    let has = |n: &str| names.contains(&n);
    let all = |kind| of_kind(kind).all(|p| has(p.name));
    assert!(all(Kind::TracePoint), "every tracepoint program: {names:?}");
    let fentry = loaded["observe"] == "fentry";
    // Optional syscalls a kernel lacks are skipped on either path, so required ones are checked.
    let fast_required = PROGRAMS.iter().filter(|p| matches!(p.kind, Kind::FEntry | Kind::FExit) && !p.optional);
    for p in fast_required {
        assert_eq!(has(p.name), fentry, "{} loaded exactly when observation is fentry: {loaded}", p.name);
    }
    assert_eq!(all(Kind::BtfTracePoint), loaded["ia32"] == "tp_btf", "{loaded}");
    assert_eq!(all(Kind::Lsm), loaded["open_deny"] == "lsm", "{loaded}");
    assert_eq!(all(Kind::CgroupSockAddr), loaded["connect_deny"] == "cgroup", "{loaded}");
}

#[test]
fn exec_puts_the_server_under_watch_with_stdio_untouched() {
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&[]);
    let out = exec_cmd(&d.socket, "fs-server", &[], &["/bin/sh", "-c", "read line; echo got:$line; cat /etc/hostname >/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = out.id();
    out.stdin.as_ref().unwrap().write_all(b"ping\n").unwrap();
    let output = out.wait_with_output().unwrap();
    assert!(output.status.success());
    // stdin and stdout went straight to the server: nothing added, nothing lost.
    assert_eq!(String::from_utf8_lossy(&output.stdout), "got:ping\n");

    let tracked = d.expect("server_tracked", |v| v["kind"] == "server_tracked" && v["server"] == "fs-server");
    assert_eq!(tracked["root_pid"], pid);
    assert_eq!(tracked["how"], "exec");
    // The same pid then execs the server command.
    let exec = d.expect("exec of the server", |v| v["kind"] == "exec" && v["pid"] == pid && v["filename"] == "/bin/sh");
    assert_eq!(exec["server"], "fs-server");
    assert_eq!(exec["argv"][0], "/bin/sh");
    let open = d.expect("open from the server's child", |v| is_open(v, "/etc/hostname"));
    assert_eq!(open["server"], "fs-server");
    assert_eq!(open["ppid"], pid);
    d.expect("exit of the server", |v| v["kind"] == "exit" && v["pid"] == pid && v["code"] == 0);
    d.expect("server_gone", |v| v["kind"] == "server_gone" && v["server"] == "fs-server");
    let err = d.stop();
    assert!(err.contains("tracking server") && err.contains("server=fs-server"), "{err}");
}

#[test]
fn exec_without_a_daemon_warns_and_runs_or_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let out = exec_cmd(&socket, "lonely", &[], &["/bin/echo", "still-runs"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still-runs\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mcpmon"), "a warning on stderr");

    let out = exec_cmd(&socket, "lonely", &["--require-monitor"], &["/bin/echo", "must-not-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "the server must not start");
    assert!(String::from_utf8_lossy(&out.stderr).contains("require-monitor"));
}

#[test]
fn track_pid_takes_a_running_tree_with_its_descendants() {
    if !common::can_load_ebpf() {
        return;
    }
    // A running tree: root sh → inner sh that waits on stdin, then opens a file.
    let mut root = Command::new("/bin/sh")
        .args(["-c", "/bin/sh -c 'read x; cat /etc/hostname >/dev/null; read y'; true"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let root_pid = root.id();
    std::thread::sleep(Duration::from_millis(200)); // let the inner sh start
    let inner = monitor::sys::procfs::descendants(root_pid);
    assert_eq!(inner.len(), 1, "inner shell running");
    let d = Daemon::start(&["--track-pid", &root_pid.to_string(), "--track-name", "legacy"]);
    let tracked = d.expect("server_tracked", |v| v["kind"] == "server_tracked");
    assert_eq!(tracked["server"], "legacy");
    assert_eq!(tracked["tracked_pids"].as_array().unwrap().len(), 2);
    let mut stdin = root.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let open = d.expect("open by a pre-existing descendant's child", |v| is_open(v, "/etc/hostname"));
    assert_eq!(open["ppid"], inner[0]);
    assert_eq!(open["server"], "legacy");
    drop(stdin);
    root.wait().unwrap();
    d.stop();
}

#[test]
fn a_tracked_process_cannot_leave_or_move() {
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&[]);
    // The tracked server runs `mcpmon exec` again under another name, then opens a file.
    let inner = format!("{MCPMON} exec --name other --socket {} -- /bin/cat /etc/hostname", d.socket.display());
    let out = exec_cmd(&d.socket, "outer", &[], &["/bin/sh", "-c", &inner]).stdout(Stdio::null()).status().unwrap();
    assert!(out.success());
    let open = d.expect("open", |v| is_open(v, "/etc/hostname"));
    assert_eq!(open["server"], "outer", "still attributed to the original server");
    assert!(!d.records().iter().any(|v| v["kind"] == "server_tracked" && v["server"] == "other"));

    // There is no way to ask for less monitoring.
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"{\"op\":\"untrack\",\"pid\":1}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], false);
    d.stop();
}

#[test]
fn sigterm_detaches_every_program() {
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&[]);
    let ids = prog_ids_of(d.pid());
    // What the daemon says it loaded on this kernel (tracepoints, and fentry/fexit and BPF-LSM
    // programs or the ia32 `tp_btf` hook, and the cgroup deny programs): one fd for each.
    let loaded = d.expect("sensors_loaded", |v| v["kind"] == "sensors_loaded");
    let mut reported: Vec<u32> = loaded["programs"].as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap() as u32).collect();
    reported.sort();
    assert_eq!(ids, reported, "one fd per program the daemon reports loaded: {loaded}");
    expect_programs_of_the_paths_taken(&loaded);
    let before = bpftool_prog_ids();
    assert!(ids.iter().all(|id| before.contains(id)), "bpftool lists the daemon's programs");
    let err = d.stop();
    assert!(err.contains("sensors detached"), "{err}");
    // Program teardown in the kernel is RCU-deferred: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = bpftool_prog_ids();
        let left: Vec<_> = ids.iter().filter(|id| after.contains(id)).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "programs still loaded after exit: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn clear_error_when_not_root() {
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: the plain run shows the error.
        let out = Command::new(MCPMON).args(["run", "--socket", "/nonexistent/x.sock"]).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));
        return;
    }
    // As root: drop to nobody for this one run.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", MCPMON, "run", "--config", "none", "--socket", "/nonexistent/x.sock"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as root") && err.contains("effective uid is 65534"), "{err}");
}

/// Links the daemon holds (tracepoint attachments are perf_event links).
fn link_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
        .filter(|fd| std::fs::read_to_string(fd.path()).map(|i| i.contains("link_type:")).unwrap_or(false))
        .count()
}

#[test]
fn syscall_hooks_are_attached_only_while_something_is_tracked() {
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&[]);
    let always = link_count(d.pid());
    // Only what the daemon reports attached for its whole life (task_newtask,
    // sched_process_exec/exit, io_uring_create: they fire only on their event). The syscall
    // hooks and the deny programs (cgroup, BPF-LSM) come with a server.
    let loaded = d.expect("sensors_loaded", |v| v["kind"] == "sensors_loaded");
    assert_eq!(always, loaded["always_attached"].as_array().unwrap().len(), "idle: no syscall hook, no deny program attached: {loaded}");
    let mut server = exec_cmd(&d.socket, "short-lived", &[], &["/bin/sh", "-c", "read x; cat /etc/hostname"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    d.expect("server_tracked", |v| v["kind"] == "server_tracked");
    let active = link_count(d.pid());
    assert!(active >= always + 10, "syscall hooks attached while tracked: {active}");
    // Events flow while tracked…
    server.stdin.take().unwrap().write_all(b"go\n").unwrap();
    server.wait().unwrap();
    d.expect("open", |v| is_open(v, "/etc/hostname"));
    // …and once the last tracked process is gone the syscall hooks come off again (3 s idle,
    // checked each 1 s tick; stretched under emulation like every wait of the harness).
    let deadline = Instant::now() + common::patience(Duration::from_secs(10));
    while link_count(d.pid()) != always {
        if Instant::now() > deadline {
            let n = link_count(d.pid());
            panic!("syscall hooks still attached: {n} links; the daemon's log:\n{}", d.stop());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = d.stop();
    assert!(err.contains("detaching syscall hooks"), "{err}");
}

/// A SIGTERM while the daemon is still starting (its control socket's directory made, the open
/// gate and the persistence watch syncing) stops it as cleanly as one after it is ready: no
/// directory of its making stays behind, where a package's purge or the next start finds it.
#[test]
fn a_sigterm_during_start_up_leaves_nothing_behind() {
    if !common::can_load_ebpf() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("run/mcpmon");
    let socket = dir.join("mcpmon.sock");
    let mut d = Daemon::launch(&["--socket", socket.to_str().unwrap()]);
    let deadline = Instant::now() + common::patience(Duration::from_secs(60));
    while !dir.exists() {
        assert!(Instant::now() < deadline, "the daemon never made {}", dir.display());
        assert!(d.child.try_wait().unwrap().is_none(), "the daemon exited before it made its socket directory");
        std::thread::sleep(Duration::from_millis(2));
    }
    // `stop`: SIGTERM now, then a clean exit required.
    d.stop();
    assert!(!dir.exists(), "{} outlived the daemon", dir.display());
}
