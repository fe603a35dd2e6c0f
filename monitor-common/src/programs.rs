//! Every program of the kernel object, in one table the loader walks: what kind of hook each
//! attaches to, where, what it observes and when it is attached. The loader picks per kind which
//! programs this kernel gets (`monitor/src/probes/mod.rs`):
//! - tracepoints: always loaded; the `Always` ones (process tree) attach at start on either path,
//!   the `WhileTracked` syscall ones are the fallback of the fentry/fexit fast path;
//! - fentry/fexit: the fast path, where the kernel has BPF trampolines;
//! - BTF-typed raw tracepoint (`tp_btf`): the ia32 syscalls on the tracepoint path, where ia32
//!   emulation is on;
//! - LSM: open/exec deny where the kernel runs the BPF LSM, else the kill fallback;
//! - cgroup sock_addr: connect/sendmsg deny where cgroup v2 takes them, else the kill fallback.
//!
//! One table rather than one per kind: a program added to the object is added here once, and the
//! loader, `sensors_loaded`, the tests and the benchmark floor all read the same list.

/// The kind of kernel hook a program attaches to (its aya program type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Perf-event tracepoints; hooks are `category:name`.
    TracePoint,
    /// BTF-typed raw tracepoints (`tp_btf`); hooks are raw tracepoint names (exactly one).
    BtfTracePoint,
    /// BPF trampoline before a kernel function; hooks are function names (exactly one).
    FEntry,
    /// BPF trampoline after a kernel function; hooks are function names (exactly one).
    FExit,
    /// BPF-LSM; hooks are LSM hook names (exactly one).
    Lsm,
    /// cgroup `sock_addr`, on the cgroup v2 root; hooks are attach points (exactly one).
    CgroupSockAddr,
}

/// When a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// At start-up, for the daemon's whole life: hooks that fire only on their own rare event.
    Always,
    /// Only while something is tracked: a hook on every syscall (or open, exec, connect) of the
    /// machine would cost every process that much while there is nothing to watch.
    WhileTracked,
}

/// One program and every hook it is attached to.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// Function name in `monitor-ebpf` (the kernel keeps its first 15 bytes as the program name).
    pub name: &'static str,
    pub kind: Kind,
    /// Where it attaches, in its kind's terms. A tracepoint program may serve several syscalls
    /// whose tracepoints share a layout (all open exits carry just `ret`); other kinds have one.
    pub hooks: &'static [&'static str],
    /// What the program observes, for start-up logs and errors.
    pub purpose: &'static str,
    pub lifetime: Lifetime,
    /// Whether the daemon can run without it: a hook this kernel lacks (an arch without `open`,
    /// a kernel without io_uring or ia32 emulation) is skipped instead of failing the start.
    pub optional: bool,
}

impl Program {
    /// `category` and `name` of a tracepoint hook.
    pub fn tracepoint(hook: &'static str) -> (&'static str, &'static str) {
        hook.split_once(':').unwrap_or(("", hook))
    }

    /// Exit hooks go in before entry hooks (and come out after them), so that no entry is saved
    /// without its exit hook there to complete it. The ia32 hook on `sys_exit` is not one: it
    /// completes nothing an entry hook saved (compat.rs), and goes in after the others.
    pub fn is_exit(&self, hook: &str) -> bool {
        match self.kind {
            Kind::FExit => true,
            Kind::TracePoint => hook.starts_with("syscalls:sys_exit"),
            _ => false,
        }
    }

    const fn optional(self) -> Self {
        Self { optional: true, ..self }
    }
}

