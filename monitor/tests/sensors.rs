//! Kernel sensors against real processes: each test loads the production eBPF object, tracks a
//! gated shell, triggers a syscall, and expects the event with the right fields.
mod common;

use std::{net::TcpListener, os::unix::net::UnixListener, time::Duration};

use common::{python, Gated, Harness};
use monitor::{
    events::{Access, Body, Event},
    probes::SensorConfig,
};

fn open_of<'a>(e: &'a Event, path: &str) -> Option<&'a monitor::events::Open> {
    match &e.body {
        Body::Open(o) if &*o.path == path => Some(o),
        _ => None,
    }
}

#[tokio::test]
async fn exec_with_argv_and_failed_exec() {
    let Some(mut h) = Harness::start().await else { return };
    let mut sh = Gated::spawn("/nonexistent/mcpmon-no-such-binary; exec /bin/echo hello 'two words'");
    let pid = sh.pid();
    let server = h.track(pid, "exec-test");
    sh.go();
    let failed = h
        .expect("failed exec", |e| matches!(&e.body, Body::Exec(x) if x.filename == "/nonexistent/mcpmon-no-such-binary"))
        .await;
    let Body::Exec(x) = &failed.body else { unreachable!() };
    assert!(!x.result.ok);
    assert_eq!(x.result.errno, Some("ENOENT"));
    let ok = h.expect("exec of echo", |e| matches!(&e.body, Body::Exec(x) if x.filename == "/bin/echo")).await;
    let Body::Exec(x) = &ok.body else { unreachable!() };
    assert!(x.result.ok, "{x:?}");
    assert_eq!(x.argv, vec!["/bin/echo", "hello", "two words"]);
    assert!(!x.argv_truncated);
    assert_eq!(x.syscall, "execve");
    // `exec` keeps the pid: the event belongs to the tracked root itself.
    assert_eq!((ok.header.pid, ok.header.server_id), (pid, server));
    assert_eq!(ok.header.ppid, std::process::id());
    assert_eq!(ok.header.uid, 0);
    assert!(ok.header.ts_mono_ns > 0);
    sh.wait();
}

#[tokio::test]
async fn argv_capture_limits_and_truncation_flag() {
    let Some(mut h) = Harness::start().await else { return };
    // 20 args of 60 bytes (1.2 KiB) fit entirely; 40 args are cut at 32 and flagged.
    let a60 = "a".repeat(60);
    let fits: Vec<String> = (0..20).map(|i| format!("{i:02}{a60}")).collect();
    let many: Vec<String> = (0..40).map(|i| format!("x{i}")).collect();
    let script = format!("/bin/true {}; /bin/echo {}", fits.join(" "), many.join(" "));
    let mut sh = Gated::spawn(&script);
    h.track(sh.pid(), "argv-test");
    sh.go();
    let e = h.expect("exec of true", |e| matches!(&e.body, Body::Exec(x) if x.filename == "/bin/true")).await;
    let Body::Exec(x) = &e.body else { unreachable!() };
    assert_eq!(x.argv.len(), 21);
    assert_eq!(&x.argv[1..], &fits[..]);
    assert!(!x.argv_truncated);
    let e = h.expect("exec of echo", |e| matches!(&e.body, Body::Exec(x) if x.filename == "/bin/echo")).await;
    let Body::Exec(x) = &e.body else { unreachable!() };
    assert_eq!(x.argv.len(), 32);
    assert_eq!(x.argv[31], "x30");
    assert!(x.argv_truncated);
    assert_eq!(e.header.truncated, vec!["argv"]);
    sh.wait();
}

