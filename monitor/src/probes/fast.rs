//! The fast observation path: fentry/fexit programs on the syscalls' x86_64 wrappers
//! (`monitor-ebpf/src/fast.rs`). Where the kernel has BPF trampolines they replace the syscall
//! tracepoints: a trampoline costs only the calls of the function it is on, while one attached
//! syscall tracepoint sends every syscall of every process through the slow path. Elsewhere (this
//! machine: loading returns EPERM, no trampolines; or another arch) the tracepoints stay.
use aya::{
    programs::{FEntry, FExit},
    Btf, Ebpf,
};
use monitor_common::names::{FastSpec, FAST_PROGRAMS};

use super::program;

/// Which programs observe the syscalls of tracked processes (`mcpmon run --observe`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Observe {
    /// fentry/fexit where the kernel has them, else syscall tracepoints.
    #[default]
    Auto,
    /// fentry/fexit or fail.
    Fentry,
    /// Syscall tracepoints even where fentry works (comparisons, benchmarks).
    Tracepoint,
}

/// Loads an fentry and an fexit program per syscall. Ok with the syscalls covered; Err with the
/// reason when a required one does not load (the caller then keeps the tracepoints). A syscall
/// missing from this kernel's BTF is skipped when optional, as its tracepoint would be.
pub fn load(ebpf: &mut Ebpf) -> Result<Vec<&'static FastSpec>, String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the fast path hooks the x86_64 syscall wrappers (__x64_sys_*); this is another arch".into());
    }
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    let mut out = Vec::new();
    for spec in FAST_PROGRAMS {
        let loaded = (|| {
            if spec.has_entry() {
                let entry: &mut FEntry = program(ebpf, spec.entry, "syscall entry (fast path)").map_err(|e| e.to_string())?;
                entry.load(spec.function, &btf).map_err(|e| format!("fentry {} on {}: {e}", spec.entry, spec.function))?;
            }
            if !spec.has_exit() {
                return Ok(());
            }
            let exit: &mut FExit = program(ebpf, spec.exit, "syscall result (fast path)").map_err(|e| e.to_string())?;
            exit.load(spec.function, &btf).map_err(|e| format!("fexit {} on {}: {e}", spec.exit, spec.function))
        })();
        match loaded {
            Ok(()) => out.push(spec),
            // As for its tracepoint: a syscall this kernel lacks (not in its BTF) is skipped.
            Err(e) if spec.optional && e.contains("unknown BTF type") => {
                tracing::info!(syscall = spec.syscall, error = %e, "fast path: syscall skipped");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

