//! The contract between mcpmon's kernel programs (`monitor-ebpf`) and the daemon (`monitor`).
//!
//! Every record that crosses the ring buffer or lives in a map is `#[repr(C)]`, `Copy`, has its
//! padding spelled out, and has a compile-time size assert: the kernel side writes these bytes and
//! the daemon reads them, so a silent layout change would corrupt every event. Event records start
//! with [`EventHeader`]; variable-length records (exec, open) are sent only up to the bytes used,
//! so the decoder must accept any length between the fixed part and the full record.
#![no_std]

mod comm_filter;
mod enforce;
pub mod names;
mod sockname;
pub mod programs;

pub use comm_filter::*;
pub use enforce::*;
pub use sockname::*;

/// Capacity for paths read from user memory (PATH_MAX).
pub const PATH_CAP: usize = 4096;

/// The kernel's ceiling for pid_max on 64-bit (`PID_MAX_LIMIT`, 2^22): every pid is below it.
/// `MAYBE_TRACKED` has a byte for each.
pub const PID_MAX_LIMIT: usize = 1 << 22;

/// Bytes of argv the kernel copies for one exec, NUL-separated. Reads start below this bound and
/// may run up to `2 * ARGS_SOFT_CAP` (the verifier needs a fixed read size), see `ExecEvent`.
pub const ARGS_SOFT_CAP: usize = 2048;
/// Most argv entries read per exec.
pub const MAX_ARGS: usize = 32;
/// Longest `sun_path` of a unix socket address.
pub const UNIX_PATH_CAP: usize = 108;

/// Event kinds, stable numbers: they are part of the wire format.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Open = 2,
    Connect = 3,
    Exit = 4,
    Fork = 5,
    Stdio = 6,
    /// A datagram sent with an explicit destination (`sendto`/`sendmsg`): `ConnectEvent` layout.
    Send = 7,
    /// The process set up an io_uring, whose operations bypass the syscall tracepoints.
    IoUring = 8,
    /// Bytes (or the accept/close) of a socket a tracked server accepted: `StdioEvent` layout,
    /// `dir` from [`sock_dir`].
    Sock = 9,
    /// The process reached into another process's memory (`ptrace`, `process_vm_readv`,
    /// `process_vm_writev`) outside its own server's tree. (9 is reserved for the HTTP capture.)
    ProcAccess = 10,
    /// Repeats of an event the kernel folded: [`RepeatEvent`].
    Repeat = 11,
    /// Handshake discovery: [`HandshakeEvent`].
    Handshake = 12,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Exec,
            2 => Self::Open,
            3 => Self::Connect,
            4 => Self::Exit,
            5 => Self::Fork,
            6 => Self::Stdio,
            7 => Self::Send,
            8 => Self::IoUring,
            9 => Self::Sock,
            10 => Self::ProcAccess,
            11 => Self::Repeat,
            12 => Self::Handshake,
            _ => return None,
        })
    }
}

/// Index of each counter in the `LOST` per-CPU array. Every place where the kernel has to give up
/// on an event increments one, so the daemon can report exactly what was not delivered.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// `bpf_ringbuf_output` failed: the daemon did not drain fast enough.
    RingbufFull = 0,
    /// The per-thread pending-syscall map was full at syscall entry.
    PendingFull = 1,
    /// The tracked-process map was full when a tracked process forked.
    TrackedFull = 2,
    /// `STDIO_PIPES` was full when a provisional server's stdio was registered at exec: its
    /// JSON-RPC is not captured.
    StdioFull = 3,
}
pub const LOST_REASONS: u32 = 4;