#[tokio::test]
async fn opens_success_failure_and_flags_from_a_child() {
    let Some(mut h) = Harness::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("written");
    let script = format!("cat /etc/hostname >/dev/null; cat /nonexistent/mcpmon-nope 2>/dev/null; : > {}", out.display());
    let mut sh = Gated::spawn(&script);
    let root = sh.pid();
    let server = h.track(root, "open-test");
    sh.go();

    let ok = h.expect("open of /etc/hostname", |e| open_of(e, "/etc/hostname").is_some()).await;
    let o = open_of(&ok, "/etc/hostname").unwrap();
    assert!(o.result.ok && o.result.ret >= 0, "{o:?}");
    assert_eq!(o.access.iter().next(), Some(Access::Read));
    // cat is a child of the tracked shell: tracking was inherited on fork.
    assert_ne!(ok.header.pid, root);
    assert_eq!(ok.header.ppid, root);
    assert_eq!(ok.header.server_id, server);

    let bad = h.expect("failed open", |e| open_of(e, "/nonexistent/mcpmon-nope").is_some()).await;
    let o = open_of(&bad, "/nonexistent/mcpmon-nope").unwrap();
    assert_eq!((o.result.ok, o.result.ret, o.result.errno), (false, -2, Some("ENOENT")));

    let path = out.display().to_string();
    let w = h.expect("write open", |e| open_of(e, &path).is_some()).await;
    let o = open_of(&w, &path).unwrap();
    assert_eq!(o.access.iter().take(3).collect::<Vec<_>>(), [Access::Write, Access::Create, Access::Truncate]);
    assert_eq!(w.header.pid, root, "the redirection is opened by the shell itself");
    sh.wait();
}

