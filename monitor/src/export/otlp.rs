//! `--otlp-endpoint URL`: every tool call as an OpenTelemetry span, POSTed to `URL/v1/traces`
//! over OTLP/HTTP with the JSON encoding (no protobuf code needed; ids in hex and 64-bit integers
//! as strings, as OTLP/JSON wants). The span carries the call (server, tool, id, argument size,
//! outcome, duration) under the GenAI/MCP semantic conventions where they name it, and as span
//! events the kernel events attributed to the call and the alerts they raised.
//!
//! The emitter (`daemon/emit.rs`) hands every typed record to `observe` (a match for most, a map
//! lookup for events in a call). State is
//! bounded: at most `MAX_OPEN_CALLS` calls are followed (the oldest is given up, counted),
//! `MAX_EVENTS` events per span (the rest counted in the span's `droppedEventsCount`), and
//! `queue` finished spans wait for export (more are dropped and counted). The export runs in its
//! own task with retries and backoff, so a slow or dead collector never slows the event path.
use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::{
    alerts::webhook,
    jsonrpc::session::Attribution,
    metrics::Metrics,
    output::record::{Mcp, Record},
};

/// Finished spans held for export by default (`--otlp-queue`).
pub const QUEUE: usize = 1024;
/// Tool calls followed at once.
pub const MAX_OPEN_CALLS: usize = 4096;
/// Span events (syscalls and alerts) kept per span.
pub const MAX_EVENTS: usize = 128;
/// Spans per export request.
const BATCH: usize = 256;
/// A finished call waits this long for late alerts: the result checks (prompt injection, secrets
/// in the reply) run right after the reply, in the same pipeline step, so this is ample.
const LINGER: Duration = Duration::from_millis(200);
const TICK: Duration = Duration::from_millis(100);
/// Attempts after the first; backoff 0.25 s, 0.5 s, 1 s, 2 s (as the webhook).
pub const RETRIES: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("--otlp-endpoint {0}: {1}")]
    Url(String, String),
}

type Key = (u64, String);

#[derive(Default)]
struct Open {
    events: Vec<Value>,
    dropped: u32,
}

impl Open {
    fn push(&mut self, e: Value) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(e);
        } else {
            self.dropped += 1;
        }
    }
}

struct Finished {
    key: Key,
    at: Instant,
    span: Value,
}

struct State {
    open: HashMap<Key, Open>,
    /// Start order, to give up the oldest call when too many are open (may hold finished keys).
    order: VecDeque<Key>,
    ready: VecDeque<Finished>,
    queue: usize,
}

/// Adds to an `mcpmon_otlp_spans_*` counter (`exported`, or a drop reason).
fn count(metrics: &Mutex<Metrics>, what: &'static str, n: u64) {
    if let Ok(mut m) = metrics.lock() {
        m.otlp(what, n);
    }
}

