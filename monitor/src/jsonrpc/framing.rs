//! Reassembles one stdio stream (one pipe, one direction) into newline-delimited messages from the
//! chunks the kernel captured.
//!
//! What arrives per read/write syscall: its head chunks and, for big transfers, its last chunk;
//! `offset` says where each chunk sits, `total_len` how much the syscall moved. Bytes in between
//! were not captured: the message they belong to is marked truncated and its true length kept.
//! Memory is bounded: a message keeps at most `HEAD_KEEP` bytes of its start and `TAIL_KEEP` of its
//! end, so a 100 MB line costs the same as a 100 KB one. The kept bytes live in `bytes` buffers:
//! the rolling tail lets go of its front without moving what stays, and a finished message hands
//! its bytes on without a copy.
use bytes::{Buf as _, Bytes, BytesMut};

/// Bytes kept from the start of a message (method, id, params of requests).
pub const HEAD_KEEP: usize = 256 * 1024;
/// Bytes kept from the end of a message (Node SDK replies put `"id"` last).
pub const TAIL_KEEP: usize = 8 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Captured bytes: the head, then (if `truncated`) the tail after a gap.
    pub head: Bytes,
    pub tail: Bytes,
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

/// The bytes kept of one message in progress: its first `HEAD_KEEP` bytes and a rolling tail of
/// `TAIL_KEEP` after them. Shared by stdio streams and HTTP bodies.
#[derive(Default, Debug)]
pub struct Kept {
    head: BytesMut,
    tail: BytesMut,
    /// Bytes are missing: past the head, or lost on the wire.
    truncated: bool,
    /// True length on the wire, gaps included.
    len: u64,
}

impl Kept {
    /// Appends captured bytes; returns how many the rolling tail let go of.
    pub fn push(&mut self, b: &[u8]) -> u64 {
        self.len += b.len() as u64;
        if !self.truncated {
            let room = HEAD_KEEP.saturating_sub(self.head.len());
            let n = room.min(b.len());
            self.head.extend_from_slice(&b[..n]);
            if n == b.len() {
                return 0;
            }
            self.truncated = true;
            self.tail.extend_from_slice(&b[n..]);
        } else {
            self.tail.extend_from_slice(b);
        }
        if self.tail.len() <= TAIL_KEEP {
            return 0;
        }
        let cut = self.tail.len() - TAIL_KEEP;
        self.tail.advance(cut);
        cut as u64
    }

    /// `n` bytes on the wire that were not captured; returns how many kept bytes it let go of:
    /// what came before the gap is no longer the message's end.
    pub fn gap(&mut self, n: u64) -> u64 {
        self.len += n;
        self.truncated = true;
        let dropped = self.tail.len() as u64;
        self.tail.clear();
        dropped
    }

    /// Anything of a message has been seen (bytes, or a gap).
    pub fn started(&self) -> bool {
        self.len > 0 || self.truncated
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held (for memory accounting).
    pub fn kept(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The message so far, completed at `ts`; the buffer starts the next one.
    pub fn take(&mut self, ts: u64) -> Message {
        let m = Message { head: self.head.split().freeze(), tail: self.tail.split().freeze(), truncated: self.truncated, len: self.len, ts_mono_ns: ts };
        self.truncated = false;
        self.len = 0;
        m
    }
}

#[derive(Default, Debug)]
pub struct Stream {
    msg: Kept,
    /// Stream position (bytes through the pipe) expected next; None before the first chunk.
    next: Option<u64>,
    /// Capture may begin mid-conversation (a server taken over while running, a read already
    /// blocked when the hooks went in): until the stream is known to sit at a message boundary,
    /// bytes up to the next newline are skipped.
    synced: bool,
    /// Counters for the daemon's stats.
    pub bytes_skipped: u64,
    pub messages: u64,
}

/// A chunk captured at stream position `pos` against `next`, the position the stream has
/// reached (None before its first chunk): the bytes lost before it (`pos` past `next`), and its
/// new part with that part's position, or None when every byte was fed already (a chunk that
/// starts before `next` repeats them). The pipe and the socket streams both number their bytes
/// so.
pub fn sequence(next: Option<u64>, pos: u64, data: &[u8]) -> (u64, Option<(u64, &[u8])>) {
    match next {
        Some(n) if pos > n => (pos - n, Some((pos, data))),
        Some(n) if pos < n => {
            let skip = (n - pos) as usize;
            (0, data.get(skip..).filter(|d| !d.is_empty()).map(|d| (n, d)))
        }
        _ => (0, Some((pos, data))),
    }
}

fn starts_json(d: &[u8]) -> bool {
    d.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'{' || *b == b'[')
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

    /// Feeds one captured chunk at stream position `pos` (the kernel numbers every byte of the
    /// pipe, so lost or skipped bytes show up as a jump); `syscall_start` when the chunk opens a
    /// read/write. Returns the messages it completed.
    pub fn feed(&mut self, pos: u64, syscall_start: bool, data: &[u8], ts: u64) -> Vec<Message> {
        let mut out = vec![];
        let (lost, new) = sequence(self.next, pos, data);
        if lost > 0 {
            self.gap(lost);
            // What follows lost bytes: a read/write that opens with '{' almost surely starts a
            // message (clients and servers write whole messages), so close the damaged one.
            if syscall_start && starts_json(data) && self.msg.started() {
                // The gap marked it truncated.
                out.push(self.msg.take(ts));
                self.messages += 1;
            }
        }
        let Some((pos, mut data)) = new else { return out };
        self.next = Some(pos + data.len() as u64);
        if !self.synced {
            if starts_json(data) {
                self.synced = true;
            } else {
                let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                    self.bytes_skipped += data.len() as u64;
                    return out;
                };
                self.bytes_skipped += nl as u64 + 1;
                self.synced = true;
                data = &data[nl + 1..];
            }
        }
        self.append(data, ts, &mut out);
        out
    }

