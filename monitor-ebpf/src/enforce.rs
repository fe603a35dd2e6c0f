//! Enforcement decided in the kernel, for what the kernel can judge alone:
//! - protected files by device+inode, checked when an open by a tracked process returns (the
//!   path is resolved by then, so every name of the file is the same key); SIGKILL is delivered
//!   before the syscall returns to user code, so not one byte of the file reaches the process;
//! - protected executables, by inode of the new image at `sched_process_exec`;
//! - denied addresses, refused by cgroup `sock_addr` programs (connect and UDP sendmsg) with EPERM;
//! - io_uring set up by a tracked process (its operations bypass the syscall tracepoints).
//!
//! Kernel contracts: `file->f_inode`, `inode->i_sb->s_dev`, `inode->i_ino`,
//! `file->f_path.dentry->d_parent->d_inode` (offsets from BTF); `bpf_sock_addr.user_ip4/user_ip6`
//! in network byte order; `io_uring:io_uring_create(fd, ctx, sq_entries, cq_entries, flags)`.
//! `bpf_send_signal` exists for tracing programs only: the cgroup programs mark the pending
//! connect, and the connect exit tracepoint kills when the rule says so.

use aya_ebpf::{
    helpers::{
        bpf_get_current_task, bpf_probe_read_kernel,
        generated::bpf_send_signal,
    },
    macros::{cgroup_sock_addr, lsm, map, tracepoint},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap},
    programs::{LsmContext, SockAddrContext, TracePointContext},
};
use monitor_common::{flags, net_policy, policy, protect, EventKind, InodeKey, IoUringEvent, RootReaderKey};

use crate::gate::gated_tracepoint;
use crate::{
    maps::{current, daemon_tgid, fill_header, koff, output, tracked, PENDING_CONNECT, PENDING_EXEC, PENDING_OPEN},
    stdio::{fd_file, file_inode, inode_ino},
};

#[map(name = "PROTECTED")]
pub static PROTECTED: HashMap<InodeKey, u32> = HashMap::with_max_entries(65536, 0);

/// LPM tries require `BPF_F_NO_PREALLOC`.
#[map(name = "NET_POLICY_V4")]
pub static NET_POLICY_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(4096, 1);
#[map(name = "NET_POLICY_V6")]
pub static NET_POLICY_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(4096, 1);

/// Per-server grants: `server_id << 32 | rule slot` → 1. A granted server may open what that
/// rule protects; the key comes from the tracked entry, never from what the server says.
#[map(name = "GRANTS")]
pub static GRANTS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Whether `server_id` holds a grant for the rule slot carried by policy value `p`.
#[inline(always)]
pub fn granted(server_id: u32, p: u32) -> bool {
    let key = ((server_id as u64) << 32) | (p >> protect::SLOT_SHIFT) as u64;
    // SAFETY: only whether the key exists is used: no reference into GRANTS outlives this lookup.
    unsafe { GRANTS.get(&key) }.is_some()
}

/// Executables that may read one rule's files when they run as their server's root process
/// (`RootReaderKey` → 1): the docker CLI of a `docker run -i` server reads
/// `~/.docker/config.json` at every start. The server's other processes, and a root running
/// anything else, may not.
#[map(name = "ROOT_READERS")]
pub static ROOT_READERS: HashMap<RootReaderKey, u32> = HashMap::with_max_entries(1024, 0);

/// Server roots that called execve while running an image not marked `ROOT_VIA` or
/// `ROOT_MAY_CONNECT` (tgid → 1): whatever they exec next runs at the server's behest, so the
/// launchers' allowances (`ROOT_MAY_CONNECT`, `ROOT_READERS`) no longer apply to them. Set at
/// execve's entry (the old image is still current), dropped at the process's exit and when a
/// new root is tracked at exec. LRU: an entry pushed out would give a tainted root its
/// allowance back, which takes 8192 tainted roots alive at once.
#[map(name = "ROOT_TAINTED")]
pub static ROOT_TAINTED: LruHashMap<u32, u32> = LruHashMap::with_max_entries(8192, 0);

