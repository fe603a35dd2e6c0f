//! Secrets stay put with the shipped rules, tried the way an outsider would: ordinary users
//! whose homes appear after the daemon started (a real `useradd`), keys created, copied, linked
//! or renamed later and opened at once, io_uring, a multi-threaded attacker, and credentials
//! that only a granted server may read. Every attempt must read 0 bytes, and each refusal must
//! come with an alert that names the rule.
mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::{fs::{MetadataExt, PermissionsExt}, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use common::{
    daemon::Daemon,
    user::{alert, shipped_rules, start, start_without_gate, Reader, User, MCPMON, TESTKIT},
};
use serde_json::Value;

const SECRET: &str = "SECRET-KEY-MATERIAL-5f3a";

/// 0 bytes reached the process's output, the open was refused before an fd existed, and (kill
/// rules) the reader died of SIGKILL.
fn assert_refused(d: &Daemon, server: &str, rule: &str, out: &Output, killed: bool) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(SECRET), "{server}: the secret was read: {stdout}");
    let a = alert(d, server, rule);
    d.assert_refused_before_fd(&a, killed, server);
    if killed {
        let pid = a["process"]["pid"].as_u64().unwrap();
        d.expect(&format!("{server}: pid {pid} died of SIGKILL"), |v| v["kind"] == "exit" && v["pid"] == pid && v["signal"] == 9);
    }
    a
}

#[test]
fn a_home_created_after_start_is_protected_at_once() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "");
    // The user and the home appear after the daemon is ready; nothing is reloaded by hand.
    let u = User::add("late", false);
    u.make_home();
    let key = u.write(".ssh/id_ed25519", &format!("{SECRET}\n"));
    let k = key.display().to_string();
    let py = common::python();
    let cases: Vec<(&str, String)> = vec![
        ("late-direct", format!("cat {k}")),
        ("late-symlink", format!("ln -s {k} $HOME/sym && cat $HOME/sym")),
        ("late-dotdot", format!("cd $HOME/.ssh && cat ../.ssh/./id_ed25519")),
        ("late-procfd", format!("{py} -c \"import os,sys; fd=os.open('{k}', os.O_PATH); sys.stdout.write(open('/proc/self/fd/%d' % fd).read())\"")),
        ("late-setsid", format!("setsid sh -c 'cat {k} > $HOME/stolen' ; sleep 0.5; cat $HOME/stolen")),
    ];
    for (name, script) in &cases {
        let out = u.run(&d, name, script);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains(SECRET), "{name}: {stdout}");
        let a = alert(&d, name, "ssh-private-key-read");
        d.assert_refused_before_fd(&a, true, name);
        assert_eq!(a["process"]["uid"], u.uid, "{a}");
    }
    let stolen = std::fs::read_to_string(u.home.join("stolen")).unwrap_or_default();
    assert!(!stolen.contains(SECRET));
    // The user's own, untracked, reads are untouched.
    let own = u.command().arg("cat").arg(&key).output().unwrap();
    assert!(String::from_utf8_lossy(&own.stdout).contains(SECRET), "untracked reads work: {own:?}");
    d.stop();
}

/// Keys made in ~/.ssh by each of the ways a user makes one (written, copied, hard-linked from
/// elsewhere, renamed over an old file), each opened at once by a tracked reader that was
/// already running: how many were read, and how many readers died of SIGKILL.
fn key_trials(u: &User, d: &Daemon, trials: usize) -> (usize, usize) {
    let stash = u.home.join("stash");
    std::fs::create_dir_all(&stash).unwrap();
    let (mut killed, mut leaked) = (0, 0);
    for i in 0..trials {
        let r = Reader::start(u, d, "race");
        // The key appears in ~/.ssh by one of the ways a user makes one, then is opened at once.
        let target = u.home.join(format!(".ssh/id_trial{i}"));
        let src = stash.join(format!("k{i}"));
        match i % 4 {
            0 => std::fs::write(&target, format!("{SECRET}\n")).unwrap(),
            1 => {
                std::fs::write(&src, format!("{SECRET}\n")).unwrap();
                std::fs::copy(&src, &target).unwrap();
                std::fs::remove_file(&src).unwrap();
            }
            2 => {
                std::fs::write(&src, format!("{SECRET}\n")).unwrap();
                std::fs::hard_link(&src, &target).unwrap();
            }
            _ => {
                std::fs::write(&target, "old\n").unwrap();
                std::fs::write(&src, format!("{SECRET}\n")).unwrap();
                std::fs::rename(&src, &target).unwrap();
            }
        }
        let (got, status) = r.open(&target);
        if got.contains(SECRET) {
            leaked += 1;
        }
        if status.signal() == Some(9) {
            killed += 1;
        }
    }
    (leaked, killed)
}

