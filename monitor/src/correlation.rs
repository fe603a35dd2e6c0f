//! Correlation stage: turns stdio (and HTTP, `http.rs`) captures into MCP messages per server and attributes every other
//! kernel event of a server's tree to the tool call in flight (or marks it idle or ambiguous).
//! Events arrive in ring-buffer order, so the session state when an event is handled is the state
//! the server was in when the syscall happened.
mod http;

// foldhash: the sessions are looked up for every kernel event (SipHash was 1% of a flood).
use foldhash::HashMap;

use serde_json::Value;

use crate::{
    events::{Body, Event, Stdio},
    jsonrpc::{
        framing::Stream,
        message::{self, Rpc},
        session::{Attribution, Session, Update},
    },
    output::record::Mcp,
};

/// Most stdio streams followed at once; beyond this, new streams are dropped and counted.
pub const MAX_STREAMS: usize = 4096;

#[derive(Default, Debug, serde::Serialize)]
pub struct CorrelationStats {
    pub messages: u64,
    pub invalid_messages: u64,
    pub truncated_messages: u64,
    pub bytes_not_captured: u64,
    pub streams_dropped: u64,
}

#[derive(Default)]
pub struct Correlator {
    streams: HashMap<(u32, u64), Stream>,
    /// Servers taken over while running: their streams start mid-conversation.
    midstream: std::collections::HashSet<u32>,
    sessions: HashMap<u32, Session>,
    pub stats: CorrelationStats,
    /// MCP over HTTP: connections and sessions of servers that accepted sockets.
    pub http: http::HttpState,
}

/// What the pipeline should do with an event after correlation.
pub enum Outcome {
    /// A syscall event, with its attribution (None when the server speaks no captured stdio yet
    /// and nothing is known).
    Event(Attribution),
    /// A stdio capture, consumed: these records describe what it carried.
    Consumed(Vec<Found>),
}

/// What the JSON-RPC of one server carried, stamped with the time it was captured.
#[derive(Debug)]
pub struct Found {
    pub server_id: u32,
    pub ts_mono_ns: u64,
    pub what: Carried,
}

#[derive(Debug)]
pub enum Carried {
    /// A record for the event stream.
    Record(Mcp),
    /// A reply whose content the result checks read (consumed, not written out).
    Result(ResultRecord),
}

/// The reply to a call or content request, for the result checks: the parsed result, or the
/// captured text (head and tail) of a reply bigger than the capture.
#[derive(Debug)]
pub struct ResultRecord {
    pub method: String,
    pub id: String,
    pub target: String,
    pub start_mono_ns: u64,
    pub end_mono_ns: u64,
    pub result: Option<Value>,
    pub raw_text: Option<String>,
}

impl Found {
    pub(crate) fn record(server_id: u32, ts_mono_ns: u64, m: Mcp) -> Self {
        Self { server_id, ts_mono_ns, what: Carried::Record(m) }
    }
}

impl Correlator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The server was running before it was tracked.
    pub fn joined_midstream(&mut self, server_id: u32) {
        self.midstream.insert(server_id);
    }

    pub fn session(&self, server_id: u32) -> Option<&Session> {
        self.sessions.get(&server_id)
    }

    pub fn session_mut(&mut self, server_id: u32) -> &mut Session {
        self.sessions.entry(server_id).or_default()
    }

    pub fn handle(&mut self, ev: &Event) -> Outcome {
        let server = ev.header.server_id;
        match &ev.body {
            Body::Stdio(s) => Outcome::Consumed(self.stdio(server, ev.header.ts_mono_ns, s)),
            Body::Sock(s) => Outcome::Consumed(self.sock(server, ev.header.ts_mono_ns, s)),
            _ => Outcome::Event(self.attribute(server)),
        }
    }

    fn stdio(&mut self, server: u32, ts: u64, s: &Stdio) -> Vec<Found> {
        let key = (server, s.ino);
        if !self.streams.contains_key(&key) && self.streams.len() >= MAX_STREAMS {
            self.stats.streams_dropped += 1;
            return vec![];
        }
        let mid = self.midstream.contains(&server);
        let stream = self.streams.entry(key).or_insert_with(|| if mid { Stream::midstream() } else { Stream::new() });
        let before = stream.bytes_skipped;
        let msgs = stream.feed(s.stream_off + s.offset as u64, s.offset == 0, &s.data, ts);
        self.stats.bytes_not_captured += stream.bytes_skipped - before;
        let session = self.sessions.entry(server).or_default();
        let mut out = vec![];
        for m in msgs {
            self.stats.messages += 1;
            if m.truncated {
                self.stats.truncated_messages += 1;
            }
            for rpc in message::parse(&m) {
                if let Rpc::Invalid { reason } = &rpc {
                    self.stats.invalid_messages += 1;
                    out.push(Found::record(server, ts, Mcp::McpInvalid { direction: s.dir, transport: None, reason: reason.to_string(), bytes: m.len }));
                }
                let update = if s.dir == crate::events::Direction::In { session.on_request(&rpc, m.ts_mono_ns) } else { session.on_reply(&rpc, m.ts_mono_ns) };
                // A reply bigger than the capture has no parsed result: its captured text (head
                // and tail) is what the result checks read.
                let raw = matches!(rpc, Rpc::Response { truncated: true, .. }).then(|| raw_text(&m));
                record(server, ts, update, raw, &mut out);
            }
        }
        out
    }

    /// The server's last process exited: open calls are closed as unanswered.
    pub fn server_gone(&mut self, server: u32, ts: u64) -> Vec<Found> {
        self.streams.retain(|(s, _), _| *s != server);
        self.midstream.remove(&server);
        let mut out: Vec<Found> = self
            .sessions
            .remove(&server)
            .map(|mut s| s.close(ts).into_iter().map(|f| Found::record(server, ts, Mcp::ToolCall(f))).collect())
            .unwrap_or_default();
        out.extend(self.http_gone(server, ts));
        out
    }
}