/// The daemon's judgement of a server root's latest exec (tgid → stamp | runner): the exec's
/// stamp (`ROOT_IMAGES`, bit 0 clear), with bit 0 set when its argv is a package runner's launch
/// (`npx -y PKG`, `uvx PKG`; the image alone says `node`). A runner root may read the files
/// marked `RUNNER_MAY_READ` while untainted. The judgement names the exec it was made for: one
/// that arrives after the root exec'd again names an older stamp and holds for nothing, and
/// until the daemon has judged the current exec the open gate holds the read (gate/decide.rs)
/// rather than refuse a runner that was merely quicker than the daemon. Dropped at the root's
/// exit and when a new root is tracked.
#[map(name = "ROOT_RUNNERS")]
pub static ROOT_RUNNERS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);

/// The stamp of each server root's latest successful exec (tgid → its exec event's
/// `ts_mono_ns` with bit 0 clear), set at `sched_process_exec`: which exec a judgement in
/// `ROOT_RUNNERS` must name. Stamps come from one monotonic clock, so a judgement left by an
/// earlier holder of the pid names no exec of the new one.
#[map(name = "ROOT_IMAGES")]
pub static ROOT_IMAGES: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);

/// A server root's new image runs: judgements of its earlier execs no longer hold.
#[inline(always)]
pub fn note_root_image(tgid: u32, ts_mono_ns: u64) {
    let _ = ROOT_IMAGES.insert(&tgid, &monitor_common::exec_stamp(ts_mono_ns), 0);
}

/// Forgets a root's execs and their judgements (it exited, or its pid is a new root's now).
#[inline(always)]
pub fn forget_root(tgid: u32) {
    let _ = ROOT_TAINTED.remove(&tgid);
    let _ = ROOT_RUNNERS.remove(&tgid);
    let _ = ROOT_IMAGES.remove(&tgid);
}

/// A tracked server root is calling execve: taint it unless its current image is a launcher
/// or a pass-through (`env`, `setpriv`, `mcpmon exec`). Whatever it runs next is a runner only
/// if the daemon says so from the new exec's argv.
#[inline(always)]
pub fn note_root_exec(tgid: u32) {
    let via = exe_inode().is_some_and(|e| policy_with(e, protect::ROOT_VIA | protect::ROOT_MAY_CONNECT) != 0);
    if !via {
        let _ = ROOT_TAINTED.insert(&tgid, &1, 0);
    }
}

/// Whether the current process is its server's root and has run only launcher images: what
/// the launchers' allowances take besides the image itself.
#[inline(always)]
fn launcher_root(cur: crate::maps::Current) -> bool {
    // SAFETY: only whether the key exists is used: no reference into ROOT_TAINTED is kept.
    tracked(cur).is_some_and(|i| i.root_tgid == cur.tgid) && unsafe { ROOT_TAINTED.get(&cur.tgid) }.is_none()
}

/// Whether the current process (its server's untainted root: `root_read` asks that first) runs
/// an image `ROOT_READERS` lets read the files of the rule in policy value `p`.
#[inline(always)]
fn root_reader(p: u32) -> bool {
    let Some(exe) = exe_inode() else { return false };
    let Some(k) = inode_key(exe) else { return false };
    let key = RootReaderKey { dev: k.dev, slot: p >> protect::SLOT_SHIFT, ino: k.ino };
    // SAFETY: only whether the key exists is used: no reference into ROOT_READERS outlives this lookup.
    unsafe { ROOT_READERS.get(&key) }.is_some()
}

/// The daemon's judgement of the latest exec of root `tgid`, if it has one: whether that exec
/// is a package runner's launch. None: the root's exec is not judged yet (or was never seen).
#[inline(always)]
fn runner_judged(tgid: u32) -> Option<bool> {
    // SAFETY: the u64 values are copied out at once; no reference into either map is kept.
    let (image, judged) = unsafe { (ROOT_IMAGES.get(&tgid).copied()?, ROOT_RUNNERS.get(&tgid).copied()?) };
    (monitor_common::exec_stamp(judged) == image).then_some(judged & 1 != 0)
}

