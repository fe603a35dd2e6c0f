//! Key agents: a server that reaches the user's ssh-agent (its client hands it SSH_AUTH_SOCK
//! with the rest of its environment) signs as the user with every key the agent holds, without
//! ever opening a key file. The real OpenSSH agent, started by an ordinary user after the
//! daemon (as a login starts it), where `eval $(ssh-agent)` puts it and where a systemd user
//! unit does (`/run/user/UID`, made at the login too); the attacks are OpenSSH's own tools and
//! a raw client of the agent protocol, by the socket's name and through a symlink. Each must
//! get nothing, and be killed in the kernel at its connect.
mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
};

use common::{
    daemon::Daemon,
    user::{alert, start, User},
};

/// A running `ssh-agent -D` of `u`, with the user's new key loaded by the user (untracked).
struct Agent {
    child: Child,
    sock: PathBuf,
}

impl Agent {
    /// `at`: the socket's path (`-a`), else where ssh-agent puts it (`/tmp/ssh-XXXX/agent.PID`).
    fn start(u: &User, at: Option<&Path>) -> Agent {
        // The key first: made later, it would re-plan (its directory is watched) after the
        // agent's socket appeared, where a login changes nothing the plan watched before.
        let key = u.home.join(".ssh/id_ed25519");
        if !key.exists() {
            let out = u.command().args(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "agent-test", "-f"]).arg(&key).output().unwrap();
            assert!(out.status.success(), "ssh-keygen: {out:?}");
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let mut c = u.command();
        c.args(["ssh-agent", "-D"]).env("HOME", &u.home).env_remove("TMPDIR").stdout(Stdio::piped()).stderr(Stdio::null());
        if let Some(p) = at {
            c.arg("-a").arg(p);
        }
        let mut child = c.spawn().unwrap();
        // "SSH_AUTH_SOCK=/tmp/ssh-XXXX/agent.123; export SSH_AUTH_SOCK;"
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let sock = line.strip_prefix("SSH_AUTH_SOCK=").and_then(|r| r.split(';').next()).unwrap_or_else(|| panic!("ssh-agent said {line:?}"));
        let sock = PathBuf::from(sock);
        let out = u.command().arg("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &sock).env("HOME", &u.home).output().unwrap();
        assert!(out.status.success(), "ssh-add: {out:?}");
        Agent { child, sock }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // SIGKILL leaves the agent's own directory (`/tmp/ssh-XXXX`) behind, owned by a test user
        // that is deleted next: a CI machine would gather them.
        if let Some(dir) = self.sock.parent().filter(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ssh-"))) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What a tracked server gets from the agent: its keys listed, a file signed, and the raw
/// protocol's identities answer (SSH2_AGENTC_REQUEST_IDENTITIES), the last through `via`.
fn attack(u: &User, d: &Daemon, name: &str, sock: &Path, via: &Path) -> (String, std::process::ExitStatus) {
    let py = common::python();
    let raw = format!(
        "{py} -c \"import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(bytes([0,0,0,1,11])); print('RAW', s.recv(4096).hex())\" {}",
        via.display()
    );
    let script = format!("ssh-add -L; echo data > $HOME/msg; ssh-keygen -Y sign -n file -f $HOME/.ssh/id_ed25519.pub $HOME/msg && cat $HOME/msg.sig; {raw}");
    let out = u.exec(d, name, &["/bin/sh", "-c", &script]).env("SSH_AUTH_SOCK", sock).stdin(Stdio::null()).stderr(Stdio::null()).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status)
}

/// What the agent gave away, if anything: a key listed, a signature, a raw answer with keys.
fn leaked(stdout: &str) -> bool {
    stdout.contains("ssh-ed25519") || stdout.contains("BEGIN SSH SIGNATURE") || stdout.lines().any(|l| l.starts_with("RAW ") && l.len() > 20)
}

/// The script's last client died of SIGKILL (the shell reports it as 128 + 9).
fn killed(status: std::process::ExitStatus) -> bool {
    std::os::unix::process::ExitStatusExt::signal(&status) == Some(9) || status.code() == Some(137)
}

#[test]
fn key_agents_started_after_the_daemon_sign_nothing_for_a_server() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "grants:\n  agent-granted: [key-agent-connect]");
    let u = User::add("agent", true);
    // 1. Where `eval $(ssh-agent)` puts it: a new /tmp/ssh-XXXX, made after the daemon's plan.
    let a = Agent::start(&u, None);
    assert!(a.sock.to_string_lossy().starts_with("/tmp/ssh-"), "{}", a.sock.display());
    // The link outside the home: made in it, it would re-plan the home's watch.
    let links = tempfile::tempdir().unwrap();
    std::fs::set_permissions(links.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let link = links.path().join("agent-link");
    std::os::unix::fs::symlink(&a.sock, &link).unwrap();
    for (name, via) in [("agent-tmp", &a.sock), ("agent-link", &link)] {
        let (stdout, status) = attack(&u, &d, name, &a.sock, via);
        assert!(!leaked(&stdout), "{name}: the agent answered a server: {stdout}");
        assert!(killed(status), "{name}: killed at the connect: {status:?} {stdout}");
        let al = alert(&d, name, "key-agent-connect");
        assert_eq!(al["action"]["result"], "killed_in_kernel", "{al}");
    }
    // The user's own, untracked, use of the agent is untouched; a granted server may use it.
    let own = u.command().args(["ssh-add", "-L"]).env("SSH_AUTH_SOCK", &a.sock).output().unwrap();
    assert!(String::from_utf8_lossy(&own.stdout).contains("ssh-ed25519"), "untracked: {own:?}");
    let (stdout, _) = attack(&u, &d, "agent-granted", &a.sock, &a.sock);
    assert!(stdout.contains("BEGIN SSH SIGNATURE"), "granted: {stdout}");
    drop(a);

    // 2. Where a systemd user unit puts it: /run/user/UID, made by the login (here, now).
    let run_user = Path::new("/run/user");
    let made_run_user = !run_user.exists();
    let dir = run_user.join(u.uid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    u.chown(&dir);
    let a = Agent::start(&u, Some(&dir.join("openssh_agent")));
    let (stdout, status) = attack(&u, &d, "agent-run", &a.sock, &a.sock);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
    if made_run_user {
        let _ = std::fs::remove_dir(run_user);
    }
    assert!(!leaked(&stdout), "agent-run: the agent answered a server: {stdout}");
    assert!(killed(status), "agent-run: {status:?} {stdout}");
    let al = alert(&d, "agent-run", "key-agent-connect");
    assert_eq!(al["action"]["result"], "killed_in_kernel", "{al}");
    d.stop();
}

/// A server already running waits for the user's agent: it connects the moment the socket
/// appears, through a link of its own (so the connect's path names no agent), before any plan
/// could know the socket, and holds the connection until keys are loaded. It must get nothing:
/// killed in the kernel at that connect, by the name the agent bound its socket to.
#[test]
fn a_server_waiting_for_the_agent_to_appear_gets_nothing() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "");
    let u = User::add("agentwait", true);
    let made_run_user = !Path::new("/run/user").exists();
    let dir = Path::new("/run/user").join(u.uid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    u.chown(&dir);
    let sock = dir.join("openssh_agent");
    let links = tempfile::tempdir().unwrap();
    std::fs::set_permissions(links.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let link = links.path().join("a");
    std::os::unix::fs::symlink(&sock, &link).unwrap();
    let go = links.path().join("go");
    let py = common::python();
    let script = "import socket,os,sys,time\n\
                  link,go=sys.argv[1],sys.argv[2]\n\
                  s=None\n\
                  while s is None:\n\
                  \x20 try:\n\
                  \x20   c=socket.socket(socket.AF_UNIX); c.connect(link); s=c\n\
                  \x20 except OSError: time.sleep(0.0005)\n\
                  print('CONNECTED',flush=True)\n\
                  while not os.path.exists(go): time.sleep(0.01)\n\
                  s.sendall(bytes([0,0,0,1,11])); print('RAW',s.recv(4096).hex(),flush=True)\n";
    let waiter = u.exec(&d, "agent-waiter", &[py, "-c", script, link.to_str().unwrap(), go.to_str().unwrap()]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    d.expect("the waiter tracked", |v| v["kind"] == "server_tracked" && v["server"] == "agent-waiter");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let a = Agent::start(&u, Some(&sock));
    std::fs::write(&go, "").unwrap();
    let out = waiter.wait_with_output().unwrap();
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
    if made_run_user {
        let _ = std::fs::remove_dir("/run/user");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!leaked(&stdout), "the agent answered a waiting server: {stdout}");
    assert!(killed(out.status), "killed at its connect: {:?} {stdout}", out.status);
    let al = alert(&d, "agent-waiter", "key-agent-connect");
    assert_eq!(al["action"]["result"], "killed_in_kernel", "{al}");
    d.stop();
}
