//! The fast observation path: fentry/fexit programs on the syscalls' x86_64 wrappers
//! (`monitor-ebpf/src/fast.rs`). Where the kernel has BPF trampolines they replace the syscall
//! tracepoints: a trampoline costs only the calls of the function it is on, while one attached
//! syscall tracepoint sends every syscall of every process through the slow path. Elsewhere (this
//! machine: loading returns EPERM, no trampolines; or another arch) the tracepoints stay.
use aya::{
    programs::{FEntry, FExit},
    Btf, Ebpf,
};
use monitor_common::programs::{Kind, PROGRAMS};

use super::{hook::HookRef, program};

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

/// Loads the fentry/fexit programs of the table. Ok with their hooks; Err with the reason when a
/// required one does not load (the caller then keeps the tracepoints). A function missing from
/// this kernel's BTF is skipped when its program is optional, as its tracepoint would be.
pub fn load(ebpf: &mut Ebpf) -> Result<Vec<HookRef>, String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the fast path hooks the x86_64 syscall wrappers (__x64_sys_*); this is another arch".into());
    }
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    let mut out = Vec::new();
    for p in PROGRAMS.iter().filter(|p| matches!(p.kind, Kind::FEntry | Kind::FExit)) {
        // One function per program: a trampoline program is bound to the function it loads for.
        let function = p.hooks[0];
        let loaded = if p.kind == Kind::FEntry {
            let entry: &mut FEntry = program(ebpf, p.name, p.purpose).map_err(|e| e.to_string())?;
            entry.load(function, &btf).map_err(|e| format!("fentry {} on {function}: {e}", p.name))
        } else {
            let exit: &mut FExit = program(ebpf, p.name, p.purpose).map_err(|e| e.to_string())?;
            exit.load(function, &btf).map_err(|e| format!("fexit {} on {function}: {e}", p.name))
        };
        match loaded {
            Ok(()) => out.push(HookRef { program: p, hook: function }),
            // As for its tracepoint: a syscall this kernel lacks (not in its BTF) is skipped.
            Err(e) if p.optional && e.contains("unknown BTF type") => {
                tracing::info!(program = p.name, function, error = %e, "fast path: function skipped");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
