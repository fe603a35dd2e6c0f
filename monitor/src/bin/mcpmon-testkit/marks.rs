//! `mcpmon-testkit marks DIR`: the open gate's two kinds of fanotify mark on one directory, held
//! until stdin closes, with no BPF program and no daemon. `cargo xtask bench` runs it (alone,
//! and beside the floor) to tell what the marks cost the kernel on every open and close of the
//! marked filesystem (the fsnotify checks a filesystem with any mark goes through) from what
//! mcpmon's programs and daemon cost. DIR is the bench's, empty, on the loop file's filesystem;
//! the gate marks users' key directories the same way.
use std::{
    io::{BufRead, Write},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::Context as _;
use monitor::gate::fanotify;

pub fn run_marks(dir: &std::path::Path) -> anyhow::Result<()> {
    // The gate's group and mark: opens in DIR wait for an answer (here always: allow).
    let group = fanotify::init().context("fanotify_init (content class)")?;
    let handle = fanotify::open_path(dir).with_context(|| format!("{}", dir.display()))?;
    fanotify::mark_dir(group.as_fd(), handle.as_fd()).context("permission mark")?;
    // The persistence watch's group and mark (gate/persist.rs): entries made in DIR.
    let notif = notif_group().context("fanotify_init (notification class)")?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    let mask = libc::FAN_MOVED_TO | libc::FAN_CREATE | libc::FAN_ONDIR;
    // SAFETY: `notif` is open; `c` is NUL-terminated and outlives the call.
    if unsafe { libc::fanotify_mark(notif.as_raw_fd(), libc::FAN_MARK_ADD | libc::FAN_MARK_ONLYDIR, mask, libc::AT_FDCWD, c.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error()).context("entry mark");
    }
    // Nothing opens in DIR during a bench; answer anyway, so a stray open cannot hang.
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        while let Ok(evs) = fanotify::read_events(group.as_fd(), &mut buf) {
            for ev in &evs {
                let _ = fanotify::respond(group.as_fd(), ev, true);
            }
        }
    });
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    drop(notif);
    Ok(())
}

fn notif_group() -> std::io::Result<OwnedFd> {
    let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_REPORT_DFID_NAME;
    // SAFETY: plain syscall; the fd is checked and owned below.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_CLOEXEC) as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
