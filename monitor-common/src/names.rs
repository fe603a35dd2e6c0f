//! Map and program names shared by the kernel object and the loader.

pub const MAP_TRACKED: &str = "TRACKED";
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_LOST: &str = "LOST";
/// server id → events of that server the kernel could not deliver (any reason).
pub const MAP_LOST_BY_SERVER: &str = "LOST_BY_SERVER";
pub const MAP_STDIO_PIPES: &str = "STDIO_PIPES";
/// tgid → ktime: provisional servers stopped at exec while the syscall hooks were detached; the
/// daemon attaches the hooks, then continues them (hold.rs).
pub const MAP_HELD: &str = "HELD";
/// [0] = 1 while the on-demand syscall hooks are attached (set by the daemon).
pub const MAP_HOOKS_LIVE: &str = "HOOKS_LIVE";
/// tgid → `HandshakeCandidate`: piped processes awaiting their first stdin read (handshake.rs).
pub const MAP_HANDSHAKE: &str = "HANDSHAKE";
/// [0] = 1 when handshake discovery is on (set by the daemon).
pub const MAP_HANDSHAKE_ON: &str = "HANDSHAKE_ON";
/// Sockets tracked servers accepted (HTTP capture), by inode.
pub const MAP_HTTP_SOCKS: &str = "HTTP_SOCKS";
pub const MAP_CANDIDATE_COMMS: &str = "CANDIDATE_COMMS";
pub const MAP_PROTECTED: &str = "PROTECTED";
pub const MAP_NET_POLICY_V4: &str = "NET_POLICY_V4";
pub const MAP_NET_POLICY_V6: &str = "NET_POLICY_V6";
pub const MAP_POLICY: &str = "POLICY";
/// (server id << 32 | rule slot) → 1: a server granted a file rule (docs/rules.md, grants).
pub const MAP_GRANTS: &str = "GRANTS";
pub const MAP_PENDING_OPEN: &str = "PENDING_OPEN";
/// tid → tracking of threads of tracked processes that exited lately (LRU).
pub const MAP_EXITED: &str = "EXITED";

/// cgroup `sock_addr` programs (deny), attached to the cgroup v2 root: (program, attach point).
pub const CGROUP_PROGRAMS: &[(&str, &str)] = &[
    ("mcpm_deny_connect4", "connect4"),
    ("mcpm_deny_connect6", "connect6"),
    ("mcpm_deny_sendmsg4", "sendmsg4"),
    ("mcpm_deny_sendmsg6", "sendmsg6"),
];

/// Kind of kernel hook a program attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `category:name` tracepoint.
    TracePoint { category: &'static str, name: &'static str },
}

impl Hook {
    /// Syscall tracepoints put every syscall of every process on the kernel's slow path as soon as
    /// one is attached, so they are attached only while something is tracked.
    pub fn on_demand(&self) -> bool {
        matches!(self, Hook::TracePoint { category: "syscalls", .. })
    }

    /// Exit hooks go in before entry hooks (and come out after them), so that no entry is saved
    /// without its exit hook there to complete it.
    pub fn is_syscall_exit(&self) -> bool {
        matches!(self, Hook::TracePoint { category: "syscalls", name } if name.starts_with("sys_exit"))
    }
}

/// One program and every hook it is attached to. A program may serve several syscalls whose
/// tracepoints share a layout (all open exits carry just `ret`).
#[derive(Clone, Copy, Debug)]
pub struct ProgramSpec {
    /// Function name in `monitor-ebpf` (also the kernel's program name, at most 15 bytes).
    pub name: &'static str,
    /// What the program observes, for start-up logs.
    pub purpose: &'static str,
    pub hooks: &'static [Hook],
    /// Whether the daemon can run without it (an arch without `open`/`creat`).
    pub optional: bool,
}

const fn tp(category: &'static str, name: &'static str) -> Hook {
    Hook::TracePoint { category, name }
}