/// Without the gate, a harmless file a plan has seen in ~/.ssh is `KNOWN` by its inode. ext4
/// gives a freed inode number to the next file made in the same directory: a key written just
/// after `known_hosts` was rewritten (its old inode freed) could carry the old file's number,
/// and pass as known until the next plan. Each trial deletes a seen file, writes a key, and has
/// a tracked reader open it at once. Returns the trials in which the key took the deleted
/// file's inode number, how many keys were read, and how many readers died of SIGKILL.
fn reused_inode_trials(u: &User, d: &Daemon, trials: usize) -> (usize, usize, usize) {
    let seen: Vec<PathBuf> = (0..trials).map(|i| u.write(&format!(".ssh/known_hosts.old{i}"), "example.org ssh-ed25519 AAAA\n")).collect();
    std::thread::sleep(policy_rescan() * 2);
    let (mut reused, mut leaked, mut killed) = (0, 0, 0);
    for (i, old) in seen.iter().enumerate() {
        let r = Reader::start(u, d, "reuse");
        let ino = std::fs::metadata(old).unwrap().ino();
        std::fs::remove_file(old).unwrap();
        let key = u.home.join(format!(".ssh/id_reuse{i}"));
        std::fs::write(&key, format!("{SECRET}\n")).unwrap();
        if std::fs::metadata(&key).unwrap().ino() == ino {
            reused += 1;
        }
        let (got, status) = r.open(&key);
        if got.contains(SECRET) {
            leaked += 1;
        }
        if status.signal() == Some(9) {
            killed += 1;
        }
    }
    (reused, leaked, killed)
}

/// `assert_refused` for `ssh-private-key-read`, with the gate or without it. Without it the
/// kill comes at the open's exit, after the fd (the gate's and the fast path's refusals come
/// before it): 0 bytes read, the alert, and the reader dead of SIGKILL.
fn refused_as(d: &Daemon, server: &str, out: &Output, gate: bool) {
    if gate {
        assert_refused(d, server, "ssh-private-key-read", out, true);
        return;
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET), "{server}: the secret was read: {out:?}");
    let a = alert(d, server, "ssh-private-key-read");
    assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    let pid = a["process"]["pid"].as_u64().unwrap();
    d.expect(&format!("{server}: pid {pid} died of SIGKILL"), |v| v["kind"] == "exit" && v["pid"] == pid && v["signal"] == 9);
}

/// Renames: a key stays protected by inode whatever its name, inside or outside ~/.ssh, and
/// so do the files of a renamed ~/.ssh, old and new.
fn renamed_keys_stay_protected(u: &User, d: &Daemon, gate: bool) {
    let refused = |server: &str, out: &Output| refused_as(d, server, out, gate);
    let key = u.write(".ssh/id_ed25519", &format!("{SECRET}\n"));
    d.expect("the key is protected", |v| v["kind"] == "protected_changed" && v["added"].as_array().is_some_and(|a| a.iter().any(|p| p == key.to_str().unwrap())));
    let pubname = u.home.join(".ssh/id_ed25519.pub");
    std::fs::rename(&key, &pubname).unwrap();
    // Past the periodic rescan: the name no longer matches any rule.
    std::thread::sleep(policy_rescan() * 2);
    let out = u.run(d, "renamed-pub", &format!("cat {}", pubname.display()));
    refused("renamed-pub", &out);
    let moved = PathBuf::from(format!("/tmp/moved-key-{}", std::process::id()));
    std::fs::rename(&pubname, &moved).unwrap();
    let out = u.run(d, "renamed-tmp", &format!("cat {}", moved.display()));
    refused("renamed-tmp", &out);
    std::fs::rename(&moved, &key).unwrap();
    // The whole ~/.ssh renamed: its files, and files created in it afterwards.
    let old = u.home.join(".ssh-old");
    std::fs::rename(u.home.join(".ssh"), &old).unwrap();
    let out = u.run(d, "renamed-dir", &format!("cat {}/id_ed25519", old.display()));
    refused("renamed-dir", &out);
    std::fs::write(old.join("id_after_rename"), format!("{SECRET}\n")).unwrap();
    let out = u.run(d, "renamed-dir-new", &format!("cat {}/id_after_rename", old.display()));
    refused("renamed-dir-new", &out);
    // A brand-new private key given a public name before any scan: judged by its content.
    std::fs::write(old.join("fresh.pub"), format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n")).unwrap();
    let out = u.run(d, "fresh-pub", &format!("cat {}/fresh.pub", old.display()));
    refused("fresh-pub", &out);
    let _ = std::fs::remove_file(&moved);
    // Real public keys stay readable: without the gate, once a re-plan has seen the new one.
    std::fs::write(old.join("real.pub"), "ssh-ed25519 AAAAC3Nza public\n").unwrap();
    if !gate {
        std::thread::sleep(policy_rescan() * 2);
    }
    let out = u.run(d, "real-pub", &format!("cat {}/real.pub", old.display()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("public"), "{out:?}");
}

#[test]
fn new_copied_linked_and_renamed_keys_are_protected_from_their_first_open() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("race", true);
    let d = start(tmp.path(), "");
    let trials = 200;
    let (leaked, killed) = key_trials(&u, &d, trials);
    assert_eq!((leaked, killed), (0, trials), "{trials} trials: leaked {leaked}, killed {killed}");

    renamed_keys_stay_protected(&u, &d, true);
    d.stop();
}

fn policy_rescan() -> Duration {
    monitor::daemon::policy::RESCAN
}

/// Without the open gate (fanotify_init refused) nothing checks a ring's opens, and a server
/// granted io_uring read the key through its ring. The grant is withheld there: the ring dies
/// at setup, as without a grant.
#[test]
fn without_the_open_gate_an_io_uring_grant_is_withheld() {
    if !common::can_load_ebpf() || !cfg!(target_arch = "x86_64") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("nogate", true);
    let d = start_without_gate(tmp.path(), "grants:\n  uring-inline: [io-uring-by-server]");
    let key = u.write(".ssh/id_rsa", &format!("{SECRET}\n"));
    let out = u.exec(&d, "uring-inline", &[TESTKIT, "loop", "uring-read-inline", "1", key.to_str().unwrap()]).stdin(Stdio::null()).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET), "the key was read through the ring: {out:?}");
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    let a = alert(&d, "uring-inline", "io-uring-by-server");
    assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    d.expect_log("io_uring grant withheld", Duration::from_secs(5));
    d.stop();
}

