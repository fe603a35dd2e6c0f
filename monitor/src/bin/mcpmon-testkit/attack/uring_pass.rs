//! An io_uring the attacker did not set up: `uring-lend 1 FILE` (run outside the server) sets up
//! a ring, writes the parameters needed to map it to FILE and prints `lending PID FD`;
//! `uring-borrow-read 1 PID,FD,FILE,PATH` (the tracked server) takes that fd with
//! `pidfd_getfd` and opens and reads PATH through the ring. A kill at `io_uring_setup` never
//! sees this ring, and its operations pass no syscall hook: without a check at `io_uring_enter`
//! they go unseen. (SCM_RIGHTS would be the other way in, but the kernel refuses to pass an
//! io_uring fd over a unix socket: `uring-lend-scm` shows the EINVAL.) A ring inherited from
//! before the process was tracked is the same case.
use std::{
    ffi::CString,
    io::Write as _,
    mem::size_of,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
};

use anyhow::Context as _;

use super::{open_sqe, ring_read, OpenHow, Params, Ring};

pub fn lend(file: &str) -> anyhow::Result<()> {
    let (fd, p) = Ring::setup(4).map_err(|e| anyhow::anyhow!("io_uring_setup: errno {e}"))?;
    // SAFETY: Params is repr(C) plain data; its bytes are what the borrower reads back.
    let bytes = unsafe { std::slice::from_raw_parts(&p as *const Params as *const u8, size_of::<Params>()) };
    std::fs::write(file, bytes).with_context(|| format!("write {file}"))?;
    // Whether a unix socket would carry it: the kernel says no for io_uring fds.
    let (a, _b) = UnixStream::pair()?;
    let scm = match send_fd(&a, b"x", fd.as_raw_fd()) {
        Ok(()) => "sent".to_string(),
        Err(e) => format!("refused ({e})"),
    };
    println!("lending {} {} scm_rights={scm}", std::process::id(), fd.as_raw_fd());
    std::io::stdout().flush()?;
    // Keep the ring alive until told to stop.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

pub fn borrow_read(arg: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = arg.splitn(4, ',').collect();
    anyhow::ensure!(parts.len() == 4, "PID,FD,FILE,PATH");
    let (pid, their_fd): (i32, i32) = (parts[0].parse()?, parts[1].parse()?);
    let bytes = std::fs::read(parts[2])?;
    anyhow::ensure!(bytes.len() == size_of::<Params>(), "short parameters");
    // SAFETY: a plain syscall; a non-negative result is a new pidfd we own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    anyhow::ensure!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: the pidfd is valid; a non-negative result is a new fd in our table.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, their_fd, 0) };
    anyhow::ensure!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
    // SAFETY: the fd pidfd_getfd just installed is ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: the lender wrote exactly a Params' bytes; read_unaligned copies them out.
    let p: Params = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Params) };
    let ring = Ring::map(fd, p)?;
    let cpath = CString::new(parts[3])?;
    let how = OpenHow { flags: libc::O_RDONLY as u64, mode: 0, resolve: 0 };
    let open = ring.run(open_sqe(&cpath, &how, false, 0))?;
    let data = if open >= 0 {
        // SAFETY: a non-negative OPENAT result is a new fd in our table, owned by nobody else.
        let f = unsafe { OwnedFd::from_raw_fd(open) };
        ring_read(&ring, &f, 0)?.1
    } else {
        Vec::new()
    };
    println!("borrowed open={open}");
    println!("{}", String::from_utf8_lossy(&data).trim_end_matches('\n'));
    Ok(())
}

fn send_fd(s: &UnixStream, data: &[u8], fd: RawFd) -> anyhow::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer is CMSG_SPACE(one fd) bytes, so the first header and its data fit.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
    }
    // SAFETY: msg describes live buffers.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, 0) };
    anyhow::ensure!(n >= 0, "sendmsg: {}", std::io::Error::last_os_error());
    Ok(())
}
