//! Maps, read-only globals set by the loader, and the helpers every hook shares.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{ConnectEvent, EventHeader, ExecEvent, LostReason, OpenEvent, TrackInfo, LOST_REASONS};

/// Processes under watch, keyed by tgid. The daemon inserts roots; `task_newtask` adds children;
/// `sched_process_exit` removes a process when its last thread exits. Nothing else removes
/// entries, so a tracked process has no way to untrack itself.
#[map(name = "TRACKED")]
pub static TRACKED: HashMap<u32, TrackInfo> = HashMap::with_max_entries(65536, 0);

/// One byte per pid: nonzero where the process may need the hooks (tracked, a handshake
/// candidate, or doomed). Every hook tests it before any hash lookup, where `TRACKED.get` hashes
/// the key in a helper call. Untracked processes are nearly all of the machine's syscalls.
///
/// Global data (a `.bss` section: an array map of one 4 MiB element to the kernel), not a map
/// the program looks up: the verifier resolves its address at load, so the test is the pid,
/// masked, added to a constant and one byte load. A lookup in an array map, even one the
/// verifier inlines, stores the key on the stack, reloads it, checks its bounds and the null
/// pointer: about 3 ns more a run, on every syscall of the machine on mcpmon's hooks, which put
/// an untracked open+close above bpftrace's one-compare filter on the same hooks (`cargo xtask
/// bench --prog-time-only`). One byte for every pid the kernel can hand out (`PID_MAX_LIMIT`,
/// whatever pid_max is), so the mask never folds two pids together.
///
/// A filter, never the truth: a set byte sends the hook on to `TRACKED`, so a stale one costs a
/// lookup and nothing else. A clear byte must mean untracked, so every writer sets it *before*
/// inserting into `TRACKED` (the kernel at fork and exec, the daemon through `mcpm_maybe` in
/// gate.rs), and only the kernel clears it, when the process's last thread exits. Byte stores
/// never touch their neighbours, so no atomics are needed.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.maybe")]
static mut MAYBE_TRACKED: [u8; monitor_common::PID_MAX_LIMIT] = [0; monitor_common::PID_MAX_LIMIT];

/// `tgid`'s byte in [`MAYBE_TRACKED`]. Every pid is below `PID_MAX_LIMIT`, a power of two, so
/// the mask changes none and gives the verifier the bound it checks the access against.
#[inline(always)]
fn maybe_byte(tgid: u32) -> *mut u8 {
    let i = tgid as usize & (monitor_common::PID_MAX_LIMIT - 1);
    // SAFETY: `i` is below the array's length; only the address is computed here, no reference
    // to the `static mut` is made.
    unsafe { (&raw mut MAYBE_TRACKED).cast::<u8>().add(i) }
}

/// Whether `tgid` may be tracked (see [`MAYBE_TRACKED`]).
#[inline(always)]
pub fn maybe_tracked(tgid: u32) -> bool {
    // SAFETY: a byte of the array; volatile, as the daemon (through `mcpm_maybe`) and other CPUs
    // write it: the compiler must load it each time.
    unsafe { core::ptr::read_volatile(maybe_byte(tgid)) != 0 }
}

/// Sets or clears `tgid`'s byte in [`MAYBE_TRACKED`].
#[inline(always)]
pub fn set_maybe_tracked(tgid: u32, on: bool) {
    // SAFETY: as in `maybe_tracked`: a plain byte store, which leaves every other pid's byte as
    // it is.
    unsafe { core::ptr::write_volatile(maybe_byte(tgid), u8::from(on)) };
}

/// Children of tracked processes that could not be tracked (`TRACKED` full: a fork bomb, or a
/// flood meant to blind the monitor), keyed by pid. Each is killed at its first return to user
/// space, before its first instruction, so a full table never lets a process out of the tree
/// (fail closed). LRU, so that recording one can never fail; an entry lives microseconds.
#[map(name = "DOOMED")]
pub static DOOMED: LruHashMap<u32, u32> = LruHashMap::with_max_entries(4096, 0);

