//! Process-tree hooks: fork (tracking inheritance), exec, exit.
//!
//! Kernel contracts relied on:
//! - `task:task_newtask(pid, comm, clone_flags, …)` runs in the parent inside `copy_process`,
//!   before the child can run, so the child is tracked before its first syscall.
//! - `sched:sched_process_exec(filename, pid, old_pid)` runs in the new image after a successful
//!   exec; `old_pid` is the tid that called execve (it differs when a non-leader thread execs).
//!   By then `current->mm` is the new image's and `mm->arg_start..arg_end` holds its argv, just
//!   copied onto its stack by the kernel (for a script: interpreter, its argument, the script).
//! - `sched:sched_process_exit(comm, pid, prio, group_dead)` runs for every exiting thread;
//!   `group_dead` is true for the last one, after `task->exit_code` is set.
//! - `syscalls:sys_enter_execve(filename, argv, envp)` and
//!   `sys_enter_execveat(fd, filename, argv, envp, flags)`: args at offset 16 + 8*i.

use aya_ebpf::{
    helpers::{
        bpf_get_current_task, bpf_probe_read_kernel,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use monitor_common::{
    candidate, exec_syscall, flags, EventKind, PROVISIONAL_SERVER, ExecEvent, ExitEvent, ForkEvent, LostReason, TrackInfo, ARGS_SOFT_CAP, MAX_ARGS,
    PATH_CAP,
};

use crate::gate::gated_tracepoint;
use crate::maps::{
    count_lost_logged, current, lost_for, koff, read_user_path, current_exit_code, daemon_tgid, fill_header, output, output_prefix, tp_exec_filename_off,
    tp_exec_old_pid_off, exit_group_dead, maybe_tracked, set_maybe_tracked, tp_newtask_flags_off, tp_newtask_pid_off, tracked, Current, Sys,
    CANDIDATE_COMMS, COMM_FILTER, DOOMED, EXITED, PENDING_CONNECT, PENDING_EXEC, PENDING_OPEN, SCRATCH_EXEC, TRACKED,
};

const CLONE_THREAD: u64 = 0x0001_0000;
const AT_FDCWD: i32 = -100;

gated_tracepoint!(
    /// `task_newtask`: a child of a tracked process is tracked before it runs. Every fork and
    /// thread of the machine runs this, so it is the byte test alone (gate.rs): the handler's
    /// first test is the same byte (`tracked`).
    mcpm_fork => fork
);

#[inline(always)]
fn fork(ctx: &TracePointContext) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    // SAFETY: read_at reads the task_newtask record through bpf_probe_read (Err on a fault, then 0); the
    // `clone_flags` offset comes from the tracepoint's tracefs format, set by the loader.
    let clone_flags: u64 = unsafe { ctx.read_at(tp_newtask_flags_off()) }.unwrap_or(0);
    // Threads share their process's tgid and so its entry.
    if clone_flags & CLONE_THREAD != 0 {
        return 0;
    }
    // SAFETY: as above: the record's `pid` field at its tracefs offset, read with a fault check.
    let child: i32 = unsafe { ctx.read_at(tp_newtask_pid_off()) }.unwrap_or(0);
    if child <= 0 || child as u32 == daemon_tgid() {
        return 0;
    }
    let mut ev = ForkEvent::default();
    fill_header(&mut ev.hdr, EventKind::Fork, cur, info);
    // Before the insert (MAYBE_TRACKED's rule); a doomed child needs its byte too, for the ia32
    // hook to reach `doomed_x`.
    set_maybe_tracked(child as u32, true);
    if TRACKED.insert(&(child as u32), &info, 0).is_err() {
        count_lost_logged(LostReason::TrackedFull);
        // The child already exists (this hook runs after copy_process's last signal check):
        // it dies at its first return to user space instead (`doomed_x`).
        let _ = DOOMED.insert(&(child as u32), &1, 0);
        ev.hdr.flags |= flags::KILLED;
    }
    ev.child_tgid = child as u32;
    ev.clone_flags = clone_flags;
    output(&ev);
    0
}

gated_tracepoint!(
    /// `sys_exit_{clone,clone3,fork,vfork}`: a new child's first return to user space passes here
    /// (in the child, from `ret_from_fork`); one the fork hook could not track is killed before its
    /// first instruction. Untracked processes stop at their byte, tracked ones cost one LRU
    /// lookup.
    mcpm_fork_x => doomed_x
);

#[inline(always)]
pub fn doomed_x<S: Sys>(_s: &S) -> u32 {
    let pid = current().tgid;
    // A doomed child's byte was set at fork.
    if !maybe_tracked(pid) {
        return 0;
    }
    // SAFETY: only whether the key exists is used: no reference into DOOMED outlives this lookup.
    if unsafe { DOOMED.get(&pid) }.is_some() {
        let _ = DOOMED.remove(&pid);
        crate::enforce::kill_current();
    }
    0
}

gated_tracepoint!(
    /// `sched_process_exit`, for every thread of the machine: the byte test alone (gate.rs), as
    /// the handler acts only on a set byte (a tracked process, or a byte to clear).
    mcpm_exit => exit
);

#[inline(always)]
fn exit(ctx: &TracePointContext) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else {
        // A handshake candidate's byte (or one the daemon set for a process it then dropped)
        // goes with the process, so that bytes do not pile up as pids are reused.
        if maybe_tracked(cur.tgid) && exit_group_dead(&ctx) {
            set_maybe_tracked(cur.tgid, false);
        }
        return 0;
    };
    let _ = EXITED.insert(&cur.tid, &info, 0);
    // A thread killed inside a syscall never reaches its exit hook: drop what it left pending.
    let _ = PENDING_OPEN.remove(&cur.tid);
    let _ = PENDING_EXEC.remove(&cur.tid);
    let _ = PENDING_CONNECT.remove(&cur.tid);
    crate::fold::end_run(cur, info);
    if !exit_group_dead(&ctx) {
        return 0;
    }
    let mut ev = ExitEvent::default();
    fill_header(&mut ev.hdr, EventKind::Exit, cur, info);
    ev.exit_code = current_exit_code();
    output(&ev);
    let _ = TRACKED.remove(&cur.tgid);
    crate::enforce::forget_root(cur.tgid);
    set_maybe_tracked(cur.tgid, false);
    0
}