#[tokio::test]
async fn every_open_syscall_is_seen() {
    let Some(mut h) = Harness::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // open(2), creat(2), openat(2) and openat2(2) issued directly, RESOLVE_NO_SYMLINKS on openat2.
    let py = format!(
        r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_open, SYS_creat, SYS_openat2 = 2, 85, 437
libc.syscall(SYS_open, b"{d}/via-open", os.O_RDONLY | os.O_CREAT, 0o600)
libc.syscall(SYS_creat, b"{d}/via-creat", 0o644)
os.open("{d}/via-openat", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
class How(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
how = How(os.O_RDONLY, 0, 0x04)
libc.syscall(SYS_openat2, -100, b"/etc/hostname", ctypes.byref(how), ctypes.sizeof(how))
"#
    );
    let mut sh = Gated::spawn(&format!("exec {} -c '{}'", python(), py.replace('\'', "'\\''")));
    h.track(sh.pid(), "syscalls-test");
    sh.go();
    for (name, syscall) in [("via-open", "open"), ("via-creat", "creat"), ("via-openat", "openat")] {
        let p = format!("{d}/{name}");
        let e = h.expect(name, |e| open_of(e, &p).is_some()).await;
        let o = open_of(&e, &p).unwrap();
        assert_eq!(o.syscall, syscall, "{o:?}");
        assert!(o.result.ok, "{o:?}");
        if syscall == "creat" {
            assert_eq!(o.access.iter().take(3).collect::<Vec<_>>(), [Access::Write, Access::Create, Access::Truncate]);
            assert_eq!(o.mode, 0o644);
        }
        if syscall == "openat" {
            assert!(o.access.contains(&Access::Append));
        }
    }
    let e = h
        .expect("openat2", |e| matches!(&e.body, Body::Open(o) if o.syscall == "openat2" && &*o.path == "/etc/hostname"))
        .await;
    let Body::Open(o) = &e.body else { unreachable!() };
    assert_eq!((o.resolve, o.dirfd), (0x04, -100));
    assert!(o.result.ok, "{o:?}");
    sh.wait();
}

#[tokio::test]
async fn connects_inet_inet6_unix_and_refused() {
    let Some(mut h) = Harness::start().await else { return };
    let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let p4 = l4.local_addr().unwrap().port();
    let l6 = TcpListener::bind("[::1]:0").ok();
    let p6 = l6.as_ref().map(|l| l.local_addr().unwrap().port());
    // A port that was just free: connecting is refused.
    let refused = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let _ul = UnixListener::bind(&sock).unwrap();
    let py = format!(
        r#"
import socket
s = socket.socket(); s.connect(("127.0.0.1", {p4})); s.close()
s = socket.socket()
try: s.connect(("127.0.0.1", {refused}))
except OSError: pass
if {p6} > 0:
    s = socket.socket(socket.AF_INET6); s.connect(("::1", {p6})); s.close()
u = socket.socket(socket.AF_UNIX); u.connect("{sock}"); u.close()
"#,
        p6 = p6.unwrap_or(0),
        sock = sock.display()
    );
    let mut sh = Gated::spawn(&format!("exec {} -c '{}'", python(), py));
    h.track(sh.pid(), "net-test");
    sh.go();
    let is = |e: &Event, port: u16| matches!(&e.body, Body::Connect(c) if c.port == Some(port));
    let e = h.expect("connect 127.0.0.1", |e| is(e, p4)).await;
    let Body::Connect(c) = &e.body else { unreachable!() };
    assert_eq!((c.family.as_str(), c.addr, c.result.ok), ("inet", Some("127.0.0.1".parse().unwrap()), true));
    let e = h.expect("refused connect", |e| is(e, refused)).await;
    let Body::Connect(c) = &e.body else { unreachable!() };
    assert_eq!((c.result.ok, c.result.errno), (false, Some("ECONNREFUSED")));
    if let Some(p6) = p6 {
        let e = h.expect("connect ::1", |e| is(e, p6)).await;
        let Body::Connect(c) = &e.body else { unreachable!() };
        assert_eq!((c.family.as_str(), c.addr, c.result.ok), ("inet6", Some("::1".parse().unwrap()), true));
    }
    let path = sock.display().to_string();
    let e = h.expect("unix connect", |e| matches!(&e.body, Body::Connect(c) if c.unix_path.as_deref() == Some(path.as_str()))).await;
    let Body::Connect(c) = &e.body else { unreachable!() };
    assert!(c.result.ok, "{c:?}");
    sh.wait();
}

#[tokio::test]
async fn exit_code_and_killing_signal() {
    let Some(mut h) = Harness::start().await else { return };
    let mut a = Gated::spawn("exit 7");
    let mut b = Gated::spawn("kill -9 $$");
    let (pa, pb) = (a.pid(), b.pid());
    h.track(pa, "exit-a");
    h.track(pb, "exit-b");
    a.go();
    b.go();
    let e = h.expect("exit 7", |e| e.header.pid == pa && matches!(e.body, Body::Exit(_))).await;
    let Body::Exit(x) = &e.body else { unreachable!() };
    assert_eq!((x.code, x.signal), (Some(7), None));
    let e = h.expect("killed", |e| e.header.pid == pb && matches!(e.body, Body::Exit(_))).await;
    let Body::Exit(x) = &e.body else { unreachable!() };
    assert_eq!((x.code, x.signal, x.signal_name), (None, Some(9), Some("SIGKILL")));
    // The kernel drops an exited process from the tracked map.
    assert!(h.tracker.lookup(pa).is_none() && h.tracker.lookup(pb).is_none());
}

/// pid_max raised after the daemon started (systemd raises it to 2^22 at boot; an admin, or a
/// container runtime, may later): a server and its child with pids near the kernel's ceiling are
/// followed like any other. The byte filter has one byte for every pid the kernel can hand out,
/// set by the daemon for the root and by the kernel for the child.
#[tokio::test]
async fn a_server_with_a_pid_near_the_kernels_ceiling_is_followed() {
    const PID_MAX: &str = "/proc/sys/kernel/pid_max";
    const LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
    /// Puts pid_max back as it was, whatever the test's outcome.
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(PID_MAX, &self.0);
        }
    }
    let Some(mut h) = Harness::start().await else { return };
    let _restore = Restore(std::fs::read_to_string(PID_MAX).unwrap().trim().to_string());
    std::fs::write(PID_MAX, "4194304").unwrap();
    // The next pids the kernel hands out (in this, the initial, pid namespace) come after this
    // one: room for the few thousand other processes may take meanwhile.
    let low = 4_190_000;
    std::fs::write(LAST_PID, low.to_string()).unwrap();
    let mut sh = Gated::spawn("sleep 0; cat /etc/hostname > /dev/null");
    let root = sh.pid();
    assert!(root > low, "the root's pid {root} is above {low}");
    h.track(root, "high-pid");
    assert!(h.tracker.may_be_tracked(root).unwrap(), "the daemon sets a high pid's byte");
    sh.go();
    let child = forked_child(&mut h, root).await;
    assert!(child > low, "the child's pid {child} is above {low}");
    h.expect("the child's exit", |e| e.header.pid == child && matches!(e.body, Body::Exit(_))).await;
    h.expect("the open", |e| open_of(e, "/etc/hostname").is_some_and(|_| e.header.pid > low)).await;
    sh.wait();
}

