//! 32-bit (ia32) syscalls of tracked processes. Any x86_64 process can enter the kernel with
//! `int $0x80`, i386 syscall numbers and i386 argument registers (pointers below 4 GiB). The
//! kernel's per-syscall tracepoints skip such compat syscalls and the `__x64_sys_*` wrappers
//! never run for them, so without these hooks a server could open a secret, exec or connect
//! unseen, and past the in-kernel kill. The same handlers as for 64-bit syscalls run, so the
//! events are the same ones.
//! - Tracepoint path: the raw tracepoint `sys_exit` (the compat calls' only tracepoint, with
//!   `sys_enter`), as a BTF-typed one (`tp_btf`): not a perf-event tracepoint program, which
//!   would have the kernel build a trace record for every syscall of the machine first; and not
//!   a plain raw one, because `tp_btf` may load the syscall number from its `pt_regs` directly
//!   (no helper call), so that the other syscalls of the machine return at once. The rest
//!   returns unless the process is tracked and in a compat syscall
//!   (`current->thread_info.status & TS_COMPAT`).
//! - Fast path: fentry/fexit on the compat wrappers `__ia32_*` (`fast.rs`).
//!
//! Kernel contract: i386 numbers from arch/x86/entry/syscalls/syscall_32.tbl; raw tracepoint
//! `sys_exit(struct pt_regs *regs, long ret)` (its BTF type `btf_trace_sys_exit`),
//! the syscall number in `regs->orig_ax` on exit; i386 arguments in bx, cx, dx, si, di, bp.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    fast::Regs,
    file,
    maps::{current, mark_compat, koff, maybe_tracked, tracked, Pending},
    net, process, procaccess,
};

/// `orig_ax` in x86_64 `struct pt_regs`: the syscall number, kept through the call.
const ORIG_AX_OFF: usize = 120;


const TS_COMPAT: u32 = 0x0002;

/// i386 syscall numbers.
mod nr {
    pub const OPEN: i64 = 5;
    pub const CREAT: i64 = 8;
    pub const EXECVE: i64 = 11;
    pub const SOCKETCALL: i64 = 102;
    pub const OPENAT: i64 = 295;
    pub const EXECVEAT: i64 = 358;
    pub const CONNECT: i64 = 362;
    pub const SENDTO: i64 = 369;
    pub const SENDMSG: i64 = 370;
    pub const OPENAT2: i64 = 437;
    pub const PTRACE: i64 = 26;
    pub const FORK: i64 = 2;
    pub const CLONE: i64 = 120;
    pub const VFORK: i64 = 190;
    pub const CLONE3: i64 = 435;
    pub const SENDMMSG: i64 = 345;
    pub const IO_URING_ENTER: i64 = 426;
    pub const PIDFD_GETFD: i64 = 438;
    pub const PROCESS_VM_READV: i64 = 347;
    pub const PROCESS_VM_WRITEV: i64 = 348;
}

/// Whether the current syscall came in through the ia32 entry points.
#[inline(always)]
fn in_compat_syscall() -> bool {
    let o = koff!(task_ti_status);
    if o == monitor_common::NO_FIELD as usize {
        return false;
    }
    // SAFETY: a helper without arguments; in a syscall-exit tracepoint there is always a current task.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: `thread_info.status` at its BTF offset (checked present above), read through
    // bpf_probe_read_kernel, which returns Err on a fault.
    let status: u32 = unsafe { bpf_probe_read_kernel(task.add(o) as *const u32) }.unwrap_or(0);
    status & TS_COMPAT != 0
}

/// Whether `id` is one of the i386 syscalls handled here: lets every other syscall of the
/// machine go without a map lookup.
#[inline(always)]
fn handled(id: i64) -> bool {
    matches!(
        id,
        nr::OPEN | nr::CREAT | nr::EXECVE | nr::SOCKETCALL | nr::OPENAT | nr::EXECVEAT | nr::CONNECT | nr::SENDTO | nr::SENDMSG | nr::OPENAT2
            | nr::SENDMMSG | nr::IO_URING_ENTER | nr::PIDFD_GETFD | nr::PTRACE | nr::PROCESS_VM_READV | nr::PROCESS_VM_WRITEV
    )
}

