//! The fast observation path: fentry/fexit on the syscalls' `__x64_sys_*` wrappers, for kernels
//! with BPF trampolines. A syscall tracepoint, once anything is attached to any of them, sends
//! every syscall of every process through the kernel's slow path; a trampoline only costs the
//! calls of the one function it is on. The programs here call the same handlers as the
//! tracepoints (through [`Sys`]), so both paths send the same events; the loader attaches one
//! path or the other, never both.
//!
//! Kernel contract: on x86_64 (with `CONFIG_ARCH_HAS_SYSCALL_WRAPPER`, every 4.17+ kernel)
//! `__x64_sys_NAME(const struct pt_regs *regs)` receives the user registers; syscall arguments
//! are in di, si, dx, r10, r8, r9, at fixed offsets of `struct pt_regs` (an ABI of the arch).
//! fexit programs see the wrapper's argument at index 0 and its return value at index 1.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use crate::gate::gated;
use crate::{
    file,
    maps::{mark_compat, Pending, Sys},
    http, net, process, procaccess, stdio,
};

/// Offsets in x86_64 `struct pt_regs` of the argument registers: di, si, dx, r10, r8, r9 for
/// 64-bit syscalls; bx, cx, dx, si, di, bp for the ia32 compat wrappers `__ia32_*` (`int $0x80`,
/// see compat.rs), whose arguments are 32 bits wide.
const ARG_OFF: [usize; 6] = [112, 104, 96, 56, 72, 64];
const ARG_OFF_IA32: [usize; 6] = [40, 88, 96, 104, 112, 32];

pub struct Regs {
    regs: *const u8,
    ret: i64,
    ia32: bool,
}

impl Regs {
    #[inline(always)]
    fn entry(ctx: &FEntryContext, ia32: bool) -> Self {
        Self { regs: ctx.arg::<u64>(0) as *const u8, ret: 0, ia32 }
    }
    #[inline(always)]
    fn exit(ctx: &FExitContext, ia32: bool) -> Self {
        Self { regs: ctx.arg::<u64>(0) as *const u8, ret: ctx.arg::<i64>(1), ia32 }
    }
    /// The user registers of an ia32 syscall (compat.rs), with its result on exit.
    #[inline(always)]
    pub fn ia32(regs: *const u8, ret: i64) -> Self {
        Self { regs, ret, ia32: true }
    }
}

impl Sys for Regs {
    #[inline(always)]
    fn arg(&self, i: usize) -> u64 {
        if i >= ARG_OFF.len() {
            return 0;
        }
        let off = if self.ia32 { ARG_OFF_IA32[i] } else { ARG_OFF[i] };
        // SAFETY: `regs` is the wrapper's `const struct pt_regs *` (or sys_exit's); the argument register at
        // its fixed x86_64 ABI offset is read through bpf_probe_read_kernel, Err on a fault.
        let v = unsafe { bpf_probe_read_kernel(self.regs.add(off) as *const u64) }.unwrap_or(0);
        if self.ia32 { v & 0xffff_ffff } else { v }
    }
    #[inline(always)]
    fn ret(&self) -> i64 {
        self.ret
    }
}

/// One fentry and one fexit program per syscall: a trampoline program is bound to the one
/// kernel function it was loaded for (the loader names it, see `programs::PROGRAMS`).
macro_rules! syscall {
    ($entry:ident = $enter:path, $exit:ident = $leave:path) => {
        syscall!(@ false, None, $entry = $enter, $exit = $leave);
    };
    (ia32 $family:ident, $entry:ident = $enter:path, $exit:ident = $leave:path) => {
        syscall!(@ true, Some(Pending::$family), $entry = $enter, $exit = $leave);
    };
    (@ $ia32:expr, $compat:expr, $entry:ident = $enter:path, $exit:ident = $leave:path) => {
        gated!(fentry, $entry(ctx: FEntryContext) => {
            let r = $enter(&Regs::entry(&ctx, $ia32));
            if let Some(family) = $compat {
                mark_compat(family);
            }
            r
        });
        gated!(fexit, $exit(ctx: FExitContext) => $leave(&Regs::exit(&ctx, $ia32)));
    };
}