    /// `n` bytes on the wire that were not captured.
    fn gap(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.msg.gap(n);
        self.bytes_skipped += n;
    }

    fn append(&mut self, mut data: &[u8], ts: u64, out: &mut Vec<Message>) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            self.bytes_skipped += self.msg.push(&data[..nl]);
            if self.msg.started() {
                out.push(self.msg.take(ts));
                self.messages += 1;
            }
            data = &data[nl + 1..];
        }
        self.bytes_skipped += self.msg.push(data);
    }

    /// Bytes held for the message in progress (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.msg.kept()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds whole syscalls back to back.
    fn feed_all(s: &mut Stream, syscalls: &[&[u8]]) -> Vec<Message> {
        let mut pos = 0;
        let mut out = vec![];
        for d in syscalls {
            out.extend(s.feed(pos, true, d, 1));
            pos += d.len() as u64;
        }
        out
    }

    #[test]
    fn a_chunk_is_placed_against_the_position_reached() {
        let d: &[u8] = b"abcdef";
        // The first chunk, and one that follows on.
        assert_eq!(sequence(None, 7, d), (0, Some((7, d))));
        assert_eq!(sequence(Some(7), 7, d), (0, Some((7, d))));
        // Bytes lost before it: counted, the chunk kept whole.
        assert_eq!(sequence(Some(7), 10, d), (3, Some((10, d))));
        // A chunk overlapping what was fed: only its new tail, at the position reached.
        assert_eq!(sequence(Some(9), 7, d), (0, Some((9, &d[2..]))));
        // Wholly fed already, to the last byte or before it.
        assert_eq!(sequence(Some(13), 7, d), (0, None));
        assert_eq!(sequence(Some(20), 7, d), (0, None));
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
        let total = 1u64 << 20;
        let mut s = Stream::new();
        assert!(s.feed(0, true, b"{\"result\":{\"x\":\"aaaa", 1).is_empty());
        let tail = b"aaaa\"}},\"jsonrpc\":\"2.0\",\"id\":7}\n";
        let m = s.feed(total - tail.len() as u64, false, tail, 2);
        assert_eq!(m.len(), 1);
        let m = &m[0];
        assert!(m.truncated);
        assert_eq!(m.len, total - 1);
        assert!(m.head.starts_with(b"{\"result\""));
        assert!(m.tail.ends_with(b"\"id\":7}"));
        // The stream goes on cleanly after it.
        let next = s.feed(total, true, b"{\"id\":8}\n", 3);
        assert_eq!(next[0].complete(), Some(&b"{\"id\":8}"[..]));
    }

    #[test]
    fn missing_end_of_a_syscall_is_a_gap() {
        let mut s = Stream::new();
        s.feed(0, true, b"{\"a\":1", 1); // the remaining 9,994 bytes never arrive
        let m = s.feed(10_000, true, b"2}\n", 2);
        assert!(m[0].truncated);
        assert_eq!(m[0].len, 10_000 + 2);
    }

    #[test]
    fn lost_records_between_messages_do_not_merge_messages() {
        // The end of a message was in records the kernel could not deliver; the next write starts
        // a new message and must come out whole.
        let mut s = Stream::new();
        assert!(s.feed(0, true, b"{\"id\":1,\"method\":\"tools/call\",\"params\":{\"blob\":\"aaaa", 1).is_empty());
        let m = s.feed(5_000_000, true, b"{\"id\":2,\"method\":\"ping\"}\n", 2);
        assert_eq!(m.len(), 2);
        assert!(m[0].truncated && m[0].head.starts_with(b"{\"id\":1"));
        assert_eq!(m[1].complete(), Some(&b"{\"id\":2,\"method\":\"ping\"}"[..]));
    }

    #[test]
    fn capture_starting_mid_message_resyncs_at_the_next_newline() {
        let mut s = Stream::midstream();
        let m = s.feed(777, true, b"\"id\":6,\"method\":\"x\"}\n{\"id\":7}\n", 1);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].complete(), Some(&b"{\"id\":7}"[..]));
        assert_eq!(s.bytes_skipped, 21);
    }

    #[test]
    fn a_huge_line_uses_bounded_memory() {
        let mut s = Stream::new();
        let chunk = vec![b'x'; 64 * 1024];
        let mut pos = 0;
        assert!(s.feed(pos, true, b"{", 1).is_empty());
        pos += 1;
        for _ in 0..1600 {
            // 100 MiB, read 64 KiB at a time, all captured
            assert!(s.feed(pos, true, &chunk, 1).is_empty());
            pos += chunk.len() as u64;
            assert!(s.buffered() <= HEAD_KEEP + TAIL_KEEP);
        }
        let m = s.feed(pos, true, b"}\n", 2);
        assert_eq!(m.len(), 1);
        assert!(m[0].truncated);
        assert_eq!(m[0].len, 1600 * 64 * 1024 + 2);
        assert_eq!(m[0].head.len(), HEAD_KEEP);
        assert!(m[0].tail.ends_with(b"x}"));
    }
}