/// Whether `tgid` is a server root that holds a runner's allowance: the daemon judged its
/// latest exec a runner's launch. Its own tree may not reach into it (ptrace, process_vm_*,
/// /proc/PID/mem and the like): the package it started is its child, and code or a read
/// planted there would have the login the runner just read.
#[inline(always)]
pub fn runner_marked(tgid: u32) -> bool {
    runner_judged(tgid) == Some(true)
}

/// What a server root's read of a protected file with policy value `p` may take from the
/// launchers' allowances.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RootRead {
    /// None: the rule applies.
    No,
    /// The root runs an image `ROOT_READERS` lists for the rule, or it is the package runner
    /// it was launched through and the file is one a runner may read (`RUNNER_MAY_READ`).
    Yes,
    /// It may be that runner, but the daemon has not judged its latest exec yet.
    Unjudged,
}

#[inline(always)]
fn root_read(p: u32) -> RootRead {
    let cur = current();
    if !launcher_root(cur) {
        return RootRead::No;
    }
    if root_reader(p) {
        return RootRead::Yes;
    }
    if p & protect::RUNNER_MAY_READ == 0 {
        return RootRead::No;
    }
    match runner_judged(cur.tgid) {
        Some(true) => RootRead::Yes,
        Some(false) => RootRead::No,
        // SAFETY: only whether the key exists is used: no reference into ROOT_IMAGES is kept.
        None if unsafe { ROOT_IMAGES.get(&cur.tgid) }.is_some() => RootRead::Unjudged,
        None => RootRead::No,
    }
}

/// Whether a read of a file with policy value `p` by the current process is the root's
/// allowance. `at_open`: asked before the open completes (`security_file_open`), where an
/// exec the daemon has not judged yet is left to the open gate, which holds the open until it
/// has (a runner is often quicker than the daemon: uv reads `~/.netrc` within milliseconds of
/// its exec); only while the gate runs (`POLICY[GATE_ACTIVE]`). At an open's exit the gate has
/// already answered, and an exec still unjudged there gets no allowance.
#[inline(always)]
fn root_allows(p: u32, at_open: bool) -> bool {
    match root_read(p) {
        RootRead::Yes => true,
        RootRead::Unjudged => at_open && POLICY.get(policy::GATE_ACTIVE).copied().unwrap_or(0) != 0,
        RootRead::No => false,
    }
}

#[map(name = "POLICY")]
pub static POLICY: Array<u32> = Array::with_max_entries(policy::LEN, 0);



const SIGKILL: u32 = 9;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_PATH: u32 = 0o10000000;

/// Kills the current process, never pid 1 nor the daemon (both are never tracked, but a kill is
/// the one thing that must not go wrong).
#[inline(always)]
pub fn kill_current() -> bool {
    let tgid = current().tgid;
    if tgid <= 1 || tgid == daemon_tgid() {
        return false;
    }
    // SAFETY: a helper call with a constant signal number; it signals the current task, checked just
    // above to be neither pid 1 nor the daemon.
    unsafe { bpf_send_signal(SIGKILL) == 0 }
}

#[inline(always)]
pub(crate) fn inode_key(inode: *const u8) -> Option<InodeKey> {
    let ino = inode_ino(inode)?;
    // SAFETY: every dereference goes through bpf_probe_read_kernel, which returns Err on a fault instead
    // of faulting; `inode` is an inode reached from the current task and the offsets come from BTF.
    unsafe {
        let sb: *const u8 = bpf_probe_read_kernel(inode.add(koff!(inode_sb)) as *const *const u8).ok()?;
        let dev: u32 = bpf_probe_read_kernel(sb.add(koff!(sb_dev)) as *const u32).ok()?;
        Some(InodeKey { dev, _pad: 0, ino })
    }
}

