//! One MCP session per tracked server: the handshake, the requests in flight, and tool calls
//! as records with start, end, duration and outcome. Requests are what the server *read*; replies
//! what it *wrote*, so pairing happens on the server's own view of the conversation.
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::message::{Id, Rpc};

/// Tool-call arguments longer than this (as JSON text) are cut in records.
pub const MAX_ARGS_JSON: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: Id,
    pub tool: String,
    pub arguments: Value,
    /// The request was bigger than the capture, or the arguments were cut for the record.
    pub arguments_truncated: bool,
    pub start_mono_ns: u64,
    /// The `Mcp-Session-Id` the call came in (MCP over HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_session: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FinishedCall {
    #[serde(flatten)]
    pub call: ToolCall,
    pub end_mono_ns: u64,
    pub duration_ms: f64,
    /// "ok", "tool_error" (result.isError), "rpc_error", or "unanswered" (server gone).
    pub outcome: &'static str,
    /// Kernel events attributed to this call (and only this one).
    pub events: u64,
    /// The reply's `result`, for the result checks (not part of the record).
    #[serde(skip)]
    pub result: Option<Value>,
}

#[derive(Clone, Debug)]
struct Pending {
    method: String,
    call: Option<ToolCall>,
    events: u64,
    /// What a `resources/read` or `prompts/get` asked for (uri, prompt name).
    target: Option<String>,
    start_mono_ns: u64,
}

/// The reply to a `resources/read` or `prompts/get`: content the model will read.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentReply {
    pub method: String,
    pub id: Id,
    /// The resource's uri or the prompt's name.
    pub target: String,
    pub result: Option<Value>,
    pub start_mono_ns: u64,
    pub end_mono_ns: u64,
}

/// What a kernel event is attributed to.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Attribution {
    Call { tool: String, id: Id, arguments: Value },
    /// Several calls in flight: all are candidates.
    Ambiguous { candidates: Vec<Candidate> },
    /// No tool call in flight: background activity.
    Idle,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub tool: String,
    pub id: Id,
}

/// What a message changed, for the pipeline to report.
#[derive(Debug, PartialEq)]
pub enum Update {
    None,
    Initialize { client: Value, protocol_version: Option<String> },
    Initialized { server: Value },
    ToolsListed { result: Value },
    CallStarted(ToolCall),
    CallFinished(FinishedCall),
    Content(ContentReply),
}

#[derive(Default, Debug)]
pub struct Session {
    pending: BTreeMap<Id, Pending>,
    /// The `Mcp-Session-Id` of an HTTP session (None on stdio and for a connection's own).
    pub http_session: Option<String>,
    pub client_info: Option<Value>,
    pub server_info: Option<Value>,
    pub calls: u64,
    pub invalid_messages: u64,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// A message the server read from its stdin.
    pub fn on_request(&mut self, rpc: &Rpc, ts: u64) -> Update {
        match rpc {
            Rpc::Request { id, method, params, truncated } => {
                let call = (method == "tools/call").then(|| {
                    let p = params.clone().unwrap_or(Value::Null);
                    let mut arguments = p.get("arguments").cloned().unwrap_or(Value::Null);
                    let mut cut = *truncated;
                    if arguments.to_string().len() > MAX_ARGS_JSON {
                        arguments = Value::String(arguments.to_string().chars().take(MAX_ARGS_JSON).collect());
                        cut = true;
                    }
                    ToolCall {
                        id: id.clone(),
                        tool: p.get("name").and_then(Value::as_str).unwrap_or("?").to_string(),
                        arguments,
                        arguments_truncated: cut,
                        start_mono_ns: ts,
                        http_session: self.http_session.clone(),
                    }
                });
                let target = match method.as_str() {
                    "resources/read" => params.as_ref().and_then(|p| p["uri"].as_str()).map(str::to_string),
                    "prompts/get" => params.as_ref().and_then(|p| p["name"].as_str()).map(str::to_string),
                    _ => None,
                };
                self.pending.insert(id.clone(), Pending { method: method.clone(), call: call.clone(), events: 0, target, start_mono_ns: ts });
                if method == "initialize" {
                    let p = params.clone().unwrap_or(Value::Null);
                    self.client_info = p.get("clientInfo").cloned();
                    return Update::Initialize {
                        client: self.client_info.clone().unwrap_or(Value::Null),
                        protocol_version: p.get("protocolVersion").and_then(Value::as_str).map(str::to_string),
                    };
                }
                match call {
                    Some(c) => {
                        self.calls += 1;
                        Update::CallStarted(c)
                    }
                    None => Update::None,
                }
            }
            Rpc::Invalid { .. } => {
                self.invalid_messages += 1;
                Update::None
            }
            _ => Update::None,
        }
    }

    /// A message the server wrote to its stdout.
    pub fn on_reply(&mut self, rpc: &Rpc, ts: u64) -> Update {
        let Rpc::Response { id, result, error, .. } = rpc else {
            if matches!(rpc, Rpc::Invalid { .. }) {
                self.invalid_messages += 1;
            }
            return Update::None;
        };
        let Some(p) = self.pending.remove(id) else { return Update::None };
        match (p.method.as_str(), p.call) {
            ("initialize", _) => {
                self.server_info = result.as_ref().and_then(|r| r.get("serverInfo")).cloned();
                Update::Initialized { server: self.server_info.clone().unwrap_or(Value::Null) }
            }
            ("tools/list", _) => match result {
                Some(r) => Update::ToolsListed { result: r.clone() },
                None => Update::None,
            },
            (_, Some(call)) => {
                let outcome = if error.is_some() {
                    "rpc_error"
                } else if result.as_ref().and_then(|r| r.get("isError")).and_then(Value::as_bool) == Some(true) {
                    "tool_error"
                } else {
                    "ok"
                };
                let mut f = finish(call, ts, outcome, p.events);
                f.result = result.clone();
                Update::CallFinished(f)
            }
            ("resources/read" | "prompts/get", None) => Update::Content(ContentReply {
                method: p.method.clone(),
                id: id.clone(),
                target: p.target.unwrap_or_default(),
                result: result.clone(),
                start_mono_ns: p.start_mono_ns,
                end_mono_ns: ts,
            }),
            _ => Update::None,
        }
    }