/// Bits of `EventHeader::flags`.
pub mod flags {
    /// argv had more entries or bytes than the kernel copies.
    pub const ARGS_TRUNCATED: u32 = 1 << 0;
    /// A path was longer than `PATH_CAP` (or the user pointer could not be read).
    pub const PATH_TRUNCATED: u32 = 1 << 1;
    /// The syscall's entry was not seen (e.g. the pending map was full); fields from entry are empty
    /// (an exec's argv is then the new image's, copied from its mm at exec).
    pub const NO_ENTRY: u32 = 1 << 2;
    /// A user pointer could not be read at all.
    pub const READ_FAILED: u32 = 1 << 3;
    /// The kernel sent SIGKILL to the process for this event (a protected file, a denied address,
    /// io_uring): it dies before the syscall returns to user code.
    pub const KILLED: u32 = 1 << 4;
    /// A cgroup `sock_addr` program refused this connect/send (the caller got EPERM).
    pub const DENIED: u32 = 1 << 5;
    /// The open gate (fanotify permission event, user space's answer) refused this open before
    /// any fd existed; set together with DENIED.
    pub const GATED: u32 = 1 << 7;
    /// The syscall came in through the ia32 entry (`int $0x80`), not the 64-bit one.
    pub const COMPAT: u32 = 1 << 6;
    /// io_uring events: `io_uring_enter` on a ring this process did not set up under mcpmon's
    /// eyes (taken with pidfd_getfd, or inherited from before it was tracked), not its setup.
    pub const URING_ENTER: u32 = 1 << 8;
}

/// Common header of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// [`EventKind`] as u32.
    pub kind: u32,
    /// Bits from [`flags`].
    pub flags: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// Parent's tgid (`real_parent`), read when the event is made.
    pub ppid: u32,
    /// Real uid of the task.
    pub uid: u32,
    /// Id of the tracked server (the root of the tracked tree) this process belongs to.
    pub server_id: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 40);

/// Server id the kernel gives a process it started tracking on its own at exec (its command is
/// configured in an MCP client, or its parent is an MCP client); the daemon then adopts it under a
/// real server id or drops it.
pub const PROVISIONAL_SERVER: u32 = u32::MAX;

/// Why the kernel tracks a process provisionally (`CANDIDATE_COMMS` value bits).
pub mod candidate {
    /// The executable's name is a command configured in an MCP client.
    pub const CONFIGURED: u32 = 1;
    /// The process is an MCP client: its children are sniffed for an MCP handshake.
    pub const CLIENT: u32 = 2;
}

/// Key of `CANDIDATE_COMMS`: a task comm (up to 15 bytes, NUL-padded).
pub type Comm = [u8; 16];

/// `comm` as the kernel stores it: the first 15 bytes, NUL-padded.
pub fn comm_key(name: &str) -> Comm {
    let mut k = [0u8; 16];
    let b = name.as_bytes();
    let n = b.len().min(15);
    k[..n].copy_from_slice(&b[..n]);
    k
}

/// Value of the `TRACKED` map, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackInfo {
    pub server_id: u32,
    /// tgid of the process that was put under watch (the root of this tree).
    pub root_tgid: u32,
}
const _: () = assert!(core::mem::size_of::<TrackInfo>() == 8);

/// Which exec syscall.
pub mod exec_syscall {
    pub const EXECVE: u32 = 1;
    pub const EXECVEAT: u32 = 2;
}

/// An exec, successful (`ret == 0`, sent when the new image starts) or failed (`ret` = -errno).
///
/// `data` holds the filename (`filename_len` bytes, no NUL) followed by argv (`args_len` bytes,
/// each argument NUL-terminated). Only `DATA_OFFSET + filename_len + args_len` bytes are sent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub hdr: EventHeader,
    pub ret: i32,
    pub syscall: u32,
    /// execveat's dirfd (AT_FDCWD for execve).
    pub dirfd: i32,
    /// execveat's flags.
    pub at_flags: u32,
    pub argc: u32,
    pub filename_len: u32,
    pub args_len: u32,
    /// The `PROTECTED` value of the new image that made the kernel kill (0 otherwise).
    pub policy: u32,
    pub data: [u8; ExecEvent::DATA_CAP],
}
impl ExecEvent {
    pub const DATA_CAP: usize = PATH_CAP + 2 * ARGS_SOFT_CAP;
    pub const DATA_OFFSET: usize = core::mem::size_of::<EventHeader>() + 32;
}
const _: () = assert!(core::mem::size_of::<ExecEvent>() == ExecEvent::DATA_OFFSET + ExecEvent::DATA_CAP);

