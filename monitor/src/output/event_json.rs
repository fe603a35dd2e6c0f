//! The kernel event line, written by hand. Nearly every line of a busy stream is one of these,
//! and serde_json put each of its twenty-odd keys through its string escaper and its flattened
//! maps through a map serializer: 21% of the daemon's CPU on a tracked open loop, more than
//! the rules. Here the keys are byte literals and only values are escaped.
//!
//! The bytes are those of `serde_json::to_writer(EventLine)` (the derive stays as the
//! reference): same keys, same order, same escapes. `tests` holds them equal over every written
//! kind, every optional field present and absent, and strings with every escape. The kinds that
//! are never written out (stdio, sock, handshake, an unpaired repeat) and the rare nested values
//! (a call's arguments, a container) still go through serde.
use std::{io::Write, net::IpAddr, sync::Arc};

use super::record::{EventLine, Folded};
use crate::{
    events::{Body, Connect, Exec, Exit, Header, Open, SysResult},
    jsonrpc::session::Attribution,
};

/// Parts of the last line written that the next line of the same thread repeats, as written:
/// its ids (pid, tid, ppid, uid, server) and its server's name with its executable. A busy
/// thread's lines differ in little else, and these were five integers and two escaped strings
/// per line. Kept by the emitter across the lines it writes.
#[derive(Debug, Default)]
pub struct LineMemo {
    ids: Option<([u32; 5], Vec<u8>)>,
    /// The shared texts themselves (held, so their addresses are no other text's meanwhile).
    who: Option<(Who, Vec<u8>)>,
}

/// A line's server name and executable.
type Who = (Option<Arc<str>>, Option<Arc<str>>);

fn same(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Appends `line` as JSON to `out`.
#[cfg(test)]
pub fn write(line: &EventLine, out: &mut Vec<u8>) -> serde_json::Result<()> {
    write_with(line, out, &mut LineMemo::default())
}

/// `write`, copying what `memo` kept from the line before where this one repeats it.
pub fn write_with(line: &EventLine, out: &mut Vec<u8>, memo: &mut LineMemo) -> serde_json::Result<()> {
    let start = out.len();
    let mut w = Json { out: &mut *out };
    w.raw(b"{\"ts_mono_ns\":");
    w.header(&line.event.header, memo);
    match &line.event.body {
        Body::Exec(e) => w.exec(e),
        Body::Open(o) => w.open(o),
        Body::Connect(c) => w.connect(b"connect", c),
        Body::Send(c) => w.connect(b"send", c),
        Body::Exit(e) => w.exit(e),
        Body::Fork(f) => {
            w.num_at(b",\"kind\":\"fork\",\"child_pid\":", f.child_pid);
            w.num_at(b",\"clone_flags\":", f.clone_flags);
        }
        Body::IoUring(u) => {
            w.word_at(b",\"kind\":\"io_uring\",\"op\":", u.op);
            w.num_at(b",\"fd\":", u.fd);
            w.num_at(b",\"sq_entries\":", u.sq_entries);
            w.num_at(b",\"cq_entries\":", u.cq_entries);
            w.num_at(b",\"setup_flags\":", u.setup_flags);
        }
        Body::ProcAccess(p) => {
            w.word_at(b",\"kind\":\"proc_access\",\"syscall\":", p.syscall);
            if let Some(r) = &p.request {
                w.str_at(b",\"request\":", r);
            }
            w.num_at(b",\"target_pid\":", p.target_pid);
        }
        Body::Stdio(_) | Body::Sock(_) | Body::Repeat(_) | Body::Handshake(_) => {
            out.truncate(start);
            return serde_json::to_writer(out, line);
        }
    }
    w.str_at(b",\"time\":", &line.time);
    match &memo.who {
        Some(((server, exe), bytes)) if same(server, &line.server) && same(exe, &line.exe) => w.raw(bytes),
        _ => {
            let from = w.out.len();
            if let Some(s) = &line.server {
                w.str_at(b",\"server\":", s);
            }
            if let Some(s) = &line.exe {
                w.str_at(b",\"exe\":", s);
            }
            let mut bytes = memo.who.take().map(|(_, b)| b).unwrap_or_default();
            bytes.clear();
            bytes.extend_from_slice(&w.out[from..]);
            memo.who = Some(((line.server.clone(), line.exe.clone()), bytes));
        }
    }
    if let Some(c) = &line.container {
        w.raw(b",\"container\":");
        serde_json::to_writer(&mut *w.out, &**c)?;
    }
    w.raw(b",\"mcp\":");
    w.attribution(&line.mcp)?;
    if let Some(p) = &line.resolved_path {
        w.str_at(b",\"resolved_path\":", p);
    }
    if let Some(f) = &line.folded {
        w.folded(f);
    }
    w.raw(b"}");
    Ok(())
}

struct Json<'a> {
    out: &'a mut Vec<u8>,
}

