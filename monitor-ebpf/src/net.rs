//! Connect hooks: destination at entry (IPv4, IPv6, unix path), result at exit; the same for
//! datagrams sent with an explicit destination (sendto/sendmsg/sendmmsg), the UDP exfiltration
//! path.
//!
//! Kernel contract: `syscalls:sys_enter_connect(fd, uservaddr, addrlen)`, `sys_exit_connect(ret)`.
//! Layouts read from user memory: `sockaddr_in { u16 family; be16 port; u8 addr[4]; }`,
//! `sockaddr_in6 { u16 family; be16 port; be32 flowinfo; u8 addr[16]; u32 scope_id; }`,
//! `sockaddr_un { u16 family; char path[108]; }`.

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use monitor_common::{flags, ConnectEvent, EventKind, LostReason, UNIX_PATH_CAP};

use crate::gate::gated_tracepoint;
use crate::enforce::{kill_current, unix_connect_check};
use crate::maps::{lost_for, current, fill_header, output, tracked, Sys, PENDING_CONNECT};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;


#[inline(always)]
fn read_user(dst: *mut u8, len: u32, src: u64) -> bool {
    // SAFETY: every caller passes a `dst` with at least `len` writable bytes (a local or an event field
    // of that size, len checked against it); the helper checks the user address `src` and
    // returns an error on a fault.
    unsafe { bpf_probe_read_user(dst as *mut _, len, src as *const _) == 0 }
}

gated_tracepoint!(mcpm_connect_e => connect_e);
gated_tracepoint!(mcpm_sendto_e => sendto_e);
gated_tracepoint!(mcpm_sendmsg_e => sendmsg_e);
gated_tracepoint!(
    /// `sendmmsg(fd, mmsg, vlen, flags)`: `struct mmsghdr` starts with its `msghdr`, so the first
    /// message's destination is read as sendmsg's. Each message's destination still meets the
    /// cgroup deny (it runs per datagram); the event reports the first.
    mcpm_sendmmsg_e => sendmsg_e
);
gated_tracepoint!(
    /// Shared by connect, sendto and sendmsg exits.
    mcpm_connect_x => connect_x
);

/// `connect(fd, addr, addrlen)`.
#[inline(always)]
pub fn connect_e<S: Sys>(s: &S) -> u32 {
    addr_enter(EventKind::Connect, s.arg(0) as i32, s.arg(1), s.arg(2) as u32)
}

/// `sendto(fd, buff, len, flags, addr, addr_len)`: only datagrams with an explicit destination
/// (a connected socket was already seen at connect).
#[inline(always)]
pub fn sendto_e<S: Sys>(s: &S) -> u32 {
    let sa = s.arg(4);
    if sa == 0 {
        return 0;
    }
    addr_enter(EventKind::Send, s.arg(0) as i32, sa, s.arg(5) as u32)
}

/// `sendmsg(fd, msg, flags)`: destination in `msg->msg_name` (offset 0), `msg_namelen` (offset 8).
#[inline(always)]
pub fn sendmsg_e<S: Sys>(s: &S) -> u32 {
    let cur = current();
    if tracked(cur).is_none() {
        return 0;
    }
    let msg = s.arg(1);
    let mut hdr = [0u64; 2];
    if !read_user(hdr.as_mut_ptr() as *mut u8, 16, msg) || hdr[0] == 0 {
        return 0;
    }
    addr_enter(EventKind::Send, s.arg(0) as i32, hdr[0], hdr[1] as u32)
}

/// Compat `sendmsg(fd, struct compat_msghdr *msg, flags)`.
#[inline(always)]
pub fn sendmsg32_e<S: Sys>(s: &S) -> u32 {
    if tracked(current()).is_none() {
        return 0;
    }
    msghdr32_enter(s.arg(0) as i32, s.arg(1))
}

/// A compat sendmsg's destination: `msg_name` and `msg_namelen`, two u32 at offsets 0 and 4 of
/// `struct compat_msghdr` (none: a connected socket, already seen at connect).
#[inline(always)]
fn msghdr32_enter(fd: i32, msg: u64) -> u32 {
    let mut hdr = [0u32; 2];
    if !read_user(hdr.as_mut_ptr() as *mut u8, 8, msg) || hdr[0] == 0 {
        return 0;
    }
    addr_enter(EventKind::Send, fd, hdr[0] as u64, hdr[1])
}