/// The pid of the first child `root` forked, from the fork event.
async fn forked_child(h: &mut Harness, root: u32) -> u32 {
    let e = h.expect("the root's fork", |e| e.header.pid == root && matches!(e.body, Body::Fork(_))).await;
    let Body::Fork(f) = &e.body else { unreachable!() };
    f.child_pid
}

/// The hooks skip a process whose `MAYBE_TRACKED` byte is clear, before any lookup: the daemon
/// must set it for a root it adopts, the kernel for each child it tracks at fork, and the kernel
/// clears it when the process is gone (else bytes pile up as pids are reused).
#[tokio::test]
async fn the_hooks_filter_byte_follows_tracking() {
    let Some(mut h) = Harness::start().await else { return };
    let mut sh = Gated::spawn("sleep 1; cat /etc/hostname > /dev/null");
    let root = sh.pid();
    let mut other = std::process::Command::new("sleep").arg("3").spawn().unwrap();
    h.track(root, "filter-test");
    assert!(h.tracker.may_be_tracked(root).unwrap(), "the daemon sets a root's byte");
    sh.go();
    let child = forked_child(&mut h, root).await;
    assert!(h.tracker.may_be_tracked(child).unwrap(), "the kernel sets a tracked child's byte at fork");
    // The second child's open is seen: its byte let the open hooks through.
    h.expect("the child's open", |e| open_of(e, "/etc/hostname").is_some()).await;
    assert!(!h.tracker.may_be_tracked(other.id()).unwrap(), "an untracked process has no byte");
    h.expect("the root's exit", |e| e.header.pid == root && matches!(e.body, Body::Exit(_))).await;
    sh.wait();
    assert!(!h.tracker.may_be_tracked(root).unwrap() && !h.tracker.may_be_tracked(child).unwrap(), "the kernel clears the bytes at exit");
    let _ = other.kill();
    let _ = other.wait();
}

