//! Typed records: what the pipeline's stages hand to the emitter, one variant per `kind` of
//! docs/alerts.md. JSON is rendered once, at the emitter, from these; the metrics read them as
//! they are. Kernel events and MCP records carry their own `kind` (the event's, the message's),
//! so they are untagged variants here.
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

pub use super::alert::Alert;
use crate::{
    events::{Direction, Event},
    jsonrpc::session::{Attribution, FinishedCall, ToolCall},
    tracker::Discovery,
};

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Alert(Box<Alert>),
    /// Repeats of an alert counted in a throttle window (alerts/throttle.rs).
    AlertSuppressed(Suppressed),
    /// The whole chain of evidence of an incident that folded alerts (alerts/incident.rs).
    Incident(Box<Incident>),
    ServerTracked(Box<ServerTracked>),
    ServerGone {
        time: String,
        server_id: u32,
        server: String,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        exit_event_lost: bool,
    },
    ServerIdentified { time: String, server_id: u32, server: String, client: Option<String>, root_pid: u32 },
    ServerUnidentified { time: String, server_id: u32, server: String, root_pid: u32, reason: &'static str },
    ServerDropped { time: String, server_id: u32, server: String, root_pid: u32, reason: String },
    /// A container's process (found by its handshake) joined the server whose runner started
    /// it (`docker run -i IMAGE`): its processes are the server's from now on.
    /// `moved_from`: the server it had joined first, when the pairing by reply corrected it
    /// (launches of one image side by side). `by`: how the CLI was known: `cli_memory` (its
    /// memory holds the container's id: certain), `launch_order` (a guess the reply may
    /// correct), `reply_order` (the correction).
    ContainerJoined {
        time: String,
        server_id: u32,
        server: String,
        pid: u32,
        tracked_pids: Vec<u32>,
        container: std::sync::Arc<crate::discovery::container::Container>,
        by: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        moved_from: Option<u32>,
    },
    /// What this kernel let the daemon load and the path each stage took (probes/loaded.rs):
    /// the first line of the stream.
    SensorsLoaded {
        time: String,
        #[serde(flatten)]
        loaded: Value,
    },
    RulesLoaded { time: String, policy: Value },
    RulesReloaded {
        time: String,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        policy: Value,
    },
    ProtectedChanged {
        time: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        protected_inodes: Option<usize>,
        added: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    Quarantined { time: String, path: String, to: Option<String>, how: &'static str, pid: u32, server_id: u32 },
    /// The kernel's loss counters went up: totals and news by reason.
    Lost {
        time: String,
        #[serde(flatten)]
        by_reason: BTreeMap<&'static str, LostCount>,
    },
    DecodeError { time: String, error: String },
    /// A folded run whose first event was not seen (it arrived out of order or was lost): the
    /// count still goes out.
    Repeat { time: String, server_id: u32, pid: u32, tid: u32, of: &'static str, folded: Folded },
    Stats(Box<Stats>),
    /// What a server's JSON-RPC carried.
    #[serde(untagged)]
    Mcp(Box<McpRecord>),
    /// A kernel event, attributed.
    #[serde(untagged)]
    Event(Box<EventLine>),
}

impl Record {
    /// The JSON line. A kernel event (nearly every line of a busy stream) is written straight
    /// from its fields, in their declared order, by hand (`event_json`): going through `Value`
    /// cost a map node and a copy of every key and string per event. The rarer records are rendered through `Value`,
    /// whose keys are sorted, and keep the byte layout they had when the stages built JSON
    /// themselves (`tests` below).
    pub fn line(&self) -> String {
        line_of(|out| self.write_line(out))
    }

    /// `line`, appended to `out` (without its newline): the emitter renders event lines straight
    /// into the batch it hands to the writer.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let r = match self {
            Record::Event(e) => return e.write_line(out),
            other => serde_json::to_value(other).and_then(|v| serde_json::to_writer(&mut *out, &v)),
        };
        if let Err(e) = r {
            render_error(out, start, &e);
        }
    }
}

/// What replaces a line that could not be rendered (from `start` in `out`).
fn render_error(out: &mut Vec<u8>, start: usize, e: &serde_json::Error) {
    out.truncate(start);
    out.extend_from_slice(format!("{{\"kind\":\"render_error\",\"error\":{:?}}}", e.to_string()).as_bytes());
}

/// The line `write` appends, as a `String` (a render error's line if it is no UTF-8).
pub fn line_of(write: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::with_capacity(512);
    write(&mut out);
    String::from_utf8(out).unwrap_or_else(|e| format!("{{\"kind\":\"render_error\",\"error\":{:?}}}", e.to_string()))
}

impl EventLine {
    /// `Record::write_line` of this line: the pipeline hands kernel event lines to the emitter
    /// as they are, without a `Record` (whose box cost an allocation and a copy per event).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        self.write_line_after(out, &mut LineMemo::default());
    }

    /// `write_line`, copying from `memo` what the line before it had the same.
    pub fn write_line_after(&self, out: &mut Vec<u8>, memo: &mut LineMemo) {
        let start = out.len();
        if let Err(e) = super::event_json::write_with(self, out, memo) {
            render_error(out, start, &e);
        }
    }
}

