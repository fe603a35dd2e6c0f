//! The daemon's side of `MAYBE_TRACKED`, the one-byte-per-pid filter every hook tests before
//! `TRACKED` (monitor-ebpf/src/maps.rs has the rule: a byte is set before its pid goes into
//! `TRACKED`, and only the kernel clears it).
//!
//! The array is mapped into our memory, so that setting a pid's byte is one byte store, as in the
//! kernel. Through bpf(2) it would be a read-modify-write of the whole 8-byte element, which
//! could undo a neighbour's byte the kernel set in between: a tracked child the hooks then skip.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU8, Ordering},
};

use aya::maps::MapData;

/// Elements the loader gives the array: one byte per pid up to this host's `pid_max`.
pub fn elems() -> u32 {
    // 2^22 is the kernel's ceiling for pid_max on 64-bit.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1 << 22);
    monitor_common::maybe_tracked_elems(pid_max)
}

pub struct MaybeTracked {
    base: NonNull<u8>,
    len: usize,
    /// Keeps the map alive as long as the mapping (the mapping holds a reference of its own too).
    _map: MapData,
}

// SAFETY: the mapping is shared memory written only with atomic byte stores; nothing else in
// this struct is tied to a thread.
unsafe impl Send for MaybeTracked {}
// SAFETY: as above: `&self` methods do atomic byte accesses only.
unsafe impl Sync for MaybeTracked {}

impl MaybeTracked {
    /// Maps `map` (`MAYBE_TRACKED`, loaded with `elems` elements of 8 bytes, BPF_F_MMAPABLE).
    pub fn new(map: MapData, elems: u32) -> io::Result<Self> {
        let len = elems as usize * 8;
        // SAFETY: a fresh shared mapping of a map fd we hold, no address hint; the kernel checks
        // the length against the map's size and the map's mmapable flag, and the result is checked.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, map.fd().as_fd().as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p as *mut u8).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, len, _map: map })
    }

    fn byte(&self, pid: u32) -> Option<&AtomicU8> {
        let i = pid as usize;
        // SAFETY: `i < len`, inside the live mapping (munmapped only in Drop, which takes &mut
        // self); AtomicU8 has the layout of u8, and every access to the byte here is atomic.
        (i < self.len).then(|| unsafe { AtomicU8::from_ptr(self.base.as_ptr().add(i)) })
    }

    /// Sets `pid`'s byte: call before inserting `pid` into `TRACKED`. A pid beyond the array
    /// (pid_max raised since the load) needs none: the kernel finds no element and looks it up.
    pub fn set(&self, pid: u32) {
        if let Some(b) = self.byte(pid) {
            b.store(1, Ordering::SeqCst);
        }
    }

    /// Whether `pid`'s byte is set (true beyond the array, as the kernel reads it).
    pub fn get(&self, pid: u32) -> bool {
        self.byte(pid).is_none_or(|b| b.load(Ordering::SeqCst) != 0)
    }
}

impl Drop for MaybeTracked {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, with its length; no reference into it outlives
        // `&mut self`.
        unsafe { libc::munmap(self.base.as_ptr() as *mut _, self.len) };
    }
}
