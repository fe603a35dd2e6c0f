//! Handshake discovery: an MCP server found by what it reads, whatever started it.
//!
//! Agents written on the SDKs (a `python3` or `node` process, not a known client) start servers
//! with pipes (or libuv's socketpairs) on stdin and stdout and write an `initialize` into them.
//! So, at exec, an untracked process whose fd 0 and fd 1 are both pipes or sockets becomes a
//! *candidate* (`HANDSHAKE`, keyed by tgid, with the two inodes). Its first successful read of
//! that stdin (by inode: the Python SDK reads a duplicate of fd 0) settles it: bytes that open a
//! JSON object make it tracked provisionally, here in the kernel, before it can act on them; the
//! daemon then sniffs them for an MCP `initialize` (daemon/discover.rs) and adopts or drops it.
//! Anything else (`git log | grep`'s text) removes the candidate.
//!
//! Cost: at every untracked exec, one array lookup and the walk to fd 0's inode (direct loads as
//! far as the fd array, task.rs), and to fd 1's where fd 0 is a pipe or socket. On read entry,
//! one more LRU lookup for untracked processes; nothing on writes or any other syscall. The read
//! hooks are syscall hooks, attached only while something is tracked or a candidate is young: a
//! candidate that execs while they are detached is reported at once so the daemon attaches them
//! (a few milliseconds; interpreters take longer to reach their first read), and marked late:
//! its first seen read may not be its first.
//!
//! Kernel contracts: as stdio.rs.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::map,
    maps::{Array, LruHashMap},
};
use monitor_common::{handshake, stdio_dir, EventKind, HandshakeCandidate, HandshakeEvent, LostReason, TrackInfo, PROVISIONAL_SERVER};

use crate::{
    http::{RwPending, PENDING_RW},
    maps::{count_lost_logged, fill_header, output, set_maybe_tracked, Current, TRACKED},
    stdio::{fd_inode, register_pipe, stream_ino},
};