/// Which open syscall.
pub mod open_syscall {
    pub const OPEN: u32 = 1;
    pub const OPENAT: u32 = 2;
    pub const OPENAT2: u32 = 3;
    pub const CREAT: u32 = 4;
}

/// An open: the path exactly as the process passed it, and the result (fd or -errno).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenEvent {
    pub hdr: EventHeader,
    /// fd on success, -errno on failure.
    pub ret: i64,
    /// openat2's `how.resolve` (RESOLVE_* bits); 0 for the others.
    pub resolve: u64,
    /// Identity of a foldable open (path, flags, mode, dirfd, inode, result class; see
    /// [`RepeatEvent`]); 0 when the kernel may not fold it.
    pub fold_sig: u64,
    /// Inode and device (kernel `dev_t`) of the opened file (successful opens).
    pub ino: u64,
    pub dev: u32,
    /// The `PROTECTED` value that made the kernel kill (0 otherwise): protect bits | rule slot << 16.
    pub policy: u32,
    /// Raw O_* flags (creat is reported as O_CREAT|O_WRONLY|O_TRUNC).
    pub open_flags: u32,
    pub mode: u32,
    /// dirfd (AT_FDCWD = -100 for open/creat).
    pub dirfd: i32,
    pub syscall: u32,
    pub path_len: u32,
    pub _pad: u32,
    pub path: [u8; PATH_CAP],
}
impl OpenEvent {
    pub const DATA_OFFSET: usize = core::mem::size_of::<EventHeader>() + 64;
}
const _: () = assert!(core::mem::size_of::<OpenEvent>() == OpenEvent::DATA_OFFSET + PATH_CAP);

/// A connect: the destination as given and the result (0, -EINPROGRESS, or -errno).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectEvent {
    pub hdr: EventHeader,
    pub ret: i32,
    pub fd: i32,
    /// AF_INET (2), AF_INET6 (10), AF_UNIX (1), or whatever the caller passed.
    pub family: u16,
    /// Port in host byte order (IPv4/IPv6).
    pub port: u16,
    pub addrlen: u32,
    /// IPv4 (first 4 bytes) or IPv6 address, network order.
    pub addr: [u8; 16],
    /// IPv6 scope id.
    pub scope_id: u32,
    /// Bytes of `unix_path` used (abstract sockets start with a NUL byte).
    pub unix_path_len: u32,
    pub unix_path: [u8; UNIX_PATH_CAP],
    /// The `NET_POLICY` value that refused it (0 otherwise): policy bits | rule slot << 16.
    pub policy: u32,
}
const _: () = assert!(core::mem::size_of::<ConnectEvent>() == 40 + 40 + UNIX_PATH_CAP + 4);

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    pub hdr: EventHeader,
    /// `task->exit_code` in wait-status form: `(code << 8) | signal`.
    pub exit_code: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 48);

/// A tracked process created a new process (not a thread). The header is the parent's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkEvent {
    pub hdr: EventHeader,
    pub child_tgid: u32,
    pub _pad: u32,
    pub clone_flags: u64,
}
const _: () = assert!(core::mem::size_of::<ForkEvent>() == 56);

/// Bytes of one stdio capture record.
pub const STDIO_CHUNK: usize = 4096;
/// Chunks captured from the start of one read/write; past them only the last chunk is sent, so a
/// huge message keeps its head (method, params) and its tail (a Node reply's trailing `"id"`).
pub const STDIO_HEAD_CHUNKS: u32 = 16;

