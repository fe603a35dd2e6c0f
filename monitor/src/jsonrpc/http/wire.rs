//! One direction of one HTTP/1.1 connection (what the server read, or what it wrote), rebuilt
//! from the numbered chunks the kernel captured: heads, content-length / chunked / until-close
//! bodies, keep-alive and pipelining (messages follow each other on the same bytes).
//!
//! Bodies are handed out as they complete, as `framing::Message`s (head and tail kept, the
//! middle of a huge body dropped and the body marked truncated), so memory stays bounded whatever
//! the client sends; `text/event-stream` bodies go through the SSE parser event by event
//! instead, because such a stream stays open for the whole session. A gap in the numbering
//! inside a body is skipped (the body is truncated); elsewhere, or on bytes that are not HTTP,
//! the direction is broken until a syscall starts with a new message.
use crate::jsonrpc::framing::{sequence, Kept, Message};

use super::sse::Sse;

/// Longest head (start line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;

/// A request or response head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Request: method and target; response: empty.
    pub method: String,
    pub target: String,
    /// Response: status code; request: 0.
    pub status: u16,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the bytes carried.
#[derive(Debug, PartialEq)]
pub enum Item {
    Head(Head),
    /// A whole (non-SSE) body.
    Body(Message),
    /// One SSE event's `data`.
    Event(Message),
    /// The message ended (its body, if any, was handed out before).
    End,
}

#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug)]
enum Chunk {
    /// Reading the chunk-size line.
    Size(Vec<u8>),
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk; done at an empty line.
    Trailer(Vec<u8>),
}

#[derive(Debug)]
enum Sink {
    Whole(Collector),
    Sse(Sse),
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Body(Framing, Sink),
    /// Not HTTP, or lost bytes where they cannot be skipped: wait for a syscall that starts a
    /// message.
    Broken,
}

/// Body bytes kept: the head and a rolling tail, as stdio messages keep them.
#[derive(Debug, Default)]
pub(super) struct Collector {
    body: Kept,
    /// Bytes captured but let go between head and tail (gaps are counted where they occur).
    dropped: u64,
}

impl Collector {
    pub(super) fn push(&mut self, b: &[u8]) {
        self.dropped += self.body.push(b);
    }

