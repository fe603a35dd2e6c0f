//! stdio capture: the bytes a tracked MCP server reads from its stdin pipe and writes to its
//! stdout pipe, i.e. its JSON-RPC. Pipes are matched by inode (`STDIO_PIPES`, filled by the daemon),
//! not by fd number: the Python SDK reads fd 6 and writes fd 7, duplicates of 0 and 1.
//!
//! Kernel contracts: `syscalls:sys_enter_read/write(fd, buf, count)`, `sys_exit_*(ret)`;
//! `current->files->fdt->fd[fd]->f_inode->i_ino` with offsets from BTF.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated::bpf_probe_read_user},
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use monitor_common::{stdio_dir, EventKind, LostReason, StdioEvent, StdioPipe, PROVISIONAL_SERVER, STDIO_CHUNK, STDIO_HEAD_CHUNKS};

use crate::gate::gated_tracepoint;
use crate::http::{RwPending, PENDING_RW};
use crate::maps::{lost_for, current, fill_header, koff, output_prefix, tracked, Sys};

/// Inodes of tracked servers' stdin/stdout pipes.
#[map(name = "STDIO_PIPES")]
pub static STDIO_PIPES: HashMap<u64, StdioPipe> = HashMap::with_max_entries(4096, 0);


#[map(name = "SCRATCH_STDIO")]
static SCRATCH_STDIO: PerCpuArray<StdioEvent> = PerCpuArray::with_max_entries(1, 0);


const S_IFMT: u16 = 0o170000;
const S_IFIFO: u16 = 0o010000;
const S_IFSOCK: u16 = 0o140000;
/// `BPF_NOEXIST`: an entry the daemon (or an earlier exec) made keeps its byte count.
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;


/// The `struct file *` behind `fd` of the current task (`current->files->fdt->fd[fd]`).
#[inline(always)]
pub fn fd_file(fd: i32) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    // SAFETY: bpf_get_current_task is valid in any task context; files, fdt, max_fds, fd[] and fd[fd]
    // are read through bpf_probe_read_kernel (Err on a fault, never a dereference), and fd is
    // checked against max_fds before indexing.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let files: *const u8 = bpf_probe_read_kernel(task.add(koff!(task_files)) as *const *const u8).ok()?;
        let fdt: *const u8 = bpf_probe_read_kernel(files.add(koff!(files_fdt)) as *const *const u8).ok()?;
        let max: u32 = bpf_probe_read_kernel(fdt.add(koff!(fdt_max_fds)) as *const u32).ok()?;
        if fd as u32 >= max {
            return None;
        }
        let arr: *const *const u8 = bpf_probe_read_kernel(fdt.add(koff!(fdt_fd)) as *const *const *const u8).ok()?;
        let file: *const u8 = bpf_probe_read_kernel(arr.add(fd as usize)).ok()?;
        if file.is_null() {
            return None;
        }
        Some(file)
    }
}

/// `file->f_inode`.
#[inline(always)]
pub fn file_inode(file: *const u8) -> Option<*const u8> {
    // SAFETY: `file->f_inode` (BTF offset) read through bpf_probe_read_kernel, which returns Err on a fault.
    unsafe { bpf_probe_read_kernel(file.add(koff!(file_inode)) as *const *const u8).ok() }
}

/// `inode->i_ino`.
#[inline(always)]
pub fn inode_ino(inode: *const u8) -> Option<u64> {
    // SAFETY: `inode->i_ino` (BTF offset) read through bpf_probe_read_kernel, which returns Err on a fault.
    unsafe { bpf_probe_read_kernel(inode.add(koff!(inode_ino)) as *const u64).ok() }
}

/// Inode number behind `fd` of the current task.
#[inline(always)]
pub fn fd_inode(fd: i32) -> Option<u64> {
    inode_ino(file_inode(fd_file(fd)?)?)
}


/// Registers fd 0 (requests in) and fd 1 (replies out) of the current process, which has just
/// become a provisional server at exec, when they are pipes or sockets. The daemon registers the
/// streams it finds through procfs too, but only once it has read the exec event: a server that
/// writes (or a client whose request is read) before then would otherwise go uncaptured.
#[inline(never)]
pub fn register_exec_stdio(tgid: u32) -> u32 {
    register_fd(0, stdio_dir::IN, tgid);
    register_fd(1, stdio_dir::OUT, tgid);
    0
}

