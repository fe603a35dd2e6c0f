//! Kills from user space, for rules that need correlation: through a pidfd, so the signal reaches
//! the process that was checked and not a later one that reused its pid.
use serde::Serialize;

/// Who must never be killed: pid 1 and the daemon, nothing else.
///
/// Everything else a kill can reach is checked with `still_tracked`, and a tracked process is
/// killable whatever it calls itself. Names are not evidence: a process picks its own comm
/// (`prctl(PR_SET_NAME)`, or exec of a file named `claude`), so exempting client names let a
/// tracked server make its own kill come back refused. MCP clients stay alive because they are
/// not tracked: tracking is inherited from a server by its children, never by its parent.
#[derive(Clone, Debug)]
pub struct Guard {
    pub daemon_pid: u32,
}

impl Guard {
    pub fn new(daemon_pid: u32) -> Self {
        Self { daemon_pid }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum KillOutcome {
    Killed,
    /// Not killed on purpose: pid 1, the daemon, or no longer tracked.
    Refused { reason: String },
    /// It had already exited.
    Gone,
    Failed { error: String },
}

/// Sends SIGKILL to `pid` unless it is pid 1 or the daemon, once `still_tracked` confirms, after
/// the pidfd is held, that it is the tracked process (and not a later one that reused its pid).
pub fn kill(pid: u32, guard: &Guard, still_tracked: impl Fn(u32) -> bool) -> KillOutcome {
    if pid <= 1 || pid == guard.daemon_pid {
        return KillOutcome::Refused { reason: format!("pid {pid} is never killed") };
    }
    // SAFETY: pidfd_open takes a pid and flags 0, no pointers; the returned fd is checked and closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) { KillOutcome::Gone } else { KillOutcome::Failed { error: format!("pidfd_open: {e}") } };
    }
    let fd = fd as libc::c_int;
    let out = (|| {
        if !still_tracked(pid) {
            // The kernel forgets a process at its exit's start (`sched_process_exit`), well
            // before its pidfd polls readable: between the two it frees its memory and files,
            // which a large unlinked tmpfs file stretches to a tenth of a second, and after,
            // it is an unreaped zombie. Either is `Gone`, not a refusal; only a live process
            // outside the map is. The flags are read first: if that read is of a later process
            // that reused the pid, this one was reaped, and its pidfd says so next.
            if crate::sys::procfs::exiting_or_gone(pid) || exited(fd) {
                return KillOutcome::Gone;
            }
            return KillOutcome::Refused { reason: "no longer a tracked process (pid reused?)".into() };
        }
        // SAFETY: `fd` is the pidfd opened above and still open (closed only after this closure); the
        // siginfo pointer is NULL, which pidfd_send_signal accepts (the kernel fills in the info).
        let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) };
        if r == 0 {
            KillOutcome::Killed
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) { KillOutcome::Gone } else { KillOutcome::Failed { error: format!("pidfd_send_signal: {e}") } }
        }
    })();
    // SAFETY: `fd` is the pidfd opened above, owned by this function alone and closed exactly once.
    unsafe { libc::close(fd) };
    out
}

/// Whether the process of pidfd `fd` has exited: a pidfd polls readable from then on, zombie or
/// not.
fn exited(fd: libc::c_int) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd on the stack, valid for the call; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_kills_pid_1_or_itself_and_kills_a_child() {
        let g = Guard::new(std::process::id());
        assert!(matches!(kill(1, &g, |_| true), KillOutcome::Refused { .. }));
        assert!(matches!(kill(std::process::id(), &g, |_| true), KillOutcome::Refused { .. }));
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        assert!(matches!(kill(child.id(), &g, |_| false), KillOutcome::Refused { .. }), "untracked is refused");
        assert_eq!(kill(child.id(), &g, |_| true), KillOutcome::Killed);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    /// A process that exited but is not reaped yet has left the tracked map: it is gone, not
    /// refused (an `nc` to a closed port exits before its exec is judged).
    #[test]
    fn an_exited_unreaped_process_is_gone_not_refused() {
        let g = Guard::new(std::process::id());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !crate::sys::procfs::is_zombie(child.id()) {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(kill(child.id(), &g, |_| false), KillOutcome::Gone);
        child.wait().unwrap();
    }

    /// A process caught in its exit, after the kernel's exit hook dropped it from the map and
    /// before its pidfd polls readable, is gone too (it was refused, "pid reused?"). Freeing an
    /// unlinked 1 GiB tmpfs file at its exit holds it there for about a tenth of a second.
    #[test]
    fn a_process_in_its_exit_is_gone_not_refused() {
        let g = Guard::new(std::process::id());
        let f = format!("/dev/shm/mcpmon-kill-test-{}", std::process::id());
        let script = format!("exec 3>{f} && rm {f} && fallocate -l 1G /proc/self/fd/3");
        for _ in 0..20 {
            let mut child = std::process::Command::new("sh").args(["-c", &script]).spawn().unwrap();
            let pid = child.id();
            // Watch for the exit's start: PF_EXITING set, not yet a zombie.
            let caught = loop {
                let stat = procfs::process::Process::new(pid as i32).and_then(|p| p.stat());
                match stat {
                    Ok(s) if s.state == 'Z' || s.state == 'X' => break false,
                    Ok(s) if s.flags & 0x4 != 0 => break true,
                    Ok(_) => std::thread::yield_now(),
                    Err(_) => break false,
                }
            };
            let outcome = caught.then(|| kill(pid, &g, |_| false));
            child.wait().unwrap();
            if let Some(outcome) = outcome {
                assert_eq!(outcome, KillOutcome::Gone);
                return;
            }
        }
        panic!("never caught a child inside its exit in 20 tries");
    }

    /// Starts a copy of `sleep` whose comm is `comm`, as a server would after
    /// `prctl(PR_SET_NAME, comm)` or an exec of a file so named, and waits until it shows.
    fn sleeper_named(dir: &std::path::Path, comm: &str) -> std::process::Child {
        let exe = dir.join(comm);
        if !exe.exists() {
            std::fs::copy("/bin/sleep", &exe).unwrap();
        }
        // A test thread forking just then holds the copy's write fd until it execs: ETXTBSY.
        let mut tries = 0;
        let child = loop {
            match std::process::Command::new(&exe).arg("30").spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => tries += 1,
                r => break r.unwrap(),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while crate::sys::procfs::comm(child.id()).as_deref() != Some(comm) {
            assert!(std::time::Instant::now() < deadline, "{comm} never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child
    }

    #[test]
    fn a_tracked_process_named_like_a_client_is_killed() {
        let g = Guard::new(std::process::id());
        let dir = tempfile::tempdir().unwrap();
        for &name in crate::discovery::adopt::DEFAULT_CLIENT_COMMS.iter().take(3) {
            let mut c = sleeper_named(dir.path(), name);
            assert_eq!(kill(c.id(), &g, |_| true), KillOutcome::Killed, "a tracked {name:?} is killed: its name is its own choice");
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(c.wait().unwrap().signal(), Some(libc::SIGKILL));
        }
        // Untracked, it is refused whatever its name: that is what keeps the real clients alive.
        let mut c = sleeper_named(dir.path(), "claude");
        assert!(matches!(kill(c.id(), &g, |_| false), KillOutcome::Refused { .. }));
        c.kill().unwrap();
        let _ = c.wait();
    }
}