/// The tracepoint programs, in attach order: the process-tree hooks first so that a child forked
/// during start-up is not missed. The object's other programs have tables of their own:
/// [`FAST_PROGRAMS`] (fentry/fexit twins), [`CGROUP_PROGRAMS`] (deny), [`COMPAT_RAW`] (ia32 on
/// the tracepoint path), and the BPF-LSM programs in the daemon's `probes/lsm.rs`.
pub const PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec { name: "mcpm_fork", purpose: "process tree: inherit tracking on fork", hooks: &[tp("task", "task_newtask")], optional: false },
    ProgramSpec { name: "mcpm_exit", purpose: "process tree: exit and untrack", hooks: &[tp("sched", "sched_process_exit")], optional: false },
    ProgramSpec { name: "mcpm_exec", purpose: "exec: new image started", hooks: &[tp("sched", "sched_process_exec")], optional: false },
    ProgramSpec {
        name: "mcpm_fork_x",
        purpose: "process tree: a child that could not be tracked dies before its first instruction",
        hooks: &[tp("syscalls", "sys_exit_clone"), tp("syscalls", "sys_exit_clone3"), tp("syscalls", "sys_exit_fork"), tp("syscalls", "sys_exit_vfork")],
        optional: false,
    },
    ProgramSpec { name: "mcpm_execve_e", purpose: "exec: execve entry", hooks: &[tp("syscalls", "sys_enter_execve")], optional: false },
    ProgramSpec { name: "mcpm_execvat_e", purpose: "exec: execveat entry", hooks: &[tp("syscalls", "sys_enter_execveat")], optional: false },
    ProgramSpec { name: "mcpm_exec_x", purpose: "exec: failed exec result", hooks: &[tp("syscalls", "sys_exit_execve"), tp("syscalls", "sys_exit_execveat")], optional: false },
    ProgramSpec { name: "mcpm_open_e", purpose: "file: open entry", hooks: &[tp("syscalls", "sys_enter_open")], optional: true },
    ProgramSpec { name: "mcpm_creat_e", purpose: "file: creat entry", hooks: &[tp("syscalls", "sys_enter_creat")], optional: true },
    ProgramSpec { name: "mcpm_openat_e", purpose: "file: openat entry", hooks: &[tp("syscalls", "sys_enter_openat")], optional: false },
    ProgramSpec { name: "mcpm_openat2_e", purpose: "file: openat2 entry", hooks: &[tp("syscalls", "sys_enter_openat2")], optional: false },
    ProgramSpec {
        name: "mcpm_open_x",
        purpose: "file: open result",
        hooks: &[
            tp("syscalls", "sys_exit_open"),
            tp("syscalls", "sys_exit_creat"),
            tp("syscalls", "sys_exit_openat"),
            tp("syscalls", "sys_exit_openat2"),
        ],
        optional: false,
    },
    ProgramSpec { name: "mcpm_connect_e", purpose: "net: connect entry", hooks: &[tp("syscalls", "sys_enter_connect")], optional: false },
    ProgramSpec { name: "mcpm_sendto_e", purpose: "net: sendto with a destination", hooks: &[tp("syscalls", "sys_enter_sendto")], optional: false },
    ProgramSpec { name: "mcpm_sendmsg_e", purpose: "net: sendmsg with a destination", hooks: &[tp("syscalls", "sys_enter_sendmsg")], optional: false },
    ProgramSpec { name: "mcpm_sendmmsg_e", purpose: "net: sendmmsg with a destination", hooks: &[tp("syscalls", "sys_enter_sendmmsg")], optional: false },
    ProgramSpec {
        name: "mcpm_connect_x",
        purpose: "net: connect/send result",
        hooks: &[tp("syscalls", "sys_exit_connect"), tp("syscalls", "sys_exit_sendto"), tp("syscalls", "sys_exit_sendmsg"), tp("syscalls", "sys_exit_sendmmsg")],
        optional: false,
    },
    ProgramSpec { name: "mcpm_ptrace_e", purpose: "ptrace of another process", hooks: &[tp("syscalls", "sys_enter_ptrace")], optional: false },
    ProgramSpec { name: "mcpm_vm_read_e", purpose: "process_vm_readv of another process", hooks: &[tp("syscalls", "sys_enter_process_vm_readv")], optional: false },
    ProgramSpec { name: "mcpm_getfd_e", purpose: "pidfd_getfd of another process's file", hooks: &[tp("syscalls", "sys_enter_pidfd_getfd")], optional: true },
    ProgramSpec { name: "mcpm_vm_write_e", purpose: "process_vm_writev of another process", hooks: &[tp("syscalls", "sys_enter_process_vm_writev")], optional: false },
    ProgramSpec { name: "mcpm_uring_enter", purpose: "io_uring_enter on a ring set up elsewhere", hooks: &[tp("syscalls", "sys_enter_io_uring_enter")], optional: true },
    ProgramSpec { name: "mcpm_io_uring", purpose: "io_uring set up by a tracked process", hooks: &[tp("io_uring", "io_uring_create")], optional: true },
    ProgramSpec { name: "mcpm_read_e", purpose: "stdio: read entry", hooks: &[tp("syscalls", "sys_enter_read")], optional: false },
    ProgramSpec { name: "mcpm_write_e", purpose: "stdio: write entry", hooks: &[tp("syscalls", "sys_enter_write")], optional: false },
    ProgramSpec {
        name: "mcpm_rw_x",
        purpose: "stdio: bytes read/written on a server's stdio pipe",
        hooks: &[tp("syscalls", "sys_exit_read"), tp("syscalls", "sys_exit_write")],
        optional: false,
    },
    // HTTP capture (http.rs): read/write above serve accepted sockets too.
    ProgramSpec { name: "mcpm_accept_x", purpose: "http: socket accepted by a server", hooks: &[tp("syscalls", "sys_exit_accept"), tp("syscalls", "sys_exit_accept4")], optional: false },
    ProgramSpec { name: "mcpm_close_e", purpose: "http: accepted socket closed", hooks: &[tp("syscalls", "sys_enter_close")], optional: false },
    ProgramSpec { name: "mcpm_recvfrom_e", purpose: "http: recvfrom entry", hooks: &[tp("syscalls", "sys_enter_recvfrom")], optional: false },
    ProgramSpec { name: "mcpm_sendto_d_e", purpose: "http: sendto entry", hooks: &[tp("syscalls", "sys_enter_sendto")], optional: false },
    ProgramSpec { name: "mcpm_readv_e", purpose: "http: readv entry", hooks: &[tp("syscalls", "sys_enter_readv")], optional: false },
    ProgramSpec { name: "mcpm_writev_e", purpose: "http: writev entry", hooks: &[tp("syscalls", "sys_enter_writev")], optional: false },
    ProgramSpec {
        name: "mcpm_sock_x",
        purpose: "http: bytes moved on an accepted socket",
        hooks: &[
            tp("syscalls", "sys_exit_recvfrom"),
            tp("syscalls", "sys_exit_sendto"),
            tp("syscalls", "sys_exit_readv"),
            tp("syscalls", "sys_exit_writev"),
        ],
        optional: false,
    },
];


