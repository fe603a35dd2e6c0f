//! `--otlp-endpoint` end to end: the official MCP client SDK drives a real server (the runner,
//! whose tool spawns a shell, which the shipped rules alert on) under `mcpmon exec`; a real OTLP
//! receiver built on `opentelemetry-proto` (tests/peers/otlp_receiver.py) must accept every
//! request as an ExportTraceServiceRequest, and each call's span must say what the client saw
//! (tool, id, arguments' size, outcome) and carry the call's syscalls and its alert, as the
//! event stream reports them. With the collector down, the queue stays bounded and every span
//! is counted, exported or dropped.
mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::daemon::{Daemon, MCPMON};
use serde_json::{json, Value};

/// The receiver, started by the test; killed on drop.
struct Receiver {
    child: Child,
    lines: mpsc::Receiver<Value>,
    url: String,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver(peers: &Path) -> Receiver {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/otlp_receiver.py");
    let mut child = Command::new(peers.join("venv/bin/python")).arg(script).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let port = first.trim().strip_prefix("PORT ").unwrap_or_else(|| panic!("receiver said {first:?}")).to_string();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&l).unwrap());
        }
    });
    Receiver { child, lines, url: format!("http://127.0.0.1:{port}") }
}

fn runner() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/runner_server.py")
}

fn drive(d: &Daemon, peers: &Path, name: &str, calls: Value, server: &[&str]) -> Value {
    let socket = d.socket.to_str().unwrap();
    let mut cmd = vec![MCPMON, "exec", "--name", name, "--require-monitor", "--socket", socket, "--"];
    cmd.extend_from_slice(server);
    common::mcp_client(peers, calls, None, &cmd)
}

/// An OTLP attribute list as key → the AnyValue's JSON (`{"stringValue": …}`).
fn attrs(v: &Value) -> HashMap<String, Value> {
    v["attributes"].as_array().into_iter().flatten().map(|a| (a["key"].as_str().unwrap().to_string(), a["value"].clone())).collect()
}

fn s(x: &str) -> Value {
    json!({"stringValue": x})
}

fn int(x: u64) -> Value {
    json!({"intValue": x.to_string()})
}

