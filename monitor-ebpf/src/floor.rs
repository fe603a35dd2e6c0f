//! Benchmark floor: the cheapest possible program on mcpmon's syscall hooks (one `TRACKED`
//! lookup, nothing else). `cargo xtask bench` attaches it alone to tell the cost of the kernel's
//! syscall-tracepoint slow path from the cost of mcpmon's own programs.
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::maps::{current, tracked};

#[tracepoint]
pub fn mcpm_floor(_ctx: TracePointContext) -> u32 {
    let _ = tracked(current());
    0
}

/// The same on the raw `sys_enter`/`sys_exit` tracepoints (the ia32 hooks of compat.rs).
#[raw_tracepoint]
pub fn mcpm_floor_raw(_ctx: RawTracePointContext) -> i32 {
    let _ = tracked(current());
    0
}