/// Value of `STDIO_PIPES`, keyed by the inode number of a tracked server's stdin/stdout pipe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioPipe {
    pub server_id: u32,
    /// [`stdio_dir`]: which way JSON-RPC flows through it, seen from the server.
    pub dir: u32,
    /// Bytes moved through it so far (kernel-maintained): numbers every captured byte, so the
    /// daemon sees exactly where records were lost.
    pub bytes: u64,
    /// The process whose exec registered it (the kernel does so for a provisional server, whose
    /// first bytes may flow before the daemon has looked at it); 0 when the daemon registered it.
    /// Lets the daemon drop the entries of a candidate it never adopted.
    pub owner_tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<StdioPipe>() == 24);

pub mod stdio_dir {
    /// The server reads requests (its stdin).
    pub const IN: u32 = 0;
    /// The server writes replies (its stdout).
    pub const OUT: u32 = 1;
}

/// Value of `HTTP_SOCKS`, keyed by the inode number of a socket a tracked server accepted (its
/// HTTP connections). Both directions are numbered separately, as two stdio pipes would be.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockStream {
    pub server_id: u32,
    /// The process that accepted it: only its `close` ends the capture (a forked child closing
    /// its inherited copy does not close the connection).
    pub owner_tgid: u32,
    /// Bytes the server received / sent on it so far (kernel-maintained).
    pub bytes_in: u64,
    pub bytes_out: u64,
}
const _: () = assert!(core::mem::size_of::<SockStream>() == 24);

/// `StdioEvent::dir` of [`EventKind::Sock`] records: data (`stdio_dir::IN`/`OUT`) or a
/// connection's start and end (no data).
pub mod sock_dir {
    /// The server accepted the connection (`total_len` 0).
    pub const ACCEPT: u32 = 2;
    /// The server closed it.
    pub const CLOSE: u32 = 3;
    /// Accepted, but `HTTP_SOCKS` was full: its bytes are not captured.
    pub const ACCEPT_NOT_CAPTURED: u32 = 4;
}

/// Bytes a tracked server moved through one of its stdio pipes: one record per captured chunk of
/// one read/write. `offset` is the chunk's place in the syscall's buffer, `total_len` the syscall's
/// result; chunks with `offset + len < total_len` and no successor mean bytes were skipped.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StdioEvent {
    pub hdr: EventHeader,
    /// Pipe inode (the stream).
    pub ino: u64,
    /// Bytes the syscall moved.
    pub total_len: u64,
    /// Bytes that went through this pipe before this syscall (see `StdioPipe::bytes`).
    pub stream_off: u64,
    pub offset: u32,
    pub len: u32,
    pub fd: i32,
    pub dir: u32,
    pub data: [u8; STDIO_CHUNK],
}
impl StdioEvent {
    pub const DATA_OFFSET: usize = core::mem::size_of::<EventHeader>() + 40;
}
const _: () = assert!(core::mem::size_of::<StdioEvent>() == StdioEvent::DATA_OFFSET + STDIO_CHUNK);

/// A flood folded: after sending an open in full, the thread made the identical open `count`
/// more times (same `fold_sig`: path, flags, mode, dirfd, inode and result class) between
/// `first_ns` and `last_ns`, with no JSON-RPC byte of any server moving in between (so within one
/// tool call), and none of them enforced by the kernel. Sent when the run ends: a different open
/// by the thread, the fold window elapsed, or the thread's exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepeatEvent {
    pub hdr: EventHeader,
    /// The [`EventKind`] folded (only opens today).
    pub of_kind: u32,
    pub _pad: u32,
    pub fold_sig: u64,
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RepeatEvent>() == 80);

