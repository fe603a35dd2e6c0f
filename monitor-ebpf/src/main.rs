//! mcpmon's kernel side: hooks that follow tracked process trees (MCP servers and everything they
//! spawn) and report exec, open, connect, fork and exit through one ring buffer.
//!
//! Every program starts with a single map lookup (`TRACKED` by tgid, or the per-thread pending
//! map on syscall exit) and returns at once for untracked processes: that lookup is the whole cost
//! the rest of the machine pays.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod agents;
#[cfg(target_arch = "bpf")]
mod compat;
#[cfg(target_arch = "bpf")]
mod enforce;
#[cfg(target_arch = "bpf")]
mod fast;
#[cfg(target_arch = "bpf")]
mod file;
#[cfg(target_arch = "bpf")]
mod fold;
#[cfg(target_arch = "bpf")]
mod gate;
#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod handshake;
#[cfg(target_arch = "bpf")]
mod hold;
#[cfg(target_arch = "bpf")]
mod http;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod procaccess;
#[cfg(target_arch = "bpf")]
mod procmem;
#[cfg(target_arch = "bpf")]
mod stdio;
#[cfg(target_arch = "bpf")]
mod task;
#[cfg(target_arch = "bpf")]
mod unseen;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this only satisfies the compiler.
    loop {}
}

/// The kernel only lets GPL-compatible programs use helpers such as `bpf_probe_read_user`.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Host builds (e.g. `cargo check --workspace`) get an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