/// The `PROTECTED` value of `inode` if it carries `bit`, else 0.
#[inline(always)]
fn policy_with(inode: *const u8, bit: u32) -> u32 {
    let Some(key) = inode_key(inode) else { return 0 };
    // SAFETY: the PROTECTED value is read within the match and not kept; the map is preallocated, so the
    // pointer stays valid memory for this program run even if user space updates the entry.
    match unsafe { PROTECTED.get(&key) } {
        Some(p) if *p & bit != 0 => *p,
        _ => 0,
    }
}

/// Judges an open that returned `fd`: fills in the file's inode and device, and returns the
/// `PROTECTED` value it violates (0 if none): the file itself (read or write per its policy), or
/// its directory (a write or create in a protected directory). Read and write access come from
/// the opened file's `f_mode`, not from the flags in user memory: another thread can rewrite
/// those (`openat2`'s `how`) between the entry hook's copy and the open, and an O_PATH file has
/// neither FMODE_READ nor FMODE_WRITE whatever the flags said.
#[inline(always)]
pub fn open_check(fd: i32, open_flags: u32, server_id: u32, ino: &mut u64, dev: &mut u32) -> u32 {
    let Some(file) = fd_file(fd) else { return 0 };
    file_check(file, open_flags, server_id, false, ino, dev)
}

/// [`open_check`] on the file itself (`security_file_open` has it before any fd exists).
#[inline(always)]
pub fn file_check(file: *const u8, open_flags: u32, server_id: u32, at_open: bool, ino: &mut u64, dev: &mut u32) -> u32 {
    let Some(inode) = file_inode(file) else { return 0 };
    let Some(key) = inode_key(inode) else { return 0 };
    *ino = key.ino;
    *dev = key.dev;
    // SAFETY: `file->f_mode` read through bpf_probe_read_kernel at a BTF offset; a fault returns Err
    // (then both modes are assumed: fail closed).
    let mode: u32 = unsafe { bpf_probe_read_kernel(file.add(koff!(file_f_mode)) as *const u32) }.unwrap_or(FMODE_READ | FMODE_WRITE);
    let reads = mode & FMODE_READ != 0;
    let writes = mode & FMODE_WRITE != 0 || (open_flags & O_TRUNC != 0 && open_flags & O_PATH == 0);
    // SAFETY: a PROTECTED value pointer, valid for this program run (preallocated map); the u32 is only
    // read inside this `if`.
    if let Some(p) = unsafe { PROTECTED.get(&key) } {
        let read_hit = *p & protect::KILL_READ != 0 && reads;
        let write_hit = *p & protect::KILL_WRITE != 0 && writes;
        if (read_hit || write_hit) && !granted(server_id, *p) && !(read_hit && !write_hit && root_allows(*p, at_open)) {
            return *p;
        }
    } else if reads && !crate::unseen::is_dir(inode) {
        let p = crate::unseen::unseen_policy(file);
        if p != 0 && !granted(server_id, p) && !root_allows(p, at_open) {
            return p;
        }
    }
    if !(writes || open_flags & O_CREAT != 0) {
        return 0;
    }
    let p = parent_dir_policy(file);
    if p != 0 && granted(server_id, p) {
        return 0;
    }
    p
}

/// A write or create in a protected directory, or in a directory directly below one (systemd's
/// `foo.service.d/` drop-ins and `*.wants/`, made at any time, are as much persistence as a unit).
#[inline(always)]
fn parent_dir_policy(file: *const u8) -> u32 {
    // SAFETY: `file` is the file being opened; the dentry, d_parent and d_inode fields (BTF offsets) are
    // read through bpf_probe_read_kernel, which returns Err on a fault.
    let (dir, grand) = unsafe {
        let Ok(dentry) = bpf_probe_read_kernel(file.add(koff!(file_dentry)) as *const *const u8) else { return 0 };
        let Ok(parent) = bpf_probe_read_kernel(dentry.add(koff!(dentry_parent)) as *const *const u8) else { return 0 };
        let Ok(inode) = bpf_probe_read_kernel(parent.add(koff!(dentry_inode)) as *const *const u8) else { return 0 };
        let grand = bpf_probe_read_kernel(parent.add(koff!(dentry_parent)) as *const *const u8)
            .ok()
            .filter(|g| *g != parent)
            .and_then(|g| bpf_probe_read_kernel(g.add(koff!(dentry_inode)) as *const *const u8).ok());
        (inode, grand)
    };
    let p = policy_with(dir, protect::KILL_DIR_WRITE);
    if p != 0 {
        return p;
    }
    match grand {
        Some(g) if !g.is_null() => policy_with(g, protect::KILL_DIR_WRITE),
        _ => 0,
    }
}

