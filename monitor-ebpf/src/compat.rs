//! 32-bit (ia32) syscalls of tracked processes. Any x86_64 process can enter the kernel with
//! `int $0x80`, i386 syscall numbers and i386 argument registers (pointers below 4 GiB). The
//! kernel's per-syscall tracepoints skip such compat syscalls and the `__x64_sys_*` wrappers
//! never run for them, so without these hooks a server could open a secret, exec or connect
//! unseen, and past the in-kernel kill. The same handlers as for 64-bit syscalls run, so the
//! events are the same ones.
//! - Tracepoint path: `raw_syscalls:sys_enter/sys_exit` (the compat calls' only tracepoints),
//!   which return at once unless the process is tracked and in a compat syscall
//!   (`current->thread_info.status & TS_COMPAT`); their args are the i386 registers.
//! - Fast path: fentry/fexit on the compat wrappers `__ia32_*` (`fast.rs`).
//!
//! Kernel contract: i386 numbers from arch/x86/entry/syscalls/syscall_32.tbl;
//! `raw_syscalls:sys_enter(long id, unsigned long args[6])`, `sys_exit(long id, long ret)`.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    file,
    maps::{current, mark_compat, off, tracked, Sys},
    net, process,
};

#[unsafe(no_mangle)]
static TASK_TI_STATUS_OFF: u32 = 0;

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
}

/// Whether the current syscall came in through the ia32 entry points.
#[inline(always)]
fn in_compat_syscall() -> bool {
    let o = off(&TASK_TI_STATUS_OFF);
    if o == monitor_common::NO_FIELD as usize {
        return false;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let status: u32 = unsafe { bpf_probe_read_kernel(task.add(o) as *const u32) }.unwrap_or(0);
    status & TS_COMPAT != 0
}

#[inline(always)]
fn id(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at(8) }.unwrap_or(-1)
}

#[tracepoint]
pub fn mcpm_compat_e(ctx: TracePointContext) -> u32 {
    if tracked(current()).is_none() || !in_compat_syscall() {
        return 0;
    }
    let r = match id(&ctx) {
        nr::OPEN => file::open_e(&ctx),
        nr::CREAT => file::creat_e(&ctx),
        nr::OPENAT => file::openat_e(&ctx),
        nr::OPENAT2 => file::openat2_e(&ctx),
        nr::EXECVE => process::execve_e(&ctx),
        nr::EXECVEAT => process::execveat_e(&ctx),
        nr::CONNECT => net::connect_e(&ctx),
        nr::SENDTO => net::sendto_e(&ctx),
        nr::SENDMSG => net::sendmsg32_e(&ctx),
        nr::SOCKETCALL => net::socketcall_e(&ctx),
        _ => return 0,
    };
    mark_compat();
    r
}

#[tracepoint]
pub fn mcpm_compat_x(ctx: TracePointContext) -> u32 {
    if tracked(current()).is_none() || !in_compat_syscall() {
        return 0;
    }
    match id(&ctx) {
        nr::OPEN | nr::CREAT | nr::OPENAT | nr::OPENAT2 => file::open_x(&ctx),
        nr::EXECVE | nr::EXECVEAT => process::exec_x(&ctx),
        nr::CONNECT | nr::SENDTO | nr::SENDMSG | nr::SOCKETCALL => net::connect_x(&ctx),
        _ => 0,
    }
}
