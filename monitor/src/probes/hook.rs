//! One hook of one program of the table (`monitor_common::programs`), attached and detached one
//! at a time whatever its kind: the observation hooks (tracepoints, the ia32 `tp_btf` hook,
//! fentry/fexit), at start-up for `Always` programs and while something is tracked for the
//! others. The deny families (lsm.rs, cgroup.rs) attach whole, through link.rs.
use aya::{
    programs::{
        fentry::FEntryLinkId, fexit::FExitLinkId, tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId, BtfTracePoint, FEntry,
        FExit, TracePoint,
    },
    Ebpf,
};
use monitor_common::programs::{Kind, Lifetime, Program};

use super::{program, refused, ProbeError};

/// A program and one of its hooks.
#[derive(Clone, Copy, Debug)]
pub struct HookRef {
    pub program: &'static Program,
    pub hook: &'static str,
}

impl HookRef {
    /// As `sensors_loaded` and the start-up log name it: `category:name`, `tp_btf:NAME`,
    /// `fentry:FUNCTION`, `fexit:FUNCTION`, `lsm:HOOK`, `cgroup:POINT`.
    pub fn describe(&self) -> String {
        let h = self.hook;
        match self.program.kind {
            Kind::TracePoint => h.to_string(),
            Kind::BtfTracePoint => format!("tp_btf:{h}"),
            Kind::FEntry => format!("fentry:{h}"),
            Kind::FExit => format!("fexit:{h}"),
            Kind::Lsm => format!("lsm:{h}"),
            Kind::CgroupSockAddr => format!("cgroup:{h}"),
        }
    }

    /// Exit hooks attach first (see `Program::is_exit`).
    pub fn is_exit(&self) -> bool {
        self.program.is_exit(self.hook)
    }
}

/// Every hook of `programs`, in table order.
pub fn hooks_of(programs: impl IntoIterator<Item = &'static Program>) -> Vec<HookRef> {
    programs.into_iter().flat_map(|p| p.hooks.iter().map(move |&hook| HookRef { program: p, hook })).collect()
}

/// The hooks of the observation path taken, by lifetime: those attached at start-up, and those
/// attached while something is tracked, exit hooks first (table order otherwise), so that an
/// entry is never saved without its exit hook in place.
pub fn by_lifetime(hooks: Vec<HookRef>) -> (Vec<HookRef>, Vec<HookRef>) {
    let (always, mut tracked): (Vec<_>, Vec<_>) = hooks.into_iter().partition(|h| h.program.lifetime == Lifetime::Always);
    tracked.sort_by_key(|h| !h.is_exit());
    (always, tracked)
}

/// An attached hook.
pub enum Link {
    Tp(HookRef, TracePointLinkId),
    Btf(HookRef, BtfTracePointLinkId),
    FEntry(HookRef, FEntryLinkId),
    FExit(HookRef, FExitLinkId),
}

/// A released link, owned: dropping it detaches (slow, see ondemand.rs).
pub type OwnedLink = Box<dyn Send>;

/// Attaches one hook of a loaded program.
pub fn attach(ebpf: &mut Ebpf, h: HookRef) -> Result<Link, ProbeError> {
    let p = h.program;
    let failed = |e| refused(p.name, p.purpose, h.describe(), e);
    match p.kind {
        Kind::TracePoint => {
            let (category, name) = Program::tracepoint(h.hook);
            let prog: &mut TracePoint = program(ebpf, p.name, p.purpose)?;
            prog.attach(category, name).map(|l| Link::Tp(h, l)).map_err(failed)
        }
        Kind::BtfTracePoint => {
            // Bound to its tracepoint at load (ia32.rs).
            let prog: &mut BtfTracePoint = program(ebpf, p.name, p.purpose)?;
            prog.attach().map(|l| Link::Btf(h, l)).map_err(failed)
        }
        Kind::FEntry => {
            let prog: &mut FEntry = program(ebpf, p.name, p.purpose)?;
            prog.attach().map(|l| Link::FEntry(h, l)).map_err(failed)
        }
        Kind::FExit => {
            let prog: &mut FExit = program(ebpf, p.name, p.purpose)?;
            prog.attach().map(|l| Link::FExit(h, l)).map_err(failed)
        }
        Kind::Lsm | Kind::CgroupSockAddr => Err(ProbeError::Family(p.name)),
    }
}

/// Takes a link from its program, so that dropping it (here or on another thread) detaches it.
pub fn take(ebpf: &mut Ebpf, link: Link) -> Result<OwnedLink, ProbeError> {
    let detach = |h: HookRef, e| refused(h.program.name, h.program.purpose, "(detach)".into(), e);
    Ok(match link {
        Link::Tp(h, id) => {
            let p: &mut TracePoint = program(ebpf, h.program.name, h.program.purpose)?;
            Box::new(p.take_link(id).map_err(|e| detach(h, e))?)
        }
        Link::Btf(h, id) => {
            let p: &mut BtfTracePoint = program(ebpf, h.program.name, h.program.purpose)?;
            Box::new(p.take_link(id).map_err(|e| detach(h, e))?)
        }
        Link::FEntry(h, id) => {
            let p: &mut FEntry = program(ebpf, h.program.name, h.program.purpose)?;
            Box::new(p.take_link(id).map_err(|e| detach(h, e))?)
        }
        Link::FExit(h, id) => {
            let p: &mut FExit = program(ebpf, h.program.name, h.program.purpose)?;
            Box::new(p.take_link(id).map_err(|e| detach(h, e))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use monitor_common::programs::{of_kind, PROGRAMS};

    use super::*;

    #[test]
    fn tracked_hooks_go_in_exits_first_on_either_path() {
        let tps = hooks_of(of_kind(Kind::TracePoint));
        let fast = hooks_of(PROGRAMS.iter().filter(|p| matches!(p.kind, Kind::FEntry | Kind::FExit)));
        let (always, tp_path) = by_lifetime(tps.iter().copied().chain(hooks_of(of_kind(Kind::BtfTracePoint))).collect());
        let (always_fast, fast_path) = by_lifetime(tps.into_iter().filter(|h| h.program.lifetime == Lifetime::Always).chain(fast).collect());
        let names = |v: &[HookRef]| v.iter().map(HookRef::describe).collect::<Vec<_>>();
        assert_eq!(names(&always), ["task:task_newtask", "sched:sched_process_exit", "sched:sched_process_exec", "io_uring:io_uring_create"]);
        assert_eq!(names(&always), names(&always_fast), "the process tree is watched the same way on both paths");
        for path in [&tp_path, &fast_path] {
            let first_entry = path.iter().position(|h| !h.is_exit()).unwrap();
            assert!(path[first_entry..].iter().all(|h| !h.is_exit()), "{:?}", names(path));
        }
        assert_eq!(tp_path.first().map(HookRef::describe).as_deref(), Some("syscalls:sys_exit_clone"));
        assert_eq!(tp_path.last().map(HookRef::describe).as_deref(), Some("tp_btf:sys_exit"), "the ia32 hook goes in last");
        assert_eq!(fast_path.first().map(HookRef::describe).as_deref(), Some("fexit:__x64_sys_execve"));
    }
}
