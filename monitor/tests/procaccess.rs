//! Reaching into another process's memory with the shipped rules: a server run by an ordinary
//! user calls `process_vm_readv`, `process_vm_writev` or `ptrace` (from four threads at once) on
//! that user's own untracked process, which holds a secret in its heap. Each attempt must be
//! killed in the kernel with 0 bytes read and the victim's memory unchanged; the server's own
//! children stay its business, and a grant lifts the kill by the server's configured name.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::ExitStatusExt,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use common::user::{alert, start, User, TESTKIT};

const SECRET: &str = "VICTIM-TOKEN-7c1e";

/// The user's own process outside any server, with `SECRET` at a heap address it prints.
struct Victim {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: String,
    addr: String,
}

impl Victim {
    fn start(u: &User) -> Victim {
        let mut child = u
            .command()
            .args([TESTKIT, "loop", "hold-secret", "0", SECRET])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let (pid, addr) = line.trim().split_once(' ').expect("victim prints PID ADDR");
        Victim { pid: pid.into(), addr: addr.into(), child, stdin, stdout }
    }

    /// What the victim's buffer holds now (it answers one line per line asked).
    fn text(&mut self) -> String {
        // A ptrace attach queues SIGSTOP; the attacker died before it could detach.
        let _ = Command::new("kill").args(["-CONT", &self.pid]).status();
        writeln!(self.stdin, "?").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn other_processes_memory_is_out_of_reach() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("vmem", true);
    let d = start(tmp.path(), "grants:\n  vm-granted: [foreign-process-memory-access]");
    let mut v = Victim::start(&u);
    for attack in ["vm-read", "vm-write", "ptrace-peek"] {
        let out = u.exec(&d, attack, &[TESTKIT, "loop", attack, &v.pid, &v.addr]).stdin(Stdio::null()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.signal(), Some(9), "{attack}: killed: {out:?}");
        assert!(!stdout.contains(SECRET) && !stdout.contains(" got ") && !stdout.contains(" wrote "), "{attack}: not one byte: {stdout}");
        let a = alert(&d, attack, "foreign-process-memory-access");
        assert_eq!(a["action"]["result"], "killed_in_kernel", "{attack}: {a}");
        assert_eq!(a["event"]["target_pid"].to_string(), v.pid, "{a}");
        assert_eq!(v.text(), SECRET, "{attack}: the victim's memory is unchanged");
    }
    // Another process's open file, taken with pidfd_getfd: no open happens, so this is the one
    // hook that sees it. The victim holds the secret file open on fd 3.
    let secret = u.write("token.txt", &format!("{SECRET}\n"));
    let mut holder = u
        .command()
        .args(["/bin/sh", "-c"])
        .arg(format!("exec 3<{}; echo ready; exec sleep 60", secret.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    let arg = format!("{},3", holder.id());
    let out = u.exec(&d, "getfd", &[TESTKIT, "loop", "getfd-read", "1", &arg]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "killed: {out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET), "not one byte: {out:?}");
    let a = alert(&d, "getfd", "foreign-process-memory-access");
    assert_eq!((a["action"]["result"].as_str(), a["event"]["syscall"].as_str()), (Some("killed_in_kernel"), Some("pidfd_getfd")), "{a}");
    let _ = holder.kill();
    let _ = holder.wait();
    // A granted server: the same read works, and the alert says the grant let it through.
    let out = u.exec(&d, "vm-granted", &[TESTKIT, "loop", "vm-read", &v.pid, &v.addr]).stdin(Stdio::null()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("got {SECRET}")), "{out:?}");
    let a = alert(&d, "vm-granted", "foreign-process-memory-access");
    assert_eq!(a["action"]["result"], "allowed_by_grant", "{a}");
    // Its own child is its own business: no kill, no alert.
    let script = format!(
        "mkfifo in; {TESTKIT} loop hold-secret 0 own-secret <in >out & exec 3>in; \
         while ! [ -s out ]; do :; done; read pid addr <out; {TESTKIT} loop vm-read $pid $addr; \
         {TESTKIT} loop ptrace-peek $pid $addr; exec 3>&-; wait; echo rc=$?"
    );
    let out = u.run(&d, "vm-own", &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.matches("got own-secret").count() >= 5 && stdout.contains("rc=0"), "{out:?}");
    drop(v);
    let (_, recs) = d.stop_with_records();
    assert!(!recs.iter().any(|r| r["kind"] == "alert" && r["server"]["name"] == "vm-own"), "no alert for its own child");
}
