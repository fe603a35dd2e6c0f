//! A candidate's first instruction meets its sensors. The syscall hooks are attached only while
//! something is tracked; a process an MCP client starts while nothing is tracked is stopped at
//! exec until they are (monitor-ebpf/src/hold.rs). Without that, these candidates ran their
//! first milliseconds unobserved: the environment read below succeeded, and a process that
//! wrote and exited before the daemon looked was never even tracked.
mod common;

use std::process::{Command, Stdio};

use common::user::{start, User};
use serde_json::Value;

const SECRET: &str = "HELD-VICTIM-91d2";

/// Every daemon's kernel side holds every candidate, and the first daemon ready continues it: two
/// daemons side by side (two tests) would release each other's candidates early. One at a time.
static ONE_DAEMON: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `argv` as the child of a process named like an MCP client ("claude"), with pipes on its
/// stdin and stdout as a client gives its servers; returns its exit (code or -signal) and stdout.
/// The client runs as `user` when given.
fn spawn_from_client(user: Option<&User>, argv: &[&str]) -> Value {
    let script = format!(
        "import ctypes, json, subprocess, sys\nctypes.CDLL(None).prctl(15, b'claude', 0, 0, 0)\n\
         p = subprocess.Popen({argv:?}, stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n\
         out = p.stdout.read(); p.wait()\n\
         print(json.dumps({{'rc': p.returncode, 'pid': p.pid, 'out': out.decode(errors='replace')}}))\n"
    );
    let mut c = match user {
        Some(u) => {
            let mut c = u.command();
            c.current_dir(&u.home).arg(common::python());
            c
        }
        None => Command::new(common::python()),
    };
    let out = c.args(["-c", &script]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "client: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first thing the candidate does is read another process's environment, where a token
/// sits: killed in the kernel at the open, not one byte out, though nothing was tracked (and no
/// syscall hook attached) when the user's client started it.
#[test]
fn a_candidate_attacking_in_its_first_instruction_is_killed() {
    if !common::can_load_ebpf() {
        return;
    }
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("held", true);
    let d = start(tmp.path(), "");
    let mut victim = u
        .command()
        .args(["sleep", "60"])
        .env("API_TOKEN", SECRET)
        .spawn()
        .unwrap();
    let environ = format!("/proc/{}/environ", victim.id());
    let r = spawn_from_client(Some(&u), &["/bin/cat", &environ]);
    let _ = victim.kill();
    let _ = victim.wait();
    assert_eq!(r["rc"], -9, "killed: {r}");
    assert_eq!(r["out"], "", "not one byte: {r}");
    let a = d.expect("alert", |x| {
        x["kind"] == "alert"
            && x["rule"]["id"] == "foreign-process-secrets-read"
            && x["event"]["path"] == environ.as_str()
    });
    assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    assert_eq!(a["server"]["how"], "sniffed", "{a}");
    let err = d.stop();
    assert!(
        err.contains("held at exec"),
        "the candidate was held while the hooks were attached:\n{err}"
    );
}

/// A candidate that writes at once (before any client message) and exits: its very first opens
/// (the dynamic loader's) and the bytes it wrote are all reported, under the sniffed server.
#[test]
fn a_candidate_is_observed_from_its_first_syscall() {
    if !common::can_load_ebpf() {
        return;
    }
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "");
    let marker = tmp.path().join("first-words");
    std::fs::write(&marker, "not json-rpc, written before anyone asked\n").unwrap();
    let m = marker.to_str().unwrap();
    let r = spawn_from_client(None, &["/bin/cat", m]);
    assert_eq!(r["rc"], 0, "{r}");
    let pid = r["pid"].as_u64().unwrap();
    let tracked = d.expect("sniffed", |x| {
        x["kind"] == "server_tracked" && x["root_pid"] == pid
    });
    let id = tracked["server_id"].clone();
    // The loader's first open comes before anything cat itself does.
    d.expect("the loader's first open", |x| {
        x["kind"] == "open" && x["server_id"] == id && x["path"] == "/etc/ld.so.cache"
    });
    d.expect("the marker", |x| {
        x["kind"] == "open" && x["server_id"] == id && x["path"] == m
    });
    d.expect("its stdout, captured", |x| {
        x["kind"] == "mcp_invalid" && x["server_id"] == id && x["direction"] == "out"
    });
    let err = d.stop();
    assert!(err.contains("held at exec"), "{err}");
}

/// A configured command started by something that is not an MCP client: without a terminal
/// (a GUI client whose name mcpmon does not know) it is held like a client's child; typed in a
/// terminal (`npx` in a shell) it is tracked at exec but never stopped, since a job-control
/// shell would report a stopped job.
#[test]
fn a_configured_command_is_held_unless_it_has_a_terminal() {
    if !common::can_load_ebpf() {
        return;
    }
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home/term");
    std::fs::create_dir_all(home.join(".cursor")).unwrap();
    let cfg = serde_json::json!({"mcpServers": {"napper": {"command": "/bin/sleep", "args": ["7.25"]}}});
    std::fs::write(home.join(".cursor/mcp.json"), cfg.to_string()).unwrap();
    let passwd = t.path().join("passwd");
    std::fs::write(&passwd, format!("term:x:1000:1000::{}:/bin/sh\n", home.display())).unwrap();
    let start = || common::daemon::Daemon::start(&["--passwd", passwd.to_str().unwrap()]);

    // No terminal, not a client's child: held, then continued.
    let d = start();
    let mut bare = Command::new("setsid").args(["/bin/sleep", "7.25"]).stdin(Stdio::null()).spawn().unwrap();
    let bare_pid = bare.id();
    d.expect("configured", |x| x["kind"] == "server_tracked" && x["root_pid"] == bare_pid && x["how"] == "config");
    let _ = bare.kill();
    let _ = bare.wait();
    let err = d.stop();
    assert!(err.contains(&format!("held at exec until the syscall hooks were on pid={bare_pid}")), "held and continued:\n{err}");

    // In a terminal (a pty from script(1), the shell execs sleep as the session's job), with
    // the hooks detached again (a fresh daemon): tracked, never stopped.
    let d = start();
    let mut term = Command::new("script").args(["-qfec", "exec /bin/sleep 7.25", "/dev/null"]).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let rec = d.expect("configured in a terminal", |x| x["kind"] == "server_tracked" && x["how"] == "config");
    let term_pid = rec["root_pid"].as_u64().unwrap() as u32;
    let mut states = String::new();
    for _ in 0..25 {
        let stat = std::fs::read_to_string(format!("/proc/{term_pid}/stat")).unwrap_or_default();
        states.push(stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).and_then(|s| s.chars().next()).unwrap_or('?'));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = Command::new("kill").arg(term_pid.to_string()).status();
    let _ = term.wait();
    assert!(!states.contains('T'), "never stopped: {states}");
    let err = d.stop();
    assert!(!err.contains(&format!("held at exec until the syscall hooks were on pid={term_pid}")), "{err}");
}

/// The process whose argv is exactly `argv`, once it is stopped (state T), within `wait`.
fn stopped(argv: &[&str], wait: std::time::Duration) -> Option<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, r)| r.starts_with('T'));
            if state == Some(true) && std::fs::read(format!("/proc/{pid}/cmdline")).ok().as_deref() == Some(&want[..]) {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// A daemon killed while the kernel holds a candidate at exec (SIGKILL, the OOM killer, a
/// crash) leaves no process stopped: its guard (probes/guard.rs) continues what the kernel held.
/// The daemon is stopped first, so that it cannot continue the candidate itself.
#[test]
fn a_daemon_killed_while_holding_leaves_nothing_stopped() {
    if !common::can_load_ebpf() {
        return;
    }
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "");
    let daemon = d.pid() as i32;
    // SAFETY: kill(2) on the test's own daemon child with a constant signal.
    unsafe { libc::kill(daemon, libc::SIGSTOP) };
    let argv = ["/bin/sleep", "0.0123"];
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(spawn_from_client(None, &argv));
    });
    let held = stopped(&argv, std::time::Duration::from_secs(10));
    // SAFETY: as above; the daemon is gone at once, stopped or not.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    let Some(held) = held else { panic!("the candidate was not held at exec") };
    let r = rx.recv_timeout(std::time::Duration::from_secs(15));
    if r.is_err() {
        // SAFETY: kill(2) with a pid found stopped above: the cleanup of a failed run.
        unsafe { libc::kill(held, libc::SIGCONT) };
    }
    let r = r.expect("the candidate stayed stopped after its daemon was killed");
    assert_eq!(r["rc"], 0, "{r}");
    drop(d);
}

