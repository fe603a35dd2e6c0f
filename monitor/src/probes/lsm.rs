//! The BPF-LSM deny path, where the kernel runs the BPF LSM (booted with `lsm=…,bpf`):
//! `file_open` fails a denied open with EPERM, `bprm_check_security` a denied exec. Loaded at
//! start-up (so a refusal is known and logged then) and, like the syscall hooks, attached only
//! while something is tracked: an LSM hook runs on every open and exec of the machine. Elsewhere
//! loading fails (this machine: no trampolines, EPERM) and deny rules fall back to the kill at
//! the open's exit or before the new image's first instruction.
use aya::{
    programs::{lsm::LsmLinkId, Lsm},
    Btf, Ebpf,
};
use monitor_common::programs::{of_kind, Kind};

use super::{
    features::Probe,
    link::{attach_each, detach_each, AttachError, NamedLinks},
};

pub type Links = NamedLinks<LsmLinkId>;

fn prog<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Lsm, String> {
    super::program(ebpf, name, "open/exec deny (BPF-LSM)").map_err(|e| e.to_string())
}

/// Loads the programs and proves they attach (then detaches them).
pub fn load(ebpf: &mut Ebpf, probe: &Probe) -> Result<(), String> {
    if !probe.available {
        return Err(probe.detail.clone());
    }
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    // All or none: a kernel that takes one takes the other.
    for p in of_kind(Kind::Lsm) {
        let (name, hook) = (p.name, p.hooks[0]);
        prog(ebpf, name)?.load(hook, &btf).map_err(|e| format!("program {name} on lsm/{hook}: load: {e}"))?;
    }
    let links = attach(ebpf).map_err(|e| e.to_string())?;
    detach(ebpf, links);
    Ok(())
}

pub fn attach(ebpf: &mut Ebpf) -> Result<Links, AttachError> {
    attach_each(
        ebpf,
        Kind::Lsm,
        |ebpf, name, hook| prog(ebpf, name).map_err(AttachError::other)?.attach().map_err(|e| AttachError::kernel(format!("program {name} on lsm/{hook}: attach"), &e)),
        detach,
    )
}

pub fn detach(ebpf: &mut Ebpf, links: Links) {
    detach_each(ebpf, links, |ebpf, name, id| prog(ebpf, name)?.detach(id).map_err(|e| e.to_string()));
}