    /// Attributes one kernel event of this server's tree to the calls in flight.
    pub fn attribute(&mut self) -> Attribution {
        let mut calls: Vec<&mut Pending> = self.pending.values_mut().filter(|p| p.call.is_some()).collect();
        match calls.len() {
            0 => Attribution::Idle,
            1 => {
                let p = &mut calls[0];
                p.events += 1;
                let c = p.call.as_ref().unwrap();
                Attribution::Call { tool: c.tool.clone(), id: c.id.clone(), arguments: c.arguments.clone() }
            }
            _ => Attribution::Ambiguous {
                candidates: calls
                    .iter()
                    .filter_map(|p| p.call.as_ref())
                    .map(|c| Candidate { tool: c.tool.clone(), id: c.id.clone() })
                    .collect(),
            },
        }
    }

    /// Tool calls in flight.
    pub fn calls_in_flight(&self) -> usize {
        self.pending.values().filter(|p| p.call.is_some()).count()
    }

    /// The tool calls in flight, as attribution candidates.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.pending.values().filter_map(|p| p.call.as_ref()).map(|c| Candidate { tool: c.tool.clone(), id: c.id.clone() }).collect()
    }

    /// The server is gone: calls still open never got an answer.
    pub fn close(&mut self, ts: u64) -> Vec<FinishedCall> {
        std::mem::take(&mut self.pending)
            .into_values()
            .filter_map(|p| p.call.map(|c| finish(c, ts, "unanswered", p.events)))
            .collect()
    }

    /// When the call `id` in flight started (monotonic ns).
    pub fn call_start(&self, id: &str) -> Option<u64> {
        self.pending.get(id).and_then(|p| p.call.as_ref()).map(|c| c.start_mono_ns)
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

fn finish(call: ToolCall, end: u64, outcome: &'static str, events: u64) -> FinishedCall {
    let duration_ms = end.saturating_sub(call.start_mono_ns) as f64 / 1e6;
    FinishedCall { call, end_mono_ns: end, duration_ms, outcome, events, result: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::message::from_value;
    use serde_json::json;

    fn rpc(v: Value) -> Rpc {
        from_value(&v)
    }

    #[test]
    fn handshake_calls_and_attribution() {
        let mut s = Session::new();
        let u = s.on_request(&rpc(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","clientInfo":{"name":"claude-code","version":"1"}}})), 1);
        assert!(matches!(u, Update::Initialize { ref client, .. } if client["name"] == "claude-code"));
        let u = s.on_reply(&rpc(json!({"result":{"serverInfo":{"name":"secure-filesystem-server","version":"0.2"}},"jsonrpc":"2.0","id":0})), 2);
        assert!(matches!(u, Update::Initialized { ref server } if server["version"] == "0.2"));
        assert_eq!(s.attribute(), Attribution::Idle);

        s.on_request(&rpc(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/a"}}})), 1_000_000);
        assert!(matches!(s.attribute(), Attribution::Call { ref tool, ref id, .. } if tool == "read_file" && id == "1"));
        s.on_request(&rpc(json!({"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"list_directory","arguments":{}}})), 1_500_000);
        let Attribution::Ambiguous { candidates } = s.attribute() else { panic!() };
        assert_eq!(candidates.len(), 2);
        let u = s.on_reply(&rpc(json!({"result":{"content":[],"isError":true},"jsonrpc":"2.0","id":1})), 3_000_000);
        let Update::CallFinished(f) = u else { panic!("{u:?}") };
        assert_eq!((f.call.tool.as_str(), f.outcome, f.duration_ms, f.events), ("read_file", "tool_error", 2.0, 1));
        let left = s.close(4_000_000);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].outcome, "unanswered");
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn results_of_calls_resources_and_prompts_are_handed_on() {
        let mut s = Session::new();
        s.on_request(&rpc(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","arguments":{}}})), 1);
        let Update::CallFinished(f) = s.on_reply(&rpc(json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}})), 2) else { panic!() };
        assert_eq!(f.result.as_ref().unwrap()["content"][0]["text"], "hi");
        assert!(!serde_json::to_string(&f).unwrap().contains("\"hi\""), "the result is not part of the record");
        s.on_request(&rpc(json!({"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a"}})), 3);
        s.on_request(&rpc(json!({"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"p"}})), 3);
        let Update::Content(c) = s.on_reply(&rpc(json!({"jsonrpc":"2.0","id":2,"result":{"contents":[{"uri":"file:///a","text":"x"}]}})), 4) else { panic!() };
        assert_eq!((c.method.as_str(), c.target.as_str(), c.start_mono_ns, c.end_mono_ns), ("resources/read", "file:///a", 3, 4));
        let Update::Content(c) = s.on_reply(&rpc(json!({"jsonrpc":"2.0","id":3,"result":{"messages":[]}})), 5) else { panic!() };
        assert_eq!(c.target, "p");
    }

    #[test]
    fn replies_to_unknown_ids_and_garbage_are_ignored() {
        let mut s = Session::new();
        assert_eq!(s.on_reply(&rpc(json!({"jsonrpc":"2.0","id":9,"result":{}})), 1), Update::None);
        s.on_request(&Rpc::Invalid { reason: "x".into() }, 1);
        assert_eq!(s.invalid_messages, 1);
    }
}