/// Threads of tracked processes that exited lately, by tid: user space learns who did something
/// it hears of only after the doer is gone (a `mv` into a persistence directory exits at once).
#[map(name = "EXITED")]
pub static EXITED: LruHashMap<u32, TrackInfo> = LruHashMap::with_max_entries(4096, 0);

/// Commands configured in MCP clients (`candidate::CONFIGURED`) and MCP client programs
/// (`candidate::CLIENT`), by comm: checked only at exec of an untracked process.
#[map(name = "CANDIDATE_COMMS")]
pub static CANDIDATE_COMMS: HashMap<monitor_common::Comm, u32> = HashMap::with_max_entries(1024, 0);

/// The bits of `CANDIDATE_COMMS`' keys (monitor-common's comm_filter.rs): exec tests a comm's bit
/// before it looks the comm up. One element, written whole by the daemon.
#[map(name = "COMM_FILTER")]
pub static COMM_FILTER: Array<monitor_common::CommFilter> = Array::with_max_entries(1, 0);

/// Every event goes through this one ring buffer (size set by the loader).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Per-CPU counters of events the kernel could not deliver, indexed by `LostReason`.
#[map(name = "LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_REASONS, 0);

/// Entry half of an in-flight syscall, keyed by tid, completed on exit. Filled at entry because the
/// user memory holding paths and argv is gone (exec) or may be rewritten by another thread by then.
/// `BPF_F_NO_PREALLOC`: entries exist only while a tracked thread sits in one of these syscalls.
const NO_PREALLOC: u32 = 1;
#[map(name = "PENDING_OPEN")]
pub static PENDING_OPEN: HashMap<u32, OpenEvent> = HashMap::with_max_entries(4096, NO_PREALLOC);
#[map(name = "PENDING_EXEC")]
pub static PENDING_EXEC: HashMap<u32, ExecEvent> = HashMap::with_max_entries(1024, NO_PREALLOC);
#[map(name = "PENDING_CONN")]
pub static PENDING_CONNECT: HashMap<u32, ConnectEvent> = HashMap::with_max_entries(4096, NO_PREALLOC);

/// Scratch space to build entries too large for the 512-byte BPF stack.
#[map(name = "SCRATCH_OPEN")]
pub static SCRATCH_OPEN: PerCpuArray<OpenEvent> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "SCRATCH_EXEC")]
pub static SCRATCH_EXEC: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

/// The kernel's offsets, written once by the loader (`monitor_common::KernelOffsets`).
#[unsafe(no_mangle)]
pub static KERNEL_OFFSETS: monitor_common::KernelOffsets = monitor_common::KernelOffsets::ZERO;

/// One field of [`KERNEL_OFFSETS`] as a byte offset, e.g. `koff!(task_tgid)`. Read through
/// `volatile`, so the compiler cannot fold the zero written here into the code.
macro_rules! koff {
    ($field:ident) => {
        // SAFETY: a field of a static, so aligned and valid for reads; volatile only stops the
        // compiler from folding the value the loader patches in to the 0 written here.
        (unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::maps::KERNEL_OFFSETS.$field)) } as usize)
    };
}
pub(crate) use koff;

/// The pending-syscall map a handler family fills at entry.
#[derive(Clone, Copy)]
pub enum Pending {
    Open,
    Exec,
    Connect,
}

/// Marks the current thread's pending syscall of `family` as an ia32 one.
#[inline(always)]
pub fn mark_compat(family: Pending) {
    let tid = current().tid;
    let hdr = match family {
        // SAFETY: `e` is the current thread's own PENDING_OPEN entry (keyed by its tid), valid for this
        // program run; the thread is inside the syscall, so no other hook writes the entry meanwhile.
        Pending::Open => PENDING_OPEN.get_ptr_mut(&tid).map(|e| unsafe { &mut (*e).hdr }),
        // SAFETY: as above, the current thread's PENDING_EXEC entry.
        Pending::Exec => PENDING_EXEC.get_ptr_mut(&tid).map(|e| unsafe { &mut (*e).hdr }),
        // SAFETY: as above, the current thread's PENDING_CONNECT entry.
        Pending::Connect => PENDING_CONNECT.get_ptr_mut(&tid).map(|e| unsafe { &mut (*e).hdr }),
    };
    if let Some(h) = hdr {
        h.flags |= monitor_common::flags::COMPAT;
    }
}