/// Without the open gate the kernel's map is all there is, and a key made since the last plan
/// has no inode in it: 157 of 200 such keys were read. A read of a file in a secret directory
/// (`~/.ssh`) that no plan has seen is refused there until one has. What a plan has seen and no
/// rule protects stays readable.
#[test]
fn without_the_open_gate_new_keys_are_protected_from_their_first_open() {
    if !common::can_load_ebpf() || !cfg!(target_arch = "x86_64") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("nogatekey", true);
    let known = u.write(".ssh/known_hosts", "example.org ssh-ed25519 AAAAC3Nza known\n");
    let public = u.write(".ssh/id_old.pub", "ssh-ed25519 AAAAC3Nza public\n");
    let d = start_without_gate(tmp.path(), "");
    let trials = 40;
    let (leaked, killed) = key_trials(&u, &d, trials);
    assert_eq!((leaked, killed), (0, trials), "{trials} trials: leaked {leaked}, killed {killed}");
    let a = alert(&d, "race", "ssh-private-key-read");
    assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    // A file made after the start is readable once a plan has seen it (the watch re-plans).
    let config = u.write(".ssh/config", "Host example\n");
    std::thread::sleep(policy_rescan() * 2);
    for (name, f, want) in [("known-hosts", &known, "known"), ("old-pub", &public, "public"), ("new-config", &config, "Host")] {
        let out = u.run(&d, name, &format!("cat {}", f.display()));
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(want), "{name}: {out:?}");
    }
    // Without the gate's holds, a re-plan after a rename let the key go: a key renamed to
    // `.pub` was read. The daemon now holds them as the gate does (`keep.rs`).
    renamed_keys_stay_protected(&u, &d, false);
    // A seen file deleted and its number given to a new key: on the previous binary all 10
    // keys took the deleted file's inode number, and all 10 were read as known.
    let (reused, leaked, killed) = reused_inode_trials(&u, &d, 10);
    assert_eq!((leaked, killed), (0, 10), "10 trials, {reused} on a reused inode number: leaked {leaked}, killed {killed}");
    d.stop();
}

