//! The tracepoint programs of the table: all loaded on every kernel (the process-tree ones serve
//! both observation paths; the syscall ones are the fallback of the fentry/fexit fast path and
//! stay loaded, unattached, where the fast path is taken).
use std::path::Path;

use aya::{programs::TracePoint, Ebpf};
use monitor_common::programs::{of_kind, Kind, Program};

use super::{hook::HookRef, program, refused, tracefs, ProbeError};

/// Loads every tracepoint program; returns the hooks to attach, in table order. A hook this
/// kernel lacks is skipped (logged) when its program is optional; a required one is kept, so
/// that its attach fails naming it.
pub fn load(ebpf: &mut Ebpf, tracefs: &Path) -> Result<Vec<HookRef>, ProbeError> {
    let mut hooks = Vec::new();
    for p in of_kind(Kind::TracePoint) {
        let prog: &mut TracePoint = program(ebpf, p.name, p.purpose)?;
        prog.load().map_err(|e| refused(p.name, p.purpose, "(load)".into(), e))?;
        for &hook in p.hooks {
            let (category, name) = Program::tracepoint(hook);
            if p.optional && !tracefs::exists(tracefs, category, name) {
                tracing::info!(hook, program = p.name, "hook does not exist on this kernel: skipped");
                continue;
            }
            hooks.push(HookRef { program: p, hook });
        }
    }
    Ok(hooks)
}