/// One syscall on the fast observation path: an fentry and an fexit program on its x86_64
/// wrapper `__x64_sys_NAME`, calling the same handlers as the syscall tracepoints of
/// [`PROGRAMS`] (which they replace wherever the kernel has BPF trampolines).
#[derive(Clone, Copy, Debug)]
pub struct FastSpec {
    pub syscall: &'static str,
    pub entry: &'static str,
    pub exit: &'static str,
    /// The kernel function both are bound to.
    pub function: &'static str,
    /// Empty: an entry-only program (no fexit).
    /// Whether the daemon can run without it (as for [`ProgramSpec::optional`]).
    pub optional: bool,
}

impl FastSpec {
    pub const fn has_exit(&self) -> bool {
        !self.exit.is_empty()
    }
    /// Empty `entry`: an exit-only program (accept: only its result matters).
    pub const fn has_entry(&self) -> bool {
        !self.entry.is_empty()
    }
}

const fn fast(syscall: &'static str, entry: &'static str, exit: &'static str, function: &'static str, optional: bool) -> FastSpec {
    FastSpec { syscall, entry, exit, function, optional }
}

/// The fast path covers every syscall the on-demand tracepoints of [`PROGRAMS`] cover.
pub const FAST_PROGRAMS: &[FastSpec] = &[
    fast("execve", "mcpmf_execve_e", "mcpmf_execve_x", "__x64_sys_execve", false),
    fast("execveat", "mcpmf_execvat_e", "mcpmf_execvat_x", "__x64_sys_execveat", false),
    fast("open", "mcpmf_open_e", "mcpmf_open_x", "__x64_sys_open", true),
    fast("creat", "mcpmf_creat_e", "mcpmf_creat_x", "__x64_sys_creat", true),
    fast("openat", "mcpmf_openat_e", "mcpmf_openat_x", "__x64_sys_openat", false),
    fast("openat2", "mcpmf_openat2_e", "mcpmf_openat2_x", "__x64_sys_openat2", false),
    fast("connect", "mcpmf_connect_e", "mcpmf_connect_x", "__x64_sys_connect", false),
    fast("sendto", "mcpmf_sendto_e", "mcpmf_sendto_x", "__x64_sys_sendto", false),
    fast("sendmsg", "mcpmf_sendmsg_e", "mcpmf_sendmsg_x", "__x64_sys_sendmsg", false),
    fast("sendmmsg", "mcpmf_sendmmsg_e", "mcpmf_sendmmsg_x", "__x64_sys_sendmmsg", false),
    fast("read", "mcpmf_read_e", "mcpmf_read_x", "__x64_sys_read", false),
    fast("write", "mcpmf_write_e", "mcpmf_write_x", "__x64_sys_write", false),
    fast("ptrace", "mcpmf_ptrace_e", "mcpmf_ptrace_x", "__x64_sys_ptrace", false),
    fast("process_vm_readv", "mcpmf_vm_read_e", "mcpmf_vm_read_x", "__x64_sys_process_vm_readv", false),
    fast("process_vm_writev", "mcpmf_vm_write_e", "mcpmf_vm_write_x", "__x64_sys_process_vm_writev", false),
    // Not a syscall: a new task's first run, where an untrackable child dies (process.rs).
    // The HTTP capture (http.rs): a second program pair on sendto next to the net one.
    fast("accept (http)", "", "mcpmf_accept_x", "__x64_sys_accept", false),
    fast("accept4 (http)", "", "mcpmf_accept4_x", "__x64_sys_accept4", false),
    fast("close (http)", "mcpmf_close_e", "", "__x64_sys_close", false),
    fast("recvfrom (http)", "mcpmf_recvfr_e", "mcpmf_recvfr_x", "__x64_sys_recvfrom", false),
    fast("sendto (http)", "mcpmf_sendto_de", "mcpmf_sendto_dx", "__x64_sys_sendto", false),
    fast("readv (http)", "mcpmf_readv_e", "mcpmf_readv_x", "__x64_sys_readv", false),
    fast("writev (http)", "mcpmf_writev_e", "mcpmf_writev_x", "__x64_sys_writev", false),
    fast("pidfd_getfd", "mcpmf_getfd_e", "", "__x64_sys_pidfd_getfd", true),
    fast("pidfd_getfd (ia32)", "mcpmc_getfd_e", "", "__ia32_sys_pidfd_getfd", true),
    fast("io_uring_enter", "mcpmf_uring_enter_e", "", "__x64_sys_io_uring_enter", true),
    fast("io_uring_enter (ia32)", "mcpmc_uring_enter_e", "", "__ia32_sys_io_uring_enter", true),
    fast("first run of a new task", "mcpmf_newtask_e", "", "schedule_tail", true),
    // Not a syscall: the kill of a protected open before its fd exists (enforce.rs).
    fast("file open check", "mcpmf_file_open_e", "", "security_file_open", true),
    // ia32 entries (`int $0x80`): absent where the kernel has no IA32 emulation.
    fast("open (ia32)", "mcpmc_open_e", "mcpmc_open_x", "__ia32_compat_sys_open", true),
    fast("creat (ia32)", "mcpmc_creat_e", "mcpmc_creat_x", "__ia32_sys_creat", true),
    fast("openat (ia32)", "mcpmc_openat_e", "mcpmc_openat_x", "__ia32_compat_sys_openat", true),
    fast("openat2 (ia32)", "mcpmc_openat2_e", "mcpmc_openat2_x", "__ia32_sys_openat2", true),
    fast("execve (ia32)", "mcpmc_execve_e", "mcpmc_execve_x", "__ia32_compat_sys_execve", true),
    fast("execveat (ia32)", "mcpmc_execvat_e", "mcpmc_execvat_x", "__ia32_compat_sys_execveat", true),
    fast("connect (ia32)", "mcpmc_connect_e", "mcpmc_connect_x", "__ia32_sys_connect", true),
    fast("sendto (ia32)", "mcpmc_sendto_e", "mcpmc_sendto_x", "__ia32_sys_sendto", true),
    fast("sendmsg (ia32)", "mcpmc_sendmsg_e", "mcpmc_sendmsg_x", "__ia32_compat_sys_sendmsg", true),
    fast("sendmmsg (ia32)", "mcpmc_sendmmsg_e", "mcpmc_sendmmsg_x", "__ia32_compat_sys_sendmmsg", true),
    fast("socketcall (ia32)", "mcpmc_sockcall_e", "mcpmc_sockcall_x", "__ia32_compat_sys_socketcall", true),
    fast("ptrace (ia32)", "mcpmc_ptrace_e", "mcpmc_ptrace_x", "__ia32_compat_sys_ptrace", true),
    fast("process_vm_readv (ia32)", "mcpmc_vm_read_e", "mcpmc_vm_read_x", "__ia32_sys_process_vm_readv", true),
    fast("process_vm_writev (ia32)", "mcpmc_vm_write_e", "mcpmc_vm_write_x", "__ia32_sys_process_vm_writev", true),
];

/// The ia32 (`int $0x80`) syscalls on the tracepoint path: raw tracepoint programs (program,
/// raw tracepoint), attached with the syscall tracepoints (one, on `sys_exit`: see compat.rs).
pub const COMPAT_RAW: &[(&str, &str)] = &[("mcpm_compat_x", "sys_exit")];
