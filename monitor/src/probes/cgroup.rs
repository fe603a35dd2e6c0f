//! cgroup `sock_addr` programs: the connect/sendmsg deny path. They attach to the root of the
//! cgroup v2 hierarchy (`/sys/fs/cgroup` on unified systems, `/sys/fs/cgroup/unified` on hybrid
//! ones), found in /proc/self/mounts, so they see every process; each run is one `TRACKED` lookup.
//! Attached as bpf links (aya uses them where the kernel has them): a link is always one of many
//! programs on the cgroup, and the kernel refuses the legacy ALLOW_MULTI flag on links.
use std::path::PathBuf;

use aya::{
    programs::{links::CgroupAttachMode, CgroupSockAddr},
    Ebpf,
};
use monitor_common::names::CGROUP_PROGRAMS;

#[derive(Debug, Clone)]
pub enum DenyPath {
    Cgroup { root: PathBuf, attached: Vec<String> },
    Unavailable(String),
}

/// The cgroup2 mount point, from a mounts table.
pub fn cgroup2_root(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

pub fn attach_deny(ebpf: &mut Ebpf) -> DenyPath {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let Some(root) = cgroup2_root(&mounts) else { return DenyPath::Unavailable("no cgroup2 mount".into()) };
    let dir = match std::fs::File::open(&root) {
        Ok(d) => d,
        Err(e) => return DenyPath::Unavailable(format!("{}: {e}", root.display())),
    };
    let mut attached = Vec::new();
    for (name, point) in CGROUP_PROGRAMS {
        let r = (|| -> Result<(), String> {
            let prog: &mut CgroupSockAddr =
                ebpf.program_mut(name).ok_or("missing from the object")?.try_into().map_err(|e| format!("{e}"))?;
            prog.load().map_err(|e| format!("load: {e}"))?;
            prog.attach(&dir, CgroupAttachMode::Single).map_err(|e| format!("attach: {e}"))?;
            Ok(())
        })();
        match r {
            Ok(()) => attached.push(point.to_string()),
            Err(e) => return DenyPath::Unavailable(format!("program {name} on cgroup {point}: {e}")),
        }
    }
    DenyPath::Cgroup { root, attached }
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
