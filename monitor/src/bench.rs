//! Hidden helpers for `cargo xtask bench` (not part of the user-facing CLI):
//! - `mcpmon bench-loop KIND N`: a tight loop of one operation (open, forkexec, connect, getppid),
//!   printing nanoseconds per op; a few KINDs are instead victims and attackers for the
//!   enforcement tests (`read`, `int80-*`, and those of crate::attack);
//! - `mcpmon bench-floor`: the floor program alone on every syscall hook mcpmon uses (syscall
//!   tracepoints and the raw sys_enter/sys_exit of the ia32 hooks), until stdin closes.
use std::{
    io::{BufRead, Read, Write},
    net::{TcpListener, TcpStream},
    time::Instant,
};

use anyhow::Context as _;
use monitor_common::names::{Hook, COMPAT_RAW, PROGRAMS};

pub fn run_loop(kind: &str, n: u64, path: Option<&str>) -> anyhow::Result<()> {
    let t = match kind {
        "open" => {
            let p = std::ffi::CString::new(path.unwrap_or("/etc/hostname"))?;
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: `p` is a NUL-terminated CString that outlives the call; open(2) only reads it.
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    anyhow::bail!("open: {}", std::io::Error::last_os_error());
                }
                // SAFETY: `fd` was just returned by open (checked >= 0) and is owned by nothing else; closed once.
                unsafe { libc::close(fd) };
            }
            t.elapsed()
        }
        "forkexec" => {
            let t = Instant::now();
            for _ in 0..n {
                let st = std::process::Command::new("/bin/true").status()?;
                anyhow::ensure!(st.success(), "/bin/true failed");
            }
            t.elapsed()
        }
        "connect" => {
            // Connect, then accept in the same thread: the listen backlog never overflows (an
            // overflow drops the SYN and costs a one-second retransmit).
            let l = TcpListener::bind("127.0.0.1:0")?;
            let addr = l.local_addr()?;
            let t = Instant::now();
            for _ in 0..n {
                let s = TcpStream::connect(addr)?;
                let (a, _) = l.accept()?;
                drop(s);
                drop(a);
            }
            t.elapsed()
        }
        "dial" => {
            // One TCP connect to ADDR:PORT: prints ok, eperm or the error.
            let addr = path.context("dial needs ADDR:PORT")?;
            match TcpStream::connect(addr) {
                Ok(_) => println!("ok"),
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => println!("eperm"),
                Err(e) => println!("{e}"),
            }
            return Ok(());
        }
        "getppid" => {
            // A syscall mcpmon never hooks: what every other syscall of the machine pays.
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: getppid takes no arguments and touches no memory of ours.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            t.elapsed()
        }
        "int80-dial" => {
            // A TCP connect to ADDR:PORT through `int $0x80` (i386 connect, 362): ok, eperm or errno.
            let addr: std::net::SocketAddrV4 = path.context("int80-dial needs ADDR:PORT")?.parse()?;
            match int80_connect(addr)? {
                0 => println!("ok"),
                e if e == -libc::EPERM => println!("eperm"),
                e => println!("errno {}", -e),
            }
            return Ok(());
        }
        "int80-read" => {
            // A victim using the ia32 syscall entry (`int $0x80`) from a 64-bit process.
            let data = int80_read(path.context("int80-read needs a path")?)?;
            std::io::stdout().write_all(&data)?;
            return Ok(());
        }
        "read" => {
            // A protected-file victim: read the file and print what it got.
            let mut f = std::fs::File::open(path.context("read needs a path")?)?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            std::io::stdout().write_all(&buf)?;
            return Ok(());
        }
        // Attackers for the enforcement tests (crate::attack). The CLI's N slot is a number, so
        // the io_uring mode rides in the kind: `uring-read-{inline,async,openat2} 1 PATH`.
        uring if uring.starts_with("uring-read-") => {
            return crate::attack::uring_read(&uring["uring-read-".len()..], path.context("uring-read needs a path")?);
        }
        "race-read" => return crate::attack::race_read(n, path.context("race-read needs a path")?),
        "uring-lend" => return crate::attack::uring_lend(path.context("uring-lend needs a file for the ring parameters")?),
        "uring-borrow-read" => return crate::attack::uring_borrow_read(path.context("uring-borrow-read needs PID,FD,FILE,PATH")?),
        "race-write" => return crate::attack::race_write(n, path.context("race-write needs a path")?),
        "create-then-open" => return crate::attack::create_then_open(n, path.context("create-then-open needs a dir")?),
        // `vm-read|vm-write|ptrace-peek PID ADDR`, and the victim `hold-secret 0 TEXT`.
        "vm-read" | "vm-write" | "ptrace-peek" => return crate::attack::reach(kind, n, path.context("needs an address")?),
        "sendmmsg" => return crate::attack::sendmmsg(n, path.context("sendmmsg needs ADDR:PORT")?),
        "getfd-read" => return crate::attack::getfd_read(path.context("getfd-read needs PID,FD")?),
        "hold-secret" => return crate::attack::hold_secret(path.context("hold-secret needs a text")?),
        other => anyhow::bail!("unknown loop {other}"),
    };
    println!("{:.1}", t.as_nanos() as f64 / n as f64);
    Ok(())
}

