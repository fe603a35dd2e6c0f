//! The BPF-LSM fast path for file deny: `file_open`, where the kernel runs the BPF LSM (booted
//! with `lsm=…,bpf`). Loaded at start-up (so a refusal is known and logged then) and, like the
//! syscall hooks, attached only while something is tracked: an LSM hook runs on every open of
//! the machine. Elsewhere loading fails (this machine: no trampolines, EPERM) and deny rules on
//! files fall back to the kill at the open's exit.
use aya::{
    programs::{lsm::LsmLinkId, Lsm},
    Btf, Ebpf,
};

use super::{features::Probe, ondemand::AttachError};

pub const PROGRAM: &str = "mcpm_lsm_file_open";

fn prog(ebpf: &mut Ebpf) -> Result<&mut Lsm, String> {
    ebpf.program_mut(PROGRAM).ok_or("missing from the object")?.try_into().map_err(|e| format!("{e}"))
}

/// Loads the program and proves it attaches (then detaches it).
pub fn load(ebpf: &mut Ebpf, probe: &Probe) -> Result<(), String> {
    if !probe.available {
        return Err(probe.detail.clone());
    }
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    prog(ebpf)?.load("file_open", &btf).map_err(|e| format!("program {PROGRAM} on lsm/file_open: load: {e}"))?;
    let id = attach(ebpf).map_err(|e| e.to_string())?;
    detach(ebpf, id);
    Ok(())
}

pub fn attach(ebpf: &mut Ebpf) -> Result<LsmLinkId, AttachError> {
    prog(ebpf).map_err(AttachError::other)?.attach().map_err(|e| AttachError::kernel(format!("program {PROGRAM} on lsm/file_open: attach"), &e))
}

pub fn detach(ebpf: &mut Ebpf, id: LsmLinkId) {
    if let Ok(p) = prog(ebpf) {
        if let Err(e) = p.detach(id) {
            tracing::warn!("detaching {PROGRAM}: {e}");
        }
    }
}