/// i386 `socketcall(call, u32 *args)`, the multiplexer 32-bit libcs used before direct socket
/// syscalls: connect (3), sendto (11) and sendmsg (16) take their arguments from `args`.
#[inline(always)]
pub fn socketcall_e<S: Sys>(s: &S) -> u32 {
    if tracked(current()).is_none() {
        return 0;
    }
    let (call, argp) = (s.arg(0), s.arg(1));
    let mut a = [0u32; 6];
    let n = if call == 11 { 24 } else { 12 };
    if !read_user(a.as_mut_ptr() as *mut u8, n, argp) {
        return 0;
    }
    match call {
        3 => addr_enter(EventKind::Connect, a[0] as i32, a[1] as u64, a[2]),
        11 if a[4] != 0 => addr_enter(EventKind::Send, a[0] as i32, a[4] as u64, a[5]),
        // sendmsg (16) and sendmmsg (20): a compat_mmsghdr starts with its compat_msghdr.
        16 | 20 => msghdr32_enter(a[0] as i32, a[1] as u64),
        _ => 0,
    }
}

#[inline(always)]
fn addr_enter(kind: EventKind, fd: i32, sa: u64, addrlen: u32) -> u32 {
    let cur = current();
    let Some(info) = tracked(cur) else { return 0 };

    // ConnectEvent is 192 bytes: fits the stack, no scratch map needed.
    // SAFETY: ConnectEvent is #[repr(C)] with integer and byte-array fields only, so all-zero bytes are a
    // valid value; it has no implicit padding (its size is asserted in monitor-common).
    let mut ev: ConnectEvent = unsafe { core::mem::zeroed() };
    fill_header(&mut ev.hdr, kind, cur, info);
    ev.fd = fd;
    ev.addrlen = addrlen;
    let mut family: u16 = 0;
    if !read_user(&mut family as *mut u16 as *mut u8, 2, sa) {
        ev.hdr.flags |= flags::READ_FAILED;
    }
    ev.family = family;
    match family {
        AF_INET => {
            let mut port: u16 = 0;
            read_user(&mut port as *mut u16 as *mut u8, 2, sa + 2);
            ev.port = u16::from_be(port);
            if !read_user(ev.addr.as_mut_ptr(), 4, sa + 4) {
                ev.hdr.flags |= flags::READ_FAILED;
            }
        }
        AF_INET6 => {
            let mut port: u16 = 0;
            read_user(&mut port as *mut u16 as *mut u8, 2, sa + 2);
            ev.port = u16::from_be(port);
            if !read_user(ev.addr.as_mut_ptr(), 16, sa + 8) {
                ev.hdr.flags |= flags::READ_FAILED;
            }
            read_user(&mut ev.scope_id as *mut u32 as *mut u8, 4, sa + 24);
        }
        AF_UNIX => {
            // sun_path is not NUL-terminated for abstract sockets: copy exactly addrlen - 2 bytes.
            let mut n = addrlen.saturating_sub(2);
            if n > UNIX_PATH_CAP as u32 {
                n = UNIX_PATH_CAP as u32;
            }
            if n > 0 && read_user(ev.unix_path.as_mut_ptr(), n & 0x7f, sa + 2) {
                ev.unix_path_len = n;
            }
        }
        _ => {}
    }
    if PENDING_CONNECT.insert(&cur.tid, &ev, 0).is_err() {
        lost_for(LostReason::PendingFull, ev.hdr.server_id);
    }
    0
}

#[inline(always)]
pub fn connect_x<S: Sys>(s: &S) -> u32 {
    let cur = current();
    if !crate::maps::maybe_tracked(cur.tgid) {
        return 0;
    }
    let Some(ev) = PENDING_CONNECT.get_ptr_mut(&cur.tid) else { return 0 };
    // SAFETY: the current thread's own PENDING_CONNECT entry (keyed by its tid), valid for this program
    // run; the thread is in this syscall's exit, so no other hook writes it meanwhile.
    let ev = unsafe { &mut *ev };
    ev.ret = s.ret() as i32;
    // A unix socket under a kill rule (a container engine's API), judged by the socket file
    // the connect reached.
    if ev.family == AF_UNIX && ev.ret == 0 && ev.hdr.flags & flags::KILLED == 0 {
        let p = unix_connect_check(cur, ev.fd, ev.hdr.server_id);
        if p != 0 {
            ev.policy = p;
            ev.hdr.flags |= flags::KILLED;
        }
    }
    // A cgroup program refused the address under a kill rule: kill before user code runs again.
    if ev.hdr.flags & flags::KILLED != 0 && !kill_current() {
        ev.hdr.flags &= !flags::KILLED;
    }
    output(ev);
    let _ = PENDING_CONNECT.remove(&cur.tid);
    0
}
