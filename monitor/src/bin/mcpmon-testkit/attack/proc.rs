//! Reaching into another process's memory: the victim (`hold-secret`) keeps a text in its heap
//! and prints where; the attackers read it with `process_vm_readv` or `ptrace` (attach, then
//! PEEKDATA), or overwrite it with `process_vm_writev`. Each attack runs from four threads at
//! once, released by a barrier, so a kill that landed for one thread only would show.
use std::{
    io::{BufRead as _, Write as _},
    sync::Barrier,
};

use anyhow::Context as _;

/// What `vm-write` writes into the victim: tests look for it in the victim's answer.
pub const PWNED: &[u8] = b"PWNED-BY-SERVER\0";
const THREADS: usize = 4;
const LEN: usize = 64;

/// The victim: `hold-secret 0 TEXT` prints `PID ADDR` (hex), then for every line on stdin
/// prints the buffer's current text, so a test can see whether it was overwritten.
pub fn hold_secret(text: &str) -> anyhow::Result<()> {
    let mut buf = vec![0u8; LEN].into_boxed_slice();
    let n = text.len().min(LEN - 1);
    buf[..n].copy_from_slice(&text.as_bytes()[..n]);
    let mut out = std::io::stdout();
    writeln!(out, "{} {:x}", std::process::id(), buf.as_ptr() as usize)?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        line?;
        // Read through a volatile pointer: the compiler may not assume the buffer unchanged.
        // SAFETY: i < LEN and `buf` is a live boxed slice of LEN bytes, so every read is in bounds and aligned
        // (u8); volatile only keeps the compiler from assuming the bytes unchanged.
        let now: Vec<u8> = (0..LEN).map(|i| unsafe { std::ptr::read_volatile(buf.as_ptr().add(i)) }).collect();
        let end = now.iter().position(|b| *b == 0).unwrap_or(LEN);
        writeln!(out, "{}", String::from_utf8_lossy(&now[..end]))?;
        out.flush()?;
    }
    Ok(())
}

/// `vm-read`, `vm-write` or `ptrace-peek` on `pid` at `addr` (hex): prints one line per thread,
/// what it got or the errno.
pub fn reach(how: &str, pid: u64, addr: &str) -> anyhow::Result<()> {
    let addr = usize::from_str_radix(addr.trim_start_matches("0x"), 16).context("address in hex")?;
    let pid = libc::pid_t::try_from(pid).context("pid")?;
    let how = match how {
        "vm-read" | "vm-write" | "ptrace-peek" => how.to_string(),
        other => anyhow::bail!("unknown attack {other}"),
    };
    let start = Barrier::new(THREADS);
    let lines: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    match how.as_str() {
                        "vm-read" => vm_read(pid, addr),
                        "vm-write" => vm_write(pid, addr),
                        _ => ptrace_peek(pid, addr),
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| "panicked".into())).collect()
    });
    let mut out = std::io::stdout();
    for l in lines {
        writeln!(out, "{how} {l}")?;
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn vm_read(pid: libc::pid_t, addr: usize) -> String {
    let mut buf = [0u8; LEN];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: LEN };
    let remote = libc::iovec { iov_base: addr as *mut _, iov_len: LEN };
    // SAFETY: both iovecs describe valid lengths; the local one is our own buffer.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return format!("errno={}", errno());
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(LEN);
    format!("got {}", String::from_utf8_lossy(&buf[..end]))
}

fn vm_write(pid: libc::pid_t, addr: usize) -> String {
    let local = libc::iovec { iov_base: PWNED.as_ptr() as *mut _, iov_len: PWNED.len() };
    let remote = libc::iovec { iov_base: addr as *mut _, iov_len: PWNED.len() };
    // SAFETY: the local iovec points at a static of that length; the kernel only reads it.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return format!("errno={}", errno());
    }
    format!("wrote {n}")
}

fn ptrace_peek(pid: libc::pid_t, addr: usize) -> String {
    // SAFETY: PTRACE_ATTACH takes no pointers.
    if unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) } < 0 {
        return format!("attach errno={}", errno());
    }
    let mut status = 0;
    // SAFETY: status is a valid out pointer; __WALL waits for the traced thread.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    let mut got = Vec::new();
    for i in 0..LEN / 8 {
        // SAFETY: PEEKDATA returns the word; errors come back in errno (cleared first).
        let word = unsafe {
            *libc::__errno_location() = 0;
            libc::ptrace(libc::PTRACE_PEEKDATA, pid, addr + 8 * i, 0)
        };
        if word == -1 && errno() != 0 {
            break;
        }
        got.extend_from_slice(&word.to_ne_bytes());
    }
    // SAFETY: PTRACE_DETACH takes no pointers here.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
    let end = got.iter().position(|b| *b == 0).unwrap_or(got.len());
    format!("got {}", String::from_utf8_lossy(&got[..end]))
}

/// `getfd-read 1 PID,FD`: takes another process's open file with `pidfd_getfd` and reads it:
/// the file is never opened here, so only a hook on pidfd_getfd itself can stop this.
pub fn getfd_read(arg: &str) -> anyhow::Result<()> {
    let (pid, fd) = arg.split_once(',').context("PID,FD")?;
    let (pid, fd): (i32, i32) = (pid.parse()?, fd.parse()?);
    // SAFETY: plain syscalls; the results are checked and the fds owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    anyhow::ensure!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, fd, 0) };
    if got < 0 {
        println!("getfd errno={}", errno());
        return Ok(());
    }
    let mut buf = [0u8; LEN];
    // SAFETY: reading into our own buffer from the fd we were given; pread at 0 ignores the
    // shared offset.
    let n = unsafe { libc::pread(got as i32, buf.as_mut_ptr().cast(), LEN, 0) };
    let end = if n > 0 { n as usize } else { 0 };
    println!("getfd got {}", String::from_utf8_lossy(&buf[..end]).trim_end());
    Ok(())
}
