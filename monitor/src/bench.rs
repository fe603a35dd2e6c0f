//! Hidden helpers for `cargo xtask bench` (not part of the user-facing CLI):
//! - `mcpmon bench-loop KIND N`: a tight loop of one operation (open, forkexec, connect, getppid),
//!   printing nanoseconds per op;
//! - `mcpmon bench-floor`: the floor program alone on every syscall tracepoint mcpmon uses, until
//!   stdin closes.
use std::{
    io::{BufRead, Read, Write},
    net::{TcpListener, TcpStream},
    time::Instant,
};

use anyhow::Context as _;
use monitor_common::names::{Hook, PROGRAMS};

pub fn run_loop(kind: &str, n: u64, path: Option<&str>) -> anyhow::Result<()> {
    let t = match kind {
        "open" => {
            let p = std::ffi::CString::new(path.unwrap_or("/etc/hostname"))?;
            let t = Instant::now();
            for _ in 0..n {
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    anyhow::bail!("open: {}", std::io::Error::last_os_error());
                }
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
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            t.elapsed()
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
    println!("ready {n}");
    std::io::stdout().flush()?;
    // Until the benchmark closes our stdin.
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    Ok(())
}

/// open + read through `int $0x80` (i386 numbers 5 and 3), with the path and buffer in memory
/// below 4 GiB as 32-bit pointers require. The bypass test for compat syscalls.
#[cfg(target_arch = "x86_64")]
fn int80_read(path: &str) -> anyhow::Result<Vec<u8>> {
    unsafe fn int80(nr: u32, a: u64, b: u64, c: u64) -> i32 {
        let ret: i32;
        // rbx is reserved by LLVM: swap the first argument in and out around the call.
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
    let low = unsafe { libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT, -1, 0) };
    anyhow::ensure!(low != libc::MAP_FAILED, "mmap MAP_32BIT: {}", std::io::Error::last_os_error());
    let low = low as *mut u8;
    let p = path.as_bytes();
    anyhow::ensure!(p.len() < 4095, "path too long");
    unsafe {
        std::ptr::copy_nonoverlapping(p.as_ptr(), low, p.len());
        *low.add(p.len()) = 0;
    }
    let fd = unsafe { int80(5, low as u64, 0, 0) };
    anyhow::ensure!(fd >= 0, "int80 open: errno {}", -fd);
    let buf = unsafe { low.add(4096) };
    let n = unsafe { int80(3, fd as u64, buf as u64, 4096) };
    anyhow::ensure!(n >= 0, "int80 read: errno {}", -n);
    Ok(unsafe { std::slice::from_raw_parts(buf, n as usize) }.to_vec())
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_read(_: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::bail!("int $0x80 exists on x86_64 only")
}