#[test]
fn tool_calls_are_spans_with_their_syscalls_and_alerts() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let r = receiver(&peers);
    let d = Daemon::start(&["--otlp-endpoint", &r.url]);
    d.expect("rules_loaded", |v| v["kind"] == "rules_loaded");
    let py = peers.join("venv/bin/python");
    let client = drive(
        &d,
        &peers,
        "runner",
        // A shell (alerted: shell-spawned-by-tool-call), then arguments the tool refuses (isError).
        json!([{"tool": "run", "arguments": {"command": "echo hi"}}, {"tool": "run", "arguments": {}}]),
        &[py.to_str().unwrap(), runner().to_str().unwrap()],
    );
    let calls = client["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{client}");
    assert_eq!(calls[1]["is_error"], true, "the second call is a tool error: {client}");

    // Every request the receiver got parsed; gather the spans by JSON-RPC id.
    let mut spans: HashMap<String, (Value, Value)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while spans.len() < calls.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let req = r.lines.recv_timeout(left).unwrap_or_else(|_| panic!("spans seen so far: {spans:?}"));
        assert!(req.get("error").is_none(), "the receiver refused a request: {req}");
        for rs in req["resourceSpans"].as_array().unwrap() {
            let res = attrs(&rs["resource"]);
            assert_eq!(res["service.name"], s("mcpmon"));
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for span in ss["spans"].as_array().unwrap() {
                    let id = attrs(span)["jsonrpc.request.id"]["stringValue"].as_str().unwrap().to_string();
                    spans.insert(id, (span.clone(), req["_id_bytes"].clone()));
                }
            }
        }
    }
    let records = d.records();
    for c in calls {
        let id = c["id"].to_string();
        let (span, ids) = spans.get(&id).unwrap_or_else(|| panic!("no span for call {id}: {spans:?}"));
        assert!(ids.as_array().unwrap().iter().all(|l| l == &json!([16, 8])), "trace and span ids are 16 and 8 bytes: {ids}");
        let a = attrs(span);
        let rec = records.iter().find(|v| v["kind"] == "tool_call" && v["server"] == "runner" && v["id"] == id).unwrap_or_else(|| panic!("no tool_call {id}"));
        let tool = c["tool"].as_str().unwrap();
        assert_eq!(span["name"], format!("tools/call {tool}"));
        assert_eq!(span["kind"], "SPAN_KIND_SERVER");
        assert_eq!(a["gen_ai.tool.name"], s(tool));
        assert_eq!(a["mcp.method.name"], s("tools/call"));
        assert_eq!(a["gen_ai.operation.name"], s("execute_tool"));
        assert_eq!(a["mcpmon.server.name"], s("runner"));
        assert_eq!(a["mcpmon.tool_call.arguments.size"], int(serde_json::to_string(&c["arguments"]).unwrap().len() as u64), "{span}");
        let outcome = if c["is_error"] == true { "tool_error" } else { "ok" };
        assert_eq!(a["mcpmon.tool_call.outcome"], s(outcome));
        if outcome == "ok" {
            assert!(!a.contains_key("error.type") && span["status"].get("code").is_none(), "{span}");
        } else {
            assert_eq!(a["error.type"], s("tool_error"));
            assert_eq!(span["status"]["code"], "STATUS_CODE_ERROR");
        }
        assert_eq!(a["mcpmon.tool_call.duration_ms"]["doubleValue"], rec["duration_ms"]);
        let took = rec["end_mono_ns"].as_u64().unwrap() - rec["start_mono_ns"].as_u64().unwrap();
        let ns = |k: &str| span[k].as_str().unwrap().parse::<u64>().unwrap();
        assert_eq!(ns("endTimeUnixNano") - ns("startTimeUnixNano"), took);

        // The span's events are the call's syscalls and alerts, as the event stream has them.
        let events = span["events"].as_array().cloned().unwrap_or_default();
        let syscalls: Vec<(String, Value)> = events.iter().filter(|e| e["name"] != "alert").map(|e| (e["name"].as_str().unwrap().to_string(), attrs(e)["process.pid"].clone())).collect();
        let stream: Vec<(String, Value)> = records
            .iter()
            .filter(|v| v["server"] == "runner" && monitor::events::Event::KINDS.contains(&v["kind"].as_str().unwrap_or("")) && v["mcp"]["state"] == "call" && v["mcp"]["id"] == id)
            .map(|v| (v["kind"].as_str().unwrap().to_string(), int(v["pid"].as_u64().unwrap())))
            .collect();
        let dropped = span["droppedEventsCount"].as_u64().unwrap_or(0) as usize;
        let alerts: Vec<&Value> = records.iter().filter(|v| v["kind"] == "alert" && v["mcp"]["state"] == "call" && v["mcp"]["id"] == id && v["server"]["name"] == "runner").collect();
        assert_eq!(dropped, 0, "a call this small fits in a span: {span}");
        assert_eq!(syscalls, stream, "span events are the call's syscalls, in order");
        assert_eq!(a["mcpmon.tool_call.events"], int(rec["events"].as_u64().unwrap()));
        let span_alerts: Vec<HashMap<String, Value>> = events.iter().filter(|e| e["name"] == "alert").map(attrs).collect();
        assert_eq!(span_alerts.len(), alerts.len(), "{span}");
        for (sa, al) in span_alerts.iter().zip(&alerts) {
            assert_eq!(sa["security_rule.name"], s(al["rule"]["id"].as_str().unwrap()));
            assert_eq!(sa["mcpmon.alert.severity"], s(al["rule"]["severity"].as_str().unwrap()));
            assert_eq!(sa["mcpmon.alert.result"], s(al["action"]["result"].as_str().unwrap()));
        }
        if outcome == "ok" {
            assert!(stream.iter().any(|(k, _)| k == "exec"), "the shell's exec is in the span: {span}");
            let shell = span_alerts.iter().find(|a| a["security_rule.name"] == s("shell-spawned-by-tool-call")).unwrap_or_else(|| panic!("no alert event: {span}"));
            assert_eq!(shell["mcpmon.alert.severity"], s("high"));
        }
    }
    d.stop();
}

#[test]
fn a_dead_collector_costs_a_bounded_queue_and_every_span_is_counted() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    // A port nobody listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let d = Daemon::start(&["--otlp-endpoint", &url, "--otlp-queue", "1"]);
    let n = 8;
    let server = peers.join("venv/bin/mcp-server-time");
    let calls: Vec<Value> = (0..n).map(|_| json!({"tool": "get_current_time", "arguments": {"timezone": "UTC"}})).collect();
    let client = drive(&d, &peers, "time", json!(calls), &[server.to_str().unwrap()]);
    assert_eq!(client["calls"].as_array().unwrap().len(), n);
    for c in client["calls"].as_array().unwrap() {
        let id = c["id"].to_string();
        d.expect(&format!("tool_call {id}"), |v| v["kind"] == "tool_call" && v["server"] == "time" && v["id"] == id);
    }
    let metrics = d.metrics_url();
    let addr = metrics.trim_start_matches("http://").trim_end_matches("/metrics").to_string();
    let value = |body: &str, series: &str| -> u64 { body.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0) };
    // Each batch is tried 5 times with backoff (3.75 s in all) before it is dropped.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = common::http_get(&addr, "/metrics").expect("metrics endpoint");
        let exported = value(&body, "mcpmon_otlp_spans_exported_total ");
        let full = value(&body, "mcpmon_otlp_spans_dropped_total{reason=\"queue_full\"} ");
        let failed = value(&body, "mcpmon_otlp_spans_dropped_total{reason=\"export_failed\"} ");
        assert_eq!(exported, 0, "{body}");
        if full + failed == n as u64 {
            // One span in the queue and one batch in flight at most: the rest was refused at once.
            assert!(full >= 1 && failed >= 1, "{body}");
            break;
        }
        assert!(full + failed < n as u64, "more spans than calls: {body}");
        assert!(Instant::now() < deadline, "not every span counted: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    d.stop();
}