gated_tracepoint!(mcpm_execve_e => execve_e);

gated_tracepoint!(mcpm_execvat_e => execveat_e);

/// `execve(filename, argv, envp)`.
#[inline(always)]
pub fn execve_e<S: Sys>(s: &S) -> u32 {
    exec_enter(exec_syscall::EXECVE, AT_FDCWD, s.arg(0), s.arg(1), 0)
}

/// `execveat(dirfd, filename, argv, envp, flags)`.
#[inline(always)]
pub fn execveat_e<S: Sys>(s: &S) -> u32 {
    exec_enter(exec_syscall::EXECVEAT, s.arg(0) as i32, s.arg(1), s.arg(2), s.arg(4) as u32)
}

#[inline(always)]
fn exec_enter(syscall: u32, dirfd: i32, filename: u64, argv: u64, at_flags: u32) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    if info.root_tgid == cur.tgid {
        crate::enforce::note_root_exec(cur.tgid);
    }
    let Some(ev) = SCRATCH_EXEC.get_ptr_mut(0) else { return 0 };
    // SAFETY: index 0 of the per-CPU SCRATCH_EXEC array: this CPU's slot, valid for this program run and
    // used by this program alone until it returns (it is copied into PENDING_EXEC below).
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.hdr, EventKind::Exec, cur, info);
    ev.ret = 0;
    ev.syscall = syscall;
    ev.dirfd = dirfd;
    ev.at_flags = at_flags;
    ev.argc = 0;
    ev.filename_len = 0;
    ev.args_len = 0;
    ev.policy = 0;

    let data = ev.data.as_mut_ptr();
    ev.filename_len = read_user_path(data, filename, &mut ev.hdr.flags);

    // argv: NUL-terminated strings packed after the filename. Each read may use up to
    // ARGS_SOFT_CAP bytes from an offset below ARGS_SOFT_CAP, which keeps every access inside
    // `data` for the verifier.
    let base = (ev.filename_len as usize) & (PATH_CAP - 1);
    let mut off: usize = 0;
    let mut i = 0;
    while i < MAX_ARGS {
        let mut p: u64 = 0;
        // SAFETY: reads 8 bytes (one argv pointer) of user memory into the 8-byte local `p`; the helper
        // checks the user address and returns an error on a fault.
        let r = unsafe { bpf_probe_read_user(&mut p as *mut u64 as *mut _, 8, (argv + 8 * i as u64) as *const _) };
        if r != 0 || p == 0 {
            break;
        }
        if off >= ARGS_SOFT_CAP {
            ev.hdr.flags |= flags::ARGS_TRUNCATED;
            break;
        }
        // SAFETY: `data` is ev.data (PATH_CAP + 2 * ARGS_SOFT_CAP bytes); base < PATH_CAP and the masked offset
        // < ARGS_SOFT_CAP, so `dst` stays inside it.
        let dst = unsafe { data.add(base + (off & (ARGS_SOFT_CAP - 1))) };
        // SAFETY: `dst` lies less than PATH_CAP + ARGS_SOFT_CAP into `data` (PATH_CAP + 2 * ARGS_SOFT_CAP
        // bytes), so the at most ARGS_SOFT_CAP bytes written stay inside it; `p` is a user address the
        // helper reads with fault checks.
        let n = unsafe { bpf_probe_read_user_str(dst as *mut _, ARGS_SOFT_CAP as u32, p as *const _) };
        if n <= 0 {
            ev.hdr.flags |= flags::READ_FAILED;
            break;
        }
        if n as usize == ARGS_SOFT_CAP {
            ev.hdr.flags |= flags::ARGS_TRUNCATED;
        }
        off += n as usize;
        ev.argc += 1;
        i += 1;
    }
    if i == MAX_ARGS {
        // More entries than we copy?
        let mut p: u64 = 0;
        // SAFETY: as above: one 8-byte argv slot of user memory into the local `p`, fault-checked.
        let r = unsafe { bpf_probe_read_user(&mut p as *mut u64 as *mut _, 8, (argv + 8 * MAX_ARGS as u64) as *const _) };
        if r == 0 && p != 0 {
            ev.hdr.flags |= flags::ARGS_TRUNCATED;
        }
    }
    ev.args_len = off as u32;

    if PENDING_EXEC.insert(&cur.tid, &*ev, 0).is_err() {
        lost_for(LostReason::PendingFull, ev.hdr.server_id);
    }
    0
}

