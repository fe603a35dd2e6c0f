//! Zero-config discovery with real peers: a server configured in a client config (seen at exec,
//! and already running at start-up), and a server found by sniffing the MCP handshake of a child
//! of an MCP client. None of them goes through `mcpmon exec`.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::daemon::Daemon;
use serde_json::{json, Value};


/// A host with one user whose home is outside /home and whose Cursor config names `server` with
/// `args` (distinct per test: tests run in parallel and every daemon sees every process).
fn host_with_cursor_config(server: &Path, args: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let (t, passwd, home) = host_with_user("dev");
    cursor_config(&home, "clock", server, args);
    (t, passwd)
}

/// A host whose password database names one user `name`, home `srv/NAME` (not made yet).
fn host_with_user(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("srv").join(name);
    let passwd = t.path().join("passwd");
    std::fs::write(&passwd, format!("{name}:x:1000:1000::{}:/bin/sh\n", home.display())).unwrap();
    (t, passwd, home)
}

/// Writes `home`'s Cursor config, naming `server` with `args` as `entry`.
fn cursor_config(home: &Path, entry: &str, server: &Path, args: &[&str]) {
    std::fs::create_dir_all(home.join(".cursor")).unwrap();
    std::fs::write(home.join(".cursor/mcp.json"), json!({"mcpServers": {entry: {"command": server, "args": args}}}).to_string()).unwrap();
}

fn call_time() -> Value {
    json!([{"tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}])
}

#[test]
fn a_configured_server_is_tracked_at_exec_under_its_configured_name() {
    configured_server_is_tracked_at_exec("dev", "clock", "Europe/Berlin", false);
}

/// An ordinary user whose home and client config appear after the daemon started: the command the
/// config names is then tracked at exec as well, its exec included. The kernel looks a new comm up
/// only where the daemon set its bit (monitor-common's comm_filter.rs), so this fails if the bits
/// follow the configs read at start-up alone.
#[test]
fn a_server_configured_after_start_up_is_tracked_at_exec() {
    configured_server_is_tracked_at_exec("late", "late-clock", "America/Lima", true);
}

/// User `user`'s Cursor config names mcp-server-time as `entry` (with its own `timezone`: tests
/// run side by side and every daemon sees every process); an agent then starts it. It is tracked
/// at exec under that name, its exec and its call included. `late`: the home and the config
/// appear only after the daemon started.
fn configured_server_is_tracked_at_exec(user: &str, entry: &str, timezone: &str, late: bool) {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let server = peers.join("venv/bin/mcp-server-time");
    let args = ["--local-timezone", timezone];
    let (_host, passwd, home) = host_with_user(user);
    if !late {
        cursor_config(&home, entry, &server, &args);
    }
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    if late {
        cursor_config(&home, entry, &server, &args);
        d.expect_log("client configs (re)read servers=1", std::time::Duration::from_secs(30));
    }
    let c = common::mcp_client(&peers, call_time(), None, &[server.to_str().unwrap(), args[0], args[1]]);
    let tracked = d.expect("server_tracked", |v| v["kind"] == "server_tracked" && v["server"] == entry);
    assert_eq!((tracked["how"].as_str(), tracked["client"].as_str()), (Some("config"), Some("cursor")));
    assert!(tracked["config"].as_str().unwrap().ends_with(".cursor/mcp.json"));
    let id = c["calls"][0]["id"].to_string();
    let call = d.expect("tool_call", |v| v["kind"] == "tool_call" && v["server"] == entry && v["id"] == id.as_str());
    assert_eq!(call["tool"], "get_current_time");
    assert_eq!(call["arguments"], json!({"timezone": "Asia/Tokyo"}));
    // The exec that started it is reported under the server too: nothing was missed.
    d.expect("exec", |v| v["kind"] == "exec" && v["server"] == entry);
    d.stop();
}

#[test]
fn a_configured_server_already_running_is_found_at_start_up() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let server = peers.join("venv/bin/mcp-server-time");
    let args = ["--local-timezone", "America/Chicago"];
    let (_host, passwd) = host_with_cursor_config(&server, &args);
    // The server runs before the daemon; the test speaks JSON-RPC to it by hand.
    let mut srv = Command::new(&server).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let pid = srv.id();
    let mut stdin = srv.stdin.take().unwrap();
    let mut stdout = BufReader::new(srv.stdout.take().unwrap());
    let mut say = |v: Value| {
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    };
    let mut line = String::new();
    say(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"by-hand","version":"1"}}}));
    stdout.read_line(&mut line).unwrap();
    say(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));

    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    let tracked = d.expect("server_tracked", |v| v["kind"] == "server_tracked" && v["server"] == "clock");
    assert_eq!((tracked["how"].as_str(), tracked["root_pid"].as_u64()), (Some("procfs"), Some(pid as u64)));
    // The server sat in a read() that began before the daemon attached its hooks: that read's
    // bytes cannot be seen. Let it complete with a tools/list; the next read is captured.
    say(json!({"jsonrpc":"2.0","id":6,"method":"tools/list"}));
    line.clear();
    stdout.read_line(&mut line).unwrap();
    say(json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_current_time","arguments":{"timezone":"UTC"}}}));
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"id\":7"), "{line}");
    let call = d.expect("tool_call 7", |v| v["kind"] == "tool_call" && v["id"] == "7");
    assert_eq!((call["server"].as_str(), call["outcome"].as_str()), (Some("clock"), Some("ok")));
    drop(say);
    drop(stdin); // EOF: the server exits
    srv.wait().unwrap();
    d.stop();
}

