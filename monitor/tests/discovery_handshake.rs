//! Issue 15 item 2: servers started by any program are found by their handshake. No client
//! config names them and their parent is no known client: an agent written on the official
//! Python SDK (`python`), one on the TypeScript SDK (`node`), run by an ordinary user created
//! after the daemon started. Each server must be tracked as found by its handshake, under its
//! agent, with its tool calls recorded; the first one starts while the syscall hooks are
//! detached (nothing tracked yet). Shell pipelines that are not MCP, including ones that carry
//! JSON and JSON-RPC, must not be tracked at all.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{daemon::Daemon, user::User};
use serde_json::{json, Value};

/// One daemon at a time: with handshake discovery on, a daemon tracks every MCP server on the
/// host, so two side by side would each track the other's.
static ONE_DAEMON: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start() -> Option<(Daemon, PathBuf)> {
    start_with(&[])
}

fn start_with(extra: &[&str]) -> Option<(Daemon, PathBuf)> {
    if !common::can_load_ebpf() {
        return None;
    }
    let peers = common::peers()?;
    let d = Daemon::start(&[&["--handshake-discovery", "on"], extra].concat());
    Some((d, peers))
}

fn servers_tracked(d: &Daemon) -> Vec<Value> {
    d.records().into_iter().filter(|r| r["kind"] == "server_tracked").collect()
}

/// Runs `argv` as `u` (its HOME, in its home) and returns what the agent printed.
fn agent(u: &User, argv: &[&str], env: &[(&str, &Path)]) -> Value {
    let mut c = u.command();
    c.args(argv).env("HOME", &u.home).current_dir(&u.home);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "agent {argv:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tool_call(d: &Daemon, server_id: &Value, tool: &str) -> Value {
    d.expect(&format!("tool_call {tool} of server {server_id}"), |r| r["kind"] == "tool_call" && r["server_id"] == *server_id && r["tool"] == tool)
}

#[test]
fn sdk_agents_servers_are_found_by_their_handshake() {
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let Some((d, peers)) = start() else { return };
    // The user and their home appear after the daemon started.
    let u = User::add("hand", true);
    let script = |f: &str| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(f);
    let py = peers.join("venv/bin/python");
    let time = peers.join("venv/bin/mcp-server-time");

    // 1. The official Python client SDK in a plain python process; nothing tracked before, so
    //    the server's exec finds the syscall hooks detached.
    let calls = json!([{"tool": "get_current_time", "arguments": {"timezone": "UTC"}}]);
    let out = agent(&u, &[py.to_str().unwrap(), script("mcp_client.py").to_str().unwrap(), &calls.to_string(), "--", time.to_str().unwrap()], &[]);
    assert_eq!(out["calls"][0]["is_error"], false, "{out}");
    let s = d.expect("the Python SDK agent's server tracked", |r| r["kind"] == "server_tracked" && r["how"] == "handshake");
    assert_eq!(s["found"]["how"], "handshake", "{s}");
    assert_eq!(s["found"]["handshake_under"]["comm"], "python", "found under the agent: {s}");
    assert_eq!(s["server"], "mcp-server-time", "{s}");
    let id = s["server_id"].clone();
    d.expect("its initialize, from the very first bytes it read", |r| r["kind"] == "mcp_initialize" && r["server_id"] == id);
    let call = tool_call(&d, &id, "get_current_time");
    assert_eq!(call["outcome"], "ok", "{call}");
    assert!(call["events"].as_u64().unwrap() > 0, "the call's opens were attributed to it: {call}");

    // 2. The official TypeScript client SDK in a plain node process, the server behind `sh -c`
    //    (which stays, as runners do): one tree from the shell down, named once.
    let everything = peers.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let calls = json!([{"tool": "echo", "arguments": {"message": "handshake"}}]);
    let wrapped = format!("node {} stdio; exit $?", everything.display());
    let node_path = peers.join("node_modules");
    let out = agent(&u, &["node", script("ts_client.cjs").to_str().unwrap(), &calls.to_string(), "--", "/bin/sh", "-c", &wrapped], &[("NODE_PATH", &node_path)]);
    assert_eq!(out["calls"][0]["text"], "Echo: handshake", "{out}");
    let s = d.expect("the TypeScript SDK agent's server tracked", |r| r["kind"] == "server_tracked" && r["how"] == "handshake" && r["found"]["handshake_under"]["comm"] == "node");
    let id = s["server_id"].clone();
    assert_eq!(s["command"][0], "/bin/sh", "the tree starts at the shell that passed its stdio down: {s}");
    d.expect("the client's name from the handshake", |r| r["kind"] == "server_identified" && r["server_id"] == id && r["client"] == "ts-agent");
    assert_eq!(s["server"], "server-everything", "named after the package the shell runs: {s}");
    tool_call(&d, &id, "echo");
    // The handshake was read by node, below the shell: both in the one server.
    let pids = s["tracked_pids"].as_array().unwrap();
    assert!(pids.len() >= 2 && pids.contains(&s["root_pid"]), "{s}");

    // 3. A server in bash, which reads its stdin a byte at a time: its first read holds `{`
    //    alone, and the handshake is decided on the whole line.
    let calls = json!([{"tool": "hostname", "arguments": {}}]);
    let out = agent(&u, &[py.to_str().unwrap(), script("mcp_client.py").to_str().unwrap(), &calls.to_string(), "--", "/bin/bash", script("sh_server.sh").to_str().unwrap()], &[]);
    assert_eq!(out["calls"][0]["is_error"], false, "{out}");
    let s = d.expect("the bash server tracked", |r| r["kind"] == "server_tracked" && r["server"] == "sh_server.sh");
    let id = s["server_id"].clone();
    d.expect("its initialize, reassembled from single bytes", |r| r["kind"] == "mcp_initialize" && r["server_id"] == id);
    let call = tool_call(&d, &id, "hostname");
    assert!(call["events"].as_u64().unwrap() > 0, "its cat of /etc/hostname belongs to the call: {call}");
    assert_eq!(servers_tracked(&d).len(), 3, "one server per agent launch: {:?}", servers_tracked(&d));
}