/// Successful exec: the new image runs. Completes the entry half saved under the calling tid.
/// An untracked process whose new image is a configured MCP command, or whose parent is an MCP
/// client, is tracked provisionally from here on, so nothing it does is missed while the daemon
/// decides (it adopts the process as a server or drops it).
#[tracepoint]
pub fn mcpm_exec(ctx: TracePointContext) -> u32 {
    let cur = current();
    let info = match tracked(cur) {
        Some(info) => info,
        None => match provisional(cur) {
            Some(info) => info,
            None => {
                crate::handshake::note_exec(cur);
                return 0;
            }
        },
    };
    // SAFETY: `old_pid` of the sched_process_exec record, at its tracefs offset, read through
    // bpf_probe_read (Err on a fault, then 0).
    let old_pid: i32 = unsafe { ctx.read_at(tp_exec_old_pid_off()) }.unwrap_or(0);
    let old_tid = old_pid as u32;
    match PENDING_EXEC.get_ptr_mut(&old_tid) {
        Some(ev) => {
            // SAFETY: the PENDING_EXEC entry of the thread that called execve, which is the current task now
            // (de_thread killed every other thread); valid for this program run and used before the remove.
            let ev = unsafe { &mut *ev };
            let entry_flags = ev.hdr.flags;
            fill_header(&mut ev.hdr, EventKind::Exec, cur, info);
            ev.hdr.flags = entry_flags;
            ev.ret = 0;
            note_image(cur, info, ev.hdr.ts_ns);
            judge_image(ev);
            send_exec(ev);
            let _ = PENDING_EXEC.remove(&old_tid);
        }
        None => exec_without_entry(&ctx, cur, info),
    }
    0
}