/// An integer the line writes in decimal, as its sign and magnitude.
trait Decimal: Copy {
    fn parts(self) -> (bool, u64);
}

macro_rules! decimal {
    (unsigned: $($u:ty),*; signed: $($i:ty),*) => {
        $(impl Decimal for $u {
            fn parts(self) -> (bool, u64) {
                (false, u64::from(self))
            }
        })*
        $(impl Decimal for $i {
            fn parts(self) -> (bool, u64) {
                (self < 0, u64::from(self.unsigned_abs()))
            }
        })*
    };
}

decimal!(unsigned: u8, u16, u32, u64; signed: i32, i64);

/// Two decimal digits per entry: "00" to "99".
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Appends `v` in decimal, written straight into the line's spare room from its last digit
/// back, four digits a step. itoa wrote into a buffer of its own, and copying out of it was a
/// call to memcpy for each of a line's dozen numbers.
#[inline]
fn digits(out: &mut Vec<u8>, mut v: u64) {
    let n = v.checked_ilog10().map_or(1, |l| l as usize + 1);
    out.reserve(n);
    let len = out.len();
    let pair = |p: usize| PAIRS[p * 2..p * 2 + 2].as_ptr();
    // SAFETY: `reserve(n)` left room for n bytes past `len`, and `i` counts down from n to 0
    // over exactly the n digits of `v` (each write below stays in [0, n)); all n are written
    // before `set_len`. The pairs are 2 bytes read from PAIRS, within its 200.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        let mut i = n;
        while v >= 10_000 {
            let r = (v % 10_000) as usize;
            v /= 10_000;
            i -= 4;
            std::ptr::copy_nonoverlapping(pair(r / 100), dst.add(i), 2);
            std::ptr::copy_nonoverlapping(pair(r % 100), dst.add(i + 2), 2);
        }
        let mut v = v as usize;
        if v >= 100 {
            i -= 2;
            std::ptr::copy_nonoverlapping(pair(v % 100), dst.add(i), 2);
            v /= 100;
        }
        if v >= 10 {
            i -= 2;
            std::ptr::copy_nonoverlapping(pair(v), dst.add(i), 2);
        } else {
            i -= 1;
            *dst.add(i) = b'0' + v as u8;
        }
        debug_assert_eq!(i, 0);
        out.set_len(len + n);
    }
}

