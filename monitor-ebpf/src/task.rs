//! The current task as a BTF-typed pointer, for the exec hook's reads of every exec of the
//! machine (its comm, its parent's, its fds 0 and 1).
//!
//! Why: `bpf_probe_read_kernel` is a helper call per field (and `bpf_get_current_comm` a string
//! copy), about 900 ns an untracked exec in all. A pointer from `bpf_get_current_task_btf` may be
//! loaded from directly: the verifier checks each load's offset and size against the kernel's
//! BTF and makes it a fault-safe load (a fault reads 0), and walking a pointer field gives another
//! such pointer. The offsets are `KERNEL_OFFSETS`, read-only data the loader sets before the
//! verifier runs, so the verifier sees them as constants. Measured with `bpf_stats` on a
//! fork+exec loop: the hook's run went from about 880 to 450 ns with these loads, and to about
//! 380 ns with the comm filter (maps.rs `COMM_FILTER`).
//!
//! Kernel contract: `bpf_get_current_task_btf` (5.11, tracing programs) and direct loads
//! through its pointer in a tracepoint program; fields `comm` (`char[16]`), `real_parent`,
//! `files`, `files_struct.fdt`, `fdtable.fd` (`struct file **`: a walk ends there, as BTF has no
//! struct behind a pointer to a pointer, so `fd[i]` and what lies behind it are helper reads).

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task_btf};

use crate::maps::koff;

/// `current`, BTF-typed.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: a helper without arguments; the hooks that call it run in task context.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// A field of the BTF-typed object `obj` at byte offset `off`, loaded directly.
///
/// # Safety
/// `obj` is a BTF-typed pointer (from [`current_task`] or a field loaded with this function) and
/// `off` the BTF offset of a field of type `T` in its type: the verifier refuses the program
/// otherwise, and makes the load fault-safe.
#[inline(always)]
unsafe fn field<T: Copy>(obj: *const u8, off: usize) -> T {
    // SAFETY: per this function's contract; volatile so that the load keeps its size.
    unsafe { core::ptr::read_volatile(obj.add(off) as *const T) }
}

/// `task->comm` as two little-endian words, trimmed at its NUL (monitor-common `comm_trimmed`).
#[inline(always)]
pub fn comm_words(task: *const u8) -> (u64, u64) {
    let o = koff!(task_comm);
    // SAFETY: `task` is a BTF task pointer; `comm` is a char[16] at its BTF offset, which the
    // verifier lets two 8-byte loads read (loads inside an array of scalars).
    let (a, b) = unsafe { (field::<u64>(task, o), field::<u64>(task, o + 8)) };
    monitor_common::comm_trimmed(a, b)
}

/// `task->real_parent`.
#[inline(always)]
pub fn real_parent(task: *const u8) -> *const u8 {
    // SAFETY: `task` is a BTF task pointer and `real_parent` a `struct task_struct *` field.
    unsafe { field::<*const u8>(task, koff!(task_real_parent)) }
}

/// The `struct file *` behind fd `fd` of the current task, `current->files->fdt->fd[fd]`, for
/// fds 0 and 1 only: with no bound check against `max_fds`, as a table always has room for those
/// (`NR_OPEN_DEFAULT`), and the read of the slot is fault-checked anyway.
#[inline(always)]
pub fn std_fd_file(fd: usize) -> Option<*const u8> {
    if fd > 1 {
        return None;
    }
    let task = current_task();
    // SAFETY: `files` (`struct files_struct *`) and `fdt` (`struct fdtable *`) are pointer fields
    // walked from a BTF task pointer; `fd` is `struct file **`, which loads as a plain address.
    let arr: u64 = unsafe {
        let files = field::<*const u8>(task, koff!(task_files));
        let fdt = field::<*const u8>(files, koff!(files_fdt));
        field::<u64>(fdt, koff!(fdt_fd))
    };
    // SAFETY: one slot of the fd array, read through bpf_probe_read_kernel (Err on a fault).
    let file: *const u8 = unsafe { bpf_probe_read_kernel((arr as *const *const u8).add(fd)) }.ok()?;
    (!file.is_null()).then_some(file)
}
