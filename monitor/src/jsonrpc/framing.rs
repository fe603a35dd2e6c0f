//! Reassembles one stdio stream (one pipe, one direction) into newline-delimited messages from the
//! chunks the kernel captured.
//!
//! What arrives per read/write syscall: its head chunks and, for big transfers, its last chunk;
//! `offset` says where each chunk sits, `total_len` how much the syscall moved. Bytes in between
//! were not captured: the message they belong to is marked truncated and its true length kept.
//! Memory is bounded: a message keeps at most `HEAD_KEEP` bytes of its start and `TAIL_KEEP` of its
//! end, so a 100 MB line costs the same as a 100 KB one.

/// Bytes kept from the start of a message (method, id, params of requests).
pub const HEAD_KEEP: usize = 256 * 1024;
/// Bytes kept from the end of a message (Node SDK replies put `"id"` last).
pub const TAIL_KEEP: usize = 8 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Captured bytes: the head, then (if `truncated`) the tail after a gap.
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub truncated: bool,
    /// True length on the wire, gaps included.
    pub len: u64,
    /// Monotonic ns of the syscall that completed the message.
    pub ts_mono_ns: u64,
}

impl Message {
    /// The captured bytes as one slice when nothing is missing.
    pub fn complete(&self) -> Option<&[u8]> {
        (!self.truncated).then_some(&self.head[..])
    }
}

#[derive(Default, Debug)]
pub struct Stream {
    head: Vec<u8>,
    tail: Vec<u8>,
    truncated: bool,
    len: u64,
    /// Inside a syscall: the next expected offset, and the syscall's length.
    expect: u64,
    syscall_total: u64,
    /// Capture may begin mid-conversation (a server taken over while running, a read already
    /// blocked when the hooks went in): until the stream is known to sit at a message boundary,
    /// bytes up to the next newline are skipped.
    synced: bool,
    /// Counters for the daemon's stats.
    pub bytes_skipped: u64,
    pub messages: u64,
}

impl Stream {
    /// A stream captured from its first byte.
    pub fn new() -> Self {
        Self { synced: true, ..Self::default() }
    }

    /// A stream whose capture may begin in the middle of a message (a server taken over while
    /// running): bytes before the first message boundary are skipped.
    pub fn midstream() -> Self {
        Self::default()
    }