/// The current image (`current->mm->exe_file->f_inode`) against `PROTECTED` with `KILL_EXEC`.
#[inline(always)]
pub fn exec_check() -> u32 {
    match exe_inode() {
        Some(inode) => policy_with(inode, protect::KILL_EXEC),
        None => 0,
    }
}

/// `current->mm->exe_file->f_inode`; None for kernel threads (no mm).
#[inline(always)]
fn exe_inode() -> Option<*const u8> {
    // SAFETY: bpf_get_current_task is valid in any task context; mm and exe_file are read through
    // bpf_probe_read_kernel (Err on a fault) and checked for NULL (kernel threads have no mm).
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let mm = bpf_probe_read_kernel(task.add(koff!(task_mm)) as *const *const u8).ok()?;
        if mm.is_null() {
            return None;
        }
        let file = bpf_probe_read_kernel(mm.add(koff!(mm_exe_file)) as *const *const u8).ok()?;
        if file.is_null() {
            return None;
        }
        file_inode(file)
    }
}

/// A tracked process's connect on unix socket `fd` has just succeeded: the `PROTECTED` value
/// to kill it under (0: none). The key is the inode of the socket file the kernel connected it
/// to (the peer's `path`), so a symlink, a relative path or `/proc/self/root/…` to a container
/// engine's socket is the same socket; a socket with no entry yet, by its names
/// (`agents.rs`). A server's root process may connect when it runs an
/// image marked `ROOT_MAY_CONNECT` (a server launched as `docker run -i …` is the engine's
/// CLI); its children, and a root running anything else, may not.
#[inline(always)]
pub fn unix_connect_check(cur: crate::maps::Current, fd: i32, server_id: u32) -> u32 {
    if koff!(unix_peer) == monitor_common::NO_FIELD as usize {
        return 0;
    }
    let Some(file) = fd_file(fd) else { return 0 };
    // SAFETY: each pointer is read through bpf_probe_read_kernel (Err on a fault) at a BTF
    // offset, starting from the current task's own fd table entry; NULL ends the walk.
    let (dentry, inode) = unsafe {
        let Ok(sock) = bpf_probe_read_kernel(file.add(koff!(file_private)) as *const *const u8) else { return 0 };
        if sock.is_null() {
            return 0;
        }
        let Ok(sk) = bpf_probe_read_kernel(sock.add(koff!(socket_sk)) as *const *const u8) else { return 0 };
        if sk.is_null() {
            return 0;
        }
        let Ok(peer) = bpf_probe_read_kernel(sk.add(koff!(unix_peer)) as *const *const u8) else { return 0 };
        if peer.is_null() {
            return 0;
        }
        let Ok(dentry) = bpf_probe_read_kernel(peer.add(koff!(unix_path_dentry)) as *const *const u8) else { return 0 };
        if dentry.is_null() {
            return 0; // an abstract or unnamed socket: no file
        }
        let Ok(inode) = bpf_probe_read_kernel(dentry.add(koff!(dentry_inode)) as *const *const u8) else { return 0 };
        if inode.is_null() {
            return 0;
        }
        (dentry, inode)
    };
    // No entry by inode: a key agent's socket made since the last plan, by its names.
    let p = match policy_with(inode, protect::KILL_CONNECT) {
        0 => crate::agents::agent_socket_policy(dentry),
        p => p,
    };
    if p == 0 || granted(server_id, p) {
        return 0;
    }
    // Only now, for a protected socket: whether the connecting process is its server's root,
    // launched as the engine's CLI (not a server that exec'd it).
    if launcher_root(cur) && exe_inode().is_some_and(|e| policy_with(e, protect::ROOT_MAY_CONNECT) != 0) {
        return 0;
    }
    p
}