#[test]
fn io_uring_and_threads_read_nothing() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("uring", true);
    // Servers granted io_uring: their ring's opens must meet the open gate like any other.
    // uring-borrowed may take fds (pidfd_getfd), so the test reaches its io_uring_enter.
    let d = start(tmp.path(), "grants:\n  uring-inline: [io-uring-by-server]\n  uring-async: [io-uring-by-server]\n  uring-openat2: [io-uring-by-server]\n  uring-borrowed: [foreign-process-memory-access]");
    let key = u.write(".ssh/id_rsa", &format!("{SECRET}\n"));
    let k = key.to_str().unwrap();
    // Without a grant the shipped rules kill at setup, before anything is submitted.
    let out = u.exec(&d, "uring-nogrant", &[TESTKIT, "loop", "uring-read-inline", "1", k]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("uring open"), "{out:?}");
    let a = alert(&d, "uring-nogrant", "io-uring-by-server");
    assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    for mode in ["inline", "async", "openat2"] {
        let name = format!("uring-{mode}");
        let kind = format!("uring-read-{mode}");
        let out = u.exec(&d, &name, &[TESTKIT, "loop", &kind, "1", k]).stdin(Stdio::null()).output().unwrap();
        assert_refused(&d, &name, "ssh-private-key-read", &out, true);
        let a = alert(&d, &name, "io-uring-by-server");
        assert_eq!(a["action"]["result"], "allowed_by_grant", "the grant turns the kill into an alert: {a}");
    }
    // A ring set up by the user's own untracked process and taken with pidfd_getfd (a unix
    // socket will not carry an io_uring fd): its reads would pass no syscall hook, so the first
    // io_uring_enter of a server without a grant is killed.
    let visible = u.write("notes.txt", "SEEN-ONLY-THROUGH-URING\n");
    let params = u.home.join("ring.params");
    let mut lender = u
        .command()
        .args([TESTKIT, "loop", "uring-lend", "1", params.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(lender.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(f.len() >= 3 && f[0] == "lending", "{line}");
    let arg = format!("{},{},{},{}", f[1], f[2], params.display(), visible.display());
    let out = u.exec(&d, "uring-borrowed", &[TESTKIT, "loop", "uring-borrow-read", "1", &arg]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "killed at io_uring_enter: {out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SEEN-ONLY"), "{out:?}");
    let a = alert(&d, "uring-borrowed", "io-uring-by-server");
    assert_eq!((a["action"]["result"].as_str(), a["event"]["op"].as_str()), (Some("killed_in_kernel"), Some("enter")), "{a}");
    let _ = lender.kill();
    let _ = lender.wait();
    // Thread A opens, threads B and C race to sendfile/copy_file_range whatever fd appears.
    let out = u.exec(&d, "threads", &[TESTKIT, "loop", "race-read", "2000", k]).stdin(Stdio::null()).output().unwrap();
    assert_refused(&d, "threads", "ssh-private-key-read", &out, true);
    d.stop();
}

#[test]
fn credentials_are_denied_unless_granted() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("creds", true);
    let files = [
        (".aws/credentials", "cloud-credentials-read"),
        (".kube/config", "kube-docker-credentials-read"),
        (".npmrc", "registry-token-read"),
        (".config/gh/hosts.yml", "registry-token-read"),
        (".bash_history", "shell-history-read"),
        (".config/Claude/claude_desktop_config.json", "mcp-client-config-read"),
        (".password-store/site.gpg", "password-store-read"),
    ];
    for (f, _) in &files {
        u.write(f, &format!("{SECRET}\n"));
    }
    let d = start(tmp.path(), "grants:\n  aws: [cloud-credentials-read]");
    for (i, (f, rule)) in files.iter().enumerate() {
        let name = format!("nogrant{i}");
        let out = u.run(&d, &name, &format!("cat $HOME/{f}; echo rc=$?"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("rc=1"), "{f}: the server lives and sees an error: {out:?}");
        assert_refused(&d, &name, rule, &out, false);
    }
    // The grant opens its one class, for the server of that configured name only.
    let out = u.run(&d, "aws", "cat $HOME/.aws/credentials");
    assert!(String::from_utf8_lossy(&out.stdout).contains(SECRET), "granted: {out:?}");
    let out = u.run(&d, "aws", "cat $HOME/.npmrc; echo rc=$?");
    assert_refused(&d, "aws", "registry-token-read", &out, false);
    d.stop();
}

/// The reference filesystem server, rooted at an ordinary user's home and run as that user,
/// driven by the official client SDK: every credential class is refused (0 bytes, an error to
/// the client, an alert naming tool, id and arguments); a grant opens one class only.
#[test]
fn a_real_filesystem_server_reads_no_credentials_unless_granted() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("fsrv", true);
    let files = [
        (".aws/credentials", "cloud-credentials-read"),
        (".kube/config", "kube-docker-credentials-read"),
        (".git-credentials", "registry-token-read"),
        (".password-store/bank.gpg", "password-store-read"),
        (".zsh_history", "shell-history-read"),
        (".config/Claude/claude_desktop_config.json", "mcp-client-config-read"),
        (".ssh/id_ed25519", "ssh-private-key-read"),
    ];
    for (f, _) in &files {
        u.write(f, &format!("{SECRET}\n"));
    }
    u.write("notes.txt", "hello\n");
    let d = start(tmp.path(), "grants:\n  granted-fs: [cloud-credentials-read]");
    let fs_server = peers.join("node_modules/.bin/mcp-server-filesystem");
    let home = u.home.display().to_string();
    let server = |name: &str| -> Vec<String> {
        let mut c = vec!["setpriv".to_string(), "--reuid".into(), u.uid.to_string(), "--regid".into(), u.gid.to_string(), "--clear-groups".into()];
        c.extend([MCPMON, "exec", "--require-monitor", "--name", name, "--socket", d.socket.to_str().unwrap(), "--", "node", fs_server.to_str().unwrap(), &home].map(String::from));
        c
    };
    // No grant: one server per class (an SSH key read kills the server, ending its session).
    for (f, rule) in &files {
        let path = u.home.join(f).display().to_string();
        let calls = serde_json::json!([{"tool": ["read_text_file", "read_file"], "arguments": {"path": path}}]);
        let name = format!("fs-{}", rule);
        let cmd = server(&name);
        let client = common::mcp_client(&peers, calls, None, &cmd.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!client.to_string().contains(SECRET), "{f} reached the client: {client}");
        let call = &client["calls"][0];
        assert!(call["is_error"] == true || call["failed"].is_string(), "{f}: the client gets an error: {call}");
        let a = alert(&d, &name, rule);
        assert_eq!(a["mcp"]["state"], "call", "{a}");
        assert_eq!(a["mcp"]["tool"], call["tool"], "{a}");
        assert_eq!(a["mcp"]["id"], call["id"].to_string(), "{a}");
        assert_eq!(a["mcp"]["arguments"]["path"], path.as_str(), "{a}");
        assert!(a["action"]["result"].as_str().unwrap().starts_with("denied"), "{a}");
    }
    // A grant for one class, by the configured name: that read works, the others stay denied.
    let calls: Vec<Value> = files.iter().filter(|(_, r)| *r != "ssh-private-key-read").map(|(f, _)| serde_json::json!({"tool": ["read_text_file", "read_file"], "arguments": {"path": u.home.join(f).display().to_string()}})).collect();
    let cmd = server("granted-fs");
    let client = common::mcp_client(&peers, Value::Array(calls), None, &cmd.iter().map(String::as_str).collect::<Vec<_>>());
    let got: Vec<bool> = client["calls"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap_or("").contains(SECRET)).collect();
    assert_eq!(got, vec![true, false, false, false, false, false], "only the granted class is readable: {client}");
    d.stop();
}

