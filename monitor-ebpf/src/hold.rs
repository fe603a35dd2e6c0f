//! A provisional server's first instruction meets its sensors.
//!
//! The syscall hooks are attached only while something is tracked (probes/ondemand.rs): a
//! candidate that execs while nothing is tracked would run unobserved until the daemon has read
//! its exec event and attached them, and its first opens, reads and writes (a secret read in
//! its first milliseconds, the JSON-RPC it writes before the daemon looks) would be missed. So a
//! candidate that execs while the hooks are detached is stopped before its new image runs
//! (SIGSTOP, delivered on the way back to user space) and recorded in `HELD`; the daemon attaches
//! the hooks and continues it (daemon/discover.rs). With the hooks attached nothing is held.
//!
//! Kernel contract: `bpf_send_signal` from a tracepoint targets the current thread group.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated::bpf_send_signal},
    macros::map,
    maps::{Array, LruHashMap},
};

use crate::maps::koff;

const SIGSTOP: u32 = 19;

/// `[0]` = 1 while the on-demand syscall hooks are attached (written by the daemon).
#[map(name = "HOOKS_LIVE")]
pub static HOOKS_LIVE: Array<u32> = Array::with_max_entries(1, 0);


/// tgid → when it was stopped. LRU: an entry the daemon never saw (it died) ages out rather than
/// blocking new holds; the daemon also continues every stopped entry it finds at each tick.
#[map(name = "HELD")]
static HELD: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// Stops `tgid` (the current process, which has just become a provisional server) until the
/// daemon has attached the syscall hooks, unless they are attached already. A configured command
/// that is not a client's child and has a controlling terminal (`npx` typed in a shell) is not
/// stopped: a job-control shell would report it as a stopped job. Called after the `TRACKED`
/// insert: a daemon about to detach clears `HOOKS_LIVE` and then looks at `TRACKED` once more.
#[inline(never)]
pub fn hold_if_blind(tgid: u32, by_client: bool) -> u32 {
    if HOOKS_LIVE.get(0).copied().unwrap_or(0) != 0 {
        return 0;
    }
    if !by_client && has_tty() {
        return 0;
    }
    // SAFETY: a helper call with a constant signal number; it targets the current task's group.
    let r = unsafe { bpf_send_signal(SIGSTOP) };
    if r != 0 {
        // Not stopped (pid 1, a kernel thread): nothing to continue later.
        return 0;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = HELD.insert(&tgid, &now, 0);
    0
}

/// Whether the current process has a controlling terminal (`current->signal->tty`).
#[inline(always)]
fn has_tty() -> bool {
    let Some(signal) = crate::maps::current_signal() else { return true };
    // SAFETY: reads one pointer field of the current task's signal_struct (BTF offset).
    let tty: Result<*const u8, _> = unsafe { bpf_probe_read_kernel(signal.add(koff!(signal_tty)) as *const *const u8) };
    tty.map(|t| !t.is_null()).unwrap_or(true)
}
