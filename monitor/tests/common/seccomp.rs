//! A daemon on a machine without the open gate: `fanotify_init` refused by a seccomp filter, as
//! a kernel built without fanotify permission events or a container's profile refuses it. The
//! daemon then enforces read protection with the kill at the open's exit, from its kernel map.
#![allow(dead_code)]

use std::{os::unix::process::CommandExt, process::Command};

/// `struct sock_filter` (linux/filter.h).
#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
/// `struct seccomp_data`: the syscall number, then the architecture.
const NR: u32 = 0;
const ARCH: u32 = 4;

/// The child `cmd` starts gets EPERM from `fanotify_init` (x86-64; elsewhere it is let be, and
/// the test sees the gate load).
pub fn refuse_fanotify(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes two prctl
    // calls on memory that lives through them; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let prog = [
                SockFilter { code: LD_W_ABS, jt: 0, jf: 0, k: ARCH },
                SockFilter { code: JEQ_K, jt: 0, jf: 3, k: AUDIT_ARCH_X86_64 },
                SockFilter { code: LD_W_ABS, jt: 0, jf: 0, k: NR },
                SockFilter { code: JEQ_K, jt: 0, jf: 1, k: libc::SYS_fanotify_init as u32 },
                SockFilter { code: RET_K, jt: 0, jf: 0, k: RET_ERRNO | libc::EPERM as u32 },
                SockFilter { code: RET_K, jt: 0, jf: 0, k: RET_ALLOW },
            ];
            let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const _) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}
