//! Server-sent events (`text/event-stream`, WHATWG HTML 9.2): the `data` of each event, the
//! JSON-RPC message a streamable HTTP or SSE server sends. Lines end in LF (a CR before it is
//! dropped); `data` lines of one event are joined with LF; other fields (`event`, `id`, `retry`,
//! comments) are skipped. `data` streams into a bounded collector, so a huge event costs no more
//! than a huge stdio line.
use crate::jsonrpc::framing::Message;

use super::wire::Collector;

/// Longest field name looked at (`data` is four bytes; anything longer is another field).
const MAX_NAME: usize = 16;

#[derive(Debug)]
enum Field {
    /// Reading a line's field name (up to ':' or the end of the line).
    Name(Vec<u8>),
    /// In a `data` line's value; `start`: the optional space after ':' not yet seen; `cr`: a CR
    /// ended the last piece (dropped if LF follows).
    Data { start: bool, cr: bool },
    /// In a line that is not `data`.
    Other,
}

#[derive(Debug)]
pub struct Sse {
    field: Field,
    data: Option<Collector>,
}

impl Default for Sse {
    fn default() -> Self {
        Self { field: Field::Name(vec![]), data: None }
    }
}

impl Sse {
    pub fn buffered(&self) -> usize {
        self.data.as_ref().map_or(0, |c| c.kept())
    }

    /// Bytes of the stream were not captured: the event in progress is damaged.
    pub fn gap(&mut self) {
        if let Some(c) = self.data.as_mut() {
            c.gap(0);
        }
    }

    /// The stream ended: an event not closed by a blank line is still handed out.
    pub fn finish(&mut self, ts: u64) -> Vec<Message> {
        self.data.take().filter(|c| !c.is_empty()).map(|c| c.finish(ts)).into_iter().collect()
    }

    pub fn feed(&mut self, mut d: &[u8], ts: u64) -> Vec<Message> {
        let mut out = vec![];
        while !d.is_empty() {
            match &mut self.field {
                Field::Name(name) => {
                    let Some(i) = d.iter().position(|b| *b == b':' || *b == b'\n') else {
                        name.extend_from_slice(&d[..d.len().min(MAX_NAME + 1)]);
                        if name.len() > MAX_NAME {
                            self.field = Field::Other;
                        }
                        return out;
                    };
                    name.extend_from_slice(&d[..i.min(MAX_NAME + 1)]);
                    if name.last() == Some(&b'\r') {
                        name.pop();
                    }
                    let is_data = name == b"data";
                    let blank = name.is_empty();
                    if d[i] == b'\n' {
                        // A line with no colon: a blank line ends the event; `data` alone is an
                        // empty data line.
                        if blank {
                            // An event with empty data is not dispatched (the spec's rule; the
                            // SDKs send one, with only an `id`, to prime resumption).
                            if let Some(c) = self.data.take().filter(|c| !c.is_empty()) {
                                out.push(c.finish(ts));
                            }
                        } else if is_data {
                            self.data_line();
                        }
                        self.field = Field::Name(vec![]);
                    } else if is_data {
                        self.data_line();
                        self.field = Field::Data { start: true, cr: false };
                    } else {
                        self.field = Field::Other;
                    }
                    d = &d[i + 1..];
                }
                Field::Data { start, cr } => {
                    if *start {
                        *start = false;
                        if d[0] == b' ' {
                            d = &d[1..];
                            continue;
                        }
                    }
                    let end = d.iter().position(|b| *b == b'\n');
                    let held_cr = std::mem::take(cr);
                    let mut seg = &d[..end.unwrap_or(d.len())];
                    if let Some(c) = self.data.as_mut() {
                        if held_cr && end != Some(0) {
                            c.push(b"\r");
                        }
                    }
                    if seg.last() == Some(&b'\r') {
                        seg = &seg[..seg.len() - 1];
                        if end.is_none() {
                            *cr = true;
                        }
                    }
                    if let Some(c) = self.data.as_mut() {
                        c.push(seg);
                    }
                    match end {
                        Some(e) => {
                            self.field = Field::Name(vec![]);
                            d = &d[e + 1..];
                        }
                        None => return out,
                    }
                }
                Field::Other => match d.iter().position(|b| *b == b'\n') {
                    Some(e) => {
                        self.field = Field::Name(vec![]);
                        d = &d[e + 1..];
                    }
                    None => return out,
                },
            }
        }
        out
    }

    /// A new `data` line: joined to the previous ones with LF.
    fn data_line(&mut self) {
        match self.data.as_mut() {
            Some(c) => c.push(b"\n"),
            None => self.data = Some(Collector::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(m: Vec<Message>) -> Vec<String> {
        m.into_iter().map(|m| String::from_utf8(m.head.to_vec()).unwrap()).collect()
    }

    #[test]
    fn events_split_anywhere_and_multi_line_data() {
        let stream = b"id: 0\ndata:\n\nevent: message\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n: comment\n\ndata:{\"b\":\ndata: 2}\n\n";
        for cut in 0..stream.len() {
            let mut s = Sse::default();
            let mut got = s.feed(&stream[..cut], 1);
            got.extend(s.feed(&stream[cut..], 1));
            assert_eq!(texts(got), vec!["{\"a\":1}", "{\"b\":\n2}"], "cut at {cut}");
        }
    }

    #[test]
    fn a_huge_event_is_bounded_and_truncated() {
        let mut s = Sse::default();
        assert!(s.feed(b"data: {\"id\":1,\"x\":\"", 1).is_empty());
        let big = vec![b'x'; 1 << 20];
        for _ in 0..20 {
            assert!(s.feed(&big, 1).is_empty());
            assert!(s.buffered() <= crate::jsonrpc::framing::HEAD_KEEP + crate::jsonrpc::framing::TAIL_KEEP);
        }
        let m = s.feed(b"\"}\n\n", 2);
        assert_eq!(m.len(), 1);
        assert!(m[0].truncated && m[0].tail.ends_with(b"x\"}"));
    }
}