const fn always(kind: Kind, name: &'static str, hooks: &'static [&'static str], purpose: &'static str) -> Program {
    Program { name, kind, hooks, purpose, lifetime: Lifetime::Always, optional: false }
}

const fn tracked(kind: Kind, name: &'static str, hooks: &'static [&'static str], purpose: &'static str) -> Program {
    Program { name, kind, hooks, purpose, lifetime: Lifetime::WhileTracked, optional: false }
}

/// The programs of one kind, in table order.
pub fn of_kind(kind: Kind) -> impl Iterator<Item = &'static Program> {
    PROGRAMS.iter().filter(move |p| p.kind == kind)
}

use Kind::{BtfTracePoint, CgroupSockAddr, FEntry, FExit, Lsm, TracePoint};

/// Every program, grouped by kind. Within a kind the order is the attach order: the process-tree
/// tracepoints first so that a child forked during start-up is not missed; the fast path's
/// fentry/fexit twins in the order of the tracepoints they replace.
pub const PROGRAMS: &[Program] = &[
    // Tracepoints (tracepoint path; the process-tree and io_uring ones on both paths).
    always(TracePoint, "mcpm_fork", &["task:task_newtask"], "process tree: inherit tracking on fork"),
    always(TracePoint, "mcpm_exit", &["sched:sched_process_exit"], "process tree: exit and untrack"),
    always(TracePoint, "mcpm_exec", &["sched:sched_process_exec"], "exec: new image started"),
    tracked(
        TracePoint,
        "mcpm_fork_x",
        &["syscalls:sys_exit_clone", "syscalls:sys_exit_clone3", "syscalls:sys_exit_fork", "syscalls:sys_exit_vfork"],
        "process tree: a child that could not be tracked dies before its first instruction",
    ),
    tracked(TracePoint, "mcpm_execve_e", &["syscalls:sys_enter_execve"], "exec: execve entry"),
    tracked(TracePoint, "mcpm_execvat_e", &["syscalls:sys_enter_execveat"], "exec: execveat entry"),
    tracked(TracePoint, "mcpm_exec_x", &["syscalls:sys_exit_execve", "syscalls:sys_exit_execveat"], "exec: failed exec result"),
    tracked(TracePoint, "mcpm_open_e", &["syscalls:sys_enter_open"], "file: open entry").optional(),
    tracked(TracePoint, "mcpm_creat_e", &["syscalls:sys_enter_creat"], "file: creat entry").optional(),
    tracked(TracePoint, "mcpm_openat_e", &["syscalls:sys_enter_openat"], "file: openat entry"),
    tracked(TracePoint, "mcpm_openat2_e", &["syscalls:sys_enter_openat2"], "file: openat2 entry"),
    tracked(
        TracePoint,
        "mcpm_open_x",
        &["syscalls:sys_exit_open", "syscalls:sys_exit_creat", "syscalls:sys_exit_openat", "syscalls:sys_exit_openat2"],
        "file: open result",
    ),
    tracked(TracePoint, "mcpm_connect_e", &["syscalls:sys_enter_connect"], "net: connect entry"),
    tracked(TracePoint, "mcpm_sendto_e", &["syscalls:sys_enter_sendto"], "net: sendto with a destination"),
    tracked(TracePoint, "mcpm_sendmsg_e", &["syscalls:sys_enter_sendmsg"], "net: sendmsg with a destination"),
    tracked(TracePoint, "mcpm_sendmmsg_e", &["syscalls:sys_enter_sendmmsg"], "net: sendmmsg with a destination"),
    tracked(
        TracePoint,
        "mcpm_connect_x",
        &["syscalls:sys_exit_connect", "syscalls:sys_exit_sendto", "syscalls:sys_exit_sendmsg", "syscalls:sys_exit_sendmmsg"],
        "net: connect/send result",
    ),
    tracked(TracePoint, "mcpm_ptrace_e", &["syscalls:sys_enter_ptrace"], "ptrace of another process"),
    tracked(TracePoint, "mcpm_vm_read_e", &["syscalls:sys_enter_process_vm_readv"], "process_vm_readv of another process"),
    tracked(TracePoint, "mcpm_getfd_e", &["syscalls:sys_enter_pidfd_getfd"], "pidfd_getfd of another process's file").optional(),
    tracked(TracePoint, "mcpm_vm_write_e", &["syscalls:sys_enter_process_vm_writev"], "process_vm_writev of another process"),
    tracked(TracePoint, "mcpm_uring_enter", &["syscalls:sys_enter_io_uring_enter"], "io_uring_enter on a ring set up elsewhere").optional(),
    // Not a syscall tracepoint: it fires only when a ring is created.
    always(TracePoint, "mcpm_io_uring", &["io_uring:io_uring_create"], "io_uring set up by a tracked process").optional(),
    tracked(TracePoint, "mcpm_read_e", &["syscalls:sys_enter_read"], "stdio: read entry"),
    tracked(TracePoint, "mcpm_write_e", &["syscalls:sys_enter_write"], "stdio: write entry"),
    tracked(TracePoint, "mcpm_rw_x", &["syscalls:sys_exit_read", "syscalls:sys_exit_write"], "stdio: bytes read/written on a server's stdio pipe"),
    // HTTP capture (http.rs): read/write above serve accepted sockets too.
    tracked(TracePoint, "mcpm_accept_x", &["syscalls:sys_exit_accept", "syscalls:sys_exit_accept4"], "http: socket accepted by a server"),
    tracked(TracePoint, "mcpm_close_e", &["syscalls:sys_enter_close"], "http: accepted socket closed"),
    tracked(TracePoint, "mcpm_recvfrom_e", &["syscalls:sys_enter_recvfrom"], "http: recvfrom entry"),
    tracked(TracePoint, "mcpm_sendto_d_e", &["syscalls:sys_enter_sendto"], "http: sendto entry"),
    tracked(TracePoint, "mcpm_readv_e", &["syscalls:sys_enter_readv"], "http: readv entry"),
    tracked(TracePoint, "mcpm_writev_e", &["syscalls:sys_enter_writev"], "http: writev entry"),
    tracked(
        TracePoint,
        "mcpm_sock_x",
        &["syscalls:sys_exit_recvfrom", "syscalls:sys_exit_sendto", "syscalls:sys_exit_readv", "syscalls:sys_exit_writev"],
        "http: bytes moved on an accepted socket",
    ),
    // The ia32 (`int $0x80`) syscalls on the tracepoint path: one `tp_btf` program on every
    // syscall exit of the machine (compat.rs), so only where ia32 emulation is on.
    tracked(BtfTracePoint, "mcpm_compat_x", &["sys_exit"], "ia32 syscalls (tp_btf)"),
    // The fast path (fast.rs): fentry/fexit on the x86_64 syscall wrappers, calling the same
    // handlers as the syscall tracepoints above, which they replace where the kernel has BPF
    // trampolines. An optional one is skipped where this kernel's BTF lacks its function.
    tracked(FEntry, "mcpmf_execve_e", &["__x64_sys_execve"], "exec: execve entry"),
    tracked(FExit, "mcpmf_execve_x", &["__x64_sys_execve"], "exec: execve result"),
    tracked(FEntry, "mcpmf_execvat_e", &["__x64_sys_execveat"], "exec: execveat entry"),
    tracked(FExit, "mcpmf_execvat_x", &["__x64_sys_execveat"], "exec: execveat result"),
    tracked(FEntry, "mcpmf_open_e", &["__x64_sys_open"], "file: open entry").optional(),
    tracked(FExit, "mcpmf_open_x", &["__x64_sys_open"], "file: open result").optional(),
    tracked(FEntry, "mcpmf_creat_e", &["__x64_sys_creat"], "file: creat entry").optional(),
    tracked(FExit, "mcpmf_creat_x", &["__x64_sys_creat"], "file: creat result").optional(),
    tracked(FEntry, "mcpmf_openat_e", &["__x64_sys_openat"], "file: openat entry"),
    tracked(FExit, "mcpmf_openat_x", &["__x64_sys_openat"], "file: openat result"),
    tracked(FEntry, "mcpmf_openat2_e", &["__x64_sys_openat2"], "file: openat2 entry"),
    tracked(FExit, "mcpmf_openat2_x", &["__x64_sys_openat2"], "file: openat2 result"),
    tracked(FEntry, "mcpmf_connect_e", &["__x64_sys_connect"], "net: connect entry"),
    tracked(FExit, "mcpmf_connect_x", &["__x64_sys_connect"], "net: connect result"),
    tracked(FEntry, "mcpmf_sendto_e", &["__x64_sys_sendto"], "net: sendto entry"),
    tracked(FExit, "mcpmf_sendto_x", &["__x64_sys_sendto"], "net: sendto result"),
    tracked(FEntry, "mcpmf_sendmsg_e", &["__x64_sys_sendmsg"], "net: sendmsg entry"),
    tracked(FExit, "mcpmf_sendmsg_x", &["__x64_sys_sendmsg"], "net: sendmsg result"),
    tracked(FEntry, "mcpmf_sendmmsg_e", &["__x64_sys_sendmmsg"], "net: sendmmsg entry"),
    tracked(FExit, "mcpmf_sendmmsg_x", &["__x64_sys_sendmmsg"], "net: sendmmsg result"),
    tracked(FEntry, "mcpmf_read_e", &["__x64_sys_read"], "stdio: read entry"),
    tracked(FExit, "mcpmf_read_x", &["__x64_sys_read"], "stdio: read result"),
    tracked(FEntry, "mcpmf_write_e", &["__x64_sys_write"], "stdio: write entry"),
    tracked(FExit, "mcpmf_write_x", &["__x64_sys_write"], "stdio: write result"),
    tracked(FEntry, "mcpmf_ptrace_e", &["__x64_sys_ptrace"], "ptrace entry"),
    tracked(FExit, "mcpmf_ptrace_x", &["__x64_sys_ptrace"], "ptrace result"),
    tracked(FEntry, "mcpmf_vm_read_e", &["__x64_sys_process_vm_readv"], "process_vm_readv entry"),
    tracked(FExit, "mcpmf_vm_read_x", &["__x64_sys_process_vm_readv"], "process_vm_readv result"),
    tracked(FEntry, "mcpmf_vm_write_e", &["__x64_sys_process_vm_writev"], "process_vm_writev entry"),
    tracked(FExit, "mcpmf_vm_write_x", &["__x64_sys_process_vm_writev"], "process_vm_writev result"),
    // The HTTP capture (http.rs): a second program pair on sendto next to the net one; accept
    // is exit-only (only its result matters), close entry-only.
    tracked(FExit, "mcpmf_accept_x", &["__x64_sys_accept"], "http: accept result"),
    tracked(FExit, "mcpmf_accept4_x", &["__x64_sys_accept4"], "http: accept4 result"),
    tracked(FEntry, "mcpmf_close_e", &["__x64_sys_close"], "http: close entry"),
    tracked(FEntry, "mcpmf_recvfr_e", &["__x64_sys_recvfrom"], "http: recvfrom entry"),
    tracked(FExit, "mcpmf_recvfr_x", &["__x64_sys_recvfrom"], "http: recvfrom result"),
    tracked(FEntry, "mcpmf_sendto_de", &["__x64_sys_sendto"], "http: sendto entry"),
    tracked(FExit, "mcpmf_sendto_dx", &["__x64_sys_sendto"], "http: sendto result"),
    tracked(FEntry, "mcpmf_readv_e", &["__x64_sys_readv"], "http: readv entry"),
    tracked(FExit, "mcpmf_readv_x", &["__x64_sys_readv"], "http: readv result"),
    tracked(FEntry, "mcpmf_writev_e", &["__x64_sys_writev"], "http: writev entry"),
    tracked(FExit, "mcpmf_writev_x", &["__x64_sys_writev"], "http: writev result"),
    tracked(FEntry, "mcpmf_getfd_e", &["__x64_sys_pidfd_getfd"], "pidfd_getfd entry").optional(),
    tracked(FEntry, "mcpmc_getfd_e", &["__ia32_sys_pidfd_getfd"], "pidfd_getfd entry (ia32)").optional(),
    tracked(FEntry, "mcpmf_uring_enter_e", &["__x64_sys_io_uring_enter"], "io_uring_enter entry").optional(),
    tracked(FEntry, "mcpmc_uring_enter_e", &["__ia32_sys_io_uring_enter"], "io_uring_enter entry (ia32)").optional(),
    // Not a syscall: a new task's first run, where an untrackable child dies (process.rs).
    tracked(FEntry, "mcpmf_newtask_e", &["schedule_tail"], "process tree: a child that could not be tracked dies at its first run").optional(),
    // Not a syscall: the kill of a protected open before its fd exists (enforce.rs).
    tracked(FEntry, "mcpmf_file_open_e", &["security_file_open"], "enforce: kill a protected open before its fd exists").optional(),
    // ia32 entries (`int $0x80`): absent where the kernel has no IA32 emulation.
    tracked(FEntry, "mcpmc_open_e", &["__ia32_compat_sys_open"], "file: open entry (ia32)").optional(),
    tracked(FExit, "mcpmc_open_x", &["__ia32_compat_sys_open"], "file: open result (ia32)").optional(),
    tracked(FEntry, "mcpmc_creat_e", &["__ia32_sys_creat"], "file: creat entry (ia32)").optional(),
    tracked(FExit, "mcpmc_creat_x", &["__ia32_sys_creat"], "file: creat result (ia32)").optional(),
    tracked(FEntry, "mcpmc_openat_e", &["__ia32_compat_sys_openat"], "file: openat entry (ia32)").optional(),
    tracked(FExit, "mcpmc_openat_x", &["__ia32_compat_sys_openat"], "file: openat result (ia32)").optional(),
    tracked(FEntry, "mcpmc_openat2_e", &["__ia32_sys_openat2"], "file: openat2 entry (ia32)").optional(),
    tracked(FExit, "mcpmc_openat2_x", &["__ia32_sys_openat2"], "file: openat2 result (ia32)").optional(),
    tracked(FEntry, "mcpmc_execve_e", &["__ia32_compat_sys_execve"], "exec: execve entry (ia32)").optional(),
    tracked(FExit, "mcpmc_execve_x", &["__ia32_compat_sys_execve"], "exec: execve result (ia32)").optional(),
    tracked(FEntry, "mcpmc_execvat_e", &["__ia32_compat_sys_execveat"], "exec: execveat entry (ia32)").optional(),
    tracked(FExit, "mcpmc_execvat_x", &["__ia32_compat_sys_execveat"], "exec: execveat result (ia32)").optional(),
    tracked(FEntry, "mcpmc_connect_e", &["__ia32_sys_connect"], "net: connect entry (ia32)").optional(),
    tracked(FExit, "mcpmc_connect_x", &["__ia32_sys_connect"], "net: connect result (ia32)").optional(),
    tracked(FEntry, "mcpmc_sendto_e", &["__ia32_sys_sendto"], "net: sendto entry (ia32)").optional(),
    tracked(FExit, "mcpmc_sendto_x", &["__ia32_sys_sendto"], "net: sendto result (ia32)").optional(),
    tracked(FEntry, "mcpmc_sendmsg_e", &["__ia32_compat_sys_sendmsg"], "net: sendmsg entry (ia32)").optional(),
    tracked(FExit, "mcpmc_sendmsg_x", &["__ia32_compat_sys_sendmsg"], "net: sendmsg result (ia32)").optional(),
    tracked(FEntry, "mcpmc_sendmmsg_e", &["__ia32_compat_sys_sendmmsg"], "net: sendmmsg entry (ia32)").optional(),
    tracked(FExit, "mcpmc_sendmmsg_x", &["__ia32_compat_sys_sendmmsg"], "net: sendmmsg result (ia32)").optional(),
    tracked(FEntry, "mcpmc_sockcall_e", &["__ia32_compat_sys_socketcall"], "net: socketcall entry (ia32)").optional(),
    tracked(FExit, "mcpmc_sockcall_x", &["__ia32_compat_sys_socketcall"], "net: socketcall result (ia32)").optional(),
    tracked(FEntry, "mcpmc_ptrace_e", &["__ia32_compat_sys_ptrace"], "ptrace entry (ia32)").optional(),
    tracked(FExit, "mcpmc_ptrace_x", &["__ia32_compat_sys_ptrace"], "ptrace result (ia32)").optional(),
    tracked(FEntry, "mcpmc_vm_read_e", &["__ia32_sys_process_vm_readv"], "process_vm_readv entry (ia32)").optional(),
    tracked(FExit, "mcpmc_vm_read_x", &["__ia32_sys_process_vm_readv"], "process_vm_readv result (ia32)").optional(),
    tracked(FEntry, "mcpmc_vm_write_e", &["__ia32_sys_process_vm_writev"], "process_vm_writev entry (ia32)").optional(),
    tracked(FExit, "mcpmc_vm_write_x", &["__ia32_sys_process_vm_writev"], "process_vm_writev result (ia32)").optional(),
    // open/exec deny (lsm.rs), all or none: a kernel that takes one takes the other.
    tracked(Lsm, "mcpm_lsm_file_open", &["file_open"], "open deny (BPF-LSM)"),
    tracked(Lsm, "mcpm_lsm_bprm", &["bprm_check_security"], "exec deny (BPF-LSM)"),
    // connect/sendmsg deny (cgroup.rs), on the cgroup v2 root, all or none.
    tracked(CgroupSockAddr, "mcpm_deny_connect4", &["connect4"], "connect/sendmsg deny"),
    tracked(CgroupSockAddr, "mcpm_deny_connect6", &["connect6"], "connect/sendmsg deny"),
    tracked(CgroupSockAddr, "mcpm_deny_sendmsg4", &["sendmsg4"], "connect/sendmsg deny"),
    tracked(CgroupSockAddr, "mcpm_deny_sendmsg6", &["sendmsg6"], "connect/sendmsg deny"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_program_with_hooks_its_kind_can_take() {
        for (i, p) in PROGRAMS.iter().enumerate() {
            assert!(!p.name.is_empty());
            assert!(PROGRAMS[..i].iter().all(|q| q.name != p.name), "{} listed twice", p.name);
            assert!(!p.hooks.is_empty(), "{} attaches nowhere", p.name);
            match p.kind {
                Kind::TracePoint => assert!(p.hooks.iter().all(|h| h.contains(':')), "{}: category:name", p.name),
                _ => assert_eq!(p.hooks.len(), 1, "{}: one hook per program of this kind", p.name),
            }
        }
    }

    #[test]
    fn lifetimes_the_loader_supports() {
        // The loader attaches `Always` programs only on the tracepoint kind; the deny families
        // and the fast path come and go with tracking.
        for p in PROGRAMS.iter().filter(|p| p.lifetime == Lifetime::Always) {
            assert_eq!(p.kind, Kind::TracePoint, "{}", p.name);
            assert!(p.hooks.iter().all(|h| !h.starts_with("syscalls:")), "{}: a syscall tracepoint slows every syscall of the machine", p.name);
        }
        for p in of_kind(Kind::TracePoint).filter(|p| p.lifetime == Lifetime::WhileTracked) {
            assert!(p.hooks.iter().all(|h| h.starts_with("syscalls:")), "{}", p.name);
        }
    }

    #[test]
    fn exit_hooks_are_told_apart() {
        let open_x = PROGRAMS.iter().find(|p| p.name == "mcpm_open_x").unwrap();
        assert!(open_x.is_exit("syscalls:sys_exit_openat"));
        assert_eq!(Program::tracepoint("syscalls:sys_exit_openat"), ("syscalls", "sys_exit_openat"));
        let fexit = of_kind(Kind::FExit).next().unwrap();
        assert!(fexit.is_exit(fexit.hooks[0]));
        assert!(!of_kind(Kind::FEntry).next().unwrap().is_exit("__x64_sys_execve"));
        assert!(!of_kind(Kind::BtfTracePoint).next().unwrap().is_exit("sys_exit"));
    }
}
