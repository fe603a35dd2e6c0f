//! `mcpmon top` in a real terminal (tmux): it shows the tracked server, its tool calls as they
//! happen with the syscalls under them, and the alerts.
mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::daemon::{exec_cmd, Daemon, MCPMON};
use serde_json::json;

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn top_shows_servers_calls_syscalls_and_alerts_in_a_terminal() {
    if !common::can_load_ebpf() {
        return;
    }
    if common::tool("/usr/bin/tmux").is_none() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home/t");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_ecdsa"), "KEY\n").unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("t:x:4444:4444::{}:/bin/sh\n", home.display())).unwrap();
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    let session = format!("mcpmon-top-{}", std::process::id());
    let cmd = format!("{MCPMON} top --socket {}", d.socket.display());
    tmux(&["new-session", "-d", "-s", &session, "-x", "220", "-y", "60", &cmd]);

    let server = peers.join("venv/bin/mcp-server-time");
    let socket = d.socket.to_str().unwrap().to_string();
    let run = [MCPMON, "exec", "--name", "clock", "--socket", &socket, "--", server.to_str().unwrap()];
    common::mcp_client(&peers, json!([{"tool": "get_current_time", "arguments": {"timezone": "Europe/Paris"}}]), None, &run);
    exec_cmd(&d.socket, "thief", &[], &["/bin/sh", "-c", &format!("cat {}/.ssh/id_ecdsa", home.display())]).stdout(Stdio::null()).status().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let screen = loop {
        let s = tmux(&["capture-pane", "-p", "-t", &session]);
        let want = ["mcpmon top", "get_current_time", "clock", "ok ", "open", "Europe/Paris", "ssh-private-key-read", "killed_in_kernel"];
        if want.iter().all(|w| s.contains(w)) {
            break s;
        }
        if Instant::now() > deadline {
            tmux(&["kill-session", "-t", &session]);
            panic!("top never showed {:?}; screen:\n{s}", want.iter().filter(|w| !s.contains(*w)).collect::<Vec<_>>());
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    // The syscalls under the call: the tz database read while get_current_time ran.
    assert!(screen.lines().any(|l| l.contains("└ open") && l.contains("zoneinfo")), "{screen}");
    tmux(&["kill-session", "-t", &session]);
    d.stop();
}
