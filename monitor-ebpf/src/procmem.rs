//! Another process's secrets through procfs: a tracked process that opens `/proc/PID/environ`
//! (its environment: tokens, keys), `mem`, `maps`, `smaps`, `pagemap` or `auxv` of a process
//! outside its own server's tree. Judged at the open's exit from the opened file itself (its
//! superblock is procfs, its dentry names the file and the process), so `/proc/self/..`,
//! `/proc/PID/task/TID/..`, relative paths and links all reach the same decision. procfs
//! allows no fanotify permission events, so this in-kernel check is the enforcement. The
//! server's own root counts as outside while it is a package runner (`ROOT_RUNNERS`), as in
//! `procaccess.rs`.
//!
//! Kernel contracts: `inode->i_sb->s_magic` (PROC_SUPER_MAGIC), `dentry->d_name.name` (a qstr:
//! hash and length in the first 8 bytes, then the name pointer), `dentry->d_parent`.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use monitor_common::policy;

use crate::{
    enforce::{granted, runner_marked, POLICY},
    maps::{current, koff, TRACKED},
    stdio::{fd_file, file_inode},
};


const PROC_SUPER_MAGIC: u64 = 0x9fa0;

/// The first 8 bytes of a dentry's name (NUL-padded when shorter).
#[inline(always)]
fn name8(dentry: *const u8) -> Option<[u8; 8]> {
    // SAFETY: `d_name.name` (BTF offset + 8 past the qstr's hash and length) and the 8 name bytes are read
    // through bpf_probe_read_kernel, which returns Err on a fault instead of dereferencing.
    unsafe {
        let p: *const u8 = bpf_probe_read_kernel(dentry.add(koff!(dentry_name) + 8) as *const *const u8).ok()?;
        let mut b = [0u8; 8];
        // A short name's bytes past its NUL are whatever follows; cut at the first NUL.
        b = bpf_probe_read_kernel(p as *const [u8; 8]).unwrap_or(b);
        let mut i = 0;
        let mut end = false;
        while i < 8 {
            if b[i] == 0 {
                end = true;
            }
            if end {
                b[i] = 0;
            }
            i += 1;
        }
        Some(b)
    }
}

#[inline(always)]
fn parent(dentry: *const u8) -> Option<*const u8> {
    // SAFETY: `dentry->d_parent` (BTF offset) read through bpf_probe_read_kernel, Err on a fault.
    unsafe { bpf_probe_read_kernel(dentry.add(koff!(dentry_parent)) as *const *const u8).ok() }
}

/// A decimal pid from a dentry name (at most 7 digits, as pid_max allows), else None.
#[inline(always)]
fn pid_of(dentry: *const u8) -> Option<u32> {
    let b = name8(dentry)?;
    let mut pid: u32 = 0;
    let mut i = 0;
    while i < 8 {
        let c = b[i];
        if c == 0 {
            break;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        pid = pid * 10 + (c - b'0') as u32;
        i += 1;
    }
    (i > 0).then_some(pid)
}

fn is_secret_name(n: &[u8; 8]) -> bool {
    matches!(n, b"environ\0" | b"mem\0\0\0\0\0" | b"maps\0\0\0\0" | b"smaps\0\0\0" | b"pagemap\0" | b"auxv\0\0\0\0")
}

/// For an open that returned `fd`: the policy knob (1 | rule slot << 16) when the file is a
/// secret procfs file of a process outside `server_id`'s tree and no grant lifts it, else 0.
#[inline(always)]
pub fn foreign_proc_check(fd: i32, server_id: u32) -> u32 {
    let knob = POLICY.get(policy::FOREIGN_PROC_KILL).copied().unwrap_or(0);
    if knob == 0 {
        return 0;
    }
    let Some(file) = fd_file(fd) else { return 0 };
    let Some(inode) = file_inode(file) else { return 0 };
    // SAFETY: `inode->i_sb` and `sb->s_magic` (BTF offsets) read through bpf_probe_read_kernel, which
    // returns Err on a fault; `inode` comes from the just-opened fd of the current task.
    let magic = unsafe {
        let Ok(sb) = bpf_probe_read_kernel(inode.add(koff!(inode_sb)) as *const *const u8) else { return 0 };
        bpf_probe_read_kernel(sb.add(koff!(sb_magic)) as *const u64).unwrap_or(0)
    };
    if magic != PROC_SUPER_MAGIC {
        return 0;
    }
    // SAFETY: `file->f_path.dentry` (BTF offset) read through bpf_probe_read_kernel, Err on a fault.
    let Ok(dentry) = (unsafe { bpf_probe_read_kernel(file.add(koff!(file_dentry)) as *const *const u8) }) else { return 0 };
    let Some(name) = name8(dentry) else { return 0 };
    if !is_secret_name(&name) {
        return 0;
    }
    // /proc/PID/FILE, or /proc/PID/task/TID/FILE (the thread's directory, then "task").
    let Some(dir) = parent(dentry) else { return 0 };
    let Some(mut pid) = pid_of(dir) else { return 0 };
    if let Some(up) = parent(dir) {
        if name8(up) == Some(*b"task\0\0\0\0") {
            match parent(up).and_then(pid_of) {
                Some(p) => pid = p,
                None => return 0,
            }
        }
    }
    if pid == current().tgid {
        return 0;
    }
    // SAFETY: a TRACKED value pointer, valid for this program run (preallocated map); only
    // `server_id` and `root_tgid` are read from it, inside this `if`.
    if let Some(t) = unsafe { TRACKED.get(&pid) } {
        // Except its root while that is a runner holding the registry login it just read.
        if t.server_id == server_id && !(t.root_tgid == pid && runner_marked(pid)) {
            return 0;
        }
    }
    if granted(server_id, knob) {
        return 0;
    }
    knob
}