/// A syscall's arguments and result, from whichever hook reports the syscall: its tracepoints
/// (the fallback) or fentry/fexit on its `__x64_sys_*` wrapper (`fast.rs`). The handlers are
/// written once against this, so both paths produce the same events.
pub trait Sys {
    /// Argument `i` as the syscall received it.
    fn arg(&self, i: usize) -> u64;
    /// The return value (exit hooks only).
    fn ret(&self) -> i64;
}

/// Syscall tracepoints: args start at offset 16, 8 bytes each; `ret` on exit is at 16.
///
/// Read straight from the record (a plain load of the context, which the verifier bounds-checks
/// at load time) rather than through `read_at`, which calls bpf_probe_read: a helper call per
/// argument. An untracked open's entry read four arguments before its tracked check that way,
/// and doubled the cost of the program every open on the host runs while a server is tracked
/// (226 ns against the one-lookup floor's 107 ns, with `kernel.bpf_stats_enabled`).
impl Sys for aya_ebpf::programs::TracePointContext {
    #[inline(always)]
    fn arg(&self, i: usize) -> u64 {
        // SAFETY: a syscall tracepoint's record holds its six arguments at 16 + 8 * i (i < 6 at
        // every call site, a constant once inlined); the verifier rejects any context load
        // outside the record or misaligned, so a wrong offset fails the load, not the read.
        unsafe { *(aya_ebpf::EbpfContext::as_ptr(self) as *const u64).add(2 + i) }
    }
    #[inline(always)]
    fn ret(&self) -> i64 {
        // SAFETY: as above: `ret` of a sys_exit record at offset 16, an aligned load checked by the verifier.
        unsafe { *(aya_ebpf::EbpfContext::as_ptr(self) as *const i64).add(2) }
    }
}

pub fn daemon_tgid() -> u32 {
    koff!(daemon_tgid) as u32
}
pub fn tp_exec_filename_off() -> usize {
    koff!(tp_exec_filename)
}
pub fn tp_exec_old_pid_off() -> usize {
    koff!(tp_exec_old_pid)
}
/// Whether the exiting thread is the last of its process: the tracepoint's `group_dead` field
/// where the kernel has it (6.3+), else `current->signal->live == 0` (it is decremented before
/// the tracepoint fires).
#[inline(always)]
pub fn exit_group_dead(ctx: &aya_ebpf::programs::TracePointContext) -> bool {
    let off = koff!(tp_exit_group_dead) as u32;
    if off != monitor_common::NO_FIELD {
        // SAFETY: `group_dead` (a u8) at the offset the loader read from tracefs, only when the kernel has the
        // field; read through bpf_probe_read, Err on a fault.
        return unsafe { ctx.read_at::<u8>(off as usize) }.unwrap_or(0) != 0;
    }
    let Some(signal) = current_signal() else { return false };
    // SAFETY: `signal->live` read through bpf_probe_read_kernel at a BTF offset (Err on a fault).
    unsafe { bpf_probe_read_kernel(signal.add(koff!(signal_live)) as *const i32) }.map(|live| live == 0).unwrap_or(false)
}
/// `current->signal`, the process-wide part of the current task.
#[inline(always)]
pub fn current_signal() -> Option<*const u8> {
    // SAFETY: reads one pointer field of the current task, at a BTF-derived offset.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.add(koff!(task_signal)) as *const *const u8).ok()
    }
}

pub fn tp_newtask_pid_off() -> usize {
    koff!(tp_newtask_pid)
}
pub fn tp_newtask_flags_off() -> usize {
    koff!(tp_newtask_flags)
}

/// The calling thread, split.
#[derive(Clone, Copy)]
pub struct Current {
    pub tgid: u32,
    pub tid: u32,
}

#[inline(always)]
pub fn current() -> Current {
    let pid_tgid = bpf_get_current_pid_tgid();
    Current { tgid: (pid_tgid >> 32) as u32, tid: pid_tgid as u32 }
}

