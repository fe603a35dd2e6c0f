//! Issue 14 item 3: an MCP server that a client config names only by a local URL
//! (`{"type": "http", "url": "http://127.0.0.1:PORT/mcp"}` in Claude Code's `~/.claude.json`),
//! started plainly (not by a client, not through `mcpmon exec`), is tracked under the configured
//! name through its listening socket, whether it was listening before the daemon started or
//! starts later, over IPv4 or IPv6 (a dual-stack `::` listener, and a Python SDK server bound to
//! `::1` only), and again after it restarts on the same port; its tool calls over HTTP are then
//! captured. URLs of other hosts, ports nothing listens on, and another user's
//! listener take nothing.
mod common;

use std::{
    io::BufRead,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::daemon::Daemon;
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

/// A process started plainly; SIGTERM and reaped on drop.
struct Plain(Child);

impl Drop for Plain {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of the child this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// `server-everything` in streamableHttp mode on `port` (it listens on `::`, dual-stack), as a
/// child of this test: no client above it, no `mcpmon exec`. Returns once it accepts.
fn everything(peers: &Path, port: u16) -> Plain {
    let index = peers.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let child = Command::new("node")
        .arg(index)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut s = Plain(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(s.0.try_wait().unwrap().is_none(), "the server exited before listening on {port}");
        assert!(Instant::now() < deadline, "the server never listened on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

/// A bare TCP listener on 0.0.0.0 (not an MCP server); returns with its port bound.
fn bare_listener() -> (Plain, u16) {
    let mut c = Command::new("python3")
        .args(["-c", "import socket,sys; s=socket.socket(); s.bind(('0.0.0.0',0)); s.listen(); print(s.getsockname()[1], flush=True); sys.stdin.read()"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    (Plain(c), line.trim().parse().expect("the listener's port"))
}

/// The official client SDK (tests/peers/http_client.py): initialize, tools/list, then `calls`.
fn client(peers: &Path, url: &str, calls: Value) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/http_client.py");
    let out = Command::new(peers.join("venv/bin/python")).arg(script).arg(url).arg(calls.to_string()).output().unwrap();
    assert!(out.status.success(), "client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One call of `tool` through `url`, whose result must contain `want`; the daemon's `tool_call`
/// record of it, under `server`.
fn call_seen(d: &Daemon, peers: &Path, server: &str, url: &str, tool: &str, arguments: Value, want: &str) -> Value {
    let got = client(peers, url, json!([{"tool": tool, "arguments": arguments}]));
    let c = &got["calls"][0];
    assert!(c["text"].as_str().is_some_and(|t| t.contains(want)), "{got}");
    let id = c["id"].to_string();
    let r = d.expect(&format!("{server}: tool_call {tool} {arguments}"), |v| {
        v["kind"] == "tool_call" && v["server"] == server && v["tool"] == tool && v["id"] == id.as_str() && v["arguments"] == c["arguments"]
    });
    assert_eq!(r["outcome"], "ok", "{r}");
    r
}

fn echo_seen(d: &Daemon, peers: &Path, server: &str, url: &str, message: &str) -> Value {
    call_seen(d, peers, server, url, "echo", json!({"message": message}), message)
}

/// The Python SDK server of tests/http.rs (one `read` tool), bound to `::1` only.
fn python_v6(peers: &Path, port: u16) -> Plain {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/http_read_server.py");
    let child = Command::new(peers.join("venv/bin/python"))
        .arg(script)
        .arg(port.to_string())
        .env("MCP_HTTP_HOST", "::1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut s = Plain(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("::1", port)).is_err() {
        assert!(s.0.try_wait().unwrap().is_none(), "the server exited before listening on [::1]:{port}");
        assert!(Instant::now() < deadline, "the server never listened on [::1]:{port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

/// The `server_tracked` record of pid `pid`, which must name `server`, found by `url` in `config`.
fn tracked_by_url(d: &Daemon, server: &str, pid: u32, config: &Path, url: &str) -> Value {
    let rec = d.expect(&format!("{server} (pid {pid}) tracked"), |v| v["kind"] == "server_tracked" && v["root_pid"] == pid);
    assert_eq!((rec["server"].as_str(), rec["how"].as_str(), rec["client"].as_str()), (Some(server), Some("url"), Some("claude-code")), "{rec}");
    let f = &rec["found"];
    assert_eq!((f["how"].as_str(), f["client"].as_str(), f["config"].as_str(), f["url"].as_str()), (Some("url"), Some("claude-code"), config.to_str(), Some(url)), "{rec}");
    rec
}

/// A user database of `(name, uid, home)` and each home's `~/.claude.json` naming `servers`.
fn homes(t: &Path, users: &[(&str, u32, Value)]) -> PathBuf {
    let mut passwd = String::new();
    for (name, uid, servers) in users {
        let home = t.join("home").join(name);
        write(&home.join(".claude.json"), &json!({"numStartups": 3, "mcpServers": servers}).to_string());
        passwd += &format!("{name}:x:{uid}:{uid}::{}:/bin/sh\n", home.display());
    }
    let p = t.join("passwd");
    write(&p, &passwd);
    p
}

#[test]
fn a_server_named_by_url_is_tracked_when_it_starts_and_again_after_a_restart() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let passwd = homes(t.path(), &[("dev", 0, json!({"url-everything": {"type": "http", "url": url}}))]);
    let config = t.path().join("home/dev/.claude.json");
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);

    let srv = everything(&peers, port);
    let first = tracked_by_url(&d, "url-everything", srv.0.id(), &config, &url);
    echo_seen(&d, &peers, "url-everything", &url, "before the restart");

    // Same port, new process: matched again, and its calls are captured.
    let old = srv.0.id();
    drop(srv);
    d.expect("the first server gone", |v| v["kind"] == "server_gone" && v["server_id"] == first["server_id"]);
    let srv = everything(&peers, port);
    assert_ne!(srv.0.id(), old);
    tracked_by_url(&d, "url-everything", srv.0.id(), &config, &url);
    echo_seen(&d, &peers, "url-everything", &url, "after the restart");

    // `mcpmon servers` says it in words.
    let table = Command::new(common::daemon::MCPMON).args(["servers", "--socket"]).arg(&d.socket).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&format!("claude-code config {} url {url}", config.display())), "{table}");
    drop(srv);
    d.stop();
}

#[test]
fn servers_listening_before_the_daemon_are_tracked_over_ipv6_and_other_urls_take_nothing() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let srv = everything(&peers, port);
    // Bound to ::1 itself, not a wildcard.
    let port_py = free_port();
    let py = python_v6(&peers, port_py);
    let url_py = format!("http://[::1]:{port_py}/mcp");
    // Something that listens on every address, and that no URL below may take.
    let (bare, bare_port) = bare_listener();
    let nothing = free_port();
    let url6 = format!("http://[::1]:{port}/mcp");
    let passwd = homes(
        t.path(),
        &[
            (
                "dev",
                0,
                json!({
                    "url-everything-v6": {"type": "http", "url": url6},
                    "url-python-v6": {"type": "http", "url": url_py},
                    "url-remote": {"type": "http", "url": format!("http://192.0.2.1:{bare_port}/mcp")},
                    "url-remote-name": {"type": "sse", "url": format!("http://mcp.example.com:{bare_port}/sse")},
                    "url-nothing-there": {"type": "http", "url": format!("http://127.0.0.1:{nothing}/mcp")},
                }),
            ),
            // Another user's config may not put root's listener under watch.
            ("other", 4242, json!({"url-not-mine": {"type": "http", "url": format!("http://localhost:{bare_port}/mcp")}})),
        ],
    );
    let config = t.path().join("home/dev/.claude.json");
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);

    tracked_by_url(&d, "url-everything-v6", srv.0.id(), &config, &url6);
    echo_seen(&d, &peers, "url-everything-v6", &url6, "over ipv6");
    tracked_by_url(&d, "url-python-v6", py.0.id(), &config, &url_py);
    let file = t.path().join("read-me.txt");
    std::fs::write(&file, "read over ::1\n").unwrap();
    call_seen(&d, &peers, "url-python-v6", &url_py, "read", json!({"path": file.to_str().unwrap()}), "read over ::1");

    // Every entry was judged in the pass that took the server, before the call above was
    // recorded: none of the others took anything.
    let stray: Vec<Value> = d
        .records()
        .into_iter()
        .filter(|v| v["kind"] == "server_tracked" && (v["root_pid"] == bare.0.id() || v["server"].as_str().is_some_and(|s| s.starts_with("url-") && s != "url-everything-v6" && s != "url-python-v6")))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    let err = d.stop();
    assert!(err.contains("url-not-mine") && err.contains("another user's"), "the refusal is logged:\n{err}");
    drop((srv, py, bare));
}