/// `[0]` = 1 when the daemon runs handshake discovery (`--handshake-discovery on`).
#[map(name = "HANDSHAKE_ON")]
pub static HANDSHAKE_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Candidates by tgid. LRU: a flood of piped execs ages out old candidates (which have read
/// their stdin long ago, or never will) instead of refusing new ones.
#[map(name = "HANDSHAKE")]
pub static HANDSHAKE: LruHashMap<u32, HandshakeCandidate> = LruHashMap::with_max_entries(8192, 0);

/// `RwPending::stdio` of a candidate's read of its stdin.
pub const PENDING_HANDSHAKE: u32 = 2;

/// The untracked, unconfigured process `cur` has just exec'd: a candidate if its stdin and
/// stdout are pipes or sockets.
#[inline(never)]
pub fn note_exec(cur: Current) -> u32 {
    if HANDSHAKE_ON.get(0).copied().unwrap_or(0) == 0 || cur.tgid == crate::maps::daemon_tgid() {
        return 0;
    }
    let Some(in_ino) = stream_ino(0) else { return 0 };
    let Some(out_ino) = stream_ino(1) else { return 0 };
    // SAFETY: a helper without arguments.
    let since_ns = unsafe { bpf_ktime_get_ns() };
    let mut c = HandshakeCandidate { in_ino, out_ino, since_ns, late: 0, _pad: 0 };
    // Its reads must reach `read_enter`, which untracked processes skip on a clear byte.
    set_maybe_tracked(cur.tgid, true);
    let _ = HANDSHAKE.insert(&cur.tgid, &c, 0);
    // The flag is read after the insert: a daemon about to detach clears it and then counts
    // the candidates (probes/ondemand.rs), so either it sees this one or this sees the flag clear.
    if crate::hold::HOOKS_LIVE.get(0).copied().unwrap_or(0) == 0 {
        c.late = 1;
        let _ = HANDSHAKE.insert(&cur.tgid, &c, 0);
        // The read hooks are detached: the daemon attaches them at once. Not held (hold.rs
        // stops configured commands and clients' children): any piped exec on the host is a
        // candidate, and a stop that outlived a daemon killed meanwhile would hang it.
        send(cur, TrackInfo { server_id: 0, root_tgid: cur.tgid }, handshake::CANDIDATE, &c);
    }
    0
}

/// Entry of `read(fd, buf, …)` by an untracked process: a candidate's read of its stdin is
/// followed to its exit.
#[inline(always)]
pub fn read_enter(cur: Current, fd: i32, buf: u64) {
    // SAFETY: the candidate is copied out at once; no reference is kept.
    let Some(c) = (unsafe { HANDSHAKE.get(&cur.tgid) }).copied() else { return };
    read_enter_candidate(cur, fd, buf, c.in_ino);
}

#[inline(never)]
fn read_enter_candidate(cur: Current, fd: i32, buf: u64, in_ino: u64) -> u32 {
    if fd_inode(fd) != Some(in_ino) {
        return 0; // a file, a config: not the stream the client writes to
    }
    let info = TrackInfo { server_id: PROVISIONAL_SERVER, root_tgid: cur.tgid };
    let p = RwPending { buf, ino: in_ino, fd, dir: stdio_dir::IN, iovcnt: 0, stdio: PENDING_HANDSHAKE, info };
    let _ = PENDING_RW.insert(&cur.tid, &p, 0);
    0
}

/// Exit of a candidate's read of its stdin (`ret` bytes at `p.buf`). Returns how the process is
/// tracked when it now is, with its pipes registered: the caller then captures these bytes as
/// stdio under that.
#[inline(never)]
pub fn read_exit(cur: Current, p: &RwPending, ret: i64) -> Option<TrackInfo> {
    if ret <= 0 {
        // EAGAIN before the client wrote (a non-blocking pipe), or EOF: undecided, or never.
        if ret == 0 {
            let _ = HANDSHAKE.remove(&cur.tgid);
        }
        return None;
    }
    // SAFETY: the candidate is copied out at once; no reference is kept.
    let c = (unsafe { HANDSHAKE.get(&cur.tgid) }).copied()?;
    let _ = HANDSHAKE.remove(&cur.tgid);
    // Tracked by the daemon while this read blocked (a `docker run` CLI found through its
    // container's handshake): not a candidate any more, and its server id must not be
    // overwritten by the provisional one. Its bytes are stdio of that server.
    // SAFETY: the entry is copied out at once; no reference is kept.
    if let Some(info) = (unsafe { TRACKED.get(&cur.tgid) }).copied() {
        return Some(info);
    }
    if !opens_json(p.buf, ret as u64) {
        return None;
    }
    let info = TrackInfo { server_id: PROVISIONAL_SERVER, root_tgid: cur.tgid };
    set_maybe_tracked(cur.tgid, true);
    if TRACKED.insert(&cur.tgid, &info, 0).is_err() {
        count_lost_logged(LostReason::TrackedFull);
        return None;
    }
    register_pipe(c.in_ino, stdio_dir::IN, cur.tgid);
    register_pipe(c.out_ino, stdio_dir::OUT, cur.tgid);
    send(cur, info, handshake::JSON_IN, &c);
    Some(info)
}

/// Whether the first bytes read, past JSON whitespace, open an object (newline-delimited
/// JSON-RPC, as every MCP stdio transport writes it).
#[inline(always)]
fn opens_json(buf: u64, n: u64) -> bool {
    let mut head = [0u8; 8];
    let len = if n > 8 { 8 } else { n as u32 };
    let len = ((len - 1) & 7) + 1;
    // SAFETY: copies len (1..=8) bytes of user memory into the 8-byte local `head`; the helper
    // checks the user address and returns an error on a fault.
    if unsafe { bpf_probe_read_user(head.as_mut_ptr() as *mut _, len, buf as *const _) } != 0 {
        return false;
    }
    let mut i = 0;
    while i < 8 {
        if i as u32 >= len {
            return false;
        }
        match head[i] {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'{' => return true,
            _ => return false,
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn send(cur: Current, info: TrackInfo, what: u32, c: &HandshakeCandidate) {
    let mut ev = HandshakeEvent { what, late: c.late, in_ino: c.in_ino, out_ino: c.out_ino, ..Default::default() };
    fill_header(&mut ev.hdr, EventKind::Handshake, cur, info);
    output(&ev);
}