#[inline(always)]
fn register_fd(fd: usize, dir: u32, tgid: u32) {
    if let Some(ino) = stream_ino(fd) {
        register_pipe(ino, dir, tgid);
    }
}

/// The inode behind fd 0 or 1 (`fd`) of the current task if it is a pipe or a socket (a stream
/// JSON-RPC can flow through); a tty, a file or /dev/null give None. Run at every untracked exec
/// (handshake.rs), so the walk to the file is direct loads (task.rs).
#[inline(always)]
pub fn stream_ino(fd: usize) -> Option<u64> {
    let inode = crate::task::std_fd_file(fd).and_then(file_inode)?;
    // SAFETY: reads the 16-bit i_mode of a live inode of the current task's fd table.
    let mode: u16 = unsafe { bpf_probe_read_kernel(inode.add(koff!(inode_mode)) as *const u16) }.unwrap_or(0);
    if mode & S_IFMT != S_IFIFO && mode & S_IFMT != S_IFSOCK {
        return None;
    }
    inode_ino(inode)
}

/// Registers pipe `ino` as a provisional server's stdin or stdout.
#[inline(always)]
pub fn register_pipe(ino: u64, dir: u32, tgid: u32) {
    let pipe = StdioPipe { server_id: PROVISIONAL_SERVER, dir, bytes: 0, owner_tgid: tgid, _pad: 0 };
    // EEXIST: registered already (a pipe shared with an earlier candidate), nothing lost.
    if let Err(e) = STDIO_PIPES.insert(&ino, &pipe, BPF_NOEXIST) {
        if e != -EEXIST {
            crate::maps::count_lost_logged(LostReason::StdioFull);
        }
    }
}

#[inline(always)]
fn rw_enter<S: Sys>(s: &S, want: u32) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else {
        // Handshake candidates have their byte set (note_exec); other untracked reads stop here.
        if want == stdio_dir::IN && crate::maps::maybe_tracked(cur.tgid) {
            crate::handshake::read_enter(cur, s.arg(0) as i32, s.arg(1));
        }
        return 0;
    };
    let fd = s.arg(0) as i32;
    let Some(ino) = fd_inode(fd) else { return 0 };
    // SAFETY: a STDIO_PIPES value pointer, valid for this program run (preallocated map); only `dir` is
    // read from it, right below, and the reference does not outlive this function.
    let Some(pipe) = (unsafe { STDIO_PIPES.get(&ino) }) else {
        // Not a stdio pipe: maybe a socket the server accepted (HTTP capture).
        crate::http::data_enter(cur, info, fd, ino, s.arg(1), want, 0);
        return 0;
    };
    // A read of the stdout pipe (or write to stdin) is not the server's JSON-RPC.
    if pipe.dir != want {
        return 0;
    }
    let p = RwPending { buf: s.arg(1), ino, fd, dir: pipe.dir, iovcnt: 0, stdio: 1, info };
    if PENDING_RW.insert(&cur.tid, &p, 0).is_err() {
        lost_for(LostReason::PendingFull, info.server_id);
    }
    0
}

gated_tracepoint!(mcpm_read_e => read_e);
gated_tracepoint!(mcpm_write_e => write_e);
gated_tracepoint!(mcpm_rw_x => rw_x);

/// `read(fd, buf, count)`.
#[inline(always)]
pub fn read_e<S: Sys>(s: &S) -> u32 {
    rw_enter(s, stdio_dir::IN)
}

/// `write(fd, buf, count)`.
#[inline(always)]
pub fn write_e<S: Sys>(s: &S) -> u32 {
    rw_enter(s, stdio_dir::OUT)
}

