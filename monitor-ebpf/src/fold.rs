//! Folding of floods: a thread that opens the same thing over and over sends the first open in
//! full, then only a count. A million-open loop costs the ring buffer and the daemon a handful of
//! records instead of a million, so it cannot blind the monitor, and no count is lost.
//!
//! What may fold (everything else is sent as is, and ends the thread's run):
//! - opens the kernel did not act on (no policy hit, not killed or denied): an enforced open is
//!   always its own event;
//! - with the same signature: path as given, flags, mode, dirfd, `resolve`, and the result class
//!   (the inode for a success, the errno for a failure). A relative path only folds when it
//!   opened something (the inode pins what it reached; a failed relative open could name a
//!   different file after a chdir);
//! - within one capture epoch: no JSON-RPC byte of any tracked server moved in between (the
//!   stdio and socket captures bump it), so every folded open belongs to the call the first one
//!   was attributed to, and the rules would judge each the same way;
//! - within the fold window (`policy::FOLD_WINDOW_MS`, 0 = off) of the run's first open: a flood
//!   that goes on sends a full open and a count once per window.
//!
//! Runs are per thread: a thread's syscalls are sequential, so counts need no atomics and are
//! exact. A run ends, and its [`RepeatEvent`] goes out, at the thread's next different open,
//! at the first open after the window, and at the thread's exit.
use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use monitor_common::{flags, policy, EventKind, OpenEvent, RepeatEvent, PATH_CAP};

use crate::maps::{fill_header, output, Current};
use monitor_common::TrackInfo;

/// A thread's current run of identical opens.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Run {
    sig: u64,
    epoch: u64,
    first_ns: u64,
    last_ns: u64,
    /// Opens folded after the one sent in full.
    count: u64,
}

#[map(name = "FOLD_RUNS")]
pub static FOLD_RUNS: LruHashMap<u32, Run> = LruHashMap::with_max_entries(8192, 0);

/// The record a run's count goes out in, built here rather than on the stack: the open exit
/// runs under the ia32 hook too, whose chain of calls nears the verifier's 512-byte stack.
#[map(name = "SCRATCH_REPEAT")]
static SCRATCH_REPEAT: PerCpuArray<RepeatEvent> = PerCpuArray::with_max_entries(1, 0);

/// Bumped by every captured JSON-RPC transfer; a run never spans two values.
#[map(name = "CAPTURE_EPOCH")]
pub static CAPTURE_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// A JSON-RPC transfer was captured: runs started before it end.
#[inline(always)]
pub fn bump_epoch() {
    if let Some(p) = CAPTURE_EPOCH.get_ptr_mut(0) {
        // SAFETY: the array's only value, valid for this program run. Two bumps racing may make
        // one increment; the epoch still changes, which is all a run compares.
        unsafe { *p = (*p).wrapping_add(1) };
    }
}

fn epoch() -> u64 {
    CAPTURE_EPOCH.get(0).copied().unwrap_or(0)
}

fn window_ns() -> u64 {
    crate::enforce::POLICY.get(policy::FOLD_WINDOW_MS).copied().unwrap_or(0) as u64 * 1_000_000
}

/// Longest path whose opens fold: the signature hashes the whole path, and the verifier walks
/// the loop once per word. A longer path is sent every time (a flood of them can still fill the
/// ring, which `--on-loss` answers).
const FOLD_PATH_MAX: usize = 256;

/// FNV-1a over the path (8 bytes at a time, the last word masked to the path's length) and the
/// fields that make two opens the same.
#[inline(always)]
fn signature(ev: &OpenEvent) -> u64 {
    const PRIME: u64 = 0x100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let len = ev.path_len as usize & (PATH_CAP - 1);
    let words = (len + 7) / 8;
    let base = ev.path.as_ptr() as *const u64;
    for i in 0..FOLD_PATH_MAX / 8 {
        if i >= words {
            break;
        }
        // SAFETY: i < FOLD_PATH_MAX / 8 <= PATH_CAP / 8, so the 8 bytes at `base + i` lie inside `ev.path`, which
        // sits at an 8-byte multiple (`DATA_OFFSET`) of the 8-aligned #[repr(C)] map value.
        let mut w = unsafe { core::ptr::read(base.add(i)) };
        let tail = len - i * 8;
        if tail < 8 {
            w &= (1u64 << (tail * 8)) - 1;
        }
        h = (h ^ w).wrapping_mul(PRIME);
    }
    let class = if ev.ret >= 0 { ev.ino ^ ((ev.dev as u64) << 40) } else { ev.ret as u64 };
    // One field at a time (an array of them would sit on the stack).
    h = (h ^ (ev.open_flags as u64 | (ev.mode as u64) << 32)).wrapping_mul(PRIME);
    h = (h ^ (ev.dirfd as u32 as u64 | (ev.syscall as u64) << 32)).wrapping_mul(PRIME);
    h = (h ^ ev.resolve).wrapping_mul(PRIME);
    h = (h ^ class).wrapping_mul(PRIME);
    h = (h ^ len as u64).wrapping_mul(PRIME);
    h | 1 // never 0: 0 means "not foldable"
}