pub struct Otlp {
    state: Arc<Mutex<State>>,
    metrics: Arc<Mutex<Metrics>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Otlp {
    /// Starts the exporter task; `url` is the collector's base (`http://127.0.0.1:4318`).
    pub fn start(url: &str, queue: usize, host: &str, metrics: Arc<Mutex<Metrics>>) -> Result<Self, OtlpError> {
        let mut target = webhook::Target::parse(url).map_err(|e| OtlpError::Url(url.into(), e))?;
        target.path = format!("{}/v1/traces", target.path.trim_end_matches('/'));
        let state = Arc::new(Mutex::new(State { open: HashMap::new(), order: VecDeque::new(), ready: VecDeque::new(), queue: queue.max(1) }));
        if let Ok(mut m) = metrics.lock() {
            for k in ["exported", "queue_full", "export_failed", "calls_given_up"] {
                m.otlp(k, 0);
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let resource = json!({"attributes": [attr("service.name", "mcpmon"), attr("host.name", host)]});
        let task = tokio::spawn(export(state.clone(), target, resource, metrics.clone(), stop_rx));
        Ok(Self { state, metrics, stop, task })
    }

    /// Feeds one emitted record: tool-call starts and ends, kernel events attributed to a call,
    /// alerts raised in one. Anything else costs a match. Records are rendered to JSON here only
    /// when they become part of a span.
    /// A kernel event line: an event on the span of the call it is attributed to.
    pub fn observe_event(&self, e: &crate::output::record::EventLine) {
        let Attribution::Call { id, .. } = &e.mcp else { return };
        let key = (u64::from(e.event.header.server_id), id.clone());
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(o) = s.open.get_mut(&key) {
            o.push(syscall_event(&serde_json::to_value(e).unwrap_or(Value::Null)));
        }
    }

    pub fn observe(&self, r: &Record) {
        match r {
            Record::Mcp(m) => match &m.body {
                Mcp::ToolCallStart(c) => self.started((u64::from(m.server_id), c.id.clone())),
                Mcp::ToolCall(f) => {
                    let v = serde_json::to_value(m).unwrap_or(Value::Null);
                    self.finished((u64::from(m.server_id), f.call.id.clone()), &v);
                }
                _ => {}
            },
            Record::Event(e) => self.observe_event(e),
            Record::Alert(a) => {
                let Some(mcp) = a.mcp.as_ref().filter(|m| m["state"] == "call") else { return };
                let Some(server) = a.server.as_ref().map(|s| s.id).or(a.server_id) else { return };
                let Some(id) = mcp["id"].as_str() else { return };
                let key = (u64::from(server), id.to_string());
                let e = alert_event(&serde_json::to_value(a).unwrap_or(Value::Null));
                let Ok(mut s) = self.state.lock() else { return };
                if let Some(o) = s.open.get_mut(&key) {
                    o.push(e);
                } else if let Some(f) = s.ready.iter_mut().rev().find(|f| f.key == key) {
                    // A result alert: raised by the reply, after the call ended.
                    add_event(&mut f.span, e);
                }
            }
            _ => {}
        }
    }

    fn started(&self, key: Key) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.open.len() >= MAX_OPEN_CALLS {
            while let Some(old) = s.order.pop_front() {
                if s.open.remove(&old).is_some() {
                    count(&self.metrics, "calls_given_up", 1);
                    break;
                }
            }
        }
        if s.order.len() > 2 * MAX_OPEN_CALLS {
            let open = std::mem::take(&mut s.open);
            s.order.retain(|k| open.contains_key(k));
            s.open = open;
        }
        s.order.push_back(key.clone());
        s.open.insert(key, Open::default());
    }

    /// `call`: the `tool_call` record as written out.
    fn finished(&self, key: Key, call: &Value) {
        let Ok(mut s) = self.state.lock() else { return };
        let open = s.open.remove(&key).unwrap_or_default();
        if s.ready.len() >= s.queue {
            count(&self.metrics, "queue_full", 1);
            return;
        }
        s.ready.push_back(Finished { key, at: Instant::now(), span: span(call, open) });
    }

    /// Exports what is left (bounded wait) and stops the task.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// An OTLP attribute (`KeyValue` with an `AnyValue`): strings, 64-bit integers (as strings, per
/// OTLP/JSON), doubles, booleans and string arrays.
fn attr(k: &str, v: impl Into<Value>) -> Value {
    json!({"key": k, "value": any(&v.into())})
}

fn any(v: &Value) -> Value {
    match v {
        Value::String(s) => json!({"stringValue": s}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) if n.is_f64() => json!({"doubleValue": n}),
        Value::Number(n) => json!({"intValue": n.to_string()}),
        Value::Array(a) => json!({"arrayValue": {"values": a.iter().map(any).collect::<Vec<_>>()}}),
        other => json!({"stringValue": other.to_string()}),
    }
}

/// Unix nanoseconds of an mcpmon time (RFC 3339, µs), as the decimal string OTLP/JSON wants.
fn nanos(t: &Value) -> Option<u64> {
    crate::output::parse_rfc3339_us(t.as_str()?).map(|us| us * 1000)
}

fn add_event(span: &mut Value, e: Value) {
    match span["events"].as_array_mut() {
        Some(ev) if ev.len() < MAX_EVENTS => ev.push(e),
        _ => span["droppedEventsCount"] = (span["droppedEventsCount"].as_u64().unwrap_or(0) + 1).into(),
    }
}

/// A kernel event as a span event named by its kind: process, file, peer, result.
fn syscall_event(v: &Value) -> Value {
    let mut a = vec![];
    let mut put = |k: &str, x: &Value| {
        if !x.is_null() {
            a.push(attr(k, x.clone()));
        }
    };
    put("process.pid", &v["pid"]);
    put("process.parent_pid", &v["ppid"]);
    put("process.executable.path", if v["kind"] == "exec" { &v["filename"] } else { &v["exe"] });
    put("process.command_args", &v["argv"]);
    put("file.path", if v["resolved_path"].is_null() { &v["path"] } else { &v["resolved_path"] });
    put("network.peer.address", &v["addr"]);
    put("network.peer.port", &v["port"]);
    put("mcpmon.syscall.name", &v["syscall"]);
    put("mcpmon.syscall.return", &v["result"]["ret"]);
    put("mcpmon.syscall.errno", &v["result"]["errno"]);
    put("mcpmon.kernel_action", &v["kernel_action"]);
    json!({"timeUnixNano": nanos(&v["time"]).unwrap_or(0).to_string(), "name": v["kind"], "attributes": a})
}

/// An alert as a span event named `alert`: rule, severity, what was done, summary, process.
fn alert_event(v: &Value) -> Value {
    let mut a = vec![attr("security_rule.name", v["rule"]["id"].clone()), attr("mcpmon.alert.severity", v["rule"]["severity"].clone())];
    for (k, x) in [("mcpmon.alert.result", &v["action"]["result"]), ("mcpmon.alert.summary", &v["summary"]), ("process.pid", &v["process"]["pid"])] {
        if !x.is_null() {
            a.push(attr(k, x.clone()));
        }
    }
    json!({"timeUnixNano": nanos(&v["time"]).unwrap_or(0).to_string(), "name": "alert", "attributes": a})
}

/// 8 or 16 random bytes as hex (never all zero, which OTLP reads as "no id").
fn random_hex(bytes: usize) -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let mut out = String::new();
    while out.len() < bytes * 2 {
        // RandomState is seeded from the OS once and stepped per instance: distinct, unguessable
        // enough for trace ids (they identify, they do not authenticate).
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(N.fetch_add(1, Ordering::Relaxed));
        out.push_str(&format!("{:016x}", h.finish() | 1));
    }
    out.truncate(bytes * 2);
    out
}

/// The span of one finished call (`tool_call` record) with the events gathered while it ran.
fn span(call: &Value, open: Open) -> Value {
    let end = nanos(&call["time"]).unwrap_or(0);
    let took = call["end_mono_ns"].as_u64().unwrap_or(0).saturating_sub(call["start_mono_ns"].as_u64().unwrap_or(0));
    let tool = call["tool"].as_str().unwrap_or("");
    let outcome = call["outcome"].as_str().unwrap_or("");
    let arg_bytes = serde_json::to_string(&call["arguments"]).map(|s| s.len()).unwrap_or(0) as u64;
    let mut a = vec![
        attr("mcp.method.name", "tools/call"),
        attr("gen_ai.operation.name", "execute_tool"),
        attr("gen_ai.tool.name", tool),
        attr("jsonrpc.request.id", call["id"].clone()),
        attr("mcpmon.server.name", call["server"].clone()),
        attr("mcpmon.server.id", call["server_id"].clone()),
        attr("mcpmon.tool_call.outcome", outcome),
        attr("mcpmon.tool_call.arguments.size", arg_bytes),
        attr("mcpmon.tool_call.arguments.truncated", call["arguments_truncated"].as_bool().unwrap_or(false)),
        attr("mcpmon.tool_call.duration_ms", call["duration_ms"].as_f64().unwrap_or(0.0)),
        attr("mcpmon.tool_call.events", call["events"].clone()),
    ];
    if let Some(s) = call["http_session"].as_str() {
        a.push(attr("mcp.session.id", s));
    }
    // The conventions: a tool error (`isError`) is `error.type` tool_error; the span is an error.
    let status = if outcome == "ok" {
        json!({})
    } else {
        a.push(attr("error.type", outcome));
        json!({"code": 2, "message": outcome})
    };
    json!({
        "traceId": random_hex(16), "spanId": random_hex(8),
        "name": format!("tools/call {tool}"),
        "kind": 2,
        "startTimeUnixNano": end.saturating_sub(took).to_string(), "endTimeUnixNano": end.to_string(),
        "attributes": a, "events": open.events, "droppedEventsCount": open.dropped,
        "status": status,
    })
}

/// Ripe spans (lingered long enough, or all when closing), at most `BATCH`.
fn take(state: &Mutex<State>, all: bool) -> Vec<Value> {
    let Ok(mut s) = state.lock() else { return vec![] };
    let mut out = vec![];
    while out.len() < BATCH && s.ready.front().is_some_and(|f| all || f.at.elapsed() >= LINGER) {
        out.push(s.ready.pop_front().unwrap().span);
    }
    out
}

async fn export(state: Arc<Mutex<State>>, target: webhook::Target, resource: Value, metrics: Arc<Mutex<Metrics>>, mut stop: watch::Receiver<bool>) {
    let scope = json!({"name": "mcpmon", "version": env!("CARGO_PKG_VERSION")});
    loop {
        let closing = tokio::select! {
            _ = tokio::time::sleep(TICK) => false,
            _ = stop.changed() => true,
        };
        loop {
            let spans = take(&state, closing);
            if spans.is_empty() {
                break;
            }
            let n = spans.len() as u64;
            let body = json!({"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": spans}]}]}).to_string();
            let mut sent = false;
            for attempt in 0..=RETRIES {
                match webhook::post(&target, &body).await {
                    Ok(code) if (200..300).contains(&code) => {
                        sent = true;
                        break;
                    }
                    Ok(code) => tracing::warn!(host = %target.host, port = target.port, path = %target.path, status = code, attempt = attempt + 1, "otlp export refused"),
                    Err(e) => tracing::warn!(host = %target.host, port = target.port, path = %target.path, error = %e, attempt = attempt + 1, "otlp export failed"),
                }
                if attempt < RETRIES {
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
            }
            if !sent {
                tracing::warn!(spans = n, "otlp: retries exhausted, spans dropped (counted)");
            }
            count(&metrics, if sent { "exported" } else { "export_failed" }, n);
        }
        if closing {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Value {
        json!({"kind": "tool_call", "server_id": 3, "server": "runner", "id": "2", "tool": "run", "arguments": {"command": "echo hi"},
               "arguments_truncated": false, "start_mono_ns": 1_000_000, "end_mono_ns": 5_000_000, "duration_ms": 4.0,
               "outcome": "ok", "events": 2, "time": "2026-12-01T06:05:21.000010Z"})
    }

    fn attrs(span: &Value) -> HashMap<String, Value> {
        span["attributes"].as_array().unwrap().iter().map(|a| (a["key"].as_str().unwrap().to_string(), a["value"].clone())).collect()
    }

    #[test]
    fn a_call_is_a_server_span_with_the_conventions_names() {
        let mut open = Open::default();
        open.push(syscall_event(&json!({"kind": "exec", "pid": 7, "ppid": 6, "filename": "/bin/sh", "argv": ["sh", "-c", "echo hi"], "result": {"ok": true, "ret": 0}, "time": "2026-12-01T06:05:21.000005Z"})));
        let s = span(&call(), open);
        let a = attrs(&s);
        assert_eq!(s["name"], "tools/call run");
        assert_eq!(s["kind"], 2);
        assert_eq!(a["gen_ai.tool.name"], json!({"stringValue": "run"}));
        assert_eq!(a["jsonrpc.request.id"], json!({"stringValue": "2"}));
        assert_eq!(a["mcp.method.name"], json!({"stringValue": "tools/call"}));
        assert_eq!(a["mcpmon.tool_call.arguments.size"], json!({"intValue": "21"}));
        assert_eq!(a["mcpmon.tool_call.duration_ms"], json!({"doubleValue": 4.0}));
        assert!(!a.contains_key("error.type") && s["status"] == json!({}));
        // 4 ms before the end, in Unix nanoseconds as strings.
        assert_eq!(s["endTimeUnixNano"], "1796105121000010000");
        assert_eq!(s["startTimeUnixNano"], "1796105120996010000");
        assert_eq!((s["traceId"].as_str().unwrap().len(), s["spanId"].as_str().unwrap().len()), (32, 16));
        let e = &s["events"][0];
        assert_eq!(e["name"], "exec");
        assert_eq!(e["timeUnixNano"], "1796105121000005000");
        let ea: HashMap<_, _> = e["attributes"].as_array().unwrap().iter().map(|a| (a["key"].as_str().unwrap(), a["value"].clone())).collect();
        assert_eq!(ea["process.executable.path"], json!({"stringValue": "/bin/sh"}));
        assert_eq!(ea["process.command_args"]["arrayValue"]["values"][2], json!({"stringValue": "echo hi"}));
        assert_eq!(ea["process.pid"], json!({"intValue": "7"}));
    }

    #[test]
    fn errors_set_the_status_and_error_type() {
        let mut c = call();
        c["outcome"] = "tool_error".into();
        let s = span(&c, Open::default());
        assert_eq!(attrs(&s)["error.type"], json!({"stringValue": "tool_error"}));
        assert_eq!(s["status"]["code"], 2);
    }

    #[test]
    fn events_per_span_are_capped_and_counted() {
        let mut open = Open::default();
        for _ in 0..MAX_EVENTS + 5 {
            open.push(json!({}));
        }
        let mut s = span(&call(), open);
        assert_eq!((s["events"].as_array().unwrap().len(), s["droppedEventsCount"].as_u64()), (MAX_EVENTS, Some(5)));
        add_event(&mut s, json!({}));
        assert_eq!(s["droppedEventsCount"], 6);
    }

    #[test]
    fn ids_are_random_hex_and_not_zero() {
        let (a, b) = (random_hex(16), random_hex(16));
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()) && a != "0".repeat(32));
    }
}
