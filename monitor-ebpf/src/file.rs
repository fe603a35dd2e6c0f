//! File-open hooks: open, creat, openat, openat2 (entry saves the path as given, exit adds the
//! result, so failed opens are told apart from successful ones). The exit also enforces protected
//! inodes (`enforce::open_violates`).
//!
//! Kernel contracts (syscall tracepoints, args at offset 16 + 8*i, `ret` at 16 on exit):
//! - `open(filename, flags, mode)`, `creat(pathname, mode)`,
//!   `openat(dfd, filename, flags, mode)`, `openat2(dfd, filename, how, usize)` with
//!   `struct open_how { u64 flags; u64 mode; u64 resolve; }`.

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use monitor_common::{flags, open_syscall, EventKind, LostReason, OpenEvent, PATH_CAP};

use crate::gate::gated_tracepoint;
use crate::enforce::{kill_current, open_check};
use crate::maps::{lost_for, current, fill_header, output_prefix, read_user_path, tracked, Sys, PENDING_OPEN, SCRATCH_OPEN};

const AT_FDCWD: i32 = -100;
const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;


gated_tracepoint!(mcpm_open_e => open_e);
gated_tracepoint!(mcpm_creat_e => creat_e);
gated_tracepoint!(mcpm_openat_e => openat_e);
gated_tracepoint!(mcpm_openat2_e => openat2_e);
gated_tracepoint!(
    /// Shared by the exits of all four open syscalls.
    mcpm_open_x => open_x
);

#[inline(always)]
pub fn open_e<S: Sys>(s: &S) -> u32 {
    open_enter(open_syscall::OPEN, AT_FDCWD, s.arg(0), s.arg(1) as u32, s.arg(2) as u32, 0)
}

#[inline(always)]
pub fn creat_e<S: Sys>(s: &S) -> u32 {
    // creat(p, m) is open(p, O_CREAT|O_WRONLY|O_TRUNC, m): report it as such so rules see a write.
    open_enter(open_syscall::CREAT, AT_FDCWD, s.arg(0), O_CREAT | O_WRONLY | O_TRUNC, s.arg(1) as u32, 0)
}

#[inline(always)]
pub fn openat_e<S: Sys>(s: &S) -> u32 {
    open_enter(open_syscall::OPENAT, s.arg(0) as i32, s.arg(1), s.arg(2) as u32, s.arg(3) as u32, 0)
}

#[inline(always)]
pub fn openat2_e<S: Sys>(s: &S) -> u32 {
    // Read `how` only for tracked processes; open_enter checks tracking first, so pass the pointer.
    open_enter(open_syscall::OPENAT2, s.arg(0) as i32, s.arg(1), 0, 0, s.arg(2))
}

/// `how` is openat2's `struct open_how *` (0 for the other syscalls).
#[inline(always)]
fn open_enter(syscall: u32, dirfd: i32, path: u64, open_flags: u32, mode: u32, how: u64) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    let Some(ev) = SCRATCH_OPEN.get_ptr_mut(0) else { return 0 };
    // SAFETY: index 0 of the per-CPU SCRATCH_OPEN array: this CPU's slot, valid for this program run and
    // used by this program alone until it returns (it is copied into PENDING_OPEN below).
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.hdr, EventKind::Open, cur, info);
    ev.ret = 0;
    ev.resolve = 0;
    ev.open_flags = open_flags;
    ev.mode = mode;
    ev.dirfd = dirfd;
    ev.syscall = syscall;
    ev.path_len = 0;
    ev._pad = 0;
    ev.ino = 0;
    ev.dev = 0;
    ev.policy = 0;
    ev.fold_sig = 0;
    if how != 0 {
        let mut h = [0u64; 3];
        // SAFETY: reads 24 bytes (flags, mode, resolve of struct open_how) of user memory into the 24-byte
        // local `h`; the helper checks the user address and returns an error on a fault.
        let r = unsafe { bpf_probe_read_user(h.as_mut_ptr() as *mut _, 24, how as *const _) };
        if r == 0 {
            ev.open_flags = h[0] as u32;
            ev.mode = h[1] as u32;
            ev.resolve = h[2];
        } else {
            ev.hdr.flags |= flags::READ_FAILED;
        }
    }
    ev.path_len = read_user_path(ev.path.as_mut_ptr(), path, &mut ev.hdr.flags);
    if PENDING_OPEN.insert(&cur.tid, &*ev, 0).is_err() {
        lost_for(LostReason::PendingFull, ev.hdr.server_id);
    }
    0
}

#[inline(always)]
pub fn open_x<S: Sys>(s: &S) -> u32 {
    let cur = current();
    // The entry saved nothing for a process with a clear byte (MAYBE_TRACKED).
    if !crate::maps::maybe_tracked(cur.tgid) {
        return 0;
    }
    let Some(ev) = PENDING_OPEN.get_ptr_mut(&cur.tid) else { return 0 };
    // SAFETY: the current thread's own PENDING_OPEN entry (keyed by its tid), valid for this program run;
    // the thread is in this open's exit, so only its own hooks touch the entry.
    let ev = unsafe { &mut *ev };
    ev.ret = s.ret();
    // The open succeeded and the path is resolved: judge the inode now, before user code runs.
    if ev.ret >= 0 {
        let mut p = open_check(ev.ret as i32, ev.open_flags, ev.hdr.server_id, &mut ev.ino, &mut ev.dev);
        if p == 0 {
            p = crate::procmem::foreign_proc_check(ev.ret as i32, ev.hdr.server_id);
        }
        if p != 0 && kill_current() {
            ev.policy = p;
            ev.hdr.flags |= monitor_common::flags::KILLED;
        }
    }
    // A flood of identical opens goes out as one open and a count (fold.rs).
    if let crate::fold::Fold::Send { repeat } = crate::fold::fold_open(ev) {
        if repeat {
            if let Some(r) = crate::fold::staged_repeat() {
                crate::maps::output(r);
            }
        }
        let len = OpenEvent::DATA_OFFSET + (ev.path_len as usize & (PATH_CAP - 1));
        output_prefix(ev, len);
    }
    let _ = PENDING_OPEN.remove(&cur.tid);
    0
}
