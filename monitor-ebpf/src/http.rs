//! HTTP capture: the bytes a tracked server moves through the sockets it *accepted* (its HTTP
//! clients' connections), for MCP over streamable HTTP or SSE. Only accepted sockets of tracked
//! processes enter `HTTP_SOCKS` (at the exit of accept/accept4), so the server's own outgoing
//! connections, its listening socket and every untracked process stay out; a socket leaves the
//! map at its close (or when the daemon forgets the server). Chunking and numbering are the stdio
//! capture's (`StdioEvent`, head chunks plus the last one, every byte numbered per direction).
//!
//! Which calls carry the bytes was checked with strace: Node (`server-everything`
//! streamableHttp) reads with `read` and answers with `write`/`writev`; Python (uvicorn, the
//! official SDK) uses `recvfrom`/`sendto`. `read`/`write` are the stdio hooks (stdio.rs hands
//! sockets over here); `readv` is taken as well; `recvmsg`/`sendmsg` are not (neither runtime
//! uses them on HTTP connections).
//!
//! Kernel contracts: `sys_exit_accept/accept4(ret)`, `sys_enter_close(fd)`,
//! `sys_enter_recvfrom/sendto(fd, buf, len, …)`, `sys_enter_readv/writev(fd, iov, iovcnt)`,
//! `sys_exit_*(ret)`; `struct iovec { void *iov_base; size_t iov_len; }` (16 bytes).

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user,
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use monitor_common::{sock_dir, stdio_dir, EventKind, LostReason, SockStream, StdioEvent, TrackInfo, STDIO_CHUNK};

use crate::gate::gated_tracepoint;
use crate::maps::{count_lost, current, fill_header, output_prefix, tracked, Current, Sys};
use crate::stdio::{fd_inode, send_head_and_tail};

/// Sockets accepted by tracked servers, by inode.
#[map(name = "HTTP_SOCKS")]
pub static HTTP_SOCKS: HashMap<u64, SockStream> = HashMap::with_max_entries(8192, 0);

/// The entry half of a data syscall of a tracked process on its stdio pipe or an accepted
/// socket. One map for both, so the read/write exit that every process runs while a server is
/// tracked costs an untracked thread one lookup, as every other exit hook does.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RwPending {
    pub buf: u64,
    pub ino: u64,
    pub fd: i32,
    pub dir: u32,
    /// iovec count for readv/writev (`buf` is then the iovec array); 0 for plain buffers.
    pub iovcnt: u32,
    /// 1: a stdio pipe (stdio.rs); 0: an accepted socket.
    pub stdio: u32,
    pub info: TrackInfo,
}

#[map(name = "PENDING_RW")]
pub static PENDING_RW: HashMap<u32, RwPending> = HashMap::with_max_entries(8192, 1);

#[map(name = "SCRATCH_SOCK")]
static SCRATCH_SOCK: PerCpuArray<StdioEvent> = PerCpuArray::with_max_entries(1, 0);

/// iovecs looked at per readv/writev (Node writes an SSE reply as 9); bytes past them are a gap
/// the daemon sees through the numbering.
const MAX_IOV: u32 = 12;

gated_tracepoint!(mcpm_accept_x => accept_x);
gated_tracepoint!(mcpm_close_e => close_e);
gated_tracepoint!(mcpm_recvfrom_e => recvfrom_e);
gated_tracepoint!(mcpm_sendto_d_e => sendto_e);
gated_tracepoint!(mcpm_readv_e => readv_e);
gated_tracepoint!(mcpm_writev_e => writev_e);
gated_tracepoint!(mcpm_sock_x => sock_x);

// The handlers both paths call (tracepoints here, fentry/fexit in fast.rs).
#[inline(always)]
pub fn recvfrom_e<S: Sys>(s: &S) -> u32 {
    sock_enter(s, stdio_dir::IN, false)
}
#[inline(always)]
pub fn sendto_e<S: Sys>(s: &S) -> u32 {
    sock_enter(s, stdio_dir::OUT, false)
}
#[inline(always)]
pub fn readv_e<S: Sys>(s: &S) -> u32 {
    sock_enter(s, stdio_dir::IN, true)
}
#[inline(always)]
pub fn writev_e<S: Sys>(s: &S) -> u32 {
    sock_enter(s, stdio_dir::OUT, true)
}
#[inline(always)]
pub fn sock_x<S: Sys>(s: &S) -> u32 {
    data_exit(s, true)
}

