//! `sendmmsg N ADDR:PORT`: N datagrams to one IPv4 destination in a single `sendmmsg` call, the
//! batch send that a hook on sendto/sendmsg alone would not see. Prints `sent K` or the errno.
use std::net::SocketAddrV4;

use anyhow::Context as _;

pub fn sendmmsg(n: u64, dest: &str) -> anyhow::Result<()> {
    let dest: SocketAddrV4 = dest.parse().context("ADDR:PORT")?;
    let n = n.clamp(1, 16) as usize;
    // SAFETY: a plain socket(2) call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dest.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dest.ip().octets()) },
        sin_zero: [0; 8],
    };
    let payload = *b"AKIA-batch-exfil";
    let mut iovs: Vec<libc::iovec> = (0..n).map(|_| libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() }).collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: msghdr is plain data; zero is a valid empty header, filled in below.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_name = &sa as *const _ as *mut _;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            libc::mmsghdr { msg_hdr: h, msg_len: 0 }
        })
        .collect();
    // SAFETY: every header points at live locals (sa, iovs, payload) for the call's duration.
    let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    if sent < 0 {
        println!("errno={}", err.raw_os_error().unwrap_or(0));
    } else {
        println!("sent {sent}");
    }
    Ok(())
}
