//! Benchmark floor: the cheapest possible program on mcpmon's syscall tracepoints (one `TRACKED`
//! lookup, nothing else). `cargo xtask bench` attaches it alone to tell the cost of the kernel's
//! syscall-tracepoint slow path from the cost of mcpmon's own programs.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::maps::{current, tracked};

#[tracepoint]
pub fn mcpm_floor(_ctx: TracePointContext) -> u32 {
    let _ = tracked(current());
    0
}
