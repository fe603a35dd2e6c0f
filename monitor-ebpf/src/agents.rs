//! Key agents' sockets no plan has seen (`AGENT_SOCKETS`, made in user space by
//! `actions/protect/`): an agent started after the last plan made its socket before any plan
//! could key it by inode, and a server waiting for it connected first, through a link of its
//! own that no rule's name matches. The socket the connect reached is judged here by its own
//! name and its directory's, read from the dentry the kernel connected to (every name that
//! reached it is the same one). Called from `enforce::unix_connect_check` when the inode has no
//! `KILL_CONNECT` entry.
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str},
    macros::map,
    maps::{Array, PerCpuArray},
};
use monitor_common::{SockName, SockParts, SOCK_NAMES_MAX, SOCK_PART_CAP};

use crate::maps::koff;

/// The patterns' last two parts, in order; the first entry with policy 0 ends the list.
#[map(name = "AGENT_SOCKETS")]
pub static AGENT_SOCKETS: Array<SockName> = Array::with_max_entries(SOCK_NAMES_MAX, 0);

/// Where the socket's two names are read: 64 bytes of stack on the connect exit's call chain
/// (the ia32 program's included) would press on the 512 a kernel such as 6.1 allows in all.
#[map(name = "SOCK_SCRATCH")]
static SOCK_SCRATCH: PerCpuArray<SockParts> = PerCpuArray::with_max_entries(1, 0);

/// The `PROTECTED` value (`KILL_CONNECT` and its rule's slot) of the first pattern the socket
/// file `dentry` matches by its name and its directory's; 0 if none. A subprogram of its own:
/// only a tracked process's connect to a socket with no entry comes here.
#[inline(never)]
pub fn agent_socket_policy(dentry: *const u8) -> u32 {
    let Some(first) = AGENT_SOCKETS.get(0) else { return 0 };
    if first.policy == 0 {
        return 0;
    }
    let Some(s) = SOCK_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's element of SOCK_SCRATCH (valid for the program run, which does not
    // migrate); no program of this CPU uses it meanwhile: none of ours runs nested in another.
    let s = unsafe { &mut *s };
    *s = SockParts::default();
    // SAFETY: `d_name.name` (BTF offset + 8 past the qstr's hash and length, as in unseen.rs)
    // and `d_parent` are read through the fault-checked kernel helpers; each string read writes
    // at most SOCK_PART_CAP bytes, NUL included, into its own array. The root is its own parent.
    unsafe {
        let Ok(name) = bpf_probe_read_kernel(dentry.add(koff!(dentry_name) + 8) as *const *const u8) else { return 0 };
        if bpf_probe_read_kernel_str(s.name.as_mut_ptr() as *mut _, SOCK_PART_CAP as u32, name as *const _) <= 0 {
            return 0;
        }
        if let Ok(parent) = bpf_probe_read_kernel(dentry.add(koff!(dentry_parent)) as *const *const u8) {
            if parent != dentry {
                if let Ok(pname) = bpf_probe_read_kernel(parent.add(koff!(dentry_name) + 8) as *const *const u8) {
                    bpf_probe_read_kernel_str(s.dir.as_mut_ptr() as *mut _, SOCK_PART_CAP as u32, pname as *const _);
                }
            }
        }
    }
    let mut i = 0;
    while i < SOCK_NAMES_MAX {
        let Some(p) = AGENT_SOCKETS.get(i) else { return 0 };
        if p.policy == 0 {
            return 0;
        }
        if p.matches(s) {
            return p.policy;
        }
        i += 1;
    }
    0
}