const FMODE_READ: u32 = 1;
const FMODE_WRITE: u32 = 2;
const EPERM: i32 = 1;

/// Every LSM program's prologue: an earlier LSM's refusal stands (argument `prev_arg` holds
/// it), and untracked processes are none of our business. Err is what to return at once.
#[inline(always)]
fn lsm_tracked(ctx: &LsmContext, prev_arg: usize) -> Result<crate::maps::Current, i32> {
    let prev: i32 = ctx.arg(prev_arg);
    if prev != 0 {
        return Err(prev);
    }
    let cur = current();
    if tracked(cur).is_none() {
        return Err(0);
    }
    Ok(cur)
}

/// fentry on `security_file_open(struct file *file)` (kernels with BPF trampolines): the open
/// is judged from the file before `fd_install`, and a kill rule's SIGKILL is pending before any
/// fd exists, so no sibling thread can reach the file through the fd table (a sibling in user
/// space is kicked at once and dies at its next kernel exit). Deny rules are left to the BPF LSM
/// where it runs (`POLICY[LSM_ACTIVE]`): there the open fails with EPERM and the process lives.
/// The open's exit hook then reports the open, marked killed.
#[inline(always)]
pub fn file_open_kill(file: *const u8) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    let pending = PENDING_OPEN.get_ptr_mut(&cur.tid);
    // SAFETY: `ev` is the current thread's own PENDING_OPEN entry (keyed by its tid), valid for this
    // program run; the thread is inside this open, so no other hook writes the entry meanwhile.
    let open_flags = pending.map(|ev| unsafe { (*ev).open_flags }).unwrap_or(0);
    let (mut ino, mut dev) = (0u64, 0u32);
    let p = file_check(file, open_flags, info.server_id, true, &mut ino, &mut dev);
    if p == 0 {
        return 0;
    }
    let lsm = POLICY.get(policy::LSM_ACTIVE).copied().unwrap_or(0) != 0;
    if lsm && p & (protect::DENY_READ | protect::DENY_WRITE) != 0 {
        return 0;
    }
    if !kill_current() {
        return 0;
    }
    if let Some(ev) = pending {
        // SAFETY: as above: the current thread's PENDING_OPEN entry, written only by its own open hooks.
        unsafe {
            (*ev).hdr.flags |= flags::KILLED;
            (*ev).policy = p;
        }
    }
    0
}

/// BPF-LSM `file_open(struct file *file)` (kernels booted with the BPF LSM): a protected inode
/// under a deny policy fails the open with EPERM and the process lives. The open's exit
/// tracepoint then reports the failed open, marked denied. The path is already resolved here,
/// so the inode is the file whatever name was used.
#[lsm(hook = "file_open")]
pub fn mcpm_lsm_file_open(ctx: LsmContext) -> i32 {
    let cur = match lsm_tracked(&ctx, 1) {
        Ok(cur) => cur,
        Err(ret) => return ret,
    };
    let file: *const u8 = ctx.arg(0);
    let Some(inode) = file_inode(file) else { return 0 };
    let Some(key) = inode_key(inode) else { return 0 };
    // SAFETY: the PROTECTED value is copied out at once; no reference into the map is kept.
    let Some(p) = (unsafe { PROTECTED.get(&key) }).copied() else { return 0 };
    // SAFETY: `file` is this LSM hook's argument, live for the hook; `f_mode` (BTF offset) is read through
    // bpf_probe_read_kernel, a fault gives Err (then no access bits).
    let mode: u32 = unsafe { bpf_probe_read_kernel(file.add(koff!(file_f_mode)) as *const u32) }.unwrap_or(0);
    let deny_read = p & protect::DENY_READ != 0 && mode & FMODE_READ != 0;
    let deny_write = p & protect::DENY_WRITE != 0 && mode & FMODE_WRITE != 0;
    if !(deny_read || deny_write) || granted(tracked(cur).map(|i| i.server_id).unwrap_or(0), p) {
        return 0;
    }
    // A root's allowance (its runner's registry login, its launcher's files), as at the
    // open's exit and in the gate.
    if deny_read && !deny_write && root_allows(p, true) {
        return 0;
    }
    if let Some(ev) = PENDING_OPEN.get_ptr_mut(&cur.tid) {
        // SAFETY: the current thread's PENDING_OPEN entry (keyed by its tid), valid for this program run; the
        // thread is inside this open, so only its own hooks touch the entry.
        unsafe {
            (*ev).hdr.flags |= flags::DENIED;
            (*ev).policy = p;
        }
    }
    -EPERM
}