#[test]
fn pipelines_that_are_not_mcp_are_not_tracked() {
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let Some((d, _peers)) = start() else { return };
    let repo = env!("CARGO_MANIFEST_DIR");
    let py = common::python();
    // Every middle stage has pipes on stdin and stdout; some read JSON, one reads JSON-RPC that
    // is not an initialize, one keeps running after its first read.
    let pipelines = [
        format!("git -C {repo} log --oneline -200 | grep -i fix | cat | wc -l"),
        "seq 1 20000 | cat | grep 7 | cat > /dev/null".to_string(),
        r#"printf '{"a": 1}\n{"b": 2}\n' | cat | cat > /dev/null"#.to_string(),
        format!(r#"printf '{{"x": [1, 2]}}\n' | {py} -c 'import sys, time; sys.stdin.readline(); time.sleep(1.5); print(1)' | cat > /dev/null"#),
        format!(r#"printf '{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{}}}}\n' | {py} -c 'import sys, time; sys.stdin.readline(); time.sleep(1.5)' | cat"#),
    ];
    for _ in 0..3 {
        for p in &pipelines {
            let out = Command::new("/bin/sh").args(["-c", p]).output().unwrap();
            assert!(out.status.success(), "{p}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    std::thread::sleep(common::patience(Duration::from_secs(2)));
    let (log, records) = d.stop_with_records();
    let tracked: Vec<&Value> = records.iter().filter(|r| r["kind"] == "server_tracked").collect();
    assert!(tracked.is_empty(), "pipelines were tracked as servers: {tracked:?}\n{log}");
    // The JSON readers were candidates that the daemon saw and dropped (their first bytes were
    // examined), not ones the kernel missed: two long-lived readers in each of three rounds.
    let stats = records.iter().find(|r| r["kind"] == "stats").unwrap_or_else(|| panic!("no stats record:\n{log}"));
    assert!(stats["candidates_dropped"].as_u64().unwrap() >= 6, "JSON readers not examined: {stats}\n{log}");
}

/// Deterministic: 20 agents, four at a time, each starting its own server; every one is
/// tracked once and every tool call recorded.
#[test]
fn every_launch_is_found_once() {
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let Some((d, peers)) = start() else { return };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mcp_client.py");
    let calls = json!([{"tool": "get_current_time", "arguments": {"timezone": "UTC"}}]).to_string();
    let n = 20;
    for _ in 0..n / 4 {
        let agents: Vec<_> = (0..4)
            .map(|_| {
                Command::new(peers.join("venv/bin/python"))
                    .arg(&script)
                    .arg(&calls)
                    .arg("--")
                    .arg(peers.join("venv/bin/mcp-server-time"))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for a in agents {
            let out = a.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let deadline = std::time::Instant::now() + common::patience(Duration::from_secs(10));
    let calls = |d: &Daemon| d.records().iter().filter(|r| r["kind"] == "tool_call" && r["tool"] == "get_current_time").count();
    while calls(&d) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let tracked = servers_tracked(&d);
    assert_eq!(tracked.len(), n, "{tracked:?}");
    assert!(tracked.iter().all(|s| s["how"] == "handshake" && s["server"] == "mcp-server-time"), "{tracked:?}");
    assert_eq!(calls(&d), n, "every tool call recorded");
}

/// A server whose exec comes as the daemon takes the idle syscall hooks off: the daemon has
/// found nothing tracked and no young candidate, and the server reads the hooks-live flag still
/// set, so the kernel neither holds it nor reports it late. Once the flag is clear the daemon
/// must look again and keep the hooks (a pause, `--detach-pause-ms`, makes that moment seconds
/// long instead of microseconds; the server sleeps past it before its first read). Without the
/// second look the hooks came off, the server's reads went by unseen, and it was never found.
#[test]
fn a_server_that_execs_as_the_hooks_come_off_is_found() {
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let Some((d, peers)) = start_with(&["--detach-pause-ms", "5000"]) else { return };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mcp_client.py");
    let calls = json!([{"tool": "get_current_time", "arguments": {"timezone": "UTC"}}]).to_string();
    let py = peers.join("venv/bin/python");
    let run = |server: &[&str]| {
        let out = Command::new(&py).arg(&script).arg(&calls).arg("--").args(server).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    // A first server attaches the hooks; once it is gone nothing is tracked.
    run(&[peers.join("venv/bin/mcp-server-time").to_str().unwrap()]);
    let first = d.expect("the first server tracked", |r| r["kind"] == "server_tracked")["server_id"].clone();
    d.expect_log("idle: pausing before the syscall hooks come off", Duration::from_secs(60));
    // Exec'd within the pause, first read after it.
    let late_reader = "import sys, time; time.sleep(8); sys.argv = ['mcp-server-time']; from mcp_server_time import main; main()";
    run(&[py.to_str().unwrap(), "-c", late_reader]);
    let tracked = d.expect("the server exec'd as the hooks came off", |r| r["kind"] == "server_tracked" && r["server_id"] != first);
    assert_eq!(tracked["how"], "handshake", "{tracked}");
    let id = tracked["server_id"].clone();
    tool_call(&d, &id, "get_current_time");
}

/// A daemon with the shipped rules and handshake discovery, and a user `tag` whose key
/// (holding `secret`) is protected before the attack starts: the subject of these tests is the
/// undecided process, not how soon a new home is protected (secrets.rs).
fn daemon_and_key(tmp: &Path, tag: &str, secret: &str) -> (Daemon, User, PathBuf) {
    let rules = common::user::shipped_rules(tmp, "");
    let d = Daemon::start(&["--handshake-discovery", "on", "--rules", rules.to_str().unwrap()]);
    let u = User::add(tag, false);
    u.make_home();
    let key = u.write(".ssh/id_ed25519", &format!("{secret}\n"));
    d.expect("the new key protected", |r| r["kind"] == "protected_changed" && r["added"].as_array().is_some_and(|a| a.iter().any(|p| p == key.to_str().unwrap())));
    (d, u, key)
}

/// `script` run by bash as `u`, with piped stdin and stdout (a handshake candidate), sent a
/// lone `{` and no newline: its output, once it has ended, and its pid.
fn undecided_reader(u: &User, script: &str) -> (String, u32) {
    use std::io::{Read, Write};
    let mut c = u.command();
    c.args(["/bin/bash", "-c", script]).env("HOME", &u.home).current_dir(&u.home);
    let mut child = c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"{").unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    drop(stdin);
    let _ = child.wait();
    (out, pid)
}

/// The kernel tracks a process whose first stdin read opens a JSON object at once, before the
/// daemon has the whole first line and decides what the process is. One that reads a key in
/// that window (`{` read alone, no newline yet, then `cat ~/.ssh/id_ed25519`) is killed in the
/// kernel, and the kill is reported: it is not discarded with the rest of an undecided
/// process's events (a container that answered one call and exited before the daemon got to
/// its handshake had its kill go unreported that way).
#[test]
fn a_kill_before_the_handshake_is_decided_is_reported() {
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    const SECRET: &str = "SECRET-KEY-MATERIAL-h4nd";
    let (d, u, key) = daemon_and_key(tmp.path(), "hsk", SECRET);
    // The pause lets the read hooks come on (the first candidate attaches them) before its
    // first read. Then it runs a new image, which waits before the read: the daemon has its
    // exec event by then, and the decision stays the undecided root's (deciding on the exec
    // alone untracked it as "not a configured server", and the key was read; CI saw that race
    // with the read straight after the exec).
    let (out, _) = undecided_reader(&u, "sleep 1; read -r -n 1 x; exec /bin/bash -c 'sleep 1; cat \"$HOME/.ssh/id_ed25519\"; echo done'");
    if out.contains(SECRET) {
        // What the daemon saw, to tell a key not yet protected from a read the hooks missed.
        let (err, records) = d.stop_with_records();
        let records: Vec<String> = records.iter().map(Value::to_string).collect();
        let tail: Vec<&str> = err.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("the key was read: {out}\nrecords:\n{}\ndaemon stderr, last lines:\n{}", records.join("\n"), tail.join("\n"));
    }
    let a = d.expect("the kill of the undecided process reported", |r| r["kind"] == "alert" && r["rule"]["id"] == "ssh-private-key-read");
    d.assert_refused_before_fd(&a, true, "undecided handshake");
    assert_eq!(a["event"]["path"], key.display().to_string(), "{a}");
    d.stop();
}

/// A candidate that reads `{` and then waits out the daemon's handshake window before it acts:
/// it is not dropped (that would untrack it in the kernel too) but kept in sight as an
/// unidentified server, so the key it then reads is refused and reported under that server.
#[test]
fn a_candidate_that_stalls_after_its_first_byte_stays_in_sight() {
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    const SECRET: &str = "SECRET-KEY-MATERIAL-h5st";
    let (d, u, key) = daemon_and_key(tmp.path(), "hst", SECRET);
    // Past the daemon's five seconds for the rest of the line, with nothing written meanwhile.
    let (out, pid) = undecided_reader(&u, "sleep 1; read -r -n 1 x; sleep 8; cat \"$HOME/.ssh/id_ed25519\"; echo done");
    assert!(!out.contains(SECRET), "the key was read: {out}");
    let kept = d.expect("the stalled candidate kept as an unidentified server", |r| r["kind"] == "server_unidentified" && r["root_pid"] == pid);
    let a = d.expect("the read reported", |r| r["kind"] == "alert" && r["rule"]["id"] == "ssh-private-key-read");
    assert_eq!(a["server"]["id"], kept["server_id"], "{a}");
    assert_eq!(a["event"]["path"], key.display().to_string(), "{a}");
    d.stop();
}

/// Reads its first byte a second before the rest of its first line, and exits as soon as it
/// has the line: the daemon decides on it (on the newline) when it has already exited.
const ONE_LINE: &str = "sleep 1; read -r -n 1 x; sleep 1; read -r rest; exit 0";

/// [`ONE_LINE`] run as `u` with piped stdin and stdout (a handshake candidate), sent an MCP
/// `initialize`; its stdin is closed.
fn one_line_server(u: &User) -> (std::process::Child, u32) {
    use std::io::Write;
    let mut c = u.command();
    c.args(["/bin/bash", "-c", ONE_LINE]).env("HOME", &u.home).current_dir(&u.home);
    let mut child = c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}\n").unwrap();
    (child, pid)
}

/// A server that ends its session as its first line is read (killed by the kernel, or done)
/// is a zombie until its parent reaps it, and a zombie's /proc has no command line and no
/// image. It is tracked with the command line it had at its first read: a server tracked with
/// none is unnamed (`?`) and its scope has no roots, so every file its calls open is "outside
/// the call's scope" (an outsider's run on the registry's sqlite server: up to 7 such alerts).
#[test]
fn a_server_that_exits_before_it_is_decided_keeps_its_command_line() {
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&["--handshake-discovery", "on"]);
    let u = User::add("hsz", false);
    u.make_home();
    let (mut child, pid) = one_line_server(&u);
    // Not reaped until the daemon has decided.
    let t = d.expect("the server tracked", |r| r["kind"] == "server_tracked" && r["root_pid"] == pid);
    let _ = child.wait();
    assert_eq!(t["command"], json!(["/bin/bash", "-c", ONE_LINE]), "{t}");
    assert_ne!(t["server"], "?", "{t}");
    assert_eq!(t["uid"], u.uid, "{t}");
    d.stop();
}

/// The same, reaped at once (an SDK client reaps the server it killed): /proc has nothing left
/// of it when the daemon decides, and its queued records (its calls, the kernel's kills) still
/// need their server. It is tracked from its first read, and retired by its exit record.
#[test]
fn a_server_reaped_before_it_is_decided_is_tracked_and_retired() {
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&["--handshake-discovery", "on"]);
    let u = User::add("hsr", false);
    u.make_home();
    let (mut child, pid) = one_line_server(&u);
    assert!(child.wait().unwrap().success());
    let t = d.expect("the server tracked", |r| r["kind"] == "server_tracked" && r["root_pid"] == pid);
    assert_eq!(t["command"], json!(["/bin/bash", "-c", ONE_LINE]), "{t}");
    assert_eq!(t["uid"], u.uid, "{t}");
    d.expect("its initialize recorded", |r| r["kind"] == "mcp_initialize" && r["server_id"] == t["server_id"]);
    d.expect("the server retired", |r| r["kind"] == "server_gone" && r["server_id"] == t["server_id"]);
    d.stop();
}

/// Two registry packages run the way client configs and SDK agents run installed ones, `node
/// …/node_modules/@scope/<pkg>/dist/index.js`, are two servers with two tool pins. Named by
/// file alone both were `index.js` and shared one pin: the second one's tools raised a false
/// high-severity "rug pull" (`mcp.tool_set_changed`, seen in an outsider's run with
/// server-filesystem, then server-memory).
#[test]
fn two_packages_run_by_node_keep_their_own_names_and_pins() {
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let Some((d, peers)) = start() else { return };
    let u = User::add("hpin", true);
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ts_client.cjs");
    let node_path = peers.join("node_modules");
    let mut ids = vec![];
    for (pkg, tool) in [("server-everything", "echo"), ("server-memory", "read_graph")] {
        let entry = peers.join(format!("node_modules/@modelcontextprotocol/{pkg}/dist/index.js"));
        let calls = json!([{"tool": tool, "arguments": if tool == "echo" { json!({"message": "m"}) } else { json!({}) }}]);
        agent(&u, &["node", client.to_str().unwrap(), &calls.to_string(), "--", "node", entry.to_str().unwrap()], &[("NODE_PATH", &node_path)]);
        let s = d.expect(&format!("{pkg} tracked"), |r| r["kind"] == "server_tracked" && r["how"] == "handshake" && r["command"][1] == entry.to_str().unwrap());
        assert_eq!(s["server"], pkg, "named after its package: {s}");
        tool_call(&d, &s["server_id"], tool);
        ids.push(s["server_id"].clone());
    }
    // Its tools/list came before its call: a changed-set alert would be in the stream by now.
    let changed: Vec<Value> = d.records().into_iter().filter(|r| r["kind"] == "alert" && r["rule"]["id"] == "mcp.tool_set_changed").collect();
    assert!(changed.is_empty(), "a different package's tools are no rug pull: {changed:?}");
    assert_ne!(ids[0], ids[1]);
    d.stop();
}