/// One program, on `sys_exit` only: every syscall of the machine runs it while a server is
/// tracked, so it is kept to one invocation per syscall (an entry hook too would double that).
/// The i386 argument registers are still as the process set them when the call returns, and
/// the path, argv and address still in its memory, so the entry half is built here, then
/// completed at once. What this loses against an entry hook: a successful execve (its new image
/// has replaced the arguments; `sched_process_exec` reports it anyway) and the cgroup deny's
/// mark on a refused connect, which is recomputed here from the same policy map.
#[btf_tracepoint(function = "sys_exit")]
pub fn mcpm_compat_x(ctx: BtfTracePointContext) -> i32 {
    // Every syscall exit of the machine runs this while a server is tracked. First the number,
    // with no helper call: `regs` is a BTF-typed pointer, which the verifier lets this program
    // load from (it turns the load into one that reads 0 on a fault). Most syscalls of the
    // machine end here; those whose 64-bit number is also a watched i386 one (64-bit `fstat` is
    // i386 `open`) go on. Then the pid's byte in MAYBE_TRACKED (one load from global data), which
    // every process this hook acts on has set, doomed children of an ia32 fork included (the
    // fork hook sets it). The rest runs in a subprogram of its own, so that its registers and
    // stack stay out of that path (gate.rs).
    let regs: *const u64 = ctx.arg(0);
    // SAFETY: `regs` is sys_exit's `struct pt_regs *`, typed by BTF; orig_ax is the u64 at its
    // fixed x86_64 offset, and the verifier checks the load against the type.
    let id = unsafe { core::ptr::read_volatile(regs.add(ORIG_AX_OFF / 8)) } as i64;
    if !watched(id) || !maybe_tracked(current().tgid) {
        return 0;
    }
    compat_exit(aya_ebpf::EbpfContext::as_ptr(&ctx))
}

/// Whether an exit with syscall number `id` may be one this hook acts on: a handled i386
/// syscall, or an i386 fork (its child returns here too, see `compat_exit`).
#[inline(always)]
fn watched(id: i64) -> bool {
    handled(id) || matches!(id, nr::FORK | nr::CLONE | nr::VFORK | nr::CLONE3)
}

/// The exit of a watched syscall number by a process with its byte set. First the compat flag,
/// so a 64-bit syscall of a tracked process costs one read of the task: a number alone cannot
/// tell, as 64-bit numbers overlap the i386 ones (64-bit `open` is i386 `fork`). An ia32 fork's
/// child inherits the flag with the parent's thread_info and returns here before the kernel
/// clears it on the way out.
#[inline(never)]
fn compat_exit(raw: *mut core::ffi::c_void) -> i32 {
    if !in_compat_syscall() {
        return 0;
    }
    let ctx = BtfTracePointContext::new(raw);
    let regs = ctx.arg::<u64>(0) as *const u8;
    // SAFETY: `regs` is sys_exit's `struct pt_regs *` argument; orig_ax at its fixed x86_64 offset is read
    // through bpf_probe_read_kernel, which returns Err on a fault (then -1).
    let id: i64 = unsafe { bpf_probe_read_kernel(regs.add(ORIG_AX_OFF) as *const i64) }.unwrap_or(-1);
    // A child of an ia32 fork returns here (the per-syscall clone exits skip compat calls): one
    // the fork hook could not track dies now. Untracked, so before the tracked check.
    if matches!(id, nr::FORK | nr::CLONE | nr::VFORK | nr::CLONE3) {
        return process::doomed_x(&Regs::ia32(regs, 0)) as i32;
    }
    if !handled(id) || tracked(current()).is_none() {
        return 0;
    }
    let ret = ctx.arg::<i64>(1);
    let s = Regs::ia32(regs, ret);
    match id {
        nr::OPEN | nr::CREAT | nr::OPENAT | nr::OPENAT2 => {
            match id {
                nr::OPEN => file::open_e(&s),
                nr::CREAT => file::creat_e(&s),
                nr::OPENAT => file::openat_e(&s),
                _ => file::openat2_e(&s),
            };
            mark_compat(Pending::Open);
            file::open_x(&s);
        }
        nr::EXECVE | nr::EXECVEAT if ret < 0 => {
            if id == nr::EXECVE {
                process::execve_e(&s);
            } else {
                process::execveat_e(&s);
            }
            mark_compat(Pending::Exec);
            process::exec_x(&s);
        }
        nr::CONNECT | nr::SENDTO | nr::SENDMSG | nr::SENDMMSG | nr::SOCKETCALL => {
            match id {
                nr::CONNECT => net::connect_e(&s),
                nr::SENDTO => net::sendto_e(&s),
                nr::SENDMSG | nr::SENDMMSG => net::sendmsg32_e(&s),
                _ => net::socketcall_e(&s),
            };
            mark_compat(Pending::Connect);
            crate::enforce::mark_refused_connect(ret);
            net::connect_x(&s);
        }
        // Judged only as the call returns here, so unlike the 64-bit entry hooks this kill
        // comes after the effect (the fast path's `__ia32_*` fentry judges at the entry).
        nr::IO_URING_ENTER => {
            crate::enforce::uring_enter_e(&s);
        }
        nr::PIDFD_GETFD => {
            procaccess::getfd_e(&s);
        }
        nr::PTRACE => {
            procaccess::ptrace_e(&s);
        }
        nr::PROCESS_VM_READV => {
            procaccess::vm_readv_e(&s);
        }
        nr::PROCESS_VM_WRITEV => {
            procaccess::vm_writev_e(&s);
        }
        _ => {}
    }
    0
}