/// BPF-LSM `bprm_check_security(struct linux_binprm *bprm)`: a tracked process about to exec a
/// protected executable under a deny policy gets EPERM from execve and keeps running its old
/// image. The exec's exit hook then reports the failed exec, marked denied. The image is opened
/// by then, so the inode is the file whatever name or symlink was used.
#[lsm(hook = "bprm_check_security")]
pub fn mcpm_lsm_bprm(ctx: LsmContext) -> i32 {
    let cur = match lsm_tracked(&ctx, 1) {
        Ok(cur) => cur,
        Err(ret) => return ret,
    };
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: `bprm` is the LSM hook's argument, live for the hook; `bprm->file` (BTF offset) is read
    // through bpf_probe_read_kernel, which returns Err on a fault.
    let Ok(file) = (unsafe { bpf_probe_read_kernel(bprm.add(koff!(bprm_file)) as *const *const u8) }) else { return 0 };
    let Some(inode) = file_inode(file) else { return 0 };
    let p = policy_with(inode, protect::DENY_EXEC);
    if p == 0 {
        return 0;
    }
    if let Some(ev) = PENDING_EXEC.get_ptr_mut(&cur.tid) {
        // SAFETY: the current thread's PENDING_EXEC entry (keyed by its tid), valid for this program run; the
        // thread is inside this execve, so only its own hooks touch the entry.
        unsafe {
            (*ev).hdr.flags |= flags::DENIED;
            (*ev).policy = p;
        }
    }
    -EPERM
}

/// For a connect/send completed at its exit only (compat.rs): if it failed with EPERM and its
/// address is under a deny policy, the cgroup program refused it; mark the pending event as
/// that program would have (denied, and killed when the policy says kill).
#[inline(always)]
pub fn mark_refused_connect(ret: i64) {
    if ret != -(EPERM as i64) {
        return;
    }
    let cur = current();
    let Some(ev) = PENDING_CONNECT.get_ptr_mut(&cur.tid) else { return };
    // SAFETY: the current thread's PENDING_CONNECT entry, valid for this program run; the thread is inside
    // this connect/sendmsg, so nothing else writes it while this borrow lives (until return).
    let ev = unsafe { &mut *ev };
    let p = match ev.family {
        2 => net_policy_v4([ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]]),
        10 => net_policy_v6(ev.addr),
        _ => 0,
    };
    if p & (net_policy::DENY | net_policy::KILL) == 0 {
        return;
    }
    ev.policy = p;
    ev.hdr.flags |= flags::DENIED;
    if p & net_policy::KILL != 0 {
        ev.hdr.flags |= flags::KILLED;
    }
}

/// Policy for an IPv4 destination (network byte order as in memory).
#[inline(always)]
pub fn net_policy_v4(addr: [u8; 4]) -> u32 {
    NET_POLICY_V4.get(&Key::new(32, addr)).copied().unwrap_or(0)
}

#[inline(always)]
pub fn net_policy_v6(addr: [u8; 16]) -> u32 {
    NET_POLICY_V6.get(&Key::new(128, addr)).copied().unwrap_or(0)
}