/// A root's new image: the stamp its exec event carries (`enforce::ROOT_IMAGES`).
#[inline(always)]
fn note_image(cur: Current, info: TrackInfo, ts_mono_ns: u64) {
    if info.root_tgid == cur.tgid {
        crate::enforce::note_root_image(cur.tgid, ts_mono_ns);
    }
}

#[inline(always)]
fn provisional(cur: Current) -> Option<TrackInfo> {
    if cur.tgid == daemon_tgid() {
        return None;
    }
    // Every exec of the machine gets here: the comms are direct loads and a bit test, and only
    // a set bit costs a lookup (task.rs, monitor-common's comm_filter.rs).
    let filter = COMM_FILTER.get(0)?;
    let task = crate::task::current_task();
    let own = candidate_bits(filter, crate::task::comm_words(task)) & candidate::CONFIGURED != 0;
    let by_client = candidate_bits(filter, crate::task::comm_words(crate::task::real_parent(task))) & candidate::CLIENT != 0;
    if !own && !by_client {
        return None;
    }
    let info = TrackInfo { server_id: PROVISIONAL_SERVER, root_tgid: cur.tgid };
    set_maybe_tracked(cur.tgid, true);
    // A new root, launched by a process outside every server: a taint left by an earlier
    // holder of this pid (dropped, then exited untracked) is not its own.
    crate::enforce::forget_root(cur.tgid);
    if TRACKED.insert(&cur.tgid, &info, 0).is_err() {
        count_lost_logged(LostReason::TrackedFull);
        return None;
    }
    crate::stdio::register_exec_stdio(cur.tgid);
    // A configured command with a terminal that no client started (`npx` typed in a shell) is
    // not held: its shell would see a stopped job (hold.rs).
    crate::hold::hold_if_blind(cur.tgid, by_client);
    Some(info)
}

/// `CANDIDATE_COMMS`' bits for the comm of words `(a, b)`, 0 when it is not there (`filter`:
/// `COMM_FILTER`'s element, looked up once for the own and the parent's comm).
#[inline(always)]
fn candidate_bits(filter: &monitor_common::CommFilter, (a, b): (u64, u64)) -> u32 {
    if !monitor_common::comm_filter_has(filter, a, b) {
        return 0;
    }
    let mut comm = [0u8; 16];
    comm[..8].copy_from_slice(&a.to_le_bytes());
    comm[8..].copy_from_slice(&b.to_le_bytes());
    // SAFETY: the CANDIDATE_COMMS value is copied out at once; no reference is kept.
    unsafe { CANDIDATE_COMMS.get(&comm) }.copied().unwrap_or(0)
}

/// The process became tracked between execve's entry and the new image (or the pending map was
/// full): report the kernel's filename and the new image's argv, flagged.
#[inline(always)]
fn exec_without_entry(ctx: &TracePointContext, cur: Current, info: TrackInfo) {
    let Some(ev) = SCRATCH_EXEC.get_ptr_mut(0) else { return };
    // SAFETY: index 0 of the per-CPU SCRATCH_EXEC array: this CPU's slot, valid for this program run and
    // used by this program alone until it returns.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.hdr, EventKind::Exec, cur, info);
    ev.hdr.flags = flags::NO_ENTRY;
    note_image(cur, info, ev.hdr.ts_ns);
    ev.ret = 0;
    ev.syscall = 0;
    ev.dirfd = AT_FDCWD;
    ev.at_flags = 0;
    ev.argc = 0;
    ev.args_len = 0;
    ev.filename_len = 0;
    // SAFETY: the `__data_loc filename` word of the record, at its tracefs offset, read through
    // bpf_probe_read (Err on a fault, then 0).
    let loc: u32 = unsafe { ctx.read_at(tp_exec_filename_off()) }.unwrap_or(0);
    // SAFETY: only pointer arithmetic: the low 16 bits of a __data_loc are an offset into this same
    // record; nothing is dereferenced here (the read below is fault-checked).
    let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
    // SAFETY: writes at most PATH_CAP bytes into ev.data (PATH_CAP + 2 * ARGS_SOFT_CAP bytes); the source
    // is read by the fault-checked kernel-string helper.
    let n = unsafe { bpf_probe_read_kernel_str(ev.data.as_mut_ptr() as *mut _, PATH_CAP as u32, src as *const _) };
    if n > 0 {
        ev.filename_len = (n - 1) as u32;
    }
    copy_new_argv(ev);
    ev.policy = 0;
    judge_image(ev);
    send_exec(ev);
}


