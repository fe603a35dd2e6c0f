//! End to end with real MCP peers from the registries (installed by `cargo xtask setup`): the
//! official Python client SDK drives `mcp-server-time` (Python SDK, reads fd 6 / writes fd 7) and
//! `@modelcontextprotocol/server-filesystem` (Node SDK, replies put "result" before "id") through
//! `mcpmon exec`; the tool calls mcpmon reports must match what the client sent, and the file opens
//! made while serving `read_text_file` must be attributed to that call.
mod common;

use std::{path::PathBuf, process::Command};


use common::daemon::{Daemon, MCPMON};
use serde_json::{json, Value};


/// Runs the SDK client against `server` wrapped in `mcpmon exec`; returns what it reports.
fn drive(d: &Daemon, peers: &std::path::Path, name: &str, calls: Value, server: &[&str]) -> Value {
    let socket = d.socket.to_str().unwrap();
    let mut cmd = vec![MCPMON, "exec", "--name", name, "--require-monitor", "--socket", socket, "--"];
    cmd.extend_from_slice(server);
    common::mcp_client(peers, calls, None, &cmd)
}

/// Every tool call the client made shows up, finished, with the same id, tool and arguments.
fn assert_calls_match(d: &Daemon, server: &str, client: &Value) {
    for c in client["calls"].as_array().unwrap() {
        let id = c["id"].to_string();
        let rec = d.expect(&format!("tool_call {id}"), |v| v["kind"] == "tool_call" && v["server"] == server && v["id"] == id);
        assert_eq!(rec["tool"], c["tool"], "{rec}");
        assert_eq!(rec["arguments"], c["arguments"], "{rec}");
        assert_eq!(rec["outcome"], if c["is_error"] == true { "tool_error" } else { "ok" }, "{rec}");
        assert!(rec["duration_ms"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn python_sdk_server_calls_are_reported_and_attributed() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let d = Daemon::start(&[]);
    let server = peers.join("venv/bin/mcp-server-time");
    let client = drive(
        &d,
        &peers,
        "time",
        json!([
            {"tool": "get_current_time", "arguments": {"timezone": "Europe/Paris"}},
            {"tool": "convert_time", "arguments": {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}}
        ]),
        &[server.to_str().unwrap()],
    );
    assert_calls_match(&d, "time", &client);
    let init = d.expect("handshake", |v| v["kind"] == "mcp_initialized" && v["server"] == "time");
    assert_eq!(init["server_info"]["name"], client["server_info"]["name"]);
    let tools = d.expect("tools/list", |v| v["kind"] == "mcp_tools" && v["server"] == "time");
    assert_eq!(tools["tools"], client["tools"]);
    // get_current_time reads the tz database for Europe/Paris while the call is in flight.
    let id = client["calls"][0]["id"].to_string();
    let open = d.expect("zoneinfo open during the call", |v| {
        v["kind"] == "open" && v["path"].as_str().is_some_and(|p| p.contains("Europe/Paris")) && v["mcp"]["state"] == "call"
    });
    assert_eq!((open["mcp"]["tool"].as_str(), open["mcp"]["id"].as_str()), (Some("get_current_time"), Some(id.as_str())));
    d.stop();
}

/// The Python SDK writes the envelope's `"jsonrpc":"2.0"` first, so it stands in the captured
/// head of every reply bigger than the capture: `mcp-server-git` showing a 400 KB diff of plain
/// text is no prompt injection (it raised `result-prompt-injection` before).
#[test]
fn python_sdk_server_with_a_big_reply_raises_no_alert() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let st = Command::new("git").args(["-c", "user.name=t", "-c", "user.email=t@example.com"]).args(args).current_dir(repo.path()).status().unwrap();
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    let text: String = (0..10_000).map(|i| format!("line {i}: the parser reads the release notes\n")).collect();
    std::fs::write(repo.path().join("notes.txt"), &text).unwrap();
    git(&["add", "notes.txt"]);
    let d = Daemon::start(&[]);
    let r = repo.path().to_str().unwrap();
    let client = drive(
        &d,
        &peers,
        "git",
        json!([{"tool": "git_diff_staged", "arguments": {"repo_path": r}}]),
        &[peers.join("venv/bin/mcp-server-git").to_str().unwrap(), "--repository", r],
    );
    assert_calls_match(&d, "git", &client);
    let (err, records) = d.stop_with_records();
    assert!(!err.contains("panicked"), "{err}");
    let stats = records.iter().find(|v| v["kind"] == "stats").expect("stats record at shutdown");
    assert!(stats["mcp"]["truncated_messages"].as_u64().unwrap() >= 1, "the diff exceeded the capture: {stats}");
    let alerts: Vec<_> = records.iter().filter(|v| v["kind"] == "alert").map(|v| v.to_string()).collect();
    assert!(alerts.is_empty(), "alerts on a diff of plain text:\n{}", alerts.join("\n"));
}

#[test]
fn node_sdk_server_with_a_1mib_reply_pairs_and_attributes_right() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let root = tempfile::tempdir().unwrap();
    let small = root.path().join("small.txt");
    let big = root.path().join("big.txt");
    std::fs::write(&small, "hello\n").unwrap();
    std::fs::write(&big, "x".repeat(1 << 20)).unwrap();
    let d = Daemon::start(&[]);
    let fs_server = peers.join("node_modules/.bin/mcp-server-filesystem");
    let read = json!(["read_text_file", "read_file"]);
    let client = drive(
        &d,
        &peers,
        "fs",
        json!([
            {"tool": read, "arguments": {"path": small}},
            {"tool": read, "arguments": {"path": big}},
            {"tool": "list_directory", "arguments": {"path": root.path()}}
        ]),
        &["node", fs_server.to_str().unwrap(), root.path().to_str().unwrap()],
    );
    assert_calls_match(&d, "fs", &client);
    for (i, path) in [(0, &small), (1, &big)] {
        let id = client["calls"][i]["id"].to_string();
        let tool = client["calls"][i]["tool"].as_str().unwrap().to_string();
        let p = path.display().to_string();
        let open = d.expect(&format!("open of {p}"), |v| v["kind"] == "open" && v["path"] == p.as_str() && v["result"]["ok"] == true);
        assert_eq!(open["mcp"]["state"], "call", "{open}");
        assert_eq!(open["mcp"]["tool"], tool.as_str());
        assert_eq!(open["mcp"]["id"], id.as_str(), "the open belongs to the call that read this file");
        assert_eq!(open["mcp"]["arguments"]["path"], p.as_str());
    }
    let (err, records) = d.stop_with_records();
    assert!(!err.contains("panicked"), "{err}");
    let stats = records.iter().find(|v| v["kind"] == "stats").expect("stats record at shutdown");
    assert!(stats["mcp"]["truncated_messages"].as_u64().unwrap() >= 1, "the 1 MiB reply exceeded the capture: {stats}");
    assert_eq!(stats["mcp"]["invalid_messages"], 0, "{stats}");
    // A file of x's is no prompt injection. The reply is checked from its captured head and
    // tail, which hold the JSON-RPC envelope's own `"jsonrpc":"2.0"` (after the result, as the
    // Node SDK writes it): a marker only when it stands inside the text.
    let alerts: Vec<_> = records.iter().filter(|v| v["kind"] == "alert").map(|v| v.to_string()).collect();
    assert!(alerts.is_empty(), "alerts on reading files:\n{}", alerts.join("\n"));
}

#[test]
fn tool_sets_are_pinned_and_rug_pulls_poisoning_and_collisions_alert() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let d = Daemon::start(&[]);
    let py = peers.join("venv/bin/python");
    let shifty = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/shifty_server.py");
    let add = json!([{"tool": "add", "arguments": {"a": 1, "b": 2}}]);
    // First sight: pinned, no alert.
    drive(&d, &peers, "shifty", add.clone(), &[py.to_str().unwrap(), shifty.to_str().unwrap(), "clean"]);
    d.expect("first tools/list", |v| v["kind"] == "mcp_tools" && v["server"] == "shifty");
    assert!(!d.records().iter().any(|v| v["kind"] == "alert"), "a clean first sight raises nothing");
    // Its tools leave the cross-server checks when it is gone; wait for that, or whether fs's
    // descriptions are compared with shifty's `add` would depend on timing.
    d.expect("the first shifty is gone", |v| v["kind"] == "server_gone" && v["server"] == "shifty");

    // The filesystem server runs alongside (it offers read_text_file too).
    let root = tempfile::tempdir().unwrap();
    let fs_server = peers.join("node_modules/.bin/mcp-server-filesystem");
    let mut fs = Command::new(MCPMON)
        .args(["exec", "--name", "fs", "--socket"])
        .arg(&d.socket)
        .args(["--", "node", fs_server.to_str().unwrap(), root.path().to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::{BufRead, Write};
        let mut i = fs.stdin.take().unwrap();
        let mut o = std::io::BufReader::new(fs.stdout.take().unwrap());
        let mut line = String::new();
        writeln!(i, r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#).unwrap();
        o.read_line(&mut line).unwrap();
        writeln!(i, r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#).unwrap();
        writeln!(i, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).unwrap();
        line.clear();
        o.read_line(&mut line).unwrap();
        d.expect("fs tools", |v| v["kind"] == "mcp_tools" && v["server"] == "fs");

        // Same server identity, new tool set: rug pull, poisoned descriptions, a colliding name.
        drive(&d, &peers, "shifty", add, &[py.to_str().unwrap(), shifty.to_str().unwrap(), "poisoned"]);
        let rug = d.expect("rug pull alert", |v| v["kind"] == "alert" && v["rule"]["id"] == "mcp.tool_set_changed");
        assert_eq!(rug["diff"]["added"], json!(["read_text_file"]));
        assert_eq!(rug["diff"]["changed"][0]["name"], "add");
        assert!(rug["diff"]["changed"][0]["schema_changed"].as_bool().unwrap(), "the sidenote argument appeared");
        let kinds: Vec<String> = d
            .records()
            .iter()
            .filter(|v| v["rule"]["id"] == "mcp.tool_poisoning")
            .map(|v| v["finding"]["kind"].as_str().unwrap().to_string())
            .collect();
        for k in ["hidden_tag", "model_instruction", "secret_path"] {
            assert!(kinds.iter().any(|x| x == k), "{k} not in {kinds:?}");
        }
        let shadow = d.expect("shadowing", |v| v["rule"]["id"] == "mcp.tool_poisoning" && v["finding"]["kind"] == "cross_server_reference");
        assert!(shadow["finding"]["detail"].as_str().unwrap().contains("\"list_directory\" of server \"fs\""), "{shadow}");
        let col = d.expect("collision", |v| v["rule"]["id"] == "mcp.tool_name_collision" && v["collision"]["tool"] == "read_text_file");
        assert_eq!(col["collision"]["servers"], json!(["fs", "shifty"]));

        // `mcpmon servers` shows the live server with its tree, tools and counts.
        let out = Command::new(MCPMON).args(["servers", "--json", "--socket"]).arg(&d.socket).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let servers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let fs_entry = servers.as_array().unwrap().iter().find(|s| s["name"] == "fs").expect("fs listed");
        assert_eq!(fs_entry["how"], "exec");
        assert!(fs_entry["pids"].as_array().unwrap().contains(&json!(fs.id())), "{fs_entry}");
        assert!(fs_entry["tools"].as_array().unwrap().contains(&json!("read_text_file")));
        assert_eq!(fs_entry["server_info"]["name"], "secure-filesystem-server");
        let fs_alerts: Vec<_> = d.records().into_iter().filter(|v| v["kind"] == "alert" && v["server"]["name"] == "fs").collect();
        assert_eq!(fs_entry["alerts"], 0, "the collision was raised on shifty, which announced it second; fs alerts: {fs_alerts:?}");
        let table = Command::new(MCPMON).args(["servers", "--socket"]).arg(&d.socket).output().unwrap();
        let table = String::from_utf8_lossy(&table.stdout);
        assert!(table.starts_with("ID") && table.contains(" fs ") && table.contains("read_text_file"), "{table}");
        drop(i);
    }
    fs.wait().unwrap();
    d.stop();
}
