//! Kills from user space, for rules that need correlation: through a pidfd, so the signal reaches
//! the process that was checked and not a later one that reused its pid.
use serde::Serialize;

/// Who must never be killed.
#[derive(Clone, Debug)]
pub struct Guard {
    pub daemon_pid: u32,
    /// Comms of MCP client programs (a server's parent must survive its server).
    pub client_comms: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum KillOutcome {
    Killed,
    /// Not killed on purpose: pid 1, the daemon, an MCP client, or no longer tracked.
    Refused { reason: String },
    /// It had already exited.
    Gone,
    Failed { error: String },
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_string())
}

/// Sends SIGKILL to `pid` if the guard allows and `still_tracked` confirms, after the pidfd is
/// held, that it is the tracked process.
pub fn kill(pid: u32, guard: &Guard, still_tracked: impl Fn(u32) -> bool) -> KillOutcome {
    if pid <= 1 || pid == guard.daemon_pid {
        return KillOutcome::Refused { reason: format!("pid {pid} is never killed") };
    }
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) { KillOutcome::Gone } else { KillOutcome::Failed { error: format!("pidfd_open: {e}") } };
    }
    let fd = fd as libc::c_int;
    let out = (|| {
        if let Some(c) = comm(pid) {
            if guard.client_comms.iter().any(|x| x == &c) {
                return KillOutcome::Refused { reason: format!("{c} is an MCP client") };
            }
        }
        if !still_tracked(pid) {
            return KillOutcome::Refused { reason: "no longer a tracked process (exited, pid reused?)".into() };
        }
        let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) };
        if r == 0 {
            KillOutcome::Killed
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) { KillOutcome::Gone } else { KillOutcome::Failed { error: format!("pidfd_send_signal: {e}") } }
        }
    })();
    unsafe { libc::close(fd) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_kills_pid_1_or_itself_and_kills_a_child() {
        let g = Guard { daemon_pid: std::process::id(), client_comms: vec!["claude".into()] };
        assert!(matches!(kill(1, &g, |_| true), KillOutcome::Refused { .. }));
        assert!(matches!(kill(std::process::id(), &g, |_| true), KillOutcome::Refused { .. }));
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        assert!(matches!(kill(child.id(), &g, |_| false), KillOutcome::Refused { .. }), "untracked is refused");
        assert_eq!(kill(child.id(), &g, |_| true), KillOutcome::Killed);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        let g2 = Guard { daemon_pid: 0, client_comms: vec!["sleep".into()] };
        let mut c2 = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // Until the child has exec'd, its comm is still this test's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while comm(c2.id()).as_deref() != Some("sleep") {
            assert!(std::time::Instant::now() < deadline, "sleep never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(matches!(kill(c2.id(), &g2, |_| true), KillOutcome::Refused { .. }), "client comm refused");
        c2.kill().unwrap();
        let _ = c2.wait();
    }
}
