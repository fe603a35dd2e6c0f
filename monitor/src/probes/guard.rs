//! The exec hold's last resort. The kernel stops a candidate at exec while the syscall hooks
//! are detached, and the daemon continues it within a second (hold.rs). A daemon that died in
//! that second (SIGKILL, the OOM killer, a crash) left the candidate stopped for good: nothing
//! else knew of it, and a restarted daemon has a map of its own.
//!
//! So the daemon starts a guard: `mcpmon hold-guard`, a second process that holds the `HELD`
//! map by its id (the map outlives the daemon while the guard holds it). When the daemon is
//! gone, or the guard is told to stop (a service manager stopping what is left of the unit),
//! it continues every process the map lists, and exits. A daemon that stops in order continues
//! them itself first (`stop_holding`), and the guard then finds nothing.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use monitor_common::names::MAP_HELD;

use super::Sensors;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("HELD map: {0}")]
    Map(String),
    #[error("{0}: {1}")]
    Sys(&'static str, std::io::Error),
}

impl Sensors {
    /// Starts the guard of this daemon over its `HELD` map.
    pub fn start_guard(&mut self) -> Result<(), GuardError> {
        let Some(Map::LruHashMap(d)) = self.ebpf.map(MAP_HELD) else { return Err(GuardError::Map("missing or not an LRU hash map".into())) };
        let id = d.info().map_err(|e| GuardError::Map(e.to_string()))?.id();
        let child = Command::new("/proc/self/exe")
            .args(["hold-guard", "--map-id", &id.to_string(), "--daemon", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| GuardError::Sys("starting the hold guard", e))?;
        self.guard = Some(child);
        Ok(())
    }
}

/// The guard's own process: waits for the daemon `daemon` (its parent) to be gone or for
/// SIGTERM, SIGINT or SIGHUP, then continues what `HELD` (`map_id`) lists.
pub fn run(map_id: u32, daemon: u32) -> ExitCode {
    match guard(map_id, daemon) {
        Ok(n) => {
            if n > 0 {
                eprintln!("mcpmon hold-guard: daemon {daemon} gone while holding; continued {n} process(es) stopped at exec");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcpmon hold-guard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn guard(map_id: u32, daemon: u32) -> Result<usize, GuardError> {
    // SAFETY: prctl(PR_SET_NAME) with a NUL-terminated literal; it only renames this thread.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"mcpmon-guard".as_ptr()) };
    let data = MapData::from_id(map_id).map_err(|e| GuardError::Map(e.to_string()))?;
    let mut held: BpfHashMap<MapData, u32, u64> = BpfHashMap::try_from(Map::LruHashMap(data)).map_err(|e| GuardError::Map(e.to_string()))?;
    let stop = stop_signals()?;
    // The daemon is the parent: while it is, its pid is its own, so the pidfd is of the daemon.
    // SAFETY: pidfd_open(2) with a pid and no flags; the result is checked before use.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, daemon as libc::pid_t, 0) } as i32;
    // SAFETY: getppid takes no arguments and cannot fail.
    let parent = unsafe { libc::getppid() } as u32;
    if raw >= 0 && parent == daemon {
        // SAFETY: `raw` is a new pidfd this process owns and closes once.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
        wait_either(&pidfd, &stop)?;
    }
    // Twice, a moment apart, as `stop_holding` does: a program that read the hooks flag just
    // before the daemon went records its hold just after the first look.
    let mut n = super::hold::continue_all(&mut held);
    std::thread::sleep(Duration::from_millis(50));
    n += super::hold::continue_all(&mut held);
    Ok(n)
}

/// SIGTERM, SIGINT and SIGHUP, blocked and read from a signalfd: no handler, no global.
fn stop_signals() -> Result<OwnedFd, GuardError> {
    // SAFETY: a zeroed sigset_t is a valid argument to sigemptyset, which initialises it; the
    // set is then only passed by pointer to sigaddset, sigprocmask and signalfd.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(GuardError::Sys("sigprocmask", std::io::Error::last_os_error()));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(GuardError::Sys("signalfd", std::io::Error::last_os_error()));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Until the daemon's pidfd or the signalfd is readable.
fn wait_either(pidfd: &OwnedFd, stop: &OwnedFd) -> Result<(), GuardError> {
    let mut fds = [libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }, libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    loop {
        // SAFETY: `fds` is a live array of two pollfd; poll writes only their `revents`.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r > 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(GuardError::Sys("poll", e));
        }
    }
}