/// Writes the count of a run that folded anything into this CPU's `SCRATCH_REPEAT`; whether it
/// did. The caller sends it: `fold_open` itself calls nothing that outputs, so it stays a leaf.
#[inline(always)]
fn stage_repeat(run: &Run, hdr: &monitor_common::EventHeader) -> bool {
    if run.count == 0 {
        return false;
    }
    let Some(r) = SCRATCH_REPEAT.get_ptr_mut(0) else { return false };
    // SAFETY: index 0 of the per-CPU SCRATCH_REPEAT array: this CPU's slot, valid for this
    // program run; only this program writes it, and its caller reads it before returning.
    let r = unsafe { &mut *r };
    r.hdr = *hdr;
    r.hdr.kind = EventKind::Repeat as u32;
    r.hdr.flags = 0;
    r.hdr.ts_ns = run.last_ns;
    r.of_kind = EventKind::Open as u32;
    r._pad = 0;
    r.fold_sig = run.sig;
    r.count = run.count;
    r.first_ns = run.first_ns;
    r.last_ns = run.last_ns;
    true
}

/// The count `fold_open` or `end_run` staged, to send.
#[inline(always)]
pub fn staged_repeat() -> Option<&'static RepeatEvent> {
    // SAFETY: this CPU's slot, written just before by the same program.
    SCRATCH_REPEAT.get_ptr(0).map(|r| unsafe { &*r })
}

/// What to do with a finished open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// It joined the thread's run: send nothing.
    Folded,
    /// Send it in full; `repeat`: first send the count staged in `SCRATCH_REPEAT` (the run it
    /// ended).
    Send { repeat: bool },
}

/// Judges one finished open: it joins the thread's run, or it goes out in full (after the count
/// of the run it ended) and starts a new run if it may.
// Not inlined, and a leaf (no output from here): the open exit is near the verifier's limits,
// and under the ia32 hook its chain of calls nears the 512-byte stack (6.1 refused one more
// frame there); the fentry twin and the ia32 path share this one copy.
#[inline(never)]
pub fn fold_open(ev: &mut OpenEvent) -> Fold {
    let tid = ev.hdr.tid;
    let window = window_ns();
    let acted = ev.policy != 0 || ev.hdr.flags & (flags::KILLED | flags::DENIED) != 0;
    let relative_failure = ev.ret < 0 && ev.path[0] != b'/';
    let short = (ev.path_len as usize) <= FOLD_PATH_MAX;
    let foldable = window != 0 && !acted && !relative_failure && short && ev.hdr.flags & flags::READ_FAILED == 0;
    ev.fold_sig = 0;
    if !foldable {
        let mut repeat = false;
        if let Some(run) = FOLD_RUNS.get_ptr(&tid) {
            // SAFETY: the thread's own entry, valid for this program run; read before the remove.
            repeat = stage_repeat(unsafe { &*run }, &ev.hdr);
            let _ = FOLD_RUNS.remove(&tid);
        }
        return Fold::Send { repeat };
    }
    let sig = signature(ev);
    let now = ev.hdr.ts_ns;
    let epoch = epoch();
    let mut repeat = false;
    if let Some(run) = FOLD_RUNS.get_ptr_mut(&tid) {
        // SAFETY: the thread's own entry (keyed by its tid); only this thread's hooks touch it,
        // and they run one at a time.
        let run = unsafe { &mut *run };
        if run.sig == sig && run.epoch == epoch && now.wrapping_sub(run.first_ns) < window {
            run.count += 1;
            run.last_ns = now;
            return Fold::Folded;
        }
        repeat = stage_repeat(run, &ev.hdr);
        run.sig = sig;
        run.epoch = epoch;
        run.first_ns = now;
        run.last_ns = now;
        run.count = 0;
    } else {
        let _ = FOLD_RUNS.insert(&tid, &Run { sig, epoch, first_ns: now, last_ns: now, count: 0 }, 0);
    }
    ev.fold_sig = sig;
    Fold::Send { repeat }
}

/// The thread exits: its run's count goes out.
#[inline(never)]
pub fn end_run(cur: Current, info: TrackInfo) {
    // SAFETY: the exiting thread's own run, copied out at once.
    let Some(run) = (unsafe { FOLD_RUNS.get(&cur.tid) }).copied() else { return };
    let _ = FOLD_RUNS.remove(&cur.tid);
    if run.count == 0 {
        return;
    }
    let mut hdr = monitor_common::EventHeader::default();
    fill_header(&mut hdr, EventKind::Repeat, cur, info);
    if stage_repeat(&run, &hdr) {
        if let Some(r) = staged_repeat() {
            output(r);
        }
    }
}