/// A connection's start or end: a record without data.
#[inline(always)]
fn lifecycle(cur: Current, info: TrackInfo, ino: u64, fd: i32, dir: u32) {
    let Some(ev) = SCRATCH_SOCK.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU scratch slot, used by this program alone until it returns.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.hdr, EventKind::Sock, cur, info);
    ev.ino = ino;
    ev.total_len = 0;
    ev.stream_off = 0;
    ev.offset = 0;
    ev.len = 0;
    ev.fd = fd;
    ev.dir = dir;
    output_prefix(ev, StdioEvent::DATA_OFFSET);
}

/// `accept`/`accept4` returned `ret`, the new connection's fd.
#[inline(always)]
pub fn accept_x<S: Sys>(s: &S) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    let fd = s.ret();
    if fd < 0 {
        return 0;
    }
    let fd = fd as i32;
    let Some(ino) = fd_inode(fd) else { return 0 };
    let v = SockStream { server_id: info.server_id, owner_tgid: cur.tgid, bytes_in: 0, bytes_out: 0 };
    let dir = if HTTP_SOCKS.insert(&ino, &v, 0).is_ok() { sock_dir::ACCEPT } else { sock_dir::ACCEPT_NOT_CAPTURED };
    lifecycle(cur, info, ino, fd, dir);
    0
}

/// `close(fd)`: an accepted socket leaves the capture set when the process that accepted it
/// closes it. (A `dup` of it closed in that process ends the capture early: the connection's
/// later bytes are then not seen; no runtime checked does that.)
#[inline(always)]
pub fn close_e<S: Sys>(s: &S) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    let fd = s.arg(0) as i32;
    let Some(ino) = fd_inode(fd) else { return 0 };
    // SAFETY: a map lookup; the value is copied out at once.
    match unsafe { HTTP_SOCKS.get(&ino) } {
        Some(v) if v.owner_tgid == cur.tgid => {}
        _ => return 0,
    }
    if HTTP_SOCKS.remove(&ino).is_ok() {
        lifecycle(cur, info, ino, fd, sock_dir::CLOSE);
    }
    0
}

/// `recvfrom/sendto(fd, buf, len, …)` or `readv/writev(fd, iov, iovcnt)` entry.
#[inline(always)]
fn sock_enter<S: Sys>(s: &S, dir: u32, vectored: bool) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    let fd = s.arg(0) as i32;
    let Some(ino) = fd_inode(fd) else { return 0 };
    let iovcnt = if vectored { (s.arg(2) as u32).max(1) } else { 0 };
    data_enter(cur, info, fd, ino, s.arg(1), dir, iovcnt);
    0
}

/// Saves the entry half when `ino` is an accepted socket (also called by the read/write hooks).
#[inline(always)]
pub fn data_enter(cur: Current, info: TrackInfo, fd: i32, ino: u64, buf: u64, dir: u32, iovcnt: u32) {
    // SAFETY: a map lookup whose value is not kept.
    if unsafe { HTTP_SOCKS.get(&ino) }.is_none() {
        return;
    }
    let p = RwPending { buf, ino, fd, dir, iovcnt, stdio: 0, info };
    if PENDING_RW.insert(&cur.tid, &p, 0).is_err() {
        count_lost(LostReason::PendingFull);
    }
}

/// Sends what the syscall moved, numbered in the socket's direction. `vectored`: the program
/// serves readv/writev too (the read/write exit does not, and so carries no iovec walk).
#[inline(always)]
pub fn data_exit<S: Sys>(s: &S, vectored: bool) -> u32 {
    let cur = current();
    if !crate::maps::maybe_tracked(cur.tgid) {
        return 0;
    }
    // SAFETY: a map lookup; the value is copied before the entry is removed.
    let Some(p) = (unsafe { PENDING_RW.get(&cur.tid) }).copied() else { return 0 };
    let _ = PENDING_RW.remove(&cur.tid);
    if p.stdio != 0 {
        // A pipe read that a socket exit cannot finish (not expected: the pipe's entry and exit
        // are the read/write pair); dropped rather than misread.
        return 0;
    }
    sock_data_exit(s, cur, p, vectored)
}

