//! Issue 15 item 3: servers launched through runners, as the runners are really installed. A
//! client config entry names the runner (`uvx`, `pipx run`, `bunx`, a pyenv shim, npx under an
//! nvm-style prefix, `env`); a process posing as Claude Desktop starts it exactly as configured,
//! drives it with the official MCP client SDK, and the daemon must report one server under the
//! configured name whose tree holds the runner and the real server (python, node) below it, with
//! the tool call recorded, and no second server for anything in that tree.
//!
//! What each runner does at launch (strace -f -e trace=execve,clone,vfork):
//! - `uvx` (uv 0.13) re-execs itself in the same pid as `uv tool uvx ARGS`, then forks a child
//!   that execs the tool's entry point (a `#!/bin/sh` trampoline that execs the venv's python);
//! - `pipx run` (a `#!python` script) execs the app in its own pid once the cached venv is
//!   ready (it forks `uv --version` first);
//! - `bunx` (a symlink to bun's binary) vforks a child that execs the package's bin script
//!   (`#!/usr/bin/env node`);
//! - a pyenv shim is a `#!/usr/bin/env bash` script that execs `pyenv exec`, which execs the
//!   version's python in the same pid (forking `pyenv-version-name` and friends on the way);
//! - nvm's `npx` is a symlink to npm's `npx-cli.js` (`#!/usr/bin/env node`) under
//!   `~/.nvm/versions/node/vX/bin`, whose `node` is found through PATH.
//! Nothing here reaches the network: uv and pipx read a wheelhouse (`cargo xtask setup`
//! downloads it into target/mcp-runners), bunx and npx find the package installed in the peers'
//! project.
mod common;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use common::daemon::Daemon;

/// One daemon at a time in this file: every test's client config names the same commands, and a
/// daemon matches every launch on the host, so two tests side by side would each track the
/// other's servers too (seen in CI: "env-time tracked 21 times" for 20 launches).
static ONE_DAEMON: std::sync::Mutex<()> = std::sync::Mutex::new(());
use serde_json::{json, Value};