/// The captured text (head and tail) of a reply bigger than the capture: what the result checks
/// read when there is no parsed result.
fn raw_text(m: &crate::jsonrpc::framing::Message) -> String {
    let mut t = crate::toolcheck::results::unescape_json_text(&m.head);
    if !m.tail.is_empty() {
        t.push_str("\n…\n");
        t.push_str(&crate::toolcheck::results::unescape_json_text(&m.tail));
    }
    t
}

fn result_record(method: &str, id: &str, target: &str, (start, end): (u64, u64), result: Option<Value>, raw: Option<String>) -> Carried {
    Carried::Result(ResultRecord {
        method: method.into(),
        id: id.into(),
        target: target.into(),
        start_mono_ns: start,
        end_mono_ns: end,
        result,
        raw_text: raw,
    })
}

fn record(server: u32, ts: u64, u: Update, raw: Option<String>, out: &mut Vec<Found>) {
    let what = match u {
        Update::None => return,
        Update::CallFinished(mut f) => {
            let result = f.result.take();
            let c = &f.call;
            let r = result_record("tools/call", &c.id, &c.tool, (c.start_mono_ns, f.end_mono_ns), result, raw);
            out.push(Found::record(server, ts, Mcp::ToolCall(f)));
            r
        }
        Update::Content(c) => result_record(&c.method, &c.id, &c.target, (c.start_mono_ns, c.end_mono_ns), c.result, raw),
        Update::Initialize { client, protocol_version } => Carried::Record(Mcp::McpInitialize { client, protocol_version }),
        Update::Initialized { server: info } => Carried::Record(Mcp::McpInitialized { server_info: info }),
        Update::ToolsListed { result } => {
            let names: Vec<Value> = result["tools"].as_array().map(|t| t.iter().map(|t| t["name"].clone()).collect()).unwrap_or_default();
            let detail = result.get("tools").cloned().unwrap_or(Value::Null);
            Carried::Record(Mcp::McpTools { tools: names, detail })
        }
        Update::CallStarted(c) => Carried::Record(Mcp::ToolCallStart(c)),
    };
    out.push(Found { server_id: server, ts_mono_ns: ts, what });
}

/// What found records look like written out, with `server_id`; result content as the
/// `mcp_result` it is consumed as (the tests read them as JSON).
#[cfg(test)]
pub fn as_json(found: &[Found]) -> Vec<Value> {
    found
        .iter()
        .map(|f| {
            let mut v = match &f.what {
                Carried::Record(m) => serde_json::to_value(m).unwrap(),
                Carried::Result(r) => serde_json::json!({
                    "kind": "mcp_result", "method": r.method, "id": r.id, "target": r.target, "start_mono_ns": r.start_mono_ns,
                    "end_mono_ns": r.end_mono_ns, "result_detail": r.result, "raw_text": r.raw_text,
                }),
            };
            v["server_id"] = f.server_id.into();
            v
        })
        .collect()
}