pub fn run_floor() -> anyhow::Result<()> {
    let tracefs = crate::probes::tracefs::ensure_mounted()?;
    let mut ebpf = aya::Ebpf::load(crate::probes::object())?;
    let prog: &mut aya::programs::TracePoint = ebpf.program_mut("mcpm_floor").context("no mcpm_floor")?.try_into()?;
    prog.load()?;
    let mut n = 0;
    for spec in PROGRAMS {
        for hook in spec.hooks {
            let Hook::TracePoint { category, name } = *hook;
            if hook.on_demand() && crate::probes::tracefs::exists(&tracefs, category, name) {
                prog.attach(category, name).with_context(|| format!("{category}:{name}"))?;
                n += 1;
            }
        }
    }
    let raw: &mut aya::programs::RawTracePoint = ebpf.program_mut("mcpm_floor_raw").context("no mcpm_floor_raw")?.try_into()?;
    raw.load()?;
    for (_, tp) in COMPAT_RAW {
        raw.attach(tp).with_context(|| format!("raw tracepoint {tp}"))?;
        n += 1;
    }
    println!("ready {n}");
    std::io::stdout().flush()?;
    // Until the benchmark closes our stdin.
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    Ok(())
}

/// One i386 syscall through `int $0x80` from this 64-bit process (the bypass tests for compat
/// syscalls); pointers must lie below 4 GiB.
#[cfg(target_arch = "x86_64")]
unsafe fn int80(nr: u32, a: u64, b: u64, c: u64) -> i32 {
    let ret: i32;
    // rbx is reserved by LLVM: swap the first argument in and out around the call.
    // SAFETY: the i386 `int 0x80` ABI: number in eax, arguments in ebx, ecx, edx, result in eax; rbx,
    // which LLVM reserves, is swapped back by the second xchg, and r8-r11 (zeroed by the compat
    // entry of older kernels) are declared clobbered. Callers guarantee pointers lie below 4 GiB.
    unsafe {
        std::arch::asm!(
            "xchg {a}, rbx",
            "int 0x80",
            "xchg {a}, rbx",
            a = inout(reg) a => _,
            inlateout("eax") nr => ret,
            in("ecx") b as u32,
            in("edx") c as u32,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    ret
}

/// open + read through `int $0x80` (i386 numbers 5 and 3), path and buffer below 4 GiB.
#[cfg(target_arch = "x86_64")]
fn int80_read(path: &str) -> anyhow::Result<Vec<u8>> {
    let low = low_page()?;
    let p = path.as_bytes();
    anyhow::ensure!(p.len() < 4095, "path too long");
    // SAFETY: `low` is a fresh 8192-byte writable mapping (low_page) and p.len() < 4095, so the copy and
    // the NUL stay inside its first page; the source is a &str that does not overlap it.
    unsafe {
        std::ptr::copy_nonoverlapping(p.as_ptr(), low, p.len());
        *low.add(p.len()) = 0;
    }
    // SAFETY: open(2) with a NUL-terminated path in `low`, a MAP_32BIT page below 4 GiB as int80 requires.
    let fd = unsafe { int80(5, low as u64, 0, 0) };
    anyhow::ensure!(fd >= 0, "int80 open: errno {}", -fd);
    // SAFETY: `low` starts an 8192-byte mapping, so low + 4096 is its second page, still inside it.
    let buf = unsafe { low.add(4096) };
    // SAFETY: read(2) of at most 4096 bytes into `buf`, the 4096-byte second page of the mapping, below
    // 4 GiB as int80 requires.
    let n = unsafe { int80(3, fd as u64, buf as u64, 4096) };
    anyhow::ensure!(n >= 0, "int80 read: errno {}", -n);
    // SAFETY: read returned n (0 <= n <= 4096, checked above) bytes written at `buf`, inside the mapping,
    // which is never unmapped; the slice is copied into a Vec at once.
    Ok(unsafe { std::slice::from_raw_parts(buf, n as usize) }.to_vec())
}

/// Two pages below 4 GiB, where 32-bit syscalls can point.
#[cfg(target_arch = "x86_64")]
fn low_page() -> anyhow::Result<*mut u8> {
    // SAFETY: an anonymous private mapping with no address hint and no fd; the result is checked against
    // MAP_FAILED before use.
    let low = unsafe { libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT, -1, 0) };
    anyhow::ensure!(low != libc::MAP_FAILED, "mmap MAP_32BIT: {}", std::io::Error::last_os_error());
    Ok(low as *mut u8)
}

/// A TCP socket (made the usual way) connected through `int $0x80`; returns 0 or -errno.
#[cfg(target_arch = "x86_64")]
fn int80_connect(addr: std::net::SocketAddrV4) -> anyhow::Result<i32> {
    // SAFETY: socket(2) with constant arguments and no pointers; the fd is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr.ip().octets()) },
        sin_zero: [0; 8],
    };
    let low = low_page()?;
    // SAFETY: copies size_of::<sockaddr_in>() (16) bytes from the local `sa` into the fresh 8192-byte
    // mapping `low`; the two never overlap.
    unsafe { std::ptr::copy_nonoverlapping(&sa as *const _ as *const u8, low, std::mem::size_of::<libc::sockaddr_in>()) };
    // SAFETY: i386 connect with `fd` from socket() above and the sockaddr_in just copied to `low`, a
    // MAP_32BIT page below 4 GiB as int80 requires; the length matches what was copied.
    Ok(unsafe { int80(362, fd as u64, low as u64, std::mem::size_of::<libc::sockaddr_in>() as u64) })
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_read(_: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::bail!("int $0x80 exists on x86_64 only")
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_connect(_: std::net::SocketAddrV4) -> anyhow::Result<i32> {
    anyhow::bail!("int $0x80 exists on x86_64 only")
}