#[test]
fn children_of_an_mcp_client_are_sniffed() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let empty = tempfile::tempdir().unwrap();
    let passwd = empty.path().join("passwd"); // no user, no config: sniffing only
    std::fs::write(&passwd, "").unwrap();
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    let server = peers.join("venv/bin/mcp-server-time");
    // The SDK client poses as Claude Code (comm "claude"): its children are candidates.
    let c = common::mcp_client(&peers, call_time(), Some("claude"), &[server.to_str().unwrap()]);
    let tracked = d.expect("sniffed server", |v| {
        v["kind"] == "server_tracked" && v["how"] == "sniffed" && v["command"].to_string().contains("mcp-server-time")
    });
    let id = tracked["server_id"].clone();
    // How it was found: a handshake under the client process that started it.
    assert_eq!(tracked["found"]["handshake_under"]["comm"], "claude", "{tracked}");
    assert!(tracked["found"]["handshake_under"]["pid"].as_u64().is_some_and(|p| p > 1), "{tracked}");
    let ident = d.expect("identified", |v| v["kind"] == "server_identified" && v["server_id"] == id);
    assert_eq!(ident["client"], "mcp", "named from clientInfo");
    let call_id = c["calls"][0]["id"].to_string();
    let call = d.expect("tool_call", |v| v["kind"] == "tool_call" && v["server_id"] == id && v["id"] == call_id.as_str());
    assert_eq!(call["tool"], "get_current_time");
    assert!(call["server"].as_str().unwrap().starts_with("mcp-time ("), "named from serverInfo and command: {call}");

    // A child of the same client whose stdin (the client's side) is not MCP is dropped, not
    // reported as a server. The child reads its stdin only once the daemon has taken it (a read
    // already blocked before that is not seen), on SIGUSR1 from the test after the record.
    let child = "import signal, sys\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\nsignal.sigwait({signal.SIGUSR1})\n\
                 sys.stdout.write(sys.stdin.readline()); sys.stdout.flush()\n";
    let py = format!(
        "import ctypes, subprocess, sys\nctypes.CDLL(None).prctl(15, b'claude', 0, 0, 0)\n\
         p = subprocess.Popen([sys.executable, '-c', {child:?}], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n\
         p.stdin.write(b'hello, not json-rpc\\n'); p.stdin.flush()\nprint(p.pid, flush=True)\n\
         p.stdout.readline()\nsys.stdin.readline()\np.stdin.close(); p.wait()\n"
    );
    let mut client = Command::new(peers.join("venv/bin/python")).args(["-c", &py]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut go = client.stdin.take().unwrap();
    let mut pid = String::new();
    BufReader::new(client.stdout.take().unwrap()).read_line(&mut pid).unwrap();
    let pid: u32 = pid.trim().parse().unwrap();
    d.expect("the child taken provisionally", |v| v["kind"] == "server_tracked" && v["how"] == "sniffed" && v["root_pid"] == pid);
    // SAFETY: plain kill(2) to our own grandchild.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    let dropped = d.expect("dropped", |v| v["kind"] == "server_dropped" && v["root_pid"] == pid);
    writeln!(go, "go").unwrap();
    drop(go);
    assert!(client.wait().unwrap().success());
    assert!(dropped["reason"].as_str().unwrap().contains("not an MCP initialize"), "{dropped}");
    let (_, records) = d.stop_with_records();
    assert!(!records.iter().any(|v| v["kind"] == "server_identified" && v["server_id"] == dropped["server_id"]));
}