/// The official MCP client SDK (tests/peers/mcp_client.py), posing as Claude Desktop, starts
/// `cmd` with the config entry's env added and in `cwd`, as the client would.
fn client(peers: &Path, calls: Value, env: &Value, cwd: Option<&Path>, cmd: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mcp_client.py");
    let mut c = Command::new(peers.join("venv/bin/python"));
    c.arg(script).arg(calls.to_string()).arg("--").args(cmd).env("MCP_CLIENT_COMM", "claude").env("MCP_SERVER_ENV", env.to_string());
    if let Some(d) = cwd {
        c.env("MCP_SERVER_CWD", d);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "client of {cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One configured server: its entry, and the tool call the client makes.
struct Entry {
    name: &'static str,
    command: String,
    args: Vec<String>,
    env: Value,
    cwd: Option<PathBuf>,
    call: Value,
    /// How the file the runner's first image runs ends, and how the server's (python, node)
    /// begins.
    runner_file: &'static str,
    server_file: &'static str,
    /// What `found.runner` says the runner runs (None: not a runner's launch).
    target: Option<&'static str>,
}

impl Entry {
    fn config(&self) -> Value {
        json!({"command": self.command, "args": self.args, "env": self.env})
    }

    fn spawn(&self) -> Child {
        let mut c = Command::new(&self.command);
        c.args(&self.args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in self.env.as_object().unwrap() {
            c.env(k, v.as_str().unwrap());
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c.spawn().unwrap()
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// uv and pipx offline, on the wheelhouse, with caches of their own under `t`.
fn uv_env(r: &Path, t: &Path) -> Value {
    json!({
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": r.join("wheelhouse"),
        "UV_PYTHON": common::python(),
        "UV_CACHE_DIR": t.join("uv-cache"),
        "PIPX_HOME": t.join("pipx"),
        "PIPX_DEFAULT_PYTHON": common::python(),
        "PATH": format!("{}:/usr/bin:/bin", r.join("venv/bin").display()),
    })
}

/// A pyenv root of its own whose global version is the peers' venv (pyenv takes a venv linked
/// under versions/), with shims made by the machine's pyenv. None when pyenv is not installed.
fn pyenv_shim(peers: &Path, t: &Path) -> Option<PathBuf> {
    let pyenv = Path::new("/root/.pyenv/bin/pyenv");
    if !pyenv.exists() {
        common::skipped("pyenv is not installed in /root/.pyenv: the pyenv shim case is left out");
        return None;
    }
    let root = t.join("pyenv");
    std::fs::create_dir_all(root.join("versions")).unwrap();
    std::os::unix::fs::symlink(peers.join("venv"), root.join("versions/peers")).unwrap();
    std::fs::write(root.join("version"), "peers\n").unwrap();
    let st = Command::new(pyenv).arg("rehash").env("PYENV_ROOT", &root).status().unwrap();
    assert!(st.success(), "pyenv rehash");
    Some(root.join("shims/python3"))
}

/// An nvm-style node prefix: ~/.nvm/versions/node/vX/bin/{node, npx → ../lib/node_modules/npm/bin/npx-cli.js}.
fn nvm_prefix(t: &Path) -> PathBuf {
    let v = t.join("home/dev/.nvm/versions/node/v20.20.2");
    std::fs::create_dir_all(v.join("bin")).unwrap();
    std::fs::create_dir_all(v.join("lib/node_modules")).unwrap();
    let node = std::fs::canonicalize("/usr/bin/node").unwrap();
    // nvm's node is a file of its own; a link to the system's when another filesystem holds it.
    if std::fs::hard_link(&node, v.join("bin/node")).is_err() {
        std::os::unix::fs::symlink(&node, v.join("bin/node")).unwrap();
    }
    let npm = std::fs::canonicalize("/usr/bin/npx").unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    std::os::unix::fs::symlink(npm, v.join("lib/node_modules/npm")).unwrap();
    std::os::unix::fs::symlink("../lib/node_modules/npm/bin/npx-cli.js", v.join("bin/npx")).unwrap();
    v.join("bin")
}

fn write_config(t: &Path, entries: &[&Entry]) -> PathBuf {
    let home = t.join("home/dev");
    std::fs::create_dir_all(home.join(".config/Claude")).unwrap();
    let servers: serde_json::Map<String, Value> = entries.iter().map(|e| (e.name.to_string(), e.config())).collect();
    std::fs::write(home.join(".config/Claude/claude_desktop_config.json"), json!({"mcpServers": servers}).to_string()).unwrap();
    let passwd = t.join("passwd");
    std::fs::write(&passwd, format!("dev:x:1000:1000::{}:/bin/sh\n", home.display())).unwrap();
    passwd
}

/// The entries of both tests. `dirs`: served directories unique to this run (every daemon on
/// the machine sees every process, so command lines must not collide with another test's).
fn entries(peers: &Path, r: &Path, t: &Path) -> Vec<Entry> {
    let wheel = std::fs::read_dir(r.join("wheelhouse"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| base(p.to_str().unwrap()).starts_with("mcp_server_time-"))
        .expect("mcp-server-time wheel in the wheelhouse");
    let served = |n: &str| {
        let d = t.join(n);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("notes.txt"), "x\n").unwrap();
        d.to_str().unwrap().to_string()
    };
    let time_call = |tz: &str| json!([{"tool": "get_current_time", "arguments": {"timezone": tz}}]);
    let list_call = |d: &str| json!([{"tool": "list_directory", "arguments": {"path": d}}]);
    // Time zones unique to each entry tell the launches apart.
    let uv = uv_env(r, t);
    let bunx_dir = served("bunx-served");
    let mut out = vec![
        Entry {
            name: "uvx-time",
            command: "uvx".into(),
            args: strings(&["mcp-server-time", "--local-timezone", "Asia/Tokyo"]),
            env: uv.clone(),
            cwd: None,
            call: time_call("Asia/Tokyo"),
            runner_file: "/uvx",
            server_file: "python",
            target: Some("mcp-server-time"),
        },
        Entry {
            name: "pipx-time",
            command: "pipx".into(),
            args: strings(&["run", "--spec", wheel.to_str().unwrap(), "mcp-server-time", "--local-timezone", "Europe/Paris"]),
            env: uv.clone(),
            cwd: None,
            call: time_call("Europe/Paris"),
            runner_file: "/pipx",
            server_file: "python",
            target: Some("mcp-server-time"),
        },
        Entry {
            name: "bunx-files",
            command: r.join("node_modules/.bin/bunx").to_str().unwrap().into(),
            args: vec!["@modelcontextprotocol/server-filesystem".into(), bunx_dir.clone()],
            env: json!({}),
            cwd: Some(peers.to_path_buf()),
            call: list_call(&bunx_dir),
            runner_file: "/bunx",
            server_file: "node",
            target: Some("@modelcontextprotocol/server-filesystem"),
        },
        Entry {
            name: "env-time",
            command: "env".into(),
            args: strings(&["TZ=UTC", peers.join("venv/bin/python").to_str().unwrap(), "-m", "mcp_server_time", "--local-timezone", "Africa/Cairo"]),
            env: json!({}),
            cwd: None,
            call: time_call("Africa/Cairo"),
            runner_file: "/env",
            server_file: "python",
            target: None,
        },
    ];
    let nvm_dir = served("nvm-served");
    let nvm = nvm_prefix(t);
    out.push(Entry {
        name: "nvm-files",
        command: nvm.join("npx").to_str().unwrap().into(),
        args: vec!["-y".into(), "@modelcontextprotocol/server-filesystem".into(), nvm_dir.clone()],
        // As nvm users write it: the client's PATH does not have nvm's bin.
        env: json!({"PATH": format!("{}:/usr/bin:/bin", nvm.display())}),
        cwd: Some(peers.to_path_buf()),
        call: list_call(&nvm_dir),
        runner_file: "bin/npx",
        server_file: "node",
        target: Some("@modelcontextprotocol/server-filesystem"),
    });
    if let Some(shim) = pyenv_shim(peers, t) {
        out.push(Entry {
            name: "pyenv-time",
            command: shim.to_str().unwrap().into(),
            args: strings(&["-m", "mcp_server_time", "--local-timezone", "Asia/Seoul"]),
            env: json!({}),
            cwd: None,
            call: time_call("Asia/Seoul"),
            runner_file: "shims/python3",
            server_file: "python",
            target: None,
        });
    }
    out
}

#[test]
fn servers_started_through_runners_are_one_tree_under_the_configured_name() {
    if !common::can_load_ebpf() {
        return;
    }
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let Some(peers) = common::peers() else { return };
    let Some(r) = common::runners() else { return };
    let t = tempfile::tempdir().unwrap();
    let entries = entries(&peers, &r, t.path());
    let passwd = write_config(t.path(), &entries.iter().collect::<Vec<_>>());
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);

    for e in &entries {
        let cmd: Vec<&str> = std::iter::once(e.command.as_str()).chain(e.args.iter().map(String::as_str)).collect();
        let c = client(&peers, e.call.clone(), &e.env, e.cwd.as_deref(), &cmd);
        let tracked = d.expect(&format!("{} tracked", e.name), |v| v["kind"] == "server_tracked" && v["server"] == e.name);
        assert_eq!((tracked["how"].as_str(), tracked["client"].as_str()), (Some("config"), Some("claude-desktop")), "{tracked}");
        assert_eq!(tracked["found"]["runner"]["target"].as_str(), e.target, "{tracked}");
        let sid = tracked["server_id"].clone();
        let id = c["calls"][0]["id"].to_string();
        let call = d.expect(&format!("{} tool call", e.name), |v| v["kind"] == "tool_call" && v["server_id"] == sid && v["id"] == id.as_str());
        assert_eq!(call["server"], e.name, "{call}");
        assert_eq!(c["calls"][0]["is_error"], false, "{c}");
        // The tree starts at the runner and holds the real server.
        let execs = |want: &str| {
            d.records().into_iter().any(|v| v["kind"] == "exec" && v["server_id"] == sid && v["filename"].as_str().is_some_and(|f| f.ends_with(want)))
        };
        assert!(execs(e.runner_file), "{}: no exec of {} under server {sid}", e.name, e.runner_file);
        d.expect(&format!("{}: exec of {}", e.name, e.server_file), |v| {
            v["kind"] == "exec" && v["server_id"] == sid && v["filename"].as_str().is_some_and(|f| base(f).starts_with(e.server_file))
        });
    }
    let (_, recs) = d.stop_with_records();
    // Named once: one server per entry, and none for a process of their trees.
    for e in &entries {
        let n = recs.iter().filter(|v| v["kind"] == "server_tracked" && v["server"] == e.name).count();
        assert_eq!(n, 1, "{} tracked {n} times", e.name);
    }
    let ours: HashSet<String> = recs.iter().filter(|v| v["kind"] == "server_tracked" && entries.iter().any(|e| v["server"] == e.name)).map(|v| v["server_id"].to_string()).collect();
    let in_trees: HashSet<String> = recs.iter().filter(|v| ours.contains(&v["server_id"].to_string()) && v["pid"].is_u64()).map(|v| v["pid"].to_string()).collect();
    let second: Vec<&Value> = recs
        .iter()
        .filter(|v| v["kind"] == "server_tracked" && !ours.contains(&v["server_id"].to_string()) && in_trees.contains(&v["root_pid"].to_string()))
        .collect();
    assert!(second.is_empty(), "a second server inside a runner's tree: {second:?}");
}

/// Launches `n` at once, then expects each tracked under `name` by its pid.
fn launch_all_and_expect(d: &Daemon, e: &Entry, n: usize) {
    let mut kids: Vec<Child> = (0..n).map(|_| e.spawn()).collect();
    for k in &kids {
        let pid = k.id();
        d.expect_within(&format!("{} pid {pid} tracked", e.name), std::time::Duration::from_secs(30), |v| v["kind"] == "server_tracked" && v["root_pid"] == pid && v["server"] == e.name);
    }
    for k in &mut kids {
        drop(k.stdin.take()); // EOF: the server exits
        k.wait().unwrap();
    }
}

/// The runners whose launch is several images in one pid, started again and again: each launch
/// must be taken at the runner, whichever image the daemon sees first.
#[test]
fn twenty_launches_through_each_runner_are_all_tracked() {
    if !common::can_load_ebpf() {
        return;
    }
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let Some(peers) = common::peers() else { return };
    let Some(r) = common::runners() else { return };
    let t = tempfile::tempdir().unwrap();
    let entries = entries(&peers, &r, t.path());
    let passwd = write_config(t.path(), &entries.iter().collect::<Vec<_>>());
    // Fill the caches before the daemon starts (the first uvx and pipx launches build a venv).
    for e in &entries {
        let mut k = e.spawn();
        drop(k.stdin.take());
        k.wait().unwrap();
    }
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    for e in &entries {
        for _ in 0..4 {
            launch_all_and_expect(&d, e, 5);
        }
    }
    let (_, recs) = d.stop_with_records();
    for e in &entries {
        let n = recs.iter().filter(|v| v["kind"] == "server_tracked" && v["server"] == e.name).count();
        assert_eq!(n, 20, "{} tracked {n} times", e.name);
    }
}

/// A configured uvx server already running when the daemon starts: uvx has re-exec'd itself as
/// `uv tool uvx ARGS` by then, which is all /proc shows. It is found under the entry's name with
/// its python child in the tree, and the child is not a second server. Before the fix the
/// start-up scan did not know that command line and took nothing.
#[test]
fn a_running_uvx_server_is_found_at_start_up() {
    if !common::can_load_ebpf() {
        return;
    }
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let Some(peers) = common::peers() else { return };
    let Some(r) = common::runners() else { return };
    let t = tempfile::tempdir().unwrap();
    let uvx = entries(&peers, &r, t.path()).into_iter().find(|e| e.name == "uvx-time").unwrap();
    let passwd = write_config(t.path(), &[&uvx]);
    let mut k = uvx.spawn();
    let pid = k.id();
    // Wait (bounded) for uv's re-exec and for the server's python below it: the state this
    // test is about.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let child = loop {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // uv forks from one of its worker threads: each thread lists its own children.
        let kids: String = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.flatten().filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        // The server's python, not one uv runs to ask the interpreter what it is.
        let server = |c: &u32| {
            let exe = std::fs::read_link(format!("/proc/{c}/exe")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            base(exe.to_str().unwrap()).starts_with("python") && String::from_utf8_lossy(&cmd).contains("mcp-server-time")
        };
        let kid = kids.split_whitespace().filter_map(|c| c.parse::<u32>().ok()).find(server);
        let python = kid.is_some();
        if cmdline.split(|b| *b == 0).nth(1) == Some(b"tool") && python {
            break kid.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "uvx never became `uv tool uvx` with a python child");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    let rec = d.expect("the running uvx", |v| v["kind"] == "server_tracked" && v["root_pid"] == pid);
    assert_eq!((rec["server"].as_str(), rec["how"].as_str()), (Some("uvx-time"), Some("procfs")), "{rec}");
    assert_eq!(rec["found"]["runner"]["target"], "mcp-server-time", "{rec}");
    // The python child is in the tree: its exit is recorded under the same server.
    drop(k.stdin.take());
    k.wait().unwrap();
    let sid = rec["server_id"].clone();
    d.expect(&format!("the python child's exit (pid {child})"), |v| v["kind"] == "exit" && v["pid"] == child && v["server_id"] == sid);
    let (_, recs) = d.stop_with_records();
    let servers: Vec<&Value> = recs.iter().filter(|v| v["kind"] == "server_tracked" && (v["root_pid"] == pid || v["root_pid"] == child)).collect();
    assert_eq!(servers.len(), 1, "{servers:?}");
}

/// `docker run -i IMAGE`: the CLI is tracked under the entry's name and `found.runner` names the
/// image. There is no Docker engine on the test machines, so the CLI talks to a socket that
/// accepts and never answers (`DOCKER_HOST`), and stays up. The container's own processes are
/// children of the engine's shim, not of the CLI: not tested here, and not followed.
#[test]
fn docker_run_is_tracked_with_its_image() {
    if !common::can_load_ebpf() {
        return;
    }
    let _one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let Some(docker) = ["/usr/bin/docker", "/usr/local/bin/docker"].into_iter().find(|p| Path::new(p).exists()) else {
        common::skipped("no docker CLI: the `docker run` case is left out");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("engine.sock");
    let _engine = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let e = Entry {
        name: "docker-time",
        command: "docker".into(),
        args: strings(&["run", "-i", "--rm", "-e", "TZ", "--name", "runners-test-time", "mcp/time"]),
        env: json!({"DOCKER_HOST": format!("unix://{}", sock.display()), "PATH": format!("{}:/usr/bin:/bin", Path::new(docker).parent().unwrap().display())}),
        cwd: None,
        call: json!([]),
        runner_file: "/docker",
        server_file: "docker",
        target: Some("mcp/time"),
    };
    let passwd = write_config(t.path(), &[&e]);
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    let mut k = e.spawn();
    let pid = k.id();
    let rec = d.expect("docker run tracked", |v| v["kind"] == "server_tracked" && v["root_pid"] == pid);
    assert_eq!(rec["server"], e.name, "{rec}");
    assert_eq!(rec["found"]["runner"], json!({"runner": "docker", "target": "mcp/time"}), "{rec}");
    k.kill().unwrap();
    k.wait().unwrap();
    d.stop();
}