/// The socket half of a data exit, its pending entry already taken (also from the read/write
/// exit, which takes the one entry of either kind).
#[inline(always)]
pub fn sock_data_exit<S: Sys>(s: &S, cur: Current, p: RwPending, vectored: bool) -> u32 {
    let ret = s.ret();
    if ret <= 0 {
        return 0;
    }
    let total = ret as u64;
    // As for pipes: two threads moving bytes on one socket at once are unordered anyway.
    let stream_off = match HTTP_SOCKS.get_ptr_mut(&p.ino) {
        // SAFETY: a pointer into the map's value, valid for this program run.
        Some(v) => unsafe {
            let counter = if p.dir == stdio_dir::IN { &mut (*v).bytes_in } else { &mut (*v).bytes_out };
            let before = *counter;
            *counter = before + total;
            before
        },
        None => return 0, // closed meanwhile
    };
    crate::fold::bump_epoch();
    let Some(ev) = SCRATCH_SOCK.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU scratch slot, used by this program alone until it returns.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.hdr, EventKind::Sock, cur, p.info);
    ev.ino = p.ino;
    ev.total_len = total;
    ev.stream_off = stream_off;
    ev.fd = p.fd;
    ev.dir = p.dir;
    if vectored && p.iovcnt != 0 {
        send_iovecs(ev, p.buf, p.iovcnt, total);
    } else if p.iovcnt == 0 {
        send_head_and_tail(ev, p.buf, total);
    }
    0
}

/// Reads iovec `i`: (base, len).
#[inline(always)]
fn iovec(iov: u64, i: u32) -> Option<(u64, u64)> {
    let mut v = [0u64; 2];
    // SAFETY: reads 16 bytes of user memory into a stack array of that size.
    let r = unsafe { bpf_probe_read_user(v.as_mut_ptr() as *mut _, 16, (iov + i as u64 * 16) as *const _) };
    (r == 0).then_some((v[0], v[1]))
}

/// The first two chunks and the last chunk of each iovec, numbered by their place in the whole
/// transfer. Only a transfer that moved every byte of the iovecs looked at is sent: a short
/// writev/readv (rare: a full socket buffer) shows up in the daemon as a gap in the numbering.
///
/// Written without a clamp that depends on the loop's running offset, and with each size
/// reloaded from map memory (`send_piece`), so that the verifier can prune the loop's states;
/// otherwise its walk of 12 iovecs exceeds the million-instruction limit.
#[inline(always)]
fn send_iovecs(ev: &mut StdioEvent, iov: u64, iovcnt: u32, total: u64) {
    let mut sum: u64 = 0;
    let mut i: u32 = 0;
    while i < MAX_IOV && i < iovcnt {
        let Some((_, len)) = iovec(iov, i) else { return };
        sum += len;
        i += 1;
    }
    if sum > total {
        return;
    }
    let chunk = STDIO_CHUNK as u64;
    let mut at: u64 = 0;
    let mut i: u32 = 0;
    while i < MAX_IOV && i < iovcnt {
        let Some((base, len)) = iovec(iov, i) else { return };
        if len > 0 {
            send_piece(ev, base, at, len);
        }
        if len > chunk {
            send_piece(ev, base + chunk, at + chunk, len - chunk);
        }
        if len > 2 * chunk {
            send_piece(ev, base + len - chunk, at + len - chunk, chunk);
        }
        at += len;
        i += 1;
    }
}

/// Sends up to one chunk of `avail` bytes at user address `src`, at offset `off` of the transfer.
#[inline(always)]
fn send_piece(ev: &mut StdioEvent, src: u64, off: u64, avail: u64) {
    ev.offset = off as u32;
    ev.len = if avail > STDIO_CHUNK as u64 { STDIO_CHUNK as u32 } else { avail as u32 };
    // SAFETY: a field of the per-CPU scratch value this program owns. The volatile reload hands
    // the verifier a fresh bounded scalar, cutting the precision chain back to the loop offsets.
    let n = unsafe { core::ptr::read_volatile(&ev.len) };
    if n == 0 {
        return;
    }
    let n = ((n - 1) & (STDIO_CHUNK as u32 - 1)) + 1;
    // SAFETY: copies n <= STDIO_CHUNK bytes of user memory into the record's data array.
    let r = unsafe { bpf_probe_read_user(ev.data.as_mut_ptr() as *mut _, n, src as *const _) };
    if r != 0 {
        ev.hdr.flags |= monitor_common::flags::READ_FAILED;
        return;
    }
    output_prefix(ev, StdioEvent::DATA_OFFSET + n as usize);
}