/// The one lookup every entry hook does: is the calling process tracked?
#[inline(always)]
pub fn tracked(cur: Current) -> Option<TrackInfo> {
    if !maybe_tracked(cur.tgid) {
        return None;
    }
    // SAFETY: the TrackInfo is copied out at once and no reference kept; TRACKED is preallocated, so the
    // pointer is valid memory for this program run even if the entry goes meanwhile.
    unsafe { TRACKED.get(&cur.tgid).copied() }
}

#[inline(always)]
pub fn count_lost(reason: LostReason) {
    if let Some(p) = LOST.get_ptr_mut(reason as u32) {
        // SAFETY: `p` is this CPU's slot of the per-CPU LOST array, valid for this program run and not shared
        // with other CPUs; a nested program on this CPU could at worst lose one count.
        unsafe { *p += 1 };
    }
}

/// [`count_lost`], plus an aya-log record under `mcpmon run --ebpf-log`. Only where the program
/// has room: verified with logging on, a record costs a few hundred instructions per path that
/// reaches it, which the syscall programs at the verifier's limit (stdio, http) do not have; their
/// losses stay counted in `LOST` only.
#[inline(always)]
pub fn count_lost_logged(reason: LostReason) {
    count_lost(reason);
    log_lost(reason as u32);
}

/// The record. The loader sets `AYA_LOG_LEVEL` (read-only data) to 0 unless asked, and the
/// verifier, which knows read-only values, then drops the record's code as dead: without the flag
/// this is one call that returns, on failure paths only. Not inlined, so the code exists once.
#[inline(never)]
fn log_lost(reason: u32) {
    // aya-log's macros take a context but never read it (aya-log-ebpf 0.2); this helper has none.
    aya_log_ebpf::warn!(&(), "event lost: reason {} (monitor_common::LostReason)", reason);
}

/// Per-server loss counts: the daemon names the server it went blind on (`blind_spot`).
/// LRU, so that a new server's first loss can always be recorded.
#[map(name = "LOST_BY_SERVER")]
pub static LOST_BY_SERVER: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// An event of `server_id`'s tree was lost: counted by reason and by server, and under
/// `--on-loss kill` the process that caused it dies before it returns to user code.
// Not inlined: it sits on every output's failure path, and inlined copies pushed the stdio
// program past the verifier's size limit. A BPF-to-BPF call costs nothing on the success path.
#[inline(never)]
pub fn lost_for(reason: LostReason, server_id: u32) {
    count_lost(reason);
    match LOST_BY_SERVER.get_ptr_mut(&server_id) {
        // SAFETY: a map value pointer, valid for this program run; a lost increment under a
        // race only undercounts a loss already counted in LOST.
        Some(p) => unsafe { *p += 1 },
        None => {
            let _ = LOST_BY_SERVER.insert(&server_id, &1, 0);
        }
    }
    if crate::enforce::POLICY.get(monitor_common::policy::ON_LOSS_KILL).copied().unwrap_or(0) != 0 {
        crate::enforce::kill_current();
    }
}

/// Records sent through [`output`]: every one starts with an [`EventHeader`] (all are
/// `#[repr(C)]` with `hdr` first), which is where a loss finds its server.
///
/// # Safety
/// Implement only for `#[repr(C)]` types whose first field is an `EventHeader`.
pub unsafe trait Record {}
// SAFETY: each of these is #[repr(C)] with `hdr: EventHeader` as its first field.
unsafe impl Record for monitor_common::ExecEvent {}
unsafe impl Record for monitor_common::OpenEvent {}
unsafe impl Record for monitor_common::ConnectEvent {}
unsafe impl Record for monitor_common::ExitEvent {}
// SAFETY: as above: #[repr(C)], `hdr: EventHeader` first.
unsafe impl Record for monitor_common::ForkEvent {}
// SAFETY: as above: #[repr(C)], `hdr: EventHeader` first.
unsafe impl Record for monitor_common::RepeatEvent {}
// SAFETY: as above: #[repr(C)], `hdr: EventHeader` first.
unsafe impl Record for monitor_common::StdioEvent {}
// SAFETY: as above: #[repr(C)], `hdr: EventHeader` first.
unsafe impl Record for monitor_common::IoUringEvent {}
// SAFETY: as above: #[repr(C)], `hdr: EventHeader` first.
unsafe impl Record for monitor_common::ProcAccessEvent {}
// SAFETY: as above: #[repr(C)], `hdr: EventHeader` first.
unsafe impl Record for monitor_common::HandshakeEvent {}

