//! MCP over HTTP in the correlation stage: socket captures (`Body::Sock`) → per-connection HTTP
//! streams (`jsonrpc::http`) → JSON-RPC messages → the MCP session each belongs to, with the
//! same records stdio produces. Sessions are per server and per `Mcp-Session-Id` (a connection's
//! own, `conn:INO`, for requests that carry none), because two clients of one server number their
//! requests independently.
use std::collections::HashMap;


use super::{record, Correlator, Found};
use crate::{
    events::{Direction, Stdio},
    jsonrpc::{
        http::{Conn, Delivery},
        message::{self, Rpc},
        session::{Attribution, Session},
    },
    output::record::Mcp,
};

/// Connections followed at once (all servers); beyond this new ones are counted and dropped.
pub const MAX_CONNS: usize = 4096;
/// HTTP sessions kept per server; beyond this new ones are counted and not followed.
pub const MAX_SESSIONS: usize = 1024;

#[derive(Default, Debug, serde::Serialize)]
pub struct HttpStats {
    pub connections: u64,
    /// Closed by the server (the kernel saw its close).
    pub connections_closed: u64,
    pub tls_connections: u64,
    /// Accepted while the kernel's socket table was full: not captured at all.
    pub connections_not_captured: u64,
    pub connections_dropped: u64,
    pub sessions_dropped: u64,
    /// Bytes not captured or not understood on HTTP connections.
    pub bytes_lost: u64,
    pub desyncs: u64,
}

#[derive(Default)]
pub struct HttpState {
    conns: HashMap<(u32, u64), Conn>,
    /// server → session key → session.
    sessions: HashMap<u32, HashMap<String, Session>>,
    pub stats: HttpStats,
}

impl Correlator {
    /// A socket capture of `server`: connection start/end or bytes.
    pub(super) fn sock(&mut self, server: u32, ts: u64, s: &Stdio) -> Vec<Found> {
        let key = (server, s.ino);
        let h = &mut self.http;
        match s.dir {
            Direction::AcceptNotCaptured => {
                h.stats.connections_not_captured += 1;
                return vec![];
            }
            Direction::Accept => {
                if h.conns.len() >= MAX_CONNS {
                    h.stats.connections_dropped += 1;
                    return vec![];
                }
                h.stats.connections += 1;
                h.conns.insert(key, Conn::new(s.ino));
                return vec![];
            }
            Direction::Close => {
                let Some(mut conn) = h.conns.remove(&key) else { return vec![] };
                h.stats.connections_closed += 1;
                let d = conn.close(ts);
                let mut out = self.deliver(server, ts, d);
                // The connection's own session ends with it: calls it left open are unanswered.
                if let Some(mut sess) = self.http.sessions.get_mut(&server).and_then(|m| m.remove(&conn.own_session())) {
                    out.extend(sess.close(ts).into_iter().map(|f| Found::record(server, ts, Mcp::ToolCall(f))));
                }
                return out;
            }
            _ => {}
        }
        let Some(conn) = h.conns.get_mut(&key) else { return vec![] };
        let (lost, desyncs, was_tls) = (conn.bytes_lost(), conn.desyncs(), conn.tls);
        let d = conn.feed(s.dir == Direction::In, s.stream_off + s.offset as u64, s.offset == 0, &s.data, ts);
        h.stats.bytes_lost += conn.bytes_lost() - lost;
        h.stats.desyncs += conn.desyncs() - desyncs;
        let mut out = vec![];
        if conn.tls && !was_tls {
            h.stats.tls_connections += 1;
            out.push(Found::record(server, ts, Mcp::HttpConnection { fd: s.fd, tls: true, payload_captured: false }));
        }
        out.extend(self.deliver(server, ts, d));
        out
    }

    fn deliver(&mut self, server: u32, ts: u64, ds: Vec<Delivery>) -> Vec<Found> {
        let mut out = vec![];
        for d in ds {
            let sessions = self.http.sessions.entry(server).or_default();
            if !sessions.contains_key(&d.session) && sessions.len() >= MAX_SESSIONS {
                // Sessions end without a word (a client gone, a DELETE): make room by forgetting
                // one with nothing in flight; only when every one is busy is the new one dropped.
                match sessions.iter().find(|(_, s)| s.in_flight() == 0).map(|(k, _)| k.clone()) {
                    Some(idle) => {
                        sessions.remove(&idle);
                    }
                    None => {
                        self.http.stats.sessions_dropped += 1;
                        continue;
                    }
                }
            }
            let session = sessions.entry(d.session.clone()).or_insert_with(|| {
                let mut s = Session::new();
                s.http_session = d.named.then(|| d.session.clone());
                s
            });
            self.stats.messages += 1;
            if d.msg.truncated {
                self.stats.truncated_messages += 1;
            }
            let dir = if d.inbound { Direction::In } else { Direction::Out };
            for rpc in message::parse(&d.msg) {
                if let Rpc::Invalid { reason } = &rpc {
                    self.stats.invalid_messages += 1;
                    out.push(Found::record(server, ts, Mcp::McpInvalid { direction: dir, transport: Some("http"), reason: reason.to_string(), bytes: d.msg.len }));
                }
                let update = if d.inbound { session.on_request(&rpc, d.msg.ts_mono_ns) } else { session.on_reply(&rpc, d.msg.ts_mono_ns) };
                // What the server says it is (version for pins, `mcpmon servers`) is read from
                // its stdio session, which an HTTP server leaves empty: keep it there too.
                if let crate::jsonrpc::session::Update::Initialized { server: info } = &update {
                    self.sessions.entry(server).or_default().server_info = Some(info.clone());
                }
                let raw = matches!(rpc, Rpc::Response { truncated: true, .. }).then(|| super::raw_text(&d.msg));
                record(server, ts, update, raw, &mut out);
            }
        }
        out
    }

    /// Attribution over the server's stdio session and its HTTP sessions: the one call in
    /// flight across all of them, all of them when several, or idle.
    pub(super) fn attribute(&mut self, server: u32) -> Attribution {
        let stdio = self.sessions.entry(server).or_default();
        let Some(http) = self.http.sessions.get_mut(&server) else { return stdio.attribute() };
        let mut busy: Vec<&mut Session> = std::iter::once(stdio).chain(http.values_mut()).filter(|s| s.calls_in_flight() > 0).collect();
        match busy.len() {
            0 => Attribution::Idle,
            1 => busy[0].attribute(),
            _ => Attribution::Ambiguous { candidates: busy.iter().flat_map(|s| s.candidates()).collect() },
        }
    }

    /// The server is gone: its connections and HTTP sessions with it.
    pub(super) fn http_gone(&mut self, server: u32, ts: u64) -> Vec<Found> {
        self.http.conns.retain(|(s, _), _| *s != server);
        self.http
            .sessions
            .remove(&server)
            .map(|m| m.into_values().flat_map(|mut s| s.close(ts)).map(|f| Found::record(server, ts, Mcp::ToolCall(f))).collect())
            .unwrap_or_default()
    }

    /// When the call `id` in flight on `server` started, whichever session (stdio or HTTP) it is
    /// in: an event attributed to one call has exactly one such call in flight.
    pub fn call_start(&self, server: u32, id: &str) -> Option<u64> {
        let stdio = self.sessions.get(&server).and_then(|s| s.call_start(id));
        stdio.or_else(|| self.http.sessions.get(&server)?.values().find_map(|s| s.call_start(id)))
    }

    /// Bytes held by HTTP connections (memory accounting).
    pub fn http_buffered(&self) -> usize {
        self.http.conns.values().map(Conn::buffered).sum()
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
