//! The untracked path of the syscall hooks, and of the process-tree hooks every fork and exit of
//! the machine runs (`task_newtask`, `sched_process_exit`). While a server is tracked, every
//! syscall of the machine on these hooks runs one of mcpmon's programs, and an untracked process
//! should pay only its pid's byte in `MAYBE_TRACKED`. A program whose handler is inlined whole pays more:
//! the JIT saves, in the prologue, every callee-saved register any instruction of the program
//! uses, and the compiler loads arguments and spills before the byte test. Measured with
//! `kernel.bpf_stats_enabled`, that put each of these programs 6–18% above bpftrace's one-test
//! filter on the same hook (`cargo xtask bench --prog-time-only`).
//!
//! So each program here is the byte test alone, and its handler runs in a BPF subprogram of its
//! own (a BPF-to-BPF call, in every kernel mcpmon supports), reached only past the byte. Every
//! handler behind it but one began with the same test (directly, or through `tracked()`), so no
//! process it acted on is turned away: tracked processes, handshake candidates and doomed
//! children all have their byte set. The one, `exec_x`, looked up its thread's pending exec
//! first; that entry is saved only for a tracked process, and only the kernel clears a byte, at
//! the process's exit (`maps.rs`). The trampoline programs of the fast path have the same shape
//! (`gated!`, below).

/// A program of hook kind `$kind` (its aya attribute) that is its process's `MAYBE_TRACKED` byte
/// test alone; `$body`, with `$ctx` rebuilt from the raw context, runs in a subprogram past it.
/// The syscall tracepoints below and the trampolines of `fast.rs` are made with it.
macro_rules! gated {
    ($(#[$m:meta])* $kind:path, $name:ident($ctx:ident: $ty:ty) => $body:expr) => {
        $(#[$m])*
        #[$kind]
        pub fn $name($ctx: $ty) -> u32 {
            if !crate::maps::maybe_tracked(crate::maps::current().tgid) {
                return 0;
            }
            // Not inlined: its registers, stack and argument reads stay out of the untracked path.
            #[inline(never)]
            fn handle(raw: *mut core::ffi::c_void) -> u32 {
                let $ctx = <$ty>::new(raw);
                $body
            }
            handle(aya_ebpf::EbpfContext::as_ptr(&$ctx))
        }
    };
}
pub(crate) use gated;

/// A syscall tracepoint program `$name` whose handler `$handler(&TracePointContext)` runs only
/// for a process whose byte in `MAYBE_TRACKED` is set (see the module comment).
macro_rules! gated_tracepoint {
    ($(#[$m:meta])* $name:ident => $handler:path) => {
        crate::gate::gated!($(#[$m])* aya_ebpf::macros::tracepoint, $name(ctx: aya_ebpf::programs::TracePointContext) => $handler(&ctx));
    };
}
pub(crate) use gated_tracepoint;

/// The daemon's way to `MAYBE_TRACKED` (maps.rs): global data it cannot map into its memory (aya
/// creates the section's map without `BPF_F_MMAPABLE`), and whose one 4 MiB element a bpf(2)
/// update would rewrite whole, undoing any byte the kernel set meanwhile. Never attached: the
/// daemon runs it with `BPF_PROG_TEST_RUN` (`monitor/src/probes/maybe.rs`), `args[0]` the pid and
/// `args[1]` nonzero to set its byte, and reads the byte from its return value. It can only set:
/// anyone able to run it can make a process cost a lookup, never hide one from the hooks.
/// Written without aya's `raw_tracepoint` macro, whose programs always return 0.
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp")]
pub fn mcpm_maybe(ctx: *mut core::ffi::c_void) -> u32 {
    let ctx = aya_ebpf::programs::RawTracePointContext::new(ctx);
    let pid: u64 = ctx.arg(0);
    let set: u64 = ctx.arg(1);
    if set != 0 {
        crate::maps::set_maybe_tracked(pid as u32, true);
    }
    u32::from(crate::maps::maybe_tracked(pid as u32))
}