/// Returns 1 to allow, 0 to refuse (the caller gets EPERM).
#[inline(always)]
fn sock_verdict(ctx: &SockAddrContext, v6: bool) -> i32 {
    let cur = current();
    if tracked(cur).is_none() {
        return 1;
    }
    // SAFETY: `ctx.sock_addr` is the bpf_sock_addr context the kernel hands this cgroup program, valid for
    // the whole run; the verifier checks every field read from it.
    let sa = unsafe { &*ctx.sock_addr };
    let p = if v6 {
        let w = sa.user_ip6;
        let mut a = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            let b = w[i].to_ne_bytes();
            a[i * 4] = b[0];
            a[i * 4 + 1] = b[1];
            a[i * 4 + 2] = b[2];
            a[i * 4 + 3] = b[3];
            i += 1;
        }
        net_policy_v6(a)
    } else {
        net_policy_v4(sa.user_ip4.to_ne_bytes())
    };
    if p & (net_policy::DENY | net_policy::KILL) == 0 {
        return 1;
    }
    // Tell the syscall's exit hook (and so the daemon) that this call was refused here.
    if let Some(ev) = PENDING_CONNECT.get_ptr_mut(&cur.tid) {
        // SAFETY: the current thread's PENDING_CONNECT entry (keyed by its tid), valid for this program run;
        // the thread is inside this connect/sendmsg, so only its own hooks touch the entry.
        unsafe {
            (*ev).policy = p;
            (*ev).hdr.flags |= flags::DENIED;
            if p & net_policy::KILL != 0 {
                (*ev).hdr.flags |= flags::KILLED;
            }
        }
    }
    0
}

#[cgroup_sock_addr(connect4)]
pub fn mcpm_deny_connect4(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn mcpm_deny_connect6(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn mcpm_deny_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn mcpm_deny_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, true)
}

/// `io_uring_enter(fd, to_submit, min_complete, flags, …)` by a tracked process without an
/// io_uring grant. Its own rings die at setup, so a ring it enters came from elsewhere: taken
/// from another process with `pidfd_getfd`, or inherited from before it was tracked (the kernel
/// refuses io_uring fds over SCM_RIGHTS). Killed at the entry, before anything is submitted.
#[inline(always)]
pub fn uring_enter_e<S: crate::maps::Sys>(s: &S) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    let knob = POLICY.get(policy::IO_URING_KILL).copied().unwrap_or(0);
    if knob == 0 || granted(info.server_id, knob) {
        return 0;
    }
    let mut ev = IoUringEvent::default();
    fill_header(&mut ev.hdr, EventKind::IoUring, cur, info);
    ev.hdr.flags |= flags::URING_ENTER;
    ev.fd = s.arg(0) as i32;
    if kill_current() {
        ev.hdr.flags |= flags::KILLED;
    }
    output(&ev);
    0
}

gated_tracepoint!(mcpm_uring_enter => uring_enter_e);

/// `io_uring:io_uring_create`: a non-syscall tracepoint, so it costs nothing until a ring is made.
#[tracepoint]
pub fn mcpm_io_uring(ctx: TracePointContext) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };
    let mut ev = IoUringEvent::default();
    fill_header(&mut ev.hdr, EventKind::IoUring, cur, info);
    // SAFETY: read_at reads the tracepoint record through bpf_probe_read (Err on a fault, then -1); the
    // offset comes from the tracepoint's tracefs format, set by the loader.
    ev.fd = unsafe { ctx.read_at::<i32>(koff!(tp_uring_fd)) }.unwrap_or(-1);
    // SAFETY: as above: `sq_entries` at its tracefs offset, read with a fault check.
    ev.sq_entries = unsafe { ctx.read_at::<u32>(koff!(tp_uring_sq)) }.unwrap_or(0);
    // SAFETY: as above: `cq_entries` at its tracefs offset, read with a fault check.
    ev.cq_entries = unsafe { ctx.read_at::<u32>(koff!(tp_uring_cq)) }.unwrap_or(0);
    // SAFETY: as above: `flags` at its tracefs offset, read with a fault check.
    ev.setup_flags = unsafe { ctx.read_at::<u32>(koff!(tp_uring_flags)) }.unwrap_or(0);
    let knob = POLICY.get(policy::IO_URING_KILL).copied().unwrap_or(0);
    if knob != 0 && !granted(info.server_id, knob) && kill_current() {
        ev.hdr.flags |= flags::KILLED;
    }
    output(&ev);
    0
}
