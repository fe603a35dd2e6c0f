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
use monitor_common::names::CGROUP_PROGRAMS;

use super::link::{attach_each, detach_each, AttachError, NamedLinks};

#[derive(Debug, Clone)]
pub enum DenyPath {
    Cgroup { root: PathBuf, programs: Vec<String> },
    Unavailable(String),
}

/// The cgroup2 mount point, from a mounts table.
pub fn cgroup2_root(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

const PURPOSE: &str = "connect/sendmsg deny";

fn prog<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr, String> {
    super::program(ebpf, name, PURPOSE).map_err(|e| e.to_string())
}

/// Loads the programs and proves they attach (then detaches them again).
pub fn load_deny(ebpf: &mut Ebpf) -> DenyPath {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let Some(root) = cgroup2_root(&mounts) else { return DenyPath::Unavailable("no cgroup2 mount".into()) };
    for (name, point) in CGROUP_PROGRAMS {
        if let Err(e) = prog(ebpf, name).and_then(|p| p.load().map_err(|e| format!("load: {e}"))) {
            return DenyPath::Unavailable(format!("program {name} on cgroup {point}: {e}"));
        }
    }
    match attach(ebpf, &root) {
        Ok(links) => detach(ebpf, links),
        Err(e) => return DenyPath::Unavailable(e.to_string()),
    }
    DenyPath::Cgroup { root, programs: CGROUP_PROGRAMS.iter().map(|(_, p)| p.to_string()).collect() }
}

pub type Links = NamedLinks<CgroupSockAddrLinkId>;

pub fn attach(ebpf: &mut Ebpf, root: &std::path::Path) -> Result<Links, AttachError> {
    let dir = std::fs::File::open(root).map_err(|e| AttachError::other(format!("{}: {e}", root.display())))?;
    attach_each(
        ebpf,
        CGROUP_PROGRAMS,
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

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_cgroup2_mount_on_hybrid_and_unified_hosts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(super::cgroup2_root(hybrid).unwrap().to_str(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(super::cgroup2_root("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n").unwrap().to_str(), Some("/sys/fs/cgroup"));
        assert!(super::cgroup2_root("proc /proc proc rw 0 0\n").is_none());
    }
}