pub use super::event_json::LineMemo;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct LostCount {
    pub total: u64,
    pub new: u64,
}

#[derive(Debug, Serialize)]
pub struct Suppressed {
    pub time: String,
    pub rule: String,
    pub server: Option<String>,
    pub exe: Option<String>,
    pub target: Option<String>,
    pub count: u64,
    pub window_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Incident {
    pub time: String,
    pub schema: u8,
    pub id: String,
    pub severity: crate::rules::Severity,
    pub server: Option<super::alert::ServerRef>,
    pub mcp: Option<Value>,
    pub alerts: u64,
    pub folded: u64,
    pub chain: Vec<Value>,
    pub duration_s: f64,
}

#[derive(Debug, Serialize)]
pub struct ServerTracked {
    pub time: String,
    pub server_id: u32,
    pub server: String,
    pub how: Discovery,
    pub root_pid: u32,
    pub uid: u32,
    pub tracked_pids: Vec<u32>,
    pub client: Option<String>,
    pub config: Option<String>,
    pub command: Vec<String>,
    pub sniffing: bool,
    /// Which client's config and file, a handshake under which parent, or exec.
    pub found: Value,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub time: String,
    pub events: BTreeMap<&'static str, u64>,
    pub decode_errors: u64,
    pub lost: BTreeMap<&'static str, u64>,
    pub mcp: Value,
    pub http: Value,
    pub candidates_dropped: u64,
    pub provisional_events_discarded: u64,
    pub exits_reconciled: u64,
    pub alerts: Option<u64>,
    pub kills: Option<u64>,
    pub stage_ns: BTreeMap<&'static str, u64>,
}

/// A record of the JSON-RPC stage, stamped with when and whose.
#[derive(Debug, Serialize)]
pub struct McpRecord {
    pub time: String,
    pub server_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(flatten)]
    pub body: Mcp,
}

/// What one MCP message (or connection) meant.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mcp {
    ToolCall(FinishedCall),
    ToolCallStart(ToolCall),
    McpInitialize { client: Value, protocol_version: Option<String> },
    McpInitialized { server_info: Value },
    McpTools {
        tools: Vec<Value>,
        /// The full list, for the tool checks; never written out.
        #[serde(skip)]
        detail: Value,
    },
    McpInvalid {
        direction: Direction,
        #[serde(skip_serializing_if = "Option::is_none")]
        transport: Option<&'static str>,
        reason: String,
        bytes: u64,
    },
    /// An HTTP connection whose payload cannot be read (TLS).
    HttpConnection { fd: i32, tls: bool, payload_captured: bool },
}

/// A kernel event as written out: the event, when and whose, and the call it is attributed to.
#[derive(Debug, Serialize)]
pub struct EventLine {
    #[serde(flatten)]
    pub event: Event,
    pub time: super::Stamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<std::sync::Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<std::sync::Arc<str>>,
    /// The container the process runs in (a `docker run -i` server's container, joined to the
    /// CLI's server): engine, id, image, name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<std::sync::Arc<crate::discovery::container::Container>>,
    pub mcp: Attribution,
    /// Opens, with rules loaded: the path resolved against the opener's cwd and dirfd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_path: Option<std::sync::Arc<str>>,
    /// This line stands for `count` more occurrences of the event, folded by the kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<Folded>,
}

/// Identical events the kernel folded into a count: when the first and last of them happened.
#[derive(Clone, Debug, Serialize)]
pub struct Folded {
    pub count: u64,
    pub first: String,
    pub last: String,
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