/// Handshake discovery: a process that no client or config names, whose stdin and stdout are
/// pipes or sockets, is a candidate from its exec (`HANDSHAKE` map, keyed by tgid); if the first
/// bytes it reads from that stdin open a JSON object, the kernel tracks it provisionally and the
/// daemon sniffs it for an MCP `initialize`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeCandidate {
    /// Inodes of the pipes (or sockets) on fd 0 and fd 1 at exec. Reads are matched by inode,
    /// not fd number: the Python SDK reads a duplicate of fd 0.
    pub in_ino: u64,
    pub out_ino: u64,
    /// `bpf_ktime_get_ns` at exec: the daemon keeps the syscall hooks on for young candidates.
    pub since_ns: u64,
    /// 1 if the syscall hooks were detached at its exec: its first reads may have gone unseen.
    pub late: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<HandshakeCandidate>() == 32);

/// What a [`HandshakeEvent`] reports.
pub mod handshake {
    /// A candidate exec'd while the syscall hooks were detached: the daemon attaches them. The
    /// header's server id is 0.
    pub const CANDIDATE: u32 = 1;
    /// The candidate's first read of its stdin opened a JSON object: it is tracked
    /// provisionally from here (server id [`super::PROVISIONAL_SERVER`]); the bytes follow as a
    /// stdio event.
    pub const JSON_IN: u32 = 2;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeEvent {
    pub hdr: EventHeader,
    /// [`handshake`].
    pub what: u32,
    /// 1 if the syscall hooks were detached at its exec (its first reads may have gone unseen).
    pub late: u32,
    pub in_ino: u64,
    pub out_ino: u64,
}
const _: () = assert!(core::mem::size_of::<HandshakeEvent>() == 64);

/// `io_uring:io_uring_create` for a tracked process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoUringEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub setup_flags: u32,
}
const _: () = assert!(core::mem::size_of::<IoUringEvent>() == 56);

/// Which syscall a [`ProcAccessEvent`] reports.
pub mod proc_access {
    pub const PTRACE: u32 = 1;
    pub const VM_READV: u32 = 2;
    pub const VM_WRITEV: u32 = 3;
    /// `pidfd_getfd`: another process's open file taken into this one (no open happens, so
    /// no open hook or gate would see it). The target is a pidfd, not resolved: 0.
    pub const PIDFD_GETFD: u32 = 4;
}

/// A tracked process reaching into a process outside its server's tree, reported at the
/// syscall's entry (the kill, when a rule asks for it, is sent there too).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcAccessEvent {
    pub hdr: EventHeader,
    /// One of [`proc_access`].
    pub syscall: u32,
    /// The pid argument as the caller passed it (a thread id for ptrace).
    pub target: u32,
    /// The ptrace request (0 for the process_vm calls).
    pub request: i64,
}
const _: () = assert!(core::mem::size_of::<ProcAccessEvent>() == 56);

/// `TP_EXIT_GROUP_DEAD_OFF` when the kernel's `sched_process_exit` has no `group_dead` field
/// (before Linux 6.3): the program reads `current->signal->live` instead.
pub const NO_FIELD: u32 = u32::MAX;

pub mod globals {
    /// The one loader-set global: [`super::KernelOffsets`].
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
}

