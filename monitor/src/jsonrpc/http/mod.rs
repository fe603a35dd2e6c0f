//! MCP over HTTP (streamable HTTP, and the older SSE transport): one `Conn` per socket a server
//! accepted, two `wire::Wire`s (what it read, what it wrote), and the JSON-RPC messages they carry
//! with the MCP session each belongs to.
//!
//! Which session: the request's `Mcp-Session-Id` header (the SSE transport: the `sessionId` of
//! the POST's URL, and of the `endpoint` event that opens the GET stream its replies come on);
//! a request without one (the
//! `initialize`, a stateless server) belongs to its connection (`conn:INO`), and its response,
//! found by order on the same connection (HTTP/1.1 answers in request order, pipelined or not),
//! goes to the same session. A message is delivered when the server *read* the request body and
//! when it *wrote* the response body or SSE event, so a call is in flight between the two, as
//! on stdio.
pub mod sse;
pub mod wire;

use std::collections::VecDeque;

use super::framing::Message;
use wire::{Head, Item, Wire};

/// Requests awaiting their response on one connection; beyond this (a client pipelining without
/// reading) the oldest is forgotten.
const MAX_AWAITING: usize = 256;

/// A JSON-RPC payload with where it belongs.
#[derive(Debug, PartialEq)]
pub struct Delivery {
    /// The MCP session: the `Mcp-Session-Id`, or `conn:INO` for a connection's own.
    pub session: String,
    /// Whether the session key is a real `Mcp-Session-Id`.
    pub named: bool,
    /// True: the server read it (a request body); false: the server wrote it.
    pub inbound: bool,
    pub msg: Message,
}

#[derive(Clone, Debug)]
struct Req {
    session: String,
    named: bool,
}

#[derive(Debug)]
pub struct Conn {
    ino: u64,
    req: Wire,
    resp: Wire,
    /// Requests read whose response has not started (in order).
    awaiting: VecDeque<Req>,
    /// The request being read, the response being written.
    reading: Option<(Req, bool)>,
    writing: Option<(Req, bool)>,
    /// The first bytes were a TLS handshake: nothing here is readable.
    pub tls: bool,
    started: bool,
}

/// `sessionId` from a URL's query.
fn session_param(target: &str) -> Option<String> {
    let q = target.split_once('?')?.1;
    q.split('&').find_map(|kv| kv.strip_prefix("sessionId=")).filter(|v| !v.is_empty()).map(str::to_string)
}

/// The session an SSE `endpoint` event names (its data is a URL, not JSON).
fn endpoint(m: &Message) -> Option<String> {
    let text = std::str::from_utf8(m.complete()?).ok()?;
    (text.starts_with('/') || text.starts_with("http")).then(|| session_param(text)).flatten()
}

fn json_body(h: &Head) -> bool {
    h.header("content-type").is_none_or(|v| v.to_ascii_lowercase().contains("json"))
}

impl Conn {
    pub fn new(ino: u64) -> Self {
        Self { ino, req: Wire::default(), resp: Wire::default(), awaiting: VecDeque::new(), reading: None, writing: None, tls: false, started: false }
    }

    pub fn bytes_lost(&self) -> u64 {
        self.req.bytes_lost + self.resp.bytes_lost
    }

    pub fn desyncs(&self) -> u64 {
        self.req.desyncs + self.resp.desyncs
    }

    pub fn buffered(&self) -> usize {
        self.req.buffered() + self.resp.buffered()
    }

    /// The session key of requests without `Mcp-Session-Id` on this connection.
    pub fn own_session(&self) -> String {
        format!("conn:{}", self.ino)
    }

    /// Feeds one captured chunk: `inbound` when the server read it; `pos` its place in that
    /// direction's byte numbering.
    pub fn feed(&mut self, inbound: bool, pos: u64, syscall_start: bool, data: &[u8], ts: u64) -> Vec<Delivery> {
        if !self.started && pos == 0 && !data.is_empty() {
            self.started = true;
            // A TLS record header (change_cipher_spec 20 to application_data 23, version 3.x) as
            // the first bytes either way: the client's hello, or the server's alert to a client
            // that sent nothing.
            self.tls = data.len() >= 2 && (0x14..=0x17).contains(&data[0]) && data[1] == 0x03;
        }
        if self.tls {
            return vec![];
        }
        let items = if inbound { self.req.feed(pos, syscall_start, data, ts) } else { self.resp.feed(pos, syscall_start, data, ts) };
        self.items(inbound, items)
    }

    /// The server closed the connection: a response read until close ends here.
    pub fn close(&mut self, ts: u64) -> Vec<Delivery> {
        let items = self.resp.close(ts);
        self.items(false, items)
    }

    fn items(&mut self, inbound: bool, items: Vec<Item>) -> Vec<Delivery> {
        let mut out = vec![];
        for item in items {
            match item {
                Item::Head(h) if inbound => {
                    // The SSE transport names the session in the POST's query (`?sessionId=`).
                    let named = h.header("mcp-session-id").map(str::to_string).or_else(|| session_param(&h.target));
                    let req = Req { named: named.is_some(), session: named.unwrap_or_else(|| self.own_session()) };
                    self.reading = Some((req, h.method == "POST" && json_body(&h)));
                }
                Item::Head(h) => {
                    // 1xx answers come before the real response of the same request.
                    if (100..200).contains(&h.status) {
                        continue;
                    }
                    let req = self.awaiting.pop_front().unwrap_or_else(|| {
                        let named = h.header("mcp-session-id").map(str::to_string);
                        Req { named: named.is_some(), session: named.unwrap_or_else(|| self.own_session()) }
                    });
                    let sse = h.header("content-type").is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
                    self.writing = Some((req, sse || json_body(&h)));
                }
                Item::End if inbound => {
                    if let Some((req, _)) = self.reading.take() {
                        if self.awaiting.len() >= MAX_AWAITING {
                            self.awaiting.pop_front();
                        }
                        self.awaiting.push_back(req);
                    }
                }
                Item::End => self.writing = None,
                Item::Event(msg) if !inbound && endpoint(&msg).is_some() => {
                    // The SSE transport's first event: the URL to POST to, naming the session
                    // whose replies this stream carries from now on.
                    if let (Some(id), Some((req, _))) = (endpoint(&msg), self.writing.as_mut()) {
                        *req = Req { session: id, named: true };
                    }
                }
                Item::Body(msg) | Item::Event(msg) => {
                    let side = if inbound { &self.reading } else { &self.writing };
                    if let Some((req, true)) = side {
                        out.push(Delivery { session: req.session.clone(), named: req.named, inbound, msg });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
