//! Reaching into another process: `ptrace` and `process_vm_readv`/`process_vm_writev` by a
//! tracked process on a process outside its own server's tree. Another process's memory holds
//! what its files do not (agent tokens, decrypted keys, a shell's environment), and writing it
//! runs code outside the tracked tree, where nothing mcpmon watches would follow.
//!
//! Judged at the syscall's entry, where the kill is sent. Why that is before the effect:
//! - `process_vm_readv/writev` pin the remote pages through `__get_user_pages`, which gives up
//!   with EINTR when a fatal signal is pending, before the first page: not one byte moves;
//! - `ptrace` attaches (the attach itself does not look at signals), but the tracer dies on its
//!   way back to user space, before it can issue the PEEK/POKE that would use the attach. What
//!   remains is the SIGSTOP an attach queues: the target may be left stopped (a nuisance any
//!   same-user process can cause with kill(2) anyway).
//!
//! The pid argument is compared with `TRACKED` by tgid: a ptrace on a sibling *thread* of a
//! process in the tree, or a target named in a child pid namespace, counts as foreign (a
//! debugger inside a server needs a grant).
//!
//! The server's own root counts as outside while it is a package runner (`ROOT_RUNNERS`): npm
//! holds the registry login it read as the root, and the package it started is its child.
//!
//! `pidfd_getfd` is judged the same way, for every target (see `getfd_e`).
//!
//! Kernel contract: `syscalls:sys_enter_ptrace(request, pid, addr, data)`,
//! `sys_enter_pidfd_getfd(pidfd, fd, flags)`,
//! `sys_enter_process_vm_{readv,writev}(pid, lvec, liovcnt, rvec, riovcnt, flags)`.
use monitor_common::{flags, policy, proc_access, EventKind, ProcAccessEvent};

use crate::gate::gated_tracepoint;
use crate::{
    enforce::{granted, kill_current, runner_marked, POLICY},
    maps::{current, fill_header, output, tracked, Sys, TRACKED},
};

const PTRACE_TRACEME: i64 = 0;

gated_tracepoint!(mcpm_ptrace_e => ptrace_e);
gated_tracepoint!(mcpm_vm_read_e => vm_readv_e);
gated_tracepoint!(mcpm_vm_write_e => vm_writev_e);
gated_tracepoint!(mcpm_getfd_e => getfd_e);

/// `pidfd_getfd(pidfd, targetfd, flags)`: a file another process has open, copied into this
/// one. Nothing is opened, so the open gate and the open hooks never see it: the way to an
/// agent's already-open token file or an authenticated socket. The pidfd's process is not
/// resolved (target 0), so every use outside a grant counts.
#[inline(always)]
pub fn getfd_e<S: Sys>(s: &S) -> u32 {
    access(proc_access::PIDFD_GETFD, 0, s.arg(1) as i64)
}

/// `ptrace(request, pid, addr, data)`. PTRACE_TRACEME names no target (the caller offers
/// itself to its parent).
#[inline(always)]
pub fn ptrace_e<S: Sys>(s: &S) -> u32 {
    let request = s.arg(0) as i64;
    if request == PTRACE_TRACEME {
        return 0;
    }
    access(proc_access::PTRACE, s.arg(1) as u32, request)
}

#[inline(always)]
pub fn vm_readv_e<S: Sys>(s: &S) -> u32 {
    access(proc_access::VM_READV, s.arg(0) as u32, 0)
}

#[inline(always)]
pub fn vm_writev_e<S: Sys>(s: &S) -> u32 {
    access(proc_access::VM_WRITEV, s.arg(0) as u32, 0)
}

/// Nothing to complete at the exit: the decision was taken at the entry.
#[inline(always)]
pub fn none<S: Sys>(_s: &S) -> u32 {
    0
}

#[inline(always)]
fn access(syscall: u32, target: u32, request: i64) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    // Its own process, threads and tree are its own business.
    if target != 0 && (target == cur.tgid || target == cur.tid) {
        return 0;
    }
    // SAFETY: a TRACKED value pointer, valid for this program run (preallocated map); only
    // `server_id` and `root_tgid` are read from it, inside this `if`.
    if let Some(t) = unsafe { TRACKED.get(&target) } {
        // Except its root while that is a runner holding the registry login it just read.
        if t.server_id == info.server_id && !(t.root_tgid == target && runner_marked(target)) {
            return 0;
        }
    }
    let mut ev = ProcAccessEvent::default();
    fill_header(&mut ev.hdr, EventKind::ProcAccess, cur, info);
    ev.syscall = syscall;
    ev.target = target;
    ev.request = request;
    let knob = POLICY.get(policy::PROC_ACCESS_KILL).copied().unwrap_or(0);
    if knob != 0 && !granted(info.server_id, knob) && kill_current() {
        ev.hdr.flags |= flags::KILLED;
    }
    output(&ev);
    0
}
