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