/// Another process's environment and memory through /proc: killed in the kernel at the open
/// when the process is outside the server's tree, whatever path reaches it; the server's own
/// processes stay readable.
#[test]
fn other_processes_environ_and_memory_are_out_of_reach() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("procs", true);
    let d = start(tmp.path(), "");
    // The user's own shell-like process, untracked, with a token in its environment.
    let mut victim = u
        .command()
        .args(["sleep", "60"])
        .env("API_TOKEN", SECRET)
        .spawn()
        .unwrap();
    let pid = victim.id();
    let cases = [
        ("proc-environ", format!("cat /proc/{pid}/environ")),
        ("proc-task-environ", format!("cat /proc/{pid}/task/{pid}/environ")),
        ("proc-relative", format!("cd /proc/{pid} && cat ./environ")),
        ("proc-maps", format!("cat /proc/{pid}/maps")),
    ];
    for (name, script) in &cases {
        let out = u.run(&d, name, script);
        assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET), "{name}: {out:?}");
        assert!(out.stdout.is_empty(), "{name}: not one byte: {out:?}");
        let a = alert(&d, name, "foreign-process-secrets-read");
        assert_eq!(a["action"]["result"], "killed_in_kernel", "{name}: {a}");
    }
    // Its own processes are its own business.
    // Wait for the child's exec: until then its environ is still the shell's.
    let out = u.run(&d, "proc-own", "API_TOKEN=own-token sleep 5 & p=$!; while [ \"$(cat /proc/$p/comm)\" != sleep ]; do :; done; cat /proc/$p/environ; cat /proc/self/environ >/dev/null; echo rc=$?");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("own-token") && stdout.contains("rc=0"), "{out:?}");
    let _ = victim.kill();
    let _ = victim.wait();
    let (_, recs) = d.stop_with_records();
    assert!(!recs.iter().any(|v| v["kind"] == "alert" && v["server"]["name"] == "proc-own"), "no alert for its own processes");
}