/// A sniffed child that writes garbage on its stdout before the client speaks is not dropped:
/// only what comes in on stdin decides, and the server's later opens are still seen.
#[test]
fn garbage_on_stdout_does_not_get_a_sniffed_server_dropped() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let empty = tempfile::tempdir().unwrap();
    let passwd = empty.path().join("passwd");
    std::fs::write(&passwd, "").unwrap();
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    let marker = empty.path().join("read-after-garbage");
    std::fs::write(&marker, "x").unwrap();
    // The "server": a line of noise on stdout first, then it waits for stdin, then reads a file.
    let server = format!(
        "import sys\nsys.stdout.write('this is not json-rpc\\n'); sys.stdout.flush()\nsys.stdin.readline()\nopen('{}').read()\n",
        marker.display()
    );
    let client = format!(
        "import ctypes, subprocess, sys\nctypes.CDLL(None).prctl(15, b'claude', 0, 0, 0)\n\
         p = subprocess.Popen([sys.executable, '-c', {server:?}], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n\
         p.stdout.readline()\nsys.stdin.readline()\n\
         p.stdin.write(b'{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"c\",\"version\":\"1\"}}}}}}\\n'); p.stdin.flush()\n\
         p.wait()\n"
    );
    let mut c = Command::new(peers.join("venv/bin/python")).args(["-c", &client]).stdin(Stdio::piped()).spawn().unwrap();
    let mut go = c.stdin.take().unwrap();
    let tracked = d.expect("sniffed", |v| v["kind"] == "server_tracked" && v["how"] == "sniffed" && v["command"].to_string().contains("not json-rpc"));
    let id = tracked["server_id"].clone();
    // The garbage line has gone through the pipeline: the daemon reported it as invalid output.
    d.expect("garbage seen", |v| v["kind"] == "mcp_invalid" && v["server_id"] == id && v["direction"] == "out");
    writeln!(go, "go").unwrap();
    drop(go);
    assert!(c.wait().unwrap().success());
    d.expect("identified", |v| v["kind"] == "server_identified" && v["server_id"] == id);
    d.expect("its later open is still seen", |v| v["kind"] == "open" && v["server_id"] == id && v["path"] == marker.to_str().unwrap());
    let (_, recs) = d.stop_with_records();
    assert!(!recs.iter().any(|v| v["kind"] == "server_dropped" && v["server_id"] == id), "not dropped for its stdout");
}

/// The Node filesystem server, found both ways without `mcpmon exec`: from a Claude Desktop config,
/// then by sniffing (its client poses as Cursor); calls and the file opens they cause are reported.
#[test]
fn the_node_filesystem_server_is_found_by_config_and_by_sniffing() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let fs_bin = peers.join("node_modules/.bin/mcp-server-filesystem").canonicalize().unwrap();
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("notes.txt");
    std::fs::write(&file, "remember the milk\n").unwrap();
    let root_s = root.path().to_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home/ann");
    std::fs::create_dir_all(home.join(".config/Claude")).unwrap();
    std::fs::write(
        home.join(".config/Claude/claude_desktop_config.json"),
        json!({"mcpServers": {"files": {"command": "node", "args": [fs_bin, root_s]}}}).to_string(),
    )
    .unwrap();
    let passwd = t.path().join("passwd");
    std::fs::write(&passwd, format!("ann:x:1001:1001::{}:/bin/sh\n", home.display())).unwrap();
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    let read = |p: &Path| json!([{"tool": ["read_text_file", "read_file"], "arguments": {"path": p}}]);
    let fs_cmd = ["node", fs_bin.to_str().unwrap(), root_s];

    // 1. The configured command line.
    let c = common::mcp_client(&peers, read(&file), None, &fs_cmd);
    let tracked = d.expect("config", |v| v["kind"] == "server_tracked" && v["server"] == "files");
    assert_eq!((tracked["how"].as_str(), tracked["client"].as_str()), (Some("config"), Some("claude-desktop")));
    let id = c["calls"][0]["id"].to_string();
    let call = d.expect("call", |v| v["kind"] == "tool_call" && v["server"] == "files" && v["id"] == id.as_str());
    assert_eq!(call["arguments"]["path"], file.to_str().unwrap());
    let p = file.to_str().unwrap();
    let open = d.expect("open of the file", |v| v["kind"] == "open" && v["path"] == p && v["server"] == "files");
    assert_eq!((open["mcp"]["state"].as_str(), open["mcp"]["id"].as_str()), (Some("call"), Some(id.as_str())));

    // 2. Not configured (another root), started by a client that poses as Cursor: sniffed.
    let other = tempfile::tempdir().unwrap();
    let f2 = other.path().join("todo.txt");
    std::fs::write(&f2, "x\n").unwrap();
    let c = common::mcp_client(&peers, read(&f2), Some("cursor"), &["node", fs_bin.to_str().unwrap(), other.path().to_str().unwrap()]);
    // (Other tests' processes may be sniffed by this daemon too: pick ours by its command.)
    let other_s = other.path().to_str().unwrap();
    let sniffed = d.expect("sniffed", |v| {
        v["kind"] == "server_tracked" && v["how"] == "sniffed" && v["command"].as_array().is_some_and(|a| a.iter().any(|x| x == other_s))
    });
    let sid = sniffed["server_id"].clone();
    d.expect("identified", |v| v["kind"] == "server_identified" && v["server_id"] == sid);
    let id = c["calls"][0]["id"].to_string();
    let call = d.expect("sniffed call", |v| v["kind"] == "tool_call" && v["server_id"] == sid && v["id"] == id.as_str());
    assert_eq!(call["arguments"]["path"], f2.to_str().unwrap());
    assert!(call["server"].as_str().unwrap().starts_with("secure-filesystem-server ("), "{call}");
    d.stop();
}
