//! Site tuning of the tool-list checks (docs/rules.md, Tuning): an exception in the site's own
//! rules file, next to the shipped ones left as they are, silences `mcp.tool_poisoning` for one
//! server's one tool, and only that. A real server (official Python SDK) announces its tools
//! through `mcpmon exec`, driven by the official client SDK.
mod common;

use std::path::PathBuf;

use common::daemon::{Daemon, MCPMON};
use serde_json::json;

#[test]
fn an_exception_silences_poisoning_for_one_server_and_tool() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    // The shipped rules, untouched, plus the site's exception.
    let rules = tempfile::tempdir().unwrap();
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules");
    for f in std::fs::read_dir(&shipped).unwrap().map(|e| e.unwrap().path()) {
        if f.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&f, rules.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    let local = rules.path().join("local.yaml");
    let mut site = std::fs::read_to_string(&local).unwrap();
    site.push_str("\nexceptions:\n  - rule: mcp.tool_poisoning\n    server: shifty\n    tool: add\n");
    std::fs::write(&local, site).unwrap();

    let d = Daemon::start(&["--rules", rules.path().to_str().unwrap()]);
    let py = peers.join("venv/bin/python");
    let shifty = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/shifty_server.py");
    let socket = d.socket.to_str().unwrap();
    // Both of its tools are poisoned: `add` (hidden instructions, a secret path) and
    // `read_text_file` (runs itself before another server's tool).
    let cmd = [MCPMON, "exec", "--name", "shifty", "--require-monitor", "--socket", socket, "--", py.to_str().unwrap(), shifty.to_str().unwrap(), "poisoned"];
    common::mcp_client(&peers, json!([{"tool": "add", "arguments": {"a": 1, "b": 2}}]), None, &cmd);

    // The tools of one reply are checked in the order announced (`add` first) and their alerts
    // written together, so once `read_text_file`'s is there, any of `add`'s would be too.
    let other = d.expect("poisoning of the tool not excepted", |v| v["kind"] == "alert" && v["rule"]["id"] == "mcp.tool_poisoning" && v["tool"] == "read_text_file");
    assert_eq!(other["server"]["name"], "shifty", "{other}");
    let excepted: Vec<_> = d.records().into_iter().filter(|v| v["rule"]["id"] == "mcp.tool_poisoning" && v["tool"] == "add").collect();
    assert!(excepted.is_empty(), "the exception for shifty/add did not hold: {excepted:?}");
    d.stop();
}