/// Where this kernel keeps what the programs read, written once by the loader into the eBPF
/// object's `KERNEL_OFFSETS` global (`.rodata`): byte offsets of `task_struct` and the structs
/// reached from it, from BTF, and of tracepoint fields, from tracefs, because Rust eBPF code has
/// no CO-RE relocations. [`NO_FIELD`] marks a field this kernel lacks. `daemon_tgid` is the
/// daemon's own tgid (never traced, never killed). Field names are the struct and member
/// (`task_real_parent`: `task_struct.real_parent`; `tp_*`: tracepoint fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub daemon_tgid: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_exit_code: u32,
    pub task_comm: u32,
    pub task_signal: u32,
    pub task_files: u32,
    pub task_mm: u32,
    pub task_ti_status: u32,
    pub signal_live: u32,
    pub signal_tty: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    pub file_inode: u32,
    pub file_f_mode: u32,
    pub file_dentry: u32,
    pub inode_ino: u32,
    pub inode_mode: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub sb_magic: u32,
    pub dentry_parent: u32,
    pub dentry_inode: u32,
    pub dentry_name: u32,
    pub mm_exe_file: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub bprm_file: u32,
    pub tp_exec_filename: u32,
    pub tp_exec_old_pid: u32,
    pub tp_exit_group_dead: u32,
    pub tp_newtask_pid: u32,
    pub tp_newtask_flags: u32,
    pub tp_uring_fd: u32,
    pub tp_uring_sq: u32,
    pub tp_uring_cq: u32,
    pub tp_uring_flags: u32,
    /// A connected unix socket's peer file: `file->private_data` (the `struct socket`),
    /// `socket->sk`, `unix_sock->peer` and `unix_sock->path.dentry`; [`NO_FIELD`] where the
    /// kernel's BTF lacks `unix_sock` (AF_UNIX built as a module).
    pub file_private: u32,
    pub socket_sk: u32,
    pub unix_peer: u32,
    pub unix_path_dentry: u32,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 168);

impl KernelOffsets {
    /// What the object carries before the loader writes it.
    pub const ZERO: Self = Self {
        daemon_tgid: 0,
        task_real_parent: 0,
        task_tgid: 0,
        task_exit_code: 0,
        task_comm: 0,
        task_signal: 0,
        task_files: 0,
        task_mm: 0,
        task_ti_status: 0,
        signal_live: 0,
        signal_tty: 0,
        files_fdt: 0,
        fdt_fd: 0,
        fdt_max_fds: 0,
        file_inode: 0,
        file_f_mode: 0,
        file_dentry: 0,
        inode_ino: 0,
        inode_mode: 0,
        inode_sb: 0,
        sb_dev: 0,
        sb_magic: 0,
        dentry_parent: 0,
        dentry_inode: 0,
        dentry_name: 0,
        mm_exe_file: 0,
        mm_arg_start: 0,
        mm_arg_end: 0,
        bprm_file: 0,
        tp_exec_filename: 0,
        tp_exec_old_pid: 0,
        tp_exit_group_dead: 0,
        tp_newtask_pid: 0,
        tp_newtask_flags: 0,
        tp_uring_fd: 0,
        tp_uring_sq: 0,
        tp_uring_cq: 0,
        tp_uring_flags: 0,
        file_private: 0,
        socket_sk: 0,
        unix_peer: 0,
        unix_path_dentry: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C) with explicit padding and only integer fields.
    unsafe impl aya::Pod for super::TrackInfo {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::StdioPipe {}
    unsafe impl aya::Pod for super::SockStream {}
    // SAFETY: as above: repr(C), dev u32 + explicit _pad u32 + ino u64 (size asserted to be 16).
    unsafe impl aya::Pod for super::InodeKey {}
    // SAFETY: repr(C), integers and bytes only, no padding (144 bytes, asserted).
    unsafe impl aya::Pod for super::NameKey {}
    // SAFETY: repr(C), two byte arrays, four u8 and a u32 at offset 68 (72 bytes, asserted):
    // no padding.
    unsafe impl aya::Pod for super::SockName {}
    // SAFETY: as above: repr(C), dev u32 + slot u32 + ino u64, no padding (size asserted to be 16).
    unsafe impl aya::Pod for super::RootReaderKey {}
    // SAFETY: as above: repr(C), integer fields and a byte array, padding explicit (its size is asserted
    // to be DATA_OFFSET + PATH_CAP, so no tail padding either).
    unsafe impl aya::Pod for super::OpenEvent {}
    // SAFETY: repr(C), only u32 fields (size asserted), so no padding.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::RepeatEvent {}
    // SAFETY: repr(C), three u64 and two u32 fields (size asserted), so no padding.
    unsafe impl aya::Pod for super::HandshakeCandidate {}
}