    /// Feeds one captured chunk; returns the messages it completed.
    pub fn feed(&mut self, offset: u32, total_len: u64, data: &[u8], ts_mono_ns: u64) -> Vec<Message> {
        let offset = offset as u64;
        let mut out = vec![];
        if offset == 0 {
            // A new syscall: whatever the previous one did not deliver is a gap.
            if self.expect < self.syscall_total {
                self.gap(self.syscall_total - self.expect);
            }
            self.syscall_total = total_len;
            self.expect = 0;
        }
        if !self.synced {
            let start = data.iter().position(|b| !b.is_ascii_whitespace());
            match start {
                Some(i) if data[i] == b'{' || data[i] == b'[' => self.synced = true,
                _ => {
                    let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                        self.bytes_skipped += data.len() as u64;
                        self.expect = offset + data.len() as u64;
                        return out;
                    };
                    self.bytes_skipped += nl as u64 + 1;
                    self.synced = true;
                    self.expect = offset + nl as u64 + 1;
                    let rest = &data[nl + 1..];
                    return self.feed_at(self.expect, rest, ts_mono_ns);
                }
            }
        }
        if offset > self.expect {
            self.gap(offset - self.expect);
        } else if offset < self.expect && offset != 0 {
            // Overlap (should not happen): keep only the new part.
            let skip = (self.expect - offset) as usize;
            if skip >= data.len() {
                return out;
            }
            return self.feed_at(self.expect, &data[skip..], ts_mono_ns);
        }
        self.append(data, ts_mono_ns, &mut out);
        self.expect = offset + data.len() as u64;
        out
    }

    fn feed_at(&mut self, offset: u64, data: &[u8], ts: u64) -> Vec<Message> {
        let mut out = vec![];
        self.append(data, ts, &mut out);
        self.expect = offset + data.len() as u64;
        out
    }

    /// `n` bytes on the wire that were not captured.
    fn gap(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.truncated = true;
        self.len += n;
        self.bytes_skipped += n;
        // What came before the gap is no longer the message's end.
        if !self.tail.is_empty() {
            self.tail.clear();
        }
    }

    fn append(&mut self, mut data: &[u8], ts: u64, out: &mut Vec<Message>) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            self.push_bytes(&data[..nl]);
            if self.len > 0 || self.truncated {
                out.push(Message {
                    head: std::mem::take(&mut self.head),
                    tail: std::mem::take(&mut self.tail),
                    truncated: self.truncated,
                    len: self.len,
                    ts_mono_ns: ts,
                });
                self.messages += 1;
            }
            self.truncated = false;
            self.len = 0;
            data = &data[nl + 1..];
        }
        self.push_bytes(data);
    }

    fn push_bytes(&mut self, b: &[u8]) {
        self.len += b.len() as u64;
        let room = HEAD_KEEP.saturating_sub(self.head.len());
        if !self.truncated && room >= b.len() {
            self.head.extend_from_slice(b);
            return;
        }
        // Past the head (or after a gap): keep a rolling tail.
        let (to_head, rest) = if self.truncated { (&b[..0], b) } else { b.split_at(room) };
        self.head.extend_from_slice(to_head);
        if !rest.is_empty() && !self.truncated {
            self.truncated = true;
        }
        self.tail.extend_from_slice(rest);
        if self.tail.len() > TAIL_KEEP {
            let cut = self.tail.len() - TAIL_KEEP;
            self.bytes_skipped += cut as u64;
            self.tail.drain(..cut);
        }
    }

    /// Bytes held for the message in progress (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.head.len() + self.tail.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(s: &mut Stream, syscalls: &[&[u8]]) -> Vec<Message> {
        syscalls.iter().flat_map(|d| s.feed(0, d.len() as u64, d, 1)).collect()
    }

    #[test]
    fn split_over_many_syscalls_and_many_in_one() {
        let mut s = Stream::new();
        let m = feed_all(&mut s, &[b"{\"a\":", b"1}", b"\n{\"b\":2}\n{\"c\"", b":3}\n\n"]);
        let texts: Vec<_> = m.iter().map(|m| String::from_utf8(m.complete().unwrap().to_vec()).unwrap()).collect();
        assert_eq!(texts, vec!["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[test]
    fn gap_inside_one_syscall_keeps_head_and_tail() {
        // A 1 MiB line written in one syscall: head chunk at 0, tail chunk at the end.
        let total = 1 << 20;
        let mut s = Stream::new();
        assert!(s.feed(0, total, b"{\"result\":{\"x\":\"aaaa", 1).is_empty());
        let tail = b"aaaa\"}},\"jsonrpc\":\"2.0\",\"id\":7}\n";
        let m = s.feed((total - tail.len() as u64) as u32, total, tail, 2);
        assert_eq!(m.len(), 1);
        let m = &m[0];
        assert!(m.truncated);
        assert_eq!(m.len, total - 1);
        assert!(m.head.starts_with(b"{\"result\""));
        assert!(m.tail.ends_with(b"\"id\":7}"));
        // The stream goes on cleanly after it.
        let next = s.feed(0, 9, b"{\"id\":8}\n", 3);
        assert_eq!(next[0].complete(), Some(&b"{\"id\":8}"[..]));
    }

    #[test]
    fn missing_end_of_a_syscall_is_a_gap() {
        let mut s = Stream::new();
        s.feed(0, 10_000, b"{\"a\":1", 1); // the remaining 9,994 bytes never arrive
        let m = s.feed(0, 3, b"2}\n", 2);
        assert!(m[0].truncated);
        assert_eq!(m[0].len, 10_000 + 2);
    }

    #[test]
    fn capture_starting_mid_message_resyncs_at_the_next_newline() {
        let mut s = Stream::midstream();
        let m = s.feed(0, 40, b"\"id\":6,\"method\":\"x\"}\n{\"id\":7}\n", 1);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].complete(), Some(&b"{\"id\":7}"[..]));
        assert_eq!(s.bytes_skipped, 21);
    }

    #[test]
    fn a_huge_line_uses_bounded_memory() {
        let mut s = Stream::new();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1600 {
            // 100 MiB, read 64 KiB at a time, all captured
            assert!(s.feed(0, chunk.len() as u64, &chunk, 1).is_empty());
            assert!(s.buffered() <= HEAD_KEEP + TAIL_KEEP);
        }
        let m = s.feed(0, 2, b"}\n", 2);
        assert_eq!(m.len(), 1);
        assert!(m[0].truncated);
        assert_eq!(m[0].len, 1600 * 64 * 1024 + 1);
        assert_eq!(m[0].head.len(), HEAD_KEEP);
        assert!(m[0].tail.ends_with(b"x}"));
    }
}
