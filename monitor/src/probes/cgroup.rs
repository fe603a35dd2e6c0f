//! cgroup `sock_addr` programs: the connect/sendmsg deny path. They attach to the root of the
//! cgroup v2 hierarchy (`/sys/fs/cgroup` on unified systems, `/sys/fs/cgroup/unified` on hybrid
//! ones), found in /proc/self/mounts, so they see every process. Like the syscall hooks they are
//! attached only while something is tracked (each run is a `TRACKED` lookup on every connect and
//! UDP send of the machine); loading and one attach/detach at start-up prove the path works.
//! Attached as bpf links (aya uses them where the kernel has them): a link is always one of many
//! programs on the cgroup, and the kernel refuses the legacy ALLOW_MULTI flag on links.
use std::path::PathBuf;

use aya::{
    programs::{cgroup_sock_addr::CgroupSockAddrLinkId, links::CgroupAttachMode, CgroupSockAddr},
    Ebpf,
};
use monitor_common::programs::{of_kind, Kind};

use super::link::{attach_each, detach_each, AttachError, NamedLinks};

#[derive(Debug, Clone)]
pub enum DenyPath {
    Cgroup { root: PathBuf, programs: Vec<String> },
    Unavailable(String),
}

const PURPOSE: &str = "connect/sendmsg deny";

fn prog<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr, String> {
    super::program(ebpf, name, PURPOSE).map_err(|e| e.to_string())
}

/// Loads the programs and proves they attach (then detaches them again).
pub fn load_deny(ebpf: &mut Ebpf) -> DenyPath {
    let Some(root) = crate::sys::procfs::cgroup2_root() else { return DenyPath::Unavailable("no cgroup2 mount".into()) };
    for p in of_kind(Kind::CgroupSockAddr) {
        let (name, point) = (p.name, p.hooks[0]);
        if let Err(e) = prog(ebpf, name).and_then(|p| p.load().map_err(|e| format!("load: {e}"))) {
            return DenyPath::Unavailable(format!("program {name} on cgroup {point}: {e}"));
        }
    }
    match attach(ebpf, &root) {
        Ok(links) => detach(ebpf, links),
        Err(e) => return DenyPath::Unavailable(e.to_string()),
    }
    DenyPath::Cgroup { root, programs: of_kind(Kind::CgroupSockAddr).map(|p| p.hooks[0].to_string()).collect() }
}

pub type Links = NamedLinks<CgroupSockAddrLinkId>;

pub fn attach(ebpf: &mut Ebpf, root: &std::path::Path) -> Result<Links, AttachError> {
    let dir = std::fs::File::open(root).map_err(|e| AttachError::other(format!("{}: {e}", root.display())))?;
    attach_each(
        ebpf,
        Kind::CgroupSockAddr,
        |ebpf, name, point| {
            let p = prog(ebpf, name).map_err(|e| AttachError::other(format!("program {name} on cgroup {point}: {e}")))?;
            p.attach(&dir, CgroupAttachMode::Single).map_err(|e| AttachError::kernel(format!("program {name} on cgroup {point}: attach"), &e))
        },
        detach,
    )
}

pub fn detach(ebpf: &mut Ebpf, links: Links) {
    detach_each(ebpf, links, |ebpf, name, id| prog(ebpf, name)?.detach(id).map_err(|e| e.to_string()));
}