/// Grants learned into a profile: while learning, what the kernel refused a server is recorded
/// as a grant it would need; a reviewed profile then grants exactly that, by the server's name.
#[test]
fn grants_are_learned_into_profiles() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("learn", true);
    u.write(".aws/credentials", &format!("{SECRET}\n"));
    u.write(".npmrc", &format!("{SECRET}\n"));
    let rules = shipped_rules(tmp.path(), "");
    let profiles = tmp.path().join("profiles");
    let p = profiles.to_str().unwrap();
    let d = Daemon::start_cmd("profile", "learn", &["--rules", rules.to_str().unwrap(), "--profiles", p]);
    std::fs::set_permissions(d.socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = u.run(&d, "cloudy", "cat $HOME/.aws/credentials; echo rc=$?");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET), "refused while learning too: {out:?}");
    d.expect("server gone", |v| v["kind"] == "server_gone" && v["server"] == "cloudy");
    d.stop();
    let text = std::fs::read_to_string(profiles.join("cloudy.yaml")).unwrap();
    assert!(text.contains("grants:") && text.contains("cloud-credentials-read"), "{text}");
    // Enforced: the reviewed profile grants that class to "cloudy", and nothing else.
    let d = Daemon::start(&["--rules", rules.to_str().unwrap(), "--profiles", p]);
    std::fs::set_permissions(d.socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = u.run(&d, "cloudy", "cat $HOME/.aws/credentials; cat $HOME/.npmrc; echo rc=$?");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches(SECRET).count(), 1, "the granted class only: {out:?}");
    let a = alert(&d, "cloudy", "registry-token-read");
    assert_eq!(a["action"]["result"], "denied_in_kernel", "{a}");
    let out = u.run(&d, "other", "cat $HOME/.aws/credentials; echo rc=$?");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET), "another server's profile grants nothing: {out:?}");
    d.stop();
}

/// `npx -y PKG` as a client's config starts it: npm, the server's root process, reads
/// `~/.npmrc` for the registry login at every launch, before the package runs. It may (no
/// refusal, no alert); the package it starts, a child, may not, and neither may a root that
/// is not a runner by its exec's argv, even one that retitles itself as npx. Real npm, the
/// reference filesystem server from the local project (`--offline`: no registry), the official
/// client SDK, an ordinary user whose home appears after the daemon started.
#[test]
fn a_runner_reads_its_registry_login_and_the_server_it_starts_may_not() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "");
    let u = User::add("npxr", false);
    u.make_home();
    let npmrc = u.write(".npmrc", &format!("//registry.npmjs.org/:_authToken={SECRET}\n"));
    let home = u.home.display().to_string();
    let path = npmrc.display().to_string();
    // The SDK passes a trimmed environment (root's HOME): the user's comes with `env`.
    let server = |name: &str, argv: &[&str]| -> Vec<String> {
        let mut c: Vec<String> = ["env", "-C", peers.to_str().unwrap(), &format!("HOME={home}"), "setpriv", "--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string(), "--clear-groups"].map(String::from).to_vec();
        c.extend([MCPMON, "exec", "--require-monitor", "--name", name, "--socket", d.socket.to_str().unwrap(), "--"].map(String::from));
        c.extend(argv.iter().map(|s| s.to_string()));
        c
    };
    let calls = serde_json::json!([{"tool": ["read_text_file", "read_file"], "arguments": {"path": path}}]);
    let cmd = server("npx-fs", &["npx", "-y", "--offline", "@modelcontextprotocol/server-filesystem", &home]);
    let client = common::mcp_client(&peers, calls, None, &cmd.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!client.to_string().contains(SECRET), "the login reached the client: {client}");
    let call = &client["calls"][0];
    assert!(call["is_error"] == true || call["failed"].is_string(), "the server's read is refused: {call}");
    let a = alert(&d, "npx-fs", "registry-token-read");
    assert!(a["action"]["result"].as_str().unwrap().starts_with("denied"), "{a}");
    assert_eq!(a["mcp"]["tool"], call["tool"], "the server's own read, in its call: {a}");
    let tracked = d.expect("npx-fs tracked", |v| v["kind"] == "server_tracked" && v["server"] == "npx-fs");
    let root = tracked["root_pid"].as_u64().unwrap();
    assert_ne!(a["process"]["pid"], root, "the server is npm's child: {a}");

    // A root that is not a runner: node itself, retitled as npx before it reads.
    let script = format!("process.title = 'npx -y @modelcontextprotocol/server-filesystem'; try {{ process.stdout.write(require('fs').readFileSync('{path}', 'utf8')) }} catch (e) {{ console.log(e.code) }}");
    let out = u.exec(&d, "not-a-runner", &["node", "-e", &script]).env("HOME", &home).stdin(Stdio::null()).output().unwrap();
    assert_refused(&d, "not-a-runner", "registry-token-read", &out, false);

    let (_, records) = d.stop_with_records();
    let root_reads: Vec<&Value> = records.iter().filter(|r| r["kind"] == "open" && r["path"] == path.as_str() && r["pid"] == root).collect();
    assert!(!root_reads.is_empty(), "npm read its login as the server's root: {:?}", records.iter().filter(|r| r["path"] == path.as_str()).collect::<Vec<_>>());
    for r in &root_reads {
        assert_eq!(r["result"]["ok"], true, "npm's read was not refused: {r}");
    }
    let root_alerts: Vec<&Value> = records.iter().filter(|r| r["kind"] == "alert" && r["server"]["name"] == "npx-fs" && r["process"]["pid"] == root).collect();
    assert!(root_alerts.is_empty(), "no alert on npm's own read: {root_alerts:?}");
}