/// Sends the head chunks of the transferred bytes, then the last chunk if the head did not
/// reach it.
#[inline(always)]
pub fn rw_x<S: Sys>(s: &S) -> u32 {
    let cur = current();
    // Pending reads and writes are saved only for processes with their byte set.
    if !crate::maps::maybe_tracked(cur.tgid) {
        return 0;
    }
    // SAFETY: the current thread's PENDING_RW entry (keyed by its tid) is copied out at once, before the
    // remove; no reference is kept.
    let Some(p) = (unsafe { PENDING_RW.get(&cur.tid) }).copied() else { return 0 };
    let _ = PENDING_RW.remove(&cur.tid);
    if p.stdio == 0 {
        return crate::http::sock_data_exit(s, cur, p, false);
    }
    let ret = s.ret();
    // A candidate's first read of its stdin: captured only if it made the process tracked.
    let info = if p.stdio == crate::handshake::PENDING_HANDSHAKE {
        match crate::handshake::read_exit(cur, &p, ret) {
            Some(info) => info,
            None => return 0,
        }
    } else {
        p.info
    };
    if ret <= 0 {
        return 0;
    }
    let total = ret as u64;
    // Number the bytes: concurrent reads of one pipe by two threads are already unordered, so a
    // plain read-modify-write is enough.
    let stream_off = match STDIO_PIPES.get_ptr_mut(&p.ino) {
        // SAFETY: a STDIO_PIPES value pointer, valid for this program run (preallocated map); a race with
        // another thread's read-modify-write only misnumbers bytes already unordered (see above).
        Some(pipe) => unsafe {
            let before = (*pipe).bytes;
            (*pipe).bytes = before + total;
            before
        },
        None => return 0, // unregistered meanwhile (server gone)
    };
    crate::fold::bump_epoch();
    let Some(ev) = SCRATCH_STDIO.get_ptr_mut(0) else { return 0 };
    // SAFETY: index 0 of the per-CPU SCRATCH_STDIO array: this CPU's slot, valid for this program run and
    // used by this program alone until it returns.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.hdr, EventKind::Stdio, cur, info);
    ev.ino = p.ino;
    ev.total_len = total;
    ev.stream_off = stream_off;
    ev.fd = p.fd;
    ev.dir = p.dir;
    send_head_and_tail(ev, p.buf, total);
    0
}

/// Sends the head chunks of `total` bytes at `buf`, then the last chunk if the head did not
/// reach it (shared with the socket capture).
#[inline(always)]
pub fn send_head_and_tail(ev: &mut StdioEvent, buf: u64, total: u64) {
    let chunk = STDIO_CHUNK as u64;
    let mut i: u32 = 0;
    while i < STDIO_HEAD_CHUNKS {
        let off = i as u64 * chunk;
        if off >= total {
            return;
        }
        send_chunk(ev, buf, off, total);
        i += 1;
    }
    let head_end = STDIO_HEAD_CHUNKS as u64 * chunk;
    if total > head_end {
        let tail = if total - head_end > chunk { total - chunk } else { head_end };
        send_chunk(ev, buf, tail, total);
    }
}

#[inline(always)]
pub fn send_chunk(ev: &mut StdioEvent, buf: u64, off: u64, total: u64) {
    let mut n = total - off;
    if n > STDIO_CHUNK as u64 {
        n = STDIO_CHUNK as u64;
    }
    let n = n as u32;
    if n == 0 || n > STDIO_CHUNK as u32 {
        return;
    }
    // n is already in 1..=STDIO_CHUNK; the mask restates that in a form older verifiers (6.1)
    // track through the compiler's code, which otherwise see a possibly negative size.
    let n = ((n - 1) & (STDIO_CHUNK as u32 - 1)) + 1;
    // SAFETY: copies n (1..=STDIO_CHUNK, masked above) bytes of user memory into ev.data, which holds
    // STDIO_CHUNK bytes; the helper checks the user address and returns an error on a fault.
    let r = unsafe { bpf_probe_read_user(ev.data.as_mut_ptr() as *mut _, n, (buf + off) as *const _) };
    if r != 0 {
        ev.hdr.flags |= monitor_common::flags::READ_FAILED;
        return;
    }
    ev.offset = off as u32;
    ev.len = n;
    output_prefix(ev, StdioEvent::DATA_OFFSET + n as usize);
}
