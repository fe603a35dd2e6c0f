//! `mcpmon-testkit loop KIND N [PATH]`: a tight loop of one operation (open, forkexec, connect,
//! getppid), printing nanoseconds per op for `cargo xtask bench`; the other KINDs are victims and
//! attackers for the enforcement tests (`read`, `dial`, `int80-*`, and those of `attack`).
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Instant,
};

use anyhow::Context as _;

use crate::{
    attack,
    int80::{int80_connect, int80_read},
};

pub fn run_loop(kind: &str, n: u64, path: Option<&str>) -> anyhow::Result<()> {
    let t = match kind {
        "open" => {
            let p = std::ffi::CString::new(path.unwrap_or("/etc/hostname"))?;
            per_op(n, || {
                // SAFETY: `p` is a NUL-terminated CString that outlives the call; open(2) only reads it.
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    anyhow::bail!("open: {}", std::io::Error::last_os_error());
                }
                // SAFETY: `fd` was just returned by open (checked >= 0) and is owned by nothing else; closed once.
                unsafe { libc::close(fd) };
                Ok(())
            })?
        }
        "forkexec" => {
            per_op(n, || {
                let st = std::process::Command::new("/bin/true").status()?;
                anyhow::ensure!(st.success(), "/bin/true failed");
                Ok(())
            })?
        }
        "connect" => {
            // Connect, then accept in the same thread: the listen backlog never overflows (an
            // overflow drops the SYN and costs a one-second retransmit).
            let l = TcpListener::bind("127.0.0.1:0")?;
            let addr = l.local_addr()?;
            per_op(n, || {
                let s = TcpStream::connect(addr)?;
                let (a, _) = l.accept()?;
                drop(s);
                drop(a);
                Ok(())
            })?
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
        "unix-serve" => {
            // A unix stream socket's server at PATH (an engine's API stand-in): accepts and
            // prints what each client sent (a client killed as its connect returned sent nothing).
            let l = std::os::unix::net::UnixListener::bind(path.context("unix-serve needs a path")?)?;
            for c in l.incoming() {
                let mut got = String::new();
                let _ = c?.read_to_string(&mut got);
                println!("served {got:?}");
                std::io::stdout().flush()?;
            }
            return Ok(());
        }
        "unix-dial" => {
            // Connects to the unix socket at PATH and writes a request: prints sent or the error.
            match std::os::unix::net::UnixStream::connect(path.context("unix-dial needs a path")?) {
                Ok(mut s) => {
                    s.write_all(b"POST /containers/create")?;
                    println!("sent");
                }
                Err(e) => println!("{e}"),
            }
            return Ok(());
        }
        "getppid" => {
            // A syscall mcpmon never hooks: what every other syscall of the machine pays.
            per_op(n, || {
                // SAFETY: getppid takes no arguments and touches no memory of ours.
                unsafe { libc::syscall(libc::SYS_getppid) };
                Ok(())
            })?
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
        // Attackers for the enforcement tests (`attack`). The CLI's N slot is a number, so
        // the io_uring mode rides in the kind: `uring-read-{inline,async,openat2} 1 PATH`.
        uring if uring.starts_with("uring-read-") => {
            return attack::uring_read(&uring["uring-read-".len()..], path.context("uring-read needs a path")?);
        }
        "race-read" => return attack::race_read(n, path.context("race-read needs a path")?),
        "uring-lend" => return attack::uring_lend(path.context("uring-lend needs a file for the ring parameters")?),
        "uring-borrow-read" => return attack::uring_borrow_read(path.context("uring-borrow-read needs PID,FD,FILE,PATH")?),
        "race-write" => return attack::race_write(n, path.context("race-write needs a path")?),
        "create-then-open" => return attack::create_then_open(n, path.context("create-then-open needs a dir")?),
        // `vm-read|vm-write|ptrace-peek PID ADDR`, and the victim `hold-secret 0 TEXT`.
        "vm-read" | "vm-write" | "ptrace-peek" => return attack::reach(kind, n, path.context("needs an address")?),
        "sendmmsg" => return attack::sendmmsg(n, path.context("sendmmsg needs ADDR:PORT")?),
        "getfd-read" => return attack::getfd_read(path.context("getfd-read needs PID,FD")?),
        "hold-secret" => return attack::hold_secret(path.context("hold-secret needs a text")?),
        other => anyhow::bail!("unknown loop {other}"),
    };
    println!("{t:.1}");
    Ok(())
}

/// Nanoseconds per call of `op`, run `n` times: the mean over the whole loop, or, with
/// `MCPMON_LOOP_BATCHES=B`, the fastest of `B` equal batches. Another tenant of the host, the
/// other CPU's bursts and the scheduler only ever add time to a batch, never take it away, so the
/// fastest batch is the operation's own cost with the least of that noise: what `cargo xtask
/// bench` compares configurations by (their programs' cost is the same in every batch). On a
/// shared VM the mean of a whole loop moved by up to 10% over five runs back to back, the fastest
/// batch by up to 3% (`bench/results.md` says how goals are judged).
fn per_op(n: u64, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let batches: u64 = std::env::var("MCPMON_LOOP_BATCHES").ok().and_then(|b| b.parse().ok()).unwrap_or(1).clamp(1, n.max(1));
    let size = n / batches;
    let mut fastest = f64::INFINITY;
    let mut total = 0.0;
    for b in 0..batches {
        // The last batch takes the remainder, so exactly `n` operations run.
        let k = if b + 1 == batches { n - size * b } else { size };
        let t = Instant::now();
        for _ in 0..k {
            op()?;
        }
        let ns = t.elapsed().as_nanos() as f64;
        total += ns;
        if k > 0 {
            fastest = fastest.min(ns / k as f64);
        }
    }
    Ok(if batches > 1 { fastest } else { total / n.max(1) as f64 })
}