/// A runner is often quicker than the daemon: uv reads `~/.netrc` within milliseconds of its
/// exec, before the daemon may have judged that exec a runner's launch. The read waits for the
/// judgement instead of being refused (it was refused in 3 launches of 20 on an idle machine,
/// and in 17 of 20 under three floods). The runner here is a shell script named `uvx` (a
/// runner's launch by its argv) that reads the login with the shell's own `read`, at once,
/// in the root process; after it, a root that execs a shell of its own is refused as before.
#[test]
fn a_runner_quicker_than_the_daemon_reads_its_login() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = start(tmp.path(), "");
    let u = User::add("quickr", false);
    u.make_home();
    u.write(".netrc", &format!("machine 127.0.0.1 login tok password {SECRET}\n"));
    let script = |name: &str, body: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let f = dir.join("uvx");
        std::fs::write(&f, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        f
    };
    let quick = script("quick", r#"if read -r l < "$HOME/.netrc"; then echo "READ ${#l}"; else echo REFUSED; fi"#);
    let launches = 30;
    let mut refused = Vec::new();
    for i in 0..launches {
        let name = format!("quick-{i}");
        let out = u.exec(&d, &name, &[quick.to_str().unwrap(), "some-package"]).stdin(Stdio::null()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.starts_with("READ") {
            refused.push(format!("{name}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(refused.is_empty(), "{} of {launches} runner launches were refused their login: {refused:?}", refused.len());
    // The judgement holds for the runner's exec only: a root that execs a shell of its own
    // (tainted, and no runner's launch) is refused, and the rule says so.
    let then = script("then-sh", r#"exec /bin/sh -c 'if read -r l < "$HOME/.netrc"; then echo "$l"; else echo REFUSED; fi'"#);
    let out = u.exec(&d, "then-sh", &[then.to_str().unwrap(), "some-package"]).stdin(Stdio::null()).output().unwrap();
    assert_refused(&d, "then-sh", "registry-token-read", &out, false);
    let (_, records) = d.stop_with_records();
    // The read's rule only: the script runs from a temp directory, and an exec whose process
    // is gone before the daemon reads /proc is named by the script itself, which
    // exec-from-temp-or-memory reports (in one CI run, for the first launch).
    let alerts: Vec<&Value> = records.iter().filter(|r| r["kind"] == "alert" && r["rule"]["id"] == "registry-token-read" && r["server"]["name"].as_str().is_some_and(|n| n.starts_with("quick-"))).collect();
    assert!(alerts.is_empty(), "no alert on a runner's own read: {alerts:?}");
}

/// uvx, as a client's config starts it with a private index (`uvx --index-url URL PKG`): uvx
/// execs `uv tool uvx` in the same process, and uv reads `~/.netrc` for the index's login
/// before it fetches. It may, and the server works, with no alert. uv here lives in a venv,
/// where the shipped `@runner_relays` does not look: the test adds it, as its owner would.
#[test]
fn a_uvx_runner_reads_its_netrc() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let Some(r) = common::runners() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rules = shipped_rules(tmp.path(), "");
    let lists = rules.join("lists.yaml");
    let text = std::fs::read_to_string(&lists).unwrap();
    let relay = format!("  runner_relays:\n    - {}\n", r.join("venv/bin/uvx").display());
    assert!(text.contains("  runner_relays:\n"), "the shipped list moved");
    std::fs::write(&lists, text.replace("  runner_relays:\n", &relay)).unwrap();
    let d = Daemon::start(&["--rules", rules.to_str().unwrap()]);
    std::fs::set_permissions(d.socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.expect("rules_loaded", |v| v["kind"] == "rules_loaded");
    // The index: the wheelhouse as a page of links, on loopback.
    let serve = "import functools, http.server, sys\nh = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\nh.log_message = lambda *a: None\ns = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)\nprint(s.server_address[1], flush=True)\ns.serve_forever()\n";
    let mut http = std::process::Command::new(common::python()).arg("-c").arg(serve).arg(r.join("wheelhouse")).stdout(Stdio::piped()).spawn().unwrap();
    let mut port = String::new();
    BufReader::new(http.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let url = format!("http://127.0.0.1:{}/", port.trim());
    let u = User::add("uvxr", false);
    u.make_home();
    let netrc = u.write(".netrc", &format!("machine 127.0.0.1 login tok password {SECRET}\n"));
    let home = u.home.display().to_string();
    let mut cmd: Vec<String> = vec!["env".into(), "-C".into(), home.clone(), format!("HOME={home}"), format!("UV_PYTHON={}", common::python()), format!("UV_CACHE_DIR={home}/.cache/uv")];
    cmd.push(format!("PATH={}:/usr/bin:/bin", r.join("venv/bin").display()));
    cmd.extend(["setpriv", "--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string(), "--clear-groups"].map(String::from));
    cmd.extend([MCPMON, "exec", "--require-monitor", "--name", "uvx-netrc", "--socket", d.socket.to_str().unwrap(), "--"].map(String::from));
    cmd.extend(["uvx", "--index-url", &url, "--find-links", &url, "mcp-server-time"].map(String::from));
    let calls = serde_json::json!([{"tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}]);
    // When the client fails (once in CI, under load: `Connection closed` at `initialize`), what
    // the daemon saw goes to the log: the reads of the login, the alerts and the execs.
    let client = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| common::mcp_client(&peers, calls, None, &cmd.iter().map(String::as_str).collect::<Vec<_>>())));
    let Ok(client) = client else {
        let (_, records) = d.stop_with_records();
        for r in records.iter().filter(|r| r.to_string().contains(".netrc") || r["kind"] == "alert" || r["kind"] == "exec") {
            eprintln!("daemon record: {r}");
        }
        panic!("the client failed (its error is above)");
    };
    let _ = http.kill();
    let _ = http.wait();
    assert_eq!(client["calls"][0]["is_error"], false, "the server works: {client}");
    let tracked = d.expect("uvx-netrc tracked", |v| v["kind"] == "server_tracked" && v["server"] == "uvx-netrc");
    let root = tracked["root_pid"].as_u64().unwrap();
    let path = netrc.display().to_string();
    let (_, records) = d.stop_with_records();
    let reads: Vec<&Value> = records.iter().filter(|r| r["kind"] == "open" && r["path"] == path.as_str()).collect();
    assert!(!reads.is_empty(), "uv read its login");
    for r in &reads {
        assert_eq!((r["pid"].as_u64(), &r["result"]["ok"]), (Some(root), &Value::Bool(true)), "uv, the server's root, read it: {r}");
    }
    let alerts: Vec<&Value> = records.iter().filter(|r| r["kind"] == "alert" && r["server"]["name"] == "uvx-netrc").collect();
    assert!(alerts.is_empty(), "no alert: {alerts:?}");
}

/// The package `npx` runs is npm's child, and npm, the server's root, holds the registry
/// login it was let read. The package reaches into npm for it: `/proc/NPM/maps` and `mem`,
/// searched for the token, and `process_vm_readv`. Both are killed at the first step, with an
/// alert, while npm is still the runner; 0 bytes of the token reach the output. Real npm runs
/// the thief as a local bin (`npx thief`), as an ordinary user made after the daemon started.
#[test]
fn the_package_cannot_reach_into_the_runner_for_its_login() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "");
    let u = User::add("npxm", false);
    u.make_home();
    // An npm access token's shape (`npm_` and 36), which the thief searches memory for.
    let token = "npm_SECRETKEYMATERIAL5f3a0123456789abcde";
    u.write(".npmrc", &format!("//registry.npmjs.org/:_authToken={token}\n"));
    let thief = u.write("proj/node_modules/.bin/thief", &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/runner_thief.py")).unwrap());
    std::fs::set_permissions(&thief, std::fs::Permissions::from_mode(0o755)).unwrap();
    u.write("proj/package.json", "{\"name\": \"proj\", \"version\": \"1.0.0\"}\n");
    for (mode, rule) in [("mem", "foreign-process-secrets-read"), ("vm", "foreign-process-memory-access")] {
        let name = format!("npx-thief-{mode}");
        let out = u.exec(&d, &name, &["npx", "--offline", "thief", mode]).current_dir(u.home.join("proj")).stdin(Stdio::null()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains(token) && !stdout.contains("LEAK"), "{name}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        let a = alert(&d, &name, rule);
        assert_eq!(a["action"]["result"], "killed_in_kernel", "{name}: {a}");
        let pid = a["process"]["pid"].as_u64().unwrap();
        d.expect(&format!("{name}: the thief (pid {pid}) died of SIGKILL"), |v| v["kind"] == "exit" && v["pid"] == pid && v["signal"] == 9);
    }
    d.stop();
}
