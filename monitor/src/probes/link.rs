//! Attaching and detaching programs one family at a time: the leaf the attach paths share
//! (the on-demand syscall hooks, the cgroup deny, the BPF-LSM deny), so none of them depends on
//! another.
use aya::programs::ProgramError;
use monitor_common::programs::{of_kind, Kind};

/// A refused attach of a deny program (the syscall hooks report [`ProbeError`]).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {msg}")]
pub struct AttachError {
    what: String,
    msg: String,
    /// The kernel still holds this program on this hook (EEXIST): retrying soon succeeds.
    pub busy: bool,
}

impl AttachError {
    pub fn kernel(what: String, e: &ProgramError) -> Self {
        Self { what, msg: e.to_string(), busy: still_attached(e) }
    }

    pub fn other(msg: impl Into<String>) -> Self {
        Self { what: "attach".into(), msg: msg.into(), busy: false }
    }
}

/// Whether the kernel refused because this program is still attached to the hook: its previous
/// link's last reference is still held somewhere for a moment.
pub(super) fn still_attached(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EEXIST))
}

/// A deny family's links, by program name.
pub type NamedLinks<L> = Vec<(&'static str, L)>;

/// Attaches every program of a deny family (its kind in the table) to its hook with `one`; on
/// the first failure detaches those already attached with `undo`, so a family is attached whole
/// or not at all.
pub(super) fn attach_each<L>(
    ebpf: &mut aya::Ebpf,
    family: Kind,
    mut one: impl FnMut(&mut aya::Ebpf, &'static str, &'static str) -> Result<L, AttachError>,
    undo: fn(&mut aya::Ebpf, NamedLinks<L>),
) -> Result<NamedLinks<L>, AttachError> {
    let mut links = Vec::new();
    for p in of_kind(family) {
        let name = p.name;
        match one(ebpf, name, p.hooks[0]) {
            Ok(id) => links.push((name, id)),
            Err(e) => {
                undo(ebpf, links);
                return Err(e);
            }
        }
    }
    Ok(links)
}

/// Detaches a deny family's links with `one`, logging (not failing on) a refusal.
pub(super) fn detach_each<L>(ebpf: &mut aya::Ebpf, links: NamedLinks<L>, mut one: impl FnMut(&mut aya::Ebpf, &'static str, L) -> Result<(), String>) {
    for (name, id) in links {
        if let Err(e) = one(ebpf, name, id) {
            tracing::warn!(program = name, error = %e, "detaching");
        }
    }
}