impl Json<'_> {
    fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    fn num<N: Decimal>(&mut self, n: N) {
        let (negative, v) = n.parts();
        if negative {
            self.out.push(b'-');
        }
        digits(self.out, v);
    }

    fn num_at<N: Decimal>(&mut self, key: &[u8], n: N) {
        self.raw(key);
        self.num(n);
    }

    fn str_at(&mut self, key: &[u8], s: &str) {
        self.raw(key);
        self.str(s);
    }

    /// The daemon's own words (syscall, access, errno and signal names): quoted
    /// without the escaper, which had nothing to escape in them.
    fn word(&mut self, w: &str) {
        debug_assert!(!w.bytes().any(|c| c < 0x20 || c == b'"' || c == b'\\'), "{w:?} needs escapes");
        self.out.reserve(w.len() + 2);
        self.out.push(b'"');
        self.out.extend_from_slice(w.as_bytes());
        self.out.push(b'"');
    }

    fn word_at(&mut self, key: &[u8], w: &str) {
        self.raw(key);
        self.word(w);
    }

    /// The items of a list, each written by `put` (`str` or `word`), comma-separated (the
    /// brackets are the caller's).
    fn list<'s>(&mut self, items: impl Iterator<Item = &'s str>, put: fn(&mut Self, &str)) {
        for (i, t) in items.enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            put(self, t);
        }
    }

    fn bool(&mut self, b: bool) {
        self.raw(if b { b"true" } else { b"false" });
    }

    /// A JSON string, escaped as serde_json escapes: `"` and `\`, the five short control
    /// escapes, `\u00xx` (lower-case hex) for the other controls, everything else as is.
    fn str(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let b = s.as_bytes();
        self.out.reserve(b.len() + 2);
        self.out.push(b'"');
        // Nearly every value needs no escape: one pass without early exit (which the compiler
        // vectorizes) finds out, and the text is copied whole.
        if !b.iter().fold(false, |any, &c| any | (c < 0x20) | (c == b'"') | (c == b'\\')) {
            self.out.extend_from_slice(b);
            self.out.push(b'"');
            return;
        }
        let mut from = 0;
        for (i, &c) in b.iter().enumerate() {
            let short: &[u8] = match c {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => &[b'\\', b'u', b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]],
                _ => continue,
            };
            self.out.extend_from_slice(&b[from..i]);
            self.out.extend_from_slice(short);
            from = i + 1;
        }
        self.out.extend_from_slice(&b[from..]);
        self.out.push(b'"');
    }

    /// The header's fields, after the opening `{"ts_mono_ns":`.
    fn header(&mut self, h: &Header, memo: &mut LineMemo) {
        self.num(h.ts_mono_ns);
        let ids = [h.pid, h.tid, h.ppid, h.uid, h.server_id];
        match &memo.ids {
            Some((kept, bytes)) if *kept == ids => self.raw(bytes),
            _ => {
                let from = self.out.len();
                self.num_at(b",\"pid\":", h.pid);
                self.num_at(b",\"tid\":", h.tid);
                self.num_at(b",\"ppid\":", h.ppid);
                self.num_at(b",\"uid\":", h.uid);
                self.num_at(b",\"server_id\":", h.server_id);
                let mut bytes = memo.ids.take().map(|(_, b)| b).unwrap_or_default();
                bytes.clear();
                bytes.extend_from_slice(&self.out[from..]);
                memo.ids = Some((ids, bytes));
            }
        }
        if !h.truncated.is_empty() {
            self.raw(b",\"truncated\":[");
            self.list(h.truncated.iter().copied(), Self::word);
            self.raw(b"]");
        }
        if let Some(a) = h.kernel_action {
            self.word_at(b",\"kernel_action\":", a.as_str());
        }
        if h.compat_syscall {
            self.raw(b",\"compat_syscall\":true");
        }
        if h.gated {
            self.raw(b",\"gated\":true");
        }
    }

    fn result(&mut self, r: &SysResult) {
        self.raw(b",\"result\":{\"ok\":");
        self.bool(r.ok);
        self.num_at(b",\"ret\":", r.ret);
        if let Some(e) = r.errno {
            self.word_at(b",\"errno\":", e);
        }
        self.raw(b"}");
    }

    fn policy(&mut self, p: u32) {
        if p != 0 {
            self.num_at(b",\"policy\":", p);
        }
    }

    fn exec(&mut self, e: &Exec) {
        self.word_at(b",\"kind\":\"exec\",\"syscall\":", e.syscall);
        self.str_at(b",\"filename\":", &e.filename);
        self.raw(b",\"argv\":[");
        self.list(e.argv.iter().map(String::as_str), Self::str);
        self.raw(b"],\"argv_truncated\":");
        self.bool(e.argv_truncated);
        self.num_at(b",\"dirfd\":", e.dirfd);
        self.policy(e.policy);
        self.result(&e.result);
    }

    fn open(&mut self, o: &Open) {
        self.word_at(b",\"kind\":\"open\",\"syscall\":", o.syscall);
        self.str_at(b",\"path\":", &o.path);
        self.num_at(b",\"dirfd\":", o.dirfd);
        self.num_at(b",\"flags\":", o.flags);
        self.raw(b",\"access\":[");
        self.list(o.access.iter().map(|a| a.as_str()), Self::word);
        self.num_at(b"],\"mode\":", o.mode);
        if o.resolve != 0 {
            self.num_at(b",\"resolve\":", o.resolve);
        }
        if let Some(i) = o.inode {
            self.num_at(b",\"inode\":{\"dev\":", i.dev);
            self.num_at(b",\"ino\":", i.ino);
            self.raw(b"}");
        }
        self.policy(o.policy);
        self.result(&o.result);
    }

    fn connect(&mut self, kind: &[u8], c: &Connect) {
        self.raw(b",\"kind\":\"");
        self.raw(kind);
        self.num_at(b"\",\"fd\":", c.fd);
        self.str_at(b",\"family\":", &c.family);
        if let Some(a) = c.addr {
            self.raw(b",\"addr\":");
            // Digits, dots and colons: nothing to escape.
            let _ = match a {
                IpAddr::V4(a) => write!(self.out, "\"{a}\""),
                IpAddr::V6(a) => write!(self.out, "\"{a}\""),
            };
        }
        if let Some(p) = c.port {
            self.num_at(b",\"port\":", p);
        }
        if let Some(u) = &c.unix_path {
            self.str_at(b",\"unix_path\":", u);
        }
        self.policy(c.policy);
        self.result(&c.result);
    }

    fn exit(&mut self, e: &Exit) {
        self.raw(b",\"kind\":\"exit\"");
        if let Some(c) = e.code {
            self.num_at(b",\"code\":", c);
        }
        if let Some(s) = e.signal {
            self.num_at(b",\"signal\":", s);
        }
        if let Some(s) = e.signal_name {
            self.word_at(b",\"signal_name\":", s);
        }
        self.raw(b",\"core_dumped\":");
        self.bool(e.core_dumped);
        self.num_at(b",\"status\":", e.status);
    }

    fn attribution(&mut self, a: &Attribution) -> serde_json::Result<()> {
        match a {
            Attribution::Idle => self.raw(b"{\"state\":\"idle\"}"),
            Attribution::Call { tool, id, arguments } => {
                self.str_at(b"{\"state\":\"call\",\"tool\":", tool);
                self.str_at(b",\"id\":", id);
                self.raw(b",\"arguments\":");
                serde_json::to_writer(&mut *self.out, arguments)?;
                self.raw(b"}");
            }
            Attribution::Ambiguous { candidates } => {
                self.raw(b"{\"state\":\"ambiguous\",\"candidates\":[");
                for (i, c) in candidates.iter().enumerate() {
                    self.raw(if i > 0 { b",{\"tool\":" } else { b"{\"tool\":" });
                    self.str(&c.tool);
                    self.str_at(b",\"id\":", &c.id);
                    self.raw(b"}");
                }
                self.raw(b"]}");
            }
        }
        Ok(())
    }

    fn folded(&mut self, f: &Folded) {
        self.num_at(b",\"folded\":{\"count\":", f.count);
        self.str_at(b",\"first\":", &f.first);
        self.str_at(b",\"last\":", &f.last);
        self.raw(b"}");
    }
}

#[cfg(test)]
#[path = "event_json_tests.rs"]
mod tests;