    pub(super) fn gap(&mut self, n: u64) {
        self.dropped += self.body.gap(n);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    pub(super) fn kept(&self) -> usize {
        self.body.kept()
    }

    pub(super) fn finish(mut self, ts: u64) -> Message {
        self.body.take(ts)
    }
}

/// Whether `d` opens an HTTP message (a request line or a status line).
fn starts_message(d: &[u8]) -> bool {
    const STARTS: [&[u8]; 7] = [b"POST ", b"GET ", b"DELETE ", b"PUT ", b"HEAD ", b"OPTIONS ", b"HTTP/1."];
    STARTS.iter().any(|s| d.starts_with(s))
}

#[derive(Debug)]
pub struct Wire {
    state: State,
    next: Option<u64>,
    /// Bytes not captured or not understood (gaps, garbage, the dropped middle of huge bodies).
    pub bytes_lost: u64,
    /// Times the direction lost its place and had to wait for a new message.
    pub desyncs: u64,
}

impl Default for Wire {
    fn default() -> Self {
        Self { state: State::Head(vec![]), next: None, bytes_lost: 0, desyncs: 0 }
    }
}

impl Wire {
    /// Bytes held (for memory bounds).
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Head(b) => b.len(),
            State::Body(_, Sink::Whole(c)) => c.kept(),
            State::Body(_, Sink::Sse(s)) => s.buffered(),
            State::Broken => 0,
        }
    }

    /// Feeds the chunk at stream position `pos`; `syscall_start` when it opens a read/write.
    pub fn feed(&mut self, pos: u64, syscall_start: bool, data: &[u8], ts: u64) -> Vec<Item> {
        let mut out = vec![];
        let (lost, new) = sequence(self.next, pos, data);
        if lost > 0 {
            self.gap(lost, ts, &mut out);
        }
        let Some((pos, mut data)) = new else { return out };
        self.next = Some(pos + data.len() as u64);
        if matches!(self.state, State::Broken) {
            if syscall_start && starts_message(data) {
                self.state = State::Head(vec![]);
            } else {
                self.bytes_lost += data.len() as u64;
                return out;
            }
        }
        while !data.is_empty() {
            data = self.step(data, ts, &mut out);
        }
        out
    }

    /// The connection closed: a body read until close ends here.
    pub fn close(&mut self, ts: u64) -> Vec<Item> {
        let mut out = vec![];
        if let State::Body(Framing::UntilClose, _) = self.state {
            self.end_body(ts, &mut out);
        }
        out
    }

    fn broken(&mut self, lost: u64) {
        self.bytes_lost += lost;
        self.desyncs += 1;
        self.state = State::Broken;
    }

    fn gap(&mut self, n: u64, ts: u64, out: &mut Vec<Item>) {
        match &mut self.state {
            State::Body(Framing::Length(left), sink) if n <= *left => {
                *left -= n;
                skip_sink(sink, n);
                self.bytes_lost += n;
                if *left == 0 {
                    self.end_body(ts, out);
                }
            }
            State::Body(Framing::Chunked(Chunk::Data(left)), sink) if n <= *left => {
                *left -= n;
                skip_sink(sink, n);
                self.bytes_lost += n;
                if *left == 0 {
                    self.state_chunk(Chunk::DataEnd);
                }
            }
            State::Body(Framing::UntilClose, sink) => {
                skip_sink(sink, n);
                self.bytes_lost += n;
            }
            State::Broken => self.bytes_lost += n,
            _ => self.broken(n),
        }
    }

    fn state_chunk(&mut self, c: Chunk) {
        if let State::Body(f, _) = &mut self.state {
            *f = Framing::Chunked(c);
        }
    }

    /// Consumes a prefix of `data`; returns the rest.
    fn step<'a>(&mut self, data: &'a [u8], ts: u64, out: &mut Vec<Item>) -> &'a [u8] {
        match &mut self.state {
            State::Broken => {
                self.bytes_lost += data.len() as u64;
                &[]
            }
            State::Head(buf) => {
                // Blank lines between messages are allowed (RFC 9112 2.2).
                if buf.is_empty() {
                    let lead = data.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                    if lead > 0 {
                        return &data[lead..];
                    }
                }
                let old = buf.len();
                buf.extend_from_slice(data);
                let from = old.saturating_sub(3);
                let Some(end) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|p| from + p + 4) else {
                    if buf.len() > MAX_HEAD || !plausible(buf) {
                        let n = buf.len() as u64;
                        self.broken(n);
                    }
                    return &[];
                };
                let used = end - old;
                let head = std::mem::take(buf);
                match parse_head(&head[..end]) {
                    Some(h) => self.start_body(h, out),
                    None => self.broken(end as u64),
                }
                &data[used..]
            }
            State::Body(framing, sink) => match framing {
                Framing::Length(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    feed_sink(sink, &data[..n], ts, out);
                    *left -= n as u64;
                    if *left == 0 {
                        self.end_body(ts, out);
                    }
                    &data[n..]
                }
                Framing::UntilClose => {
                    feed_sink(sink, data, ts, out);
                    &[]
                }
                Framing::Chunked(c) => match c {
                    Chunk::Size(line) | Chunk::Trailer(line) => {
                        let nl = data.iter().position(|b| *b == b'\n');
                        let take = nl.map_or(data.len(), |p| p + 1);
                        line.extend_from_slice(&data[..take]);
                        if line.len() > MAX_LINE {
                            let n = line.len() as u64;
                            self.broken(n);
                            return &data[take..];
                        }
                        if nl.is_none() {
                            return &[];
                        }
                        let text = String::from_utf8_lossy(line).trim().to_string();
                        line.clear();
                        if matches!(c, Chunk::Trailer(_)) {
                            if text.is_empty() {
                                self.end_body(ts, out);
                            }
                            return &data[take..];
                        }
                        let size = text.split(';').next().and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                        match size {
                            Some(0) => *c = Chunk::Trailer(vec![]),
                            Some(n) => *c = Chunk::Data(n),
                            None => self.broken(text.len() as u64),
                        }
                        &data[take..]
                    }
                    Chunk::Data(left) => {
                        let n = (*left).min(data.len() as u64) as usize;
                        *left -= n as u64;
                        if *left == 0 {
                            *c = Chunk::DataEnd;
                        }
                        feed_sink(sink, &data[..n], ts, out);
                        &data[n..]
                    }
                    Chunk::DataEnd => {
                        // CRLF after the chunk's data; a bare LF is tolerated.
                        let i = data.iter().take_while(|b| **b == b'\r').count();
                        if i == data.len() {
                            return &[];
                        }
                        if data[i] == b'\n' {
                            *c = Chunk::Size(vec![]);
                            return &data[i + 1..];
                        }
                        self.broken(1);
                        &data[i..]
                    }
                },
            },
        }
    }

    fn start_body(&mut self, h: Head, out: &mut Vec<Item>) {
        let chunked = h.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = h.header("content-length").and_then(|v| v.parse::<u64>().ok());
        let sse = h.header("content-type").is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
        let no_body = (h.status >= 100 && h.status < 200) || h.status == 204 || h.status == 304;
        let framing = if no_body {
            None
        } else if chunked {
            Some(Framing::Chunked(Chunk::Size(vec![])))
        } else if let Some(n) = length {
            (n > 0).then_some(Framing::Length(n))
        } else if h.status != 0 {
            // A response with neither: its body runs to the close (RFC 9112 6.3).
            Some(Framing::UntilClose)
        } else {
            None
        };
        out.push(Item::Head(h));
        match framing {
            Some(f) => self.state = State::Body(f, if sse { Sink::Sse(Sse::default()) } else { Sink::Whole(Collector::default()) }),
            None => {
                out.push(Item::End);
                self.state = State::Head(vec![]);
            }
        }
    }

    fn end_body(&mut self, ts: u64, out: &mut Vec<Item>) {
        if let State::Body(_, sink) = std::mem::replace(&mut self.state, State::Head(vec![])) {
            match sink {
                Sink::Whole(c) => {
                    self.bytes_lost += c.dropped;
                    out.push(Item::Body(c.finish(ts)));
                }
                Sink::Sse(mut s) => out.extend(s.finish(ts).into_iter().map(Item::Event)),
            }
            out.push(Item::End);
        }
    }
}