syscall!(mcpmf_execve_e = process::execve_e, mcpmf_execve_x = process::exec_x);
syscall!(mcpmf_execvat_e = process::execveat_e, mcpmf_execvat_x = process::exec_x);
syscall!(mcpmf_open_e = file::open_e, mcpmf_open_x = file::open_x);
syscall!(mcpmf_creat_e = file::creat_e, mcpmf_creat_x = file::open_x);
syscall!(mcpmf_openat_e = file::openat_e, mcpmf_openat_x = file::open_x);
syscall!(mcpmf_openat2_e = file::openat2_e, mcpmf_openat2_x = file::open_x);
syscall!(mcpmf_connect_e = net::connect_e, mcpmf_connect_x = net::connect_x);
syscall!(mcpmf_sendto_e = net::sendto_e, mcpmf_sendto_x = net::connect_x);
syscall!(mcpmf_sendmsg_e = net::sendmsg_e, mcpmf_sendmsg_x = net::connect_x);
syscall!(mcpmf_sendmmsg_e = net::sendmsg_e, mcpmf_sendmmsg_x = net::connect_x);
syscall!(mcpmf_read_e = stdio::read_e, mcpmf_read_x = stdio::rw_x);
syscall!(mcpmf_write_e = stdio::write_e, mcpmf_write_x = stdio::rw_x);
syscall!(mcpmf_ptrace_e = procaccess::ptrace_e, mcpmf_ptrace_x = procaccess::none);
syscall!(mcpmf_vm_read_e = procaccess::vm_readv_e, mcpmf_vm_read_x = procaccess::none);
syscall!(mcpmf_vm_write_e = procaccess::vm_writev_e, mcpmf_vm_write_x = procaccess::none);
gated!(fentry, mcpmf_getfd_e(ctx: FEntryContext) => procaccess::getfd_e(&Regs::entry(&ctx, false)));
gated!(fentry, mcpmc_getfd_e(ctx: FEntryContext) => procaccess::getfd_e(&Regs::entry(&ctx, true)));

// A new task's first run (`ret_from_fork` calls `schedule_tail` in the child): where a child the
// fork hook could not track dies on this path (the tracepoint path uses the clone exits).
#[fentry]
pub fn mcpmf_newtask_e(_ctx: FEntryContext) -> u32 {
    process::doomed_x(&Regs { regs: core::ptr::null(), ret: 0, ia32: false })
}
gated!(fentry, mcpmf_uring_enter_e(ctx: FEntryContext) => crate::enforce::uring_enter_e(&Regs::entry(&ctx, false)));
gated!(fentry, mcpmc_uring_enter_e(ctx: FEntryContext) => crate::enforce::uring_enter_e(&Regs::entry(&ctx, true)));
// The HTTP capture (http.rs): accepted sockets enter at accept's result, leave at close.
gated!(fexit, mcpmf_accept_x(ctx: FExitContext) => http::accept_x(&Regs::exit(&ctx, false)));
gated!(fexit, mcpmf_accept4_x(ctx: FExitContext) => http::accept_x(&Regs::exit(&ctx, false)));
gated!(fentry, mcpmf_close_e(ctx: FEntryContext) => http::close_e(&Regs::entry(&ctx, false)));
syscall!(mcpmf_recvfr_e = http::recvfrom_e, mcpmf_recvfr_x = http::sock_x);
syscall!(mcpmf_sendto_de = http::sendto_e, mcpmf_sendto_dx = http::sock_x);
syscall!(mcpmf_readv_e = http::readv_e, mcpmf_readv_x = http::sock_x);
syscall!(mcpmf_writev_e = http::writev_e, mcpmf_writev_x = http::sock_x);
// Not a syscall: every open's LSM check, with the opened file, before its fd exists.
gated!(fentry, mcpmf_file_open_e(ctx: FEntryContext) => crate::enforce::file_open_kill(ctx.arg::<u64>(0) as *const u8));
// The same syscalls entered through `int $0x80` (compat.rs says why they matter).
syscall!(ia32 Open, mcpmc_open_e = file::open_e, mcpmc_open_x = file::open_x);
syscall!(ia32 Open, mcpmc_creat_e = file::creat_e, mcpmc_creat_x = file::open_x);
syscall!(ia32 Open, mcpmc_openat_e = file::openat_e, mcpmc_openat_x = file::open_x);
syscall!(ia32 Open, mcpmc_openat2_e = file::openat2_e, mcpmc_openat2_x = file::open_x);
syscall!(ia32 Exec, mcpmc_execve_e = process::execve_e, mcpmc_execve_x = process::exec_x);
syscall!(ia32 Exec, mcpmc_execvat_e = process::execveat_e, mcpmc_execvat_x = process::exec_x);
syscall!(ia32 Connect, mcpmc_connect_e = net::connect_e, mcpmc_connect_x = net::connect_x);
syscall!(ia32 Connect, mcpmc_sendto_e = net::sendto_e, mcpmc_sendto_x = net::connect_x);
syscall!(ia32 Connect, mcpmc_sendmsg_e = net::sendmsg32_e, mcpmc_sendmsg_x = net::connect_x);
syscall!(ia32 Connect, mcpmc_sendmmsg_e = net::sendmsg32_e, mcpmc_sendmmsg_x = net::connect_x);
syscall!(ia32 Connect, mcpmc_sockcall_e = net::socketcall_e, mcpmc_sockcall_x = net::connect_x);
syscall!(@ true, None, mcpmc_ptrace_e = procaccess::ptrace_e, mcpmc_ptrace_x = procaccess::none);
syscall!(@ true, None, mcpmc_vm_read_e = procaccess::vm_readv_e, mcpmc_vm_read_x = procaccess::none);
syscall!(@ true, None, mcpmc_vm_write_e = procaccess::vm_writev_e, mcpmc_vm_write_x = procaccess::none);