#[tokio::test]
async fn grandchildren_are_tracked_and_untracked_processes_are_not() {
    let Some(mut h) = Harness::start().await else { return };
    let mut sh = Gated::spawn("/bin/sh -c '/bin/sh -c \"cat /etc/hostname\" >/dev/null'");
    let root = sh.pid();
    let server = h.track(root, "tree-test");
    // An untracked process doing the same thing at the same time.
    let mut other = std::process::Command::new("/bin/sh")
        .args(["-c", "for i in 1 2 3 4 5; do cat /etc/hostname; done"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let other_pid = other.id();
    sh.go();
    let e = h.expect("grandchild open", |e| open_of(e, "/etc/hostname").is_some()).await;
    let forks: Vec<(u32, u32)> = h
        .seen
        .iter()
        .filter_map(|e| match &e.body {
            Body::Fork(f) => Some((e.header.pid, f.child_pid)),
            _ => None,
        })
        .collect();
    // root → child → grandchild (cat may be exec'd in place of the innermost sh).
    let child = forks.iter().find(|(p, _)| *p == root).map(|(_, c)| *c).expect("fork of root");
    assert!(e.header.pid != root && e.header.pid != child || forks.len() >= 2, "{forks:?}");
    assert_eq!(e.header.server_id, server);
    other.wait().unwrap();
    sh.wait();
    h.settle(Duration::from_millis(300)).await;
    let mut tracked = vec![root];
    tracked.extend(forks.iter().map(|(_, c)| *c));
    for ev in &h.seen {
        assert!(tracked.contains(&ev.header.pid), "event from untracked pid {}: {ev:?}", ev.header.pid);
        assert_ne!(ev.header.pid, other_pid);
    }
}

#[tokio::test]
async fn threads_report_their_tid_and_create_no_fork_event() {
    let Some(mut h) = Harness::start().await else { return };
    let py = "import threading\ndef f(): open('/etc/hostname').close()\nt = threading.Thread(target=f); t.start(); t.join()\n";
    let mut sh = Gated::spawn(&format!("exec {} -c \"{py}\"", python()));
    let pid = sh.pid();
    h.track(pid, "thread-test");
    sh.go();
    let e = h.expect("open from thread", |e| open_of(e, "/etc/hostname").is_some()).await;
    assert_eq!(e.header.pid, pid);
    assert_ne!(e.header.tid, pid, "opened from the second thread");
    h.expect("exit", |e| e.header.pid == pid && matches!(e.body, Body::Exit(_))).await;
    assert!(!h.seen.iter().any(|e| matches!(e.body, Body::Fork(_))), "thread creation is not a fork:\n{}", h.dump());
}

#[tokio::test]
async fn lost_events_are_counted_exactly() {
    // A one-page ring buffer nobody reads while a tracked process opens N files: every open is
    // either in the ring or counted as lost by the kernel.
    let cfg = SensorConfig { ringbuf_bytes: 4096, ..Default::default() };
    let Some(mut h) = Harness::start_with(cfg, false).await else { return };
    const N: usize = 2000;
    let py = format!("import os\nfor i in range({N}):\n    try: os.open('/nonexistent/mcpmon-lost', os.O_RDONLY)\n    except OSError: pass\nimport sys; sys.stdin.read()\n");
    // python announces it is up and waits for a line on stdin: its start-up (loading libraries)
    // happens before it is tracked, so the only traced syscalls afterwards are the N opens.
    let mut child = std::process::Command::new(python())
        .args(["-c", &format!("import sys; print('ready', flush=True); sys.stdin.readline()\n{py}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    let pid = child.id();
    h.track(pid, "loss-test");
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    // Wait until all N opens are done: the process blocks reading stdin again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut lost_total: u64;
    let mut delivered = 0usize;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        delivered += h.drain_ring().iter().filter(|e| open_of(e, "/nonexistent/mcpmon-lost").is_some()).count();
        lost_total = monitor::probes::read_lost(&h.lost).iter().sum();
        if delivered as u64 + lost_total >= N as u64 || std::time::Instant::now() > deadline {
            break;
        }
    }
    drop(stdin);
    let _ = child.wait();
    assert!(lost_total > 0, "a one-page ring must overflow with {N} events");
    assert_eq!(delivered as u64 + lost_total, N as u64, "delivered {delivered} + lost {lost_total} != {N}");
}

/// `int $0x80` from a 64-bit process: the per-syscall tracepoints never see these calls; the
/// raw_syscalls hooks (or the `__ia32_*` fentry programs) must, with the same event.
#[tokio::test]
async fn ia32_syscalls_from_a_64_bit_process_are_seen() {
    let Some(mut h) = Harness::start().await else { return };
    let mut sh = Gated::spawn(&format!("exec {} loop int80-read 1 /etc/hostname", env!("CARGO_BIN_EXE_mcpmon-testkit")));
    let pid = sh.pid();
    h.track(pid, "ia32");
    sh.go();
    let e = h.expect("ia32 open of /etc/hostname", |e| open_of(e, "/etc/hostname").is_some()).await;
    let o = open_of(&e, "/etc/hostname").unwrap();
    assert_eq!(o.syscall, "open", "{o:?}");
    assert!(o.result.ok, "{o:?}");
    assert!(e.header.compat_syscall, "the event says it came through int $0x80");
    assert_eq!(e.header.pid, pid);
    // 64-bit opens of the same process are not marked.
    let libc = h.seen.iter().find(|e| matches!(&e.body, Body::Open(o) if o.path.contains("libc.so")));
    assert!(libc.is_some_and(|e| !e.header.compat_syscall), "{}", h.dump());
    sh.wait();
}