fn feed_sink(sink: &mut Sink, data: &[u8], ts: u64, out: &mut Vec<Item>) {
    match sink {
        Sink::Whole(c) => c.push(data),
        Sink::Sse(s) => out.extend(s.feed(data, ts).into_iter().map(Item::Event)),
    }
}

fn skip_sink(sink: &mut Sink, n: u64) {
    match sink {
        Sink::Whole(c) => c.gap(n),
        Sink::Sse(s) => s.gap(),
    }
}

/// A head still being read could be HTTP: its first bytes are a method or `HTTP/1.`.
fn plausible(buf: &[u8]) -> bool {
    let n = buf.len().min(8);
    const STARTS: [&[u8]; 7] = [b"POST ", b"GET ", b"DELETE ", b"PUT ", b"HEAD ", b"OPTIONS ", b"HTTP/1."];
    STARTS.iter().any(|s| s.starts_with(&buf[..n.min(s.len())]) || buf.starts_with(s))
}

fn parse_head(b: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(b).ok()?;
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    let mut h = Head::default();
    if let Some(rest) = start.strip_prefix("HTTP/1.") {
        h.status = rest.get(2..5)?.parse().ok()?;
    } else {
        let mut parts = start.split(' ');
        h.method = parts.next()?.to_string();
        h.target = parts.next()?.to_string();
        if !parts.next()?.starts_with("HTTP/1.") || !h.method.bytes().all(|c| c.is_ascii_uppercase()) {
            return None;
        }
    }
    for line in lines.filter(|l| !l.is_empty()) {
        let (n, v) = line.split_once(':')?;
        h.headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Some(h)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