#[inline(always)]
fn server_of<T: Record>(rec: &T) -> u32 {
    // SAFETY: `Record` guarantees the header is at offset 0.
    unsafe { (*(rec as *const T as *const EventHeader)).server_id }
}

/// `current->real_parent->tgid`, 0 if unreadable.
#[inline(always)]
fn current_ppid() -> u32 {
    // SAFETY: bpf_get_current_task is valid in any task context; `real_parent` and `tgid` (BTF offsets) are
    // read through bpf_probe_read_kernel, which returns Err on a fault.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let parent: *const u8 = match bpf_probe_read_kernel(task.add(koff!(task_real_parent)) as *const *const u8) {
            Ok(p) => p,
            Err(_) => return 0,
        };
        bpf_probe_read_kernel(parent.add(koff!(task_tgid)) as *const u32).unwrap_or(0)
    }
}

/// Copies a user path (up to `PATH_CAP` bytes) to `dst`; returns its length without the NUL and
/// sets `PATH_TRUNCATED`/`READ_FAILED` in `hdr_flags`.
#[inline(always)]
pub fn read_user_path(dst: *mut u8, src: u64, hdr_flags: &mut u32) -> u32 {
    // SAFETY: the helper writes at most PATH_CAP bytes (NUL included) to `dst`, which every caller points
    // at a record's path buffer of at least PATH_CAP bytes; `src` is a user address the helper
    // reads with fault checks.
    let n = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user_str(dst as *mut _, monitor_common::PATH_CAP as u32, src as *const _)
    };
    if n <= 0 {
        *hdr_flags |= monitor_common::flags::READ_FAILED;
        return 0;
    }
    if n as usize == monitor_common::PATH_CAP {
        *hdr_flags |= monitor_common::flags::PATH_TRUNCATED;
    }
    (n - 1) as u32
}

/// `current->exit_code` (wait-status form).
#[inline(always)]
pub fn current_exit_code() -> u32 {
    // SAFETY: bpf_get_current_task is valid in any task context; `exit_code` (BTF offset) is read through
    // bpf_probe_read_kernel, which returns Err on a fault.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.add(koff!(task_exit_code)) as *const u32).unwrap_or(0)
    }
}

#[inline(always)]
pub fn fill_header(hdr: &mut EventHeader, kind: monitor_common::EventKind, cur: Current, info: TrackInfo) {
    hdr.kind = kind as u32;
    hdr.flags = 0;
    // SAFETY: a helper without arguments or preconditions.
    hdr.ts_ns = unsafe { bpf_ktime_get_ns() };
    hdr.tgid = cur.tgid;
    hdr.tid = cur.tid;
    hdr.ppid = current_ppid();
    hdr.uid = bpf_get_current_uid_gid() as u32;
    hdr.server_id = info.server_id;
    hdr._pad = 0;
}

/// Sends the first `len` bytes of `rec` (a variable-length record), counting a loss on failure.
#[inline(always)]
pub fn output_prefix<T: Record>(rec: &T, len: usize) {
    let max = core::mem::size_of::<T>();
    // Bounded again here so the verifier sees `len <= size_of::<T>()` at the helper call.
    let len = if len > max { max } else { len };
    if len == 0 {
        return;
    }
    // SAFETY: `rec` is a live &T and `len <= size_of::<T>()` (bounded just above), so the slice stays inside
    // *rec; records are #[repr(C)] with explicit padding fields (sizes asserted in monitor-common),
    // so every byte is initialized.
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const T as *const u8, len) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        lost_for(LostReason::RingbufFull, server_of(rec));
    }
}

#[inline(always)]
pub fn output<T: Record>(rec: &T) {
    if EVENTS.output::<T>(rec, 0).is_err() {
        lost_for(LostReason::RingbufFull, server_of(rec));
    }
}
