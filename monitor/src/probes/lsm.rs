//! The BPF-LSM fast path for file deny: `file_open` attached where the kernel runs the BPF LSM
//! (booted with `lsm=…,bpf`). Elsewhere loading fails (this machine: no trampolines, EPERM) and
//! deny rules on files fall back to the kill at the open's exit.
use aya::{programs::Lsm, Btf, Ebpf};

use super::features::Probe;

pub const PROGRAM: &str = "mcpm_lsm_file_open";

pub fn attach(ebpf: &mut Ebpf, probe: &Probe) -> Result<(), String> {
    if !probe.available {
        return Err(probe.detail.clone());
    }
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    let prog: &mut Lsm = ebpf.program_mut(PROGRAM).ok_or("missing from the object")?.try_into().map_err(|e| format!("{e}"))?;
    prog.load("file_open", &btf).map_err(|e| format!("program {PROGRAM} on lsm/file_open: load: {e}"))?;
    prog.attach().map_err(|e| format!("program {PROGRAM} on lsm/file_open: attach: {e}"))?;
    Ok(())
}
