//! MCP over streamable HTTP, end to end: real servers (`@modelcontextprotocol/server-everything`
//! in `streamableHttp` mode on Node, a Python SDK server on uvicorn) started through
//! `mcpmon exec` with no configuration, driven by the official Python client SDK; the daemon
//! must report what the client saw, attribute the server's syscalls to the call in flight, kill
//! an SSH-key read in the middle of an HTTP call with an alert naming the call, and survive bad
//! clients with its losses counted.
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::daemon::{exec_cmd, Daemon};
use serde_json::{json, Value};

const MCPMON: &str = env!("CARGO_BIN_EXE_mcpmon");
const SECRET: &str = "SECRET-KEY-MATERIAL-http-9c1";

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server started through `mcpmon exec`, listening on `port`; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(cmd: Command, port: u16) -> Server {
        Self::start_probed(cmd, port, || TcpStream::connect(("127.0.0.1", port)).is_ok())
    }

    /// `ready`: whether the server accepts a connection yet (that probe is a connection the
    /// daemon sees too).
    fn start_probed(mut cmd: Command, port: u16, ready: impl Fn() -> bool) -> Server {
        let child = cmd.env("PORT", port.to_string()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let mut s = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            assert!(s.child.try_wait().unwrap().is_none(), "the server exited before listening");
            assert!(Instant::now() < deadline, "the server never listened on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// `mode`: "streamableHttp" or "sse".
fn everything(d: &Daemon, peers: &Path, name: &str, mode: &str) -> Server {
    let index = peers.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let port = free_port();
    Server::start(exec_cmd(&d.socket, name, &["--require-monitor"], &["node", index.to_str().unwrap(), mode]), port)
}

fn python_server(d: &Daemon, peers: &Path, name: &str) -> Server {
    let port = free_port();
    let py = peers.join("venv/bin/python");
    let script = peer_script("http_read_server.py");
    Server::start(exec_cmd(&d.socket, name, &["--require-monitor"], &[py.to_str().unwrap(), script.to_str().unwrap(), &port.to_string()]), port)
}

/// The official client SDK (tests/peers/http_client.py): initialize, tools/list, then `calls`.
fn client(peers: &Path, url: &str, calls: Value) -> Value {
    client_over(peers, url, calls, None)
}

/// `transport`: Some("sse") for the older SSE transport.
fn client_over(peers: &Path, url: &str, calls: Value, transport: Option<&str>) -> Value {
    client_cmd(peers, url, calls, transport, None)
}

/// `uds`: reach the server through this unix socket.
fn client_cmd(peers: &Path, url: &str, calls: Value, transport: Option<&str>, uds: Option<&Path>) -> Value {
    let mut c = Command::new(peers.join("venv/bin/python"));
    c.arg(peer_script("http_client.py")).arg(url).arg(calls.to_string()).args(transport);
    if let Some(p) = uds {
        c.env("MCP_HTTP_UDS", p);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `tool_call` record of the client's call `c` (same server, tool, JSON-RPC id and arguments).
fn call_record(d: &Daemon, server: &str, c: &Value) -> Value {
    let id = c["id"].to_string();
    d.expect(&format!("tool_call {} id {id}", c["tool"]), |v| {
        v["kind"] == "tool_call" && v["server"] == server && v["tool"] == c["tool"] && v["id"] == id.as_str() && v["arguments"] == c["arguments"]
    })
}

#[test]
fn everything_server_calls_match_what_the_client_saw() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let d = Daemon::start(&[]);
    let srv = everything(&d, &peers, "everything-http", "streamableHttp");
    let calls = json!([
        {"tool": "echo", "arguments": {"message": "over http"}},
        {"tool": "get-sum", "arguments": {"a": 20, "b": 22}},
        {"tool": "get-sum", "arguments": {"a": "not a number", "b": 1}},
    ]);
    let got = client(&peers, &srv.url(), calls);
    let listed = d.expect("tools/list", |v| v["kind"] == "mcp_tools" && v["server"] == "everything-http");
    assert_eq!(listed["tools"], got["tools"]);
    let mut sessions = vec![];
    for c in got["calls"].as_array().unwrap() {
        let r = call_record(&d, "everything-http", c);
        let want = match (c["failed"].is_string(), c["is_error"] == true) {
            (true, _) => ["rpc_error"].as_slice(),
            (false, true) => ["tool_error"].as_slice(),
            (false, false) => ["ok"].as_slice(),
        };
        assert!(want.contains(&r["outcome"].as_str().unwrap()), "client saw {c}, daemon {r}");
        sessions.push(r["http_session"].as_str().expect("the Mcp-Session-Id is recorded").to_string());
    }
    assert_eq!(got["calls"][1]["text"].as_str().map(|t| t.contains("42")), Some(true), "{got}");
    sessions.dedup();
    assert_eq!(sessions.len(), 1, "one client, one session: {sessions:?}");
    d.expect("initialize seen", |v| v["kind"] == "mcp_initialize" && v["server"] == "everything-http" && v["client"]["name"] == "mcp");
}

#[test]
fn everything_server_over_the_sse_transport() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let d = Daemon::start(&[]);
    let srv = everything(&d, &peers, "everything-sse", "sse");
    let url = format!("http://127.0.0.1:{}/sse", srv.port);
    let got = client_over(&peers, &url, json!([{"tool": "echo", "arguments": {"message": "over sse"}}, {"tool": "get-sum", "arguments": {"a": 1, "b": 2}}]), Some("sse"));
    let mut sessions = vec![];
    for c in got["calls"].as_array().unwrap() {
        let r = call_record(&d, "everything-sse", c);
        assert_eq!(r["outcome"], "ok", "client saw {c}, daemon {r}");
        sessions.push(r["http_session"].as_str().expect("the sessionId is recorded").to_string());
    }
    sessions.dedup();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let listed = d.expect("tools/list", |v| v["kind"] == "mcp_tools" && v["server"] == "everything-sse");
    assert_eq!(listed["tools"], got["tools"]);
}

#[test]
fn ipv6_and_unix_socket_servers_and_json_replies_are_captured_too() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let py = peers.join("venv/bin/python");
    let script = peer_script("http_read_server.py");
    let (py, script) = (py.to_str().unwrap(), script.to_str().unwrap());
    let check = |server: &str, got: &Value, path: &str| {
        let c = &got["calls"][0];
        assert_eq!(c["text"], "via", "{got}");
        let open = d.expect(&format!("{server}: open of {path}"), |v| common::daemon::is_open(v, path));
        assert_eq!((open["mcp"]["state"].as_str(), open["mcp"]["id"].as_str()), (Some("call"), Some(c["id"].to_string().as_str())), "{open}");
        assert_eq!(call_record(&d, server, c)["outcome"], "ok");
    };
    // IPv6 loopback.
    let port = free_port();
    let mut cmd = exec_cmd(&d.socket, "py-http-v6", &["--require-monitor"], &[py, script, &port.to_string()]);
    cmd.env("MCP_HTTP_HOST", "::1");
    let srv = Server::start_probed(cmd, port, || TcpStream::connect(("::1", port)).is_ok());
    let f6 = dir.path().join("v6.txt");
    std::fs::write(&f6, "via\n").unwrap();
    let path = f6.display().to_string();
    let got = client(&peers, &format!("http://[::1]:{port}/mcp"), json!([{"tool": "read", "arguments": {"path": path}}]));
    check("py-http-v6", &got, &path);
    drop(srv);
    // A unix socket, the server answering with application/json bodies instead of SSE.
    let sock = dir.path().join("mcp.sock");
    let mut cmd = exec_cmd(&d.socket, "py-http-uds", &["--require-monitor"], &[py, script, "0", "json"]);
    cmd.env("MCP_HTTP_UDS", &sock);
    let _srv = Server::start_probed(cmd, 0, || std::os::unix::net::UnixStream::connect(&sock).is_ok());
    let fu = dir.path().join("uds.txt");
    std::fs::write(&fu, "via\n").unwrap();
    let path = fu.display().to_string();
    let got = client_cmd(&peers, "http://127.0.0.1:8000/mcp", json!([{"tool": "read", "arguments": {"path": path}}]), None, Some(&sock));
    check("py-http-uds", &got, &path);
}

#[test]
fn opens_during_http_calls_are_attributed_and_two_clients_stay_apart() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let d = Daemon::start(&[]);
    let srv = python_server(&d, &peers, "py-http");
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| -> String {
        let p = dir.path().join(n);
        std::fs::write(&p, format!("line of {n}\n")).unwrap();
        p.display().to_string()
    };
    let plan = |names: &[&str]| -> Value { names.iter().map(|n| json!({"tool": "read", "arguments": {"path": file(n)}})).collect() };
    let out = Command::new(peers.join("venv/bin/python"))
        .arg(peer_script("http_two_clients.py"))
        .arg(srv.url())
        .arg(plan(&["a1", "a2"]).to_string())
        .arg(plan(&["b1", "b2"]).to_string())
        .current_dir(peer_script(""))
        .output()
        .unwrap();
    assert!(out.status.success(), "clients failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut session_of = std::collections::HashMap::new();
    for who in ["a", "b"] {
        for c in got[who]["calls"].as_array().unwrap() {
            let path = c["arguments"]["path"].as_str().unwrap();
            assert_eq!(c["text"].as_str().unwrap(), format!("line of {}", Path::new(path).file_name().unwrap().to_str().unwrap()));
            // The server's open of the file carries exactly this call: tool, id, arguments.
            let open = d.expect(&format!("open of {path}"), |v| common::daemon::is_open(v, path));
            assert_eq!(open["mcp"]["state"], "call", "{open}");
            assert_eq!(open["mcp"]["tool"], "read", "{open}");
            assert_eq!(open["mcp"]["id"], c["id"].to_string(), "{open}");
            assert_eq!(open["mcp"]["arguments"]["path"], path, "{open}");
            let r = call_record(&d, "py-http", c);
            assert_eq!(r["outcome"], "ok", "{r}");
            assert!(r["events"].as_u64().unwrap() >= 1, "the open counted for the call: {r}");
            let s = r["http_session"].as_str().unwrap().to_string();
            assert_eq!(*session_of.entry(who).or_insert_with(|| s.clone()), s, "one session per client");
        }
    }
    assert_ne!(session_of["a"], session_of["b"], "two clients, two sessions");
    assert_eq!(got["a"]["calls"][0]["id"], got["b"]["calls"][0]["id"], "the clients reuse ids: only the session tells them apart");
}

/// An ordinary user (`useradd`, home under /tmp) with a key in `~/.ssh`; removed on drop.
struct User {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    _root: tempfile::TempDir,
}

impl User {
    fn add(tag: &str) -> User {
        let root = tempfile::Builder::new().prefix("mcpmon-home-").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = root.path().join(tag);
        let name = format!("mcpt{tag}{}", std::process::id() % 100_000);
        let _ = Command::new("userdel").arg(&name).output();
        let out = Command::new("useradd").args(["-M", "-s", "/bin/sh", "-d"]).arg(&home).arg(&name).output().unwrap();
        assert!(out.status.success(), "useradd: {}", String::from_utf8_lossy(&out.stderr));
        let id = |f: &str| -> u32 { String::from_utf8(Command::new("id").arg(f).arg(&name).output().unwrap().stdout).unwrap().trim().parse().unwrap() };
        let u = User { uid: id("-u"), gid: id("-g"), name, home, _root: root };
        std::fs::create_dir_all(u.home.join(".ssh")).unwrap();
        for p in [u.home.clone(), u.home.join(".ssh")] {
            std::os::unix::fs::chown(&p, Some(u.uid), Some(u.gid)).unwrap();
        }
        u
    }

    fn write_key(&self) -> PathBuf {
        let p = self.home.join(".ssh/id_ed25519");
        std::fs::write(&p, format!("{SECRET}\n")).unwrap();
        std::os::unix::fs::chown(&p, Some(self.uid), Some(self.gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

#[test]
fn an_ssh_key_read_during_an_http_call_is_killed_and_the_alert_names_the_call() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let u = User::add("http");
    let key = u.write_key();
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let d = Daemon::start(&["--rules", rules.to_str().unwrap()]);
    std::fs::set_permissions(d.socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.expect("rules_loaded", |v| v["kind"] == "rules_loaded");
    let port = free_port();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string(), "--clear-groups", "--", MCPMON, "exec", "--require-monitor", "--name", "py-http-key", "--socket"]);
    cmd.arg(&d.socket).arg("--").arg(peers.join("venv/bin/python")).arg(peer_script("http_read_server.py")).arg(port.to_string());
    cmd.env("HOME", &u.home).current_dir(&u.home);
    let srv = Server::start(cmd, port);
    let path = key.display().to_string();
    let got = client(&peers, &srv.url(), json!([{"tool": "read", "arguments": {"path": path}}]));
    assert!(!got.to_string().contains(SECRET), "the key reached the client: {got}");
    let call = &got["calls"][0];
    let a = d.expect("ssh key alert", |v| v["kind"] == "alert" && v["server"]["name"] == "py-http-key" && v["rule"]["id"] == "ssh-private-key-read");
    assert_eq!(a["mcp"]["state"], "call", "{a}");
    assert_eq!(a["mcp"]["tool"], "read", "{a}");
    assert_eq!(a["mcp"]["id"], call["id"].to_string(), "{a}");
    assert_eq!(a["mcp"]["arguments"]["path"], path.as_str(), "{a}");
    assert!(a["action"]["result"].as_str().unwrap().contains("killed"), "{a}");
    let pid = a["process"]["pid"].as_u64().unwrap();
    d.expect("the server died of SIGKILL", |v| v["kind"] == "exit" && v["pid"] == pid && v["signal"] == 9);
    drop(srv);
    d.stop();
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes `parts` on one connection, then reads whatever comes back until the server closes.
fn raw(port: u16, parts: &[&[u8]], pause: Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for p in parts {
        // The server may refuse and close early (a body over its limit): that is its answer.
        if s.write_all(p).is_err() {
            break;
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut sink = vec![];
    let _ = s.read_to_end(&mut sink);
}

#[test]
fn bad_clients_leave_the_daemon_up_in_sync_and_counting() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let d = Daemon::start(&[]);
    // Start-up's own peak (programs and BTF loaded): the bound below is on growth with input.
    let base = peak_rss_kib(d.pid());
    let srv = python_server(&d, &peers, "py-http-bad");
    // Garbage (binary), then a half request whose body never comes.
    let garbage: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    raw(srv.port, &[&garbage], Duration::ZERO);
    raw(srv.port, &[b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 5000\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,"], Duration::ZERO);
    // A 100 MiB body.
    let head = format!("POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n", 100u64 << 20);
    let blob = vec![b' '; 1 << 20];
    let mut parts: Vec<&[u8]> = vec![head.as_bytes()];
    parts.extend(std::iter::repeat_n(&blob[..], 100));
    raw(srv.port, &parts, Duration::ZERO);
    // A slow client: an initialize, a few bytes at a time.
    let body = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"slow-client","version":"1"}}}"#;
    let req = format!("POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let pieces: Vec<&[u8]> = req.as_bytes().chunks(7).collect();
    raw(srv.port, &pieces, Duration::from_millis(2));
    d.expect("the slow client's initialize", |v| v["kind"] == "mcp_initialize" && v["server"] == "py-http-bad" && v["client"]["name"] == "slow-client");
    // Still in sync: a real client's call after all that is seen exactly.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("after.txt");
    std::fs::write(&f, "after\n").unwrap();
    let got = client(&peers, &srv.url(), json!([{"tool": "read", "arguments": {"path": f.display().to_string()}}]));
    let r = call_record(&d, "py-http-bad", &got["calls"][0]);
    assert_eq!(r["outcome"], "ok", "{r}");
    assert!(monitor::control::client::ping(&d.socket, Duration::from_secs(2)).is_ok(), "daemon alive");
    let peak = peak_rss_kib(d.pid());
    assert!(peak < base + 32 * 1024, "peak RSS {peak} KiB (after start-up: {base} KiB)");
    drop(srv);
    let (_, records) = d.stop_with_records();
    let stats = records.iter().find(|v| v["kind"] == "stats").unwrap();
    let http = &stats["http"];
    eprintln!("http stats after the bad clients: {http}");
    assert!(http["desyncs"].as_u64().unwrap() >= 1, "the garbage was noticed: {stats}");
    let lost = http["bytes_lost"].as_u64().unwrap();
    assert!(lost >= 60_000, "what was not understood is counted: {stats}");
    let sent = (garbage.len() + head.len() + (100 << 20) + 1024) as u64;
    assert!(lost <= sent, "no byte counted twice: {lost} lost of {sent} sent at most");
    assert!(http["connections"].as_u64().unwrap() >= 5, "{stats}");
    // Each raw connection above was closed by the server: the kernel's close ends its capture.
    assert!(http["connections_closed"].as_u64().unwrap() >= 4, "{stats}");
}

#[test]
fn an_https_server_is_marked_tls_and_its_bytes_are_not_parsed() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(openssl) = common::tool("/usr/bin/openssl") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = Command::new(&openssl)
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = Daemon::start(&[]);
    let port = free_port();
    let (o, c, k, p) = (openssl.to_str().unwrap(), cert.to_str().unwrap(), key.to_str().unwrap(), port.to_string());
    let _srv = Server::start(exec_cmd(&d.socket, "https-local", &["--require-monitor"], &[o, "s_server", "-quiet", "-www", "-accept", &p, "-cert", c, "-key", k]), port);
    let script = format!(
        "import socket, ssl\nctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port}), timeout=10))\n\
         s.sendall(b'GET /mcp HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\nprint(s.recv(64))\n"
    );
    let out = Command::new(common::python()).arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "TLS client: {}", String::from_utf8_lossy(&out.stderr));
    let r = d.expect("the TLS connection", |v| v["kind"] == "http_connection" && v["server"] == "https-local");
    assert_eq!((r["tls"].as_bool(), r["payload_captured"].as_bool()), (Some(true), Some(false)), "{r}");
    let (_, records) = d.stop_with_records();
    assert!(!records.iter().any(|v| v["kind"] == "mcp_invalid" && v["server"] == "https-local"), "ciphertext is not parsed as JSON-RPC");
    let stats = records.iter().find(|v| v["kind"] == "stats").unwrap();
    // The client's connection, and the readiness probe the server answered with a TLS alert.
    assert!(stats["http"]["tls_connections"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["http"]["desyncs"], 0, "ciphertext is no garbage to resync on: {stats}");
}
