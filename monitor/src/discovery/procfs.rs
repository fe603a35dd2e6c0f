//! Plain /proc parsing: existence, descendants, uid, and process details.
use std::{collections::HashMap, fs};

pub fn exists(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// `(comm, ppid)` from a /proc/PID/stat line. comm may hold spaces and ')': it ends at the last ')'.
pub fn parse_stat(stat: &str) -> Option<(String, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

fn stat_of(pid: u32) -> Option<(String, u32)> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every current descendant process (tgids, not threads) of `pid`, any depth.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for ent in dir.flatten() {
            let Some(p) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some((_, ppid)) = stat_of(p) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![];
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if c != pid && !out.contains(&c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

/// Real uid from /proc/PID/status.
pub fn uid_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next()?.parse().ok())
}

/// Inode of the pipe or socket behind `fd` of `pid` (`pipe:[N]` / `socket:[N]`), None for ttys,
/// files and closed fds.
pub fn fd_stream_inode(pid: u32, fd: u32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_str()?;
    let rest = s.strip_prefix("pipe:[").or_else(|| s.strip_prefix("socket:["))?;
    rest.strip_suffix(']')?.parse().ok()
}

/// The streams a process speaks stdio JSON-RPC on: `(stdin, stdout)` inodes. fd 0 and 1 when they
/// are pipes or sockets; otherwise (the Python SDK dups them to 6 and 7 and closes 0 and 1) the
/// lowest-numbered pipe read end and write end, fd 2 aside: a dup of a closed stdin/stdout takes a
/// low number, while inherited strays (a make jobserver pipe, say) sit high.
pub fn stdio_streams(pid: u32) -> (Option<u64>, Option<u64>) {
    let (i, o) = (fd_stream_inode(pid, 0), fd_stream_inode(pid, 1));
    if i.is_some() && o.is_some() {
        return (i, o);
    }
    let (mut reads, mut writes) = (vec![], vec![]);
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) {
        // fd 2 is stderr, never the JSON-RPC channel (and often a pipe too).
        for fd in dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).filter(|&fd| fd != 2) {
            let is_pipe = fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|l| l.to_string_lossy().starts_with("pipe:"));
            let Some(ino) = fd_stream_inode(pid, fd).filter(|_| is_pipe) else { continue };
            let flags = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                .ok()
                .and_then(|t| t.lines().find_map(|l| u32::from_str_radix(l.strip_prefix("flags:")?.trim(), 8).ok()))
                .unwrap_or(2);
            match flags & 3 {
                0 => reads.push((fd, ino)),
                1 => writes.push((fd, ino)),
                _ => {}
            }
        }
    }
    let lowest = |v: Vec<(u32, u64)>| v.into_iter().min().map(|(_, ino)| ino);
    (i.or(lowest(reads)), o.or(lowest(writes)))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub argv: Vec<String>,
}

pub fn process_info(pid: u32) -> Option<ProcInfo> {
    let (comm, ppid) = stat_of(pid)?;
    let uid = uid_of(pid)?;
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.display().to_string());
    let argv = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| b.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default();
    Some(ProcInfo { pid, ppid, uid, comm, exe, argv })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_inodes_of_stdio() {
        let child = std::process::Command::new("/bin/cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (i, o) = (fd_stream_inode(pid, 0), fd_stream_inode(pid, 1));
        assert!(i.is_some() && o.is_some() && i != o, "{i:?} {o:?}");
        assert_eq!(fd_stream_inode(pid, 99), None);
        assert_eq!(stdio_streams(pid), (i, o));
        drop(child); // closing stdin ends cat
    }

    #[test]
    fn stdio_found_after_dup_and_close_of_0_and_1() {
        // Like the Python SDK: stdin/stdout moved to fds 6 and 7, fds 0 and 1 closed.
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import os; os.dup2(0, 6); os.dup2(1, 7); os.close(0); os.close(1); os.read(6, 1)"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Wait (bounded) until the interpreter has moved its fds: start-up time varies with load.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fd_stream_inode(pid, 7).is_none() || fd_stream_inode(pid, 0).is_some() {
            assert!(std::time::Instant::now() < deadline, "python never moved its fds");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(fd_stream_inode(pid, 0), None);
        let (i, o) = stdio_streams(pid);
        assert!(i.is_some() && o.is_some() && i != o, "{i:?} {o:?}");
        assert_eq!((i, o), (fd_stream_inode(pid, 6), fd_stream_inode(pid, 7)));
        drop(child.stdin.take());
        child.wait().unwrap();
    }

    #[test]
    fn stat_with_awkward_comm() {
        let s = "123 (a) b) S 77 123 123 0 -1 4194560";
        assert_eq!(parse_stat(s), Some(("a) b".to_string(), 77)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_descendants_at_any_depth() {
        let mut sh = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & (sleep 30 & wait) & wait"])
            .spawn()
            .unwrap();
        let pid = sh.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = vec![];
        while std::time::Instant::now() < deadline {
            found = descendants(pid);
            let sleeps = found.iter().filter(|p| process_info(**p).map(|i| i.comm == "sleep").unwrap_or(false)).count();
            if sleeps == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let infos: Vec<_> = found.iter().filter_map(|p| process_info(*p)).collect();
        assert_eq!(infos.iter().filter(|i| i.comm == "sleep").count(), 2, "{infos:?}");
        // The grandchild sleep's parent is the subshell, itself a child of sh.
        assert!(infos.iter().any(|i| i.comm == "sleep" && i.ppid != pid));
        assert!(descendants(std::process::id()).contains(&pid));
        // SAFETY: getuid takes no arguments, touches no memory and cannot fail.
        assert_eq!(uid_of(pid), Some(unsafe { libc::getuid() }));
        let me = process_info(pid).unwrap();
        assert_eq!(me.argv[0], "/bin/sh");
        let _ = std::process::Command::new("pkill").args(["-P", &pid.to_string()]).status();
        sh.kill().unwrap();
        sh.wait().unwrap();
        for p in found {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pids are this test's own
            // sh descendants found above.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }
}