/// The new image's argv as exec laid it out (`current->mm->arg_start..arg_end`, NUL-separated
/// strings just written by the kernel, so resident), copied after the filename. A process that
/// was not tracked at execve's entry (a provisional one) has no other argv that stays true:
/// node's `process.title`, which npm/npx set, rewrites that memory in place within milliseconds,
/// and /proc then shows the new title. The daemon decides on this copy, not on /proc.
/// For a script the kernel's argv is the interpreter's: `/usr/bin/env node /usr/bin/npx -y …`.
#[inline(always)]
fn copy_new_argv(ev: &mut ExecEvent) {
    // SAFETY: kernel pointers read through bpf_probe_read_kernel (faults return an error);
    // the offsets come from BTF.
    let (start, end) = unsafe {
        let task = bpf_get_current_task() as *const u8;
        let Ok(mm) = bpf_probe_read_kernel(task.add(koff!(task_mm)) as *const *const u8) else { return };
        if mm.is_null() {
            return;
        }
        let start = bpf_probe_read_kernel(mm.add(koff!(mm_arg_start)) as *const u64).unwrap_or(0);
        let end = bpf_probe_read_kernel(mm.add(koff!(mm_arg_end)) as *const u64).unwrap_or(0);
        (start, end)
    };
    // Same bounds as the entry copy (`exec_enter`): every access stays inside `data`.
    let data = ev.data.as_mut_ptr();
    let base = (ev.filename_len as usize) & (PATH_CAP - 1);
    let mut at: usize = 0;
    let mut i = 0;
    while i < MAX_ARGS {
        let p = start + at as u64;
        if p >= end {
            break;
        }
        if at >= ARGS_SOFT_CAP {
            ev.hdr.flags |= flags::ARGS_TRUNCATED;
            break;
        }
        // SAFETY: the destination is inside `data` (base < PATH_CAP, at < ARGS_SOFT_CAP, read
        // size ARGS_SOFT_CAP); the source is user memory read with the fault-safe helper.
        let n = unsafe {
            let dst = data.add(base + (at & (ARGS_SOFT_CAP - 1)));
            bpf_probe_read_user_str(dst as *mut _, ARGS_SOFT_CAP as u32, p as *const _)
        };
        if n <= 0 {
            ev.hdr.flags |= flags::READ_FAILED;
            break;
        }
        at += n as usize;
        ev.argc += 1;
        i += 1;
    }
    if i == MAX_ARGS && start + (at as u64) < end {
        ev.hdr.flags |= flags::ARGS_TRUNCATED;
    }
    ev.args_len = at as u32;
}

/// A protected executable: the new image dies before its first instruction.
#[inline(always)]
fn judge_image(ev: &mut ExecEvent) {
    let p = crate::enforce::exec_check();
    if p != 0 && crate::enforce::kill_current() {
        ev.policy = p;
        ev.hdr.flags |= flags::KILLED;
    }
}

#[inline(always)]
fn send_exec(ev: &ExecEvent) {
    let len = ExecEvent::DATA_OFFSET + (ev.filename_len as usize & (PATH_CAP - 1)) + (ev.args_len as usize & (2 * ARGS_SOFT_CAP - 1));
    output_prefix(ev, len);
}

gated_tracepoint!(
    /// execve/execveat returned: only failures are still pending here (success was sent by
    /// `mcpm_exec`, which removed the entry).
    mcpm_exec_x => exec_x
);

#[inline(always)]
pub fn exec_x<S: Sys>(s: &S) -> u32 {
    let cur = current();
    let Some(ev) = PENDING_EXEC.get_ptr_mut(&cur.tid) else { return 0 };
    // SAFETY: the current thread's own PENDING_EXEC entry (keyed by its tid), valid for this program run;
    // the thread is in this execve's exit, so no other hook writes it; used before the remove.
    let ev = unsafe { &mut *ev };
    ev.ret = s.ret() as i32;
    send_exec(ev);
    let _ = PENDING_EXEC.remove(&cur.tid);
    0
}
