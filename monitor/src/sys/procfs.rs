//! Processes through the `procfs` crate: existence, descendants, uids, stdio streams and process
//! details. Each function opens the process's /proc directory once (`Process` holds it as an fd),
//! so every read of one call is about the same process even if its pid is reused meanwhile.
use std::{collections::HashMap, io::Read as _};

use procfs::{
    process::{FDPermissions, FDTarget, Process},
    MountEntry,
};

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// The process (or thread: /proc resolves a tid too) still has an entry, zombies included.
pub fn exists(pid: u32) -> bool {
    process(pid).is_some()
}

/// Every pid in /proc, in no order.
pub fn pids() -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes() else { return vec![] };
    all.flatten().filter_map(|p| u32::try_from(p.pid).ok()).collect()
}

/// Every current descendant process (tgids, not threads) of `pid`, any depth.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(all) = procfs::process::all_processes() {
        for p in all.flatten() {
            let Ok(stat) = p.stat() else { continue };
            if let (Ok(p), Ok(ppid)) = (u32::try_from(p.pid), u32::try_from(stat.ppid)) {
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
    Some(process(pid)?.status().ok()?.ruid)
}

/// Owner of /proc/PID (the kernel gives it the task's effective uid while the task is dumpable),
/// None when gone.
pub fn owner_uid(pid: u32) -> Option<u32> {
    process(pid)?.uid().ok()
}

/// `Tgid:` of a thread from /proc/TID/status (a thread's id is not its process's).
pub fn tgid_of(tid: u32) -> Option<u32> {
    u32::try_from(process(tid)?.status().ok()?.tgid).ok()
}

/// The task has exited and awaits its reaping (state Z).
pub fn is_zombie(pid: u32) -> bool {
    process(pid).and_then(|p| p.stat().ok()).is_some_and(|s| s.state == 'Z')
}

/// The task has begun its exit (`PF_EXITING`: the kernel's exit hooks run from then on, before
/// it is a zombie), has exited (state Z or X), or is gone from procfs.
pub fn exiting_or_gone(pid: u32) -> bool {
    const PF_EXITING: u32 = 0x4;
    process(pid).and_then(|p| p.stat().ok()).is_none_or(|s| matches!(s.state, 'Z' | 'X') || s.flags & PF_EXITING != 0)
}

/// When the process started, in clock ticks since boot: orders launches.
pub fn start_ticks(pid: u32) -> Option<u64> {
    Some(process(pid)?.stat().ok()?.starttime)
}

/// The process's name (`comm`).
pub fn comm(pid: u32) -> Option<String> {
    Some(process(pid)?.stat().ok()?.comm)
}

/// The process's working directory.
pub fn cwd(pid: u32) -> Option<std::path::PathBuf> {
    process(pid)?.cwd().ok()
}

/// The process's environment; None when it cannot be read (gone, or another user's). Names and
/// values that are not UTF-8 are taken lossily, as a match on them is by text.
pub fn environ(pid: u32) -> Option<HashMap<String, String>> {
    let env = process(pid)?.environ().ok()?;
    Some(env.into_iter().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect())
}

/// The file or directory an fd of `pid` refers to; None for pipes, sockets and closed fds.
pub fn fd_path(pid: u32, fd: i32) -> Option<std::path::PathBuf> {
    match process(pid)?.fd_from_fd(fd).ok()?.target {
        FDTarget::Path(p) => Some(p),
        _ => None,
    }
}

fn stream_inode(p: &Process, fd: u32) -> Option<u64> {
    match p.fd_from_fd(i32::try_from(fd).ok()?).ok()?.target {
        FDTarget::Pipe(ino) | FDTarget::Socket(ino) => Some(ino),
        _ => None,
    }
}

/// Inode of the pipe or socket behind `fd` of `pid` (`pipe:[N]` / `socket:[N]`), None for ttys,
/// files and closed fds.
pub fn fd_stream_inode(pid: u32, fd: u32) -> Option<u64> {
    stream_inode(&process(pid)?, fd)
}

/// The streams a process speaks stdio JSON-RPC on: `(stdin, stdout)` inodes. fd 0 and 1 when they
/// are pipes or sockets; otherwise (the Python SDK dups them to 6 and 7 and closes 0 and 1) the
/// lowest-numbered pipe read end and write end, fd 2 aside: a dup of a closed stdin/stdout takes a
/// low number, while inherited strays (a make jobserver pipe, say) sit high.
pub fn stdio_streams(pid: u32) -> (Option<u64>, Option<u64>) {
    let Some(p) = process(pid) else { return (None, None) };
    let (i, o) = (stream_inode(&p, 0), stream_inode(&p, 1));
    if i.is_some() && o.is_some() {
        return (i, o);
    }
    let (mut reads, mut writes) = (vec![], vec![]);
    // fd 2 is stderr, never the JSON-RPC channel (and often a pipe too).
    for info in p.fd().into_iter().flatten().flatten().filter(|f| f.fd != 2) {
        let FDTarget::Pipe(ino) = info.target else { continue };
        // The fd link's permission bits are the file's open mode: a pipe end is one of the two.
        let (r, w) = (info.mode().contains(FDPermissions::READ), info.mode().contains(FDPermissions::WRITE));
        match (r, w) {
            (true, false) => reads.push((info.fd, ino)),
            (false, true) => writes.push((info.fd, ino)),
            _ => {}
        }
    }
    let lowest = |v: Vec<(i32, u64)>| v.into_iter().min().map(|(_, ino)| ino);
    (i.or(lowest(reads)), o.or(lowest(writes)))
}

/// The process's cgroup paths, one per hierarchy (a single one on a cgroup v2 host), as this
/// process's cgroup namespace sees them.
pub fn cgroup_paths(pid: u32) -> Vec<String> {
    process(pid).and_then(|p| p.cgroups().ok()).map(|c| c.into_iter().map(|g| g.pathname).collect()).unwrap_or_default()
}

/// Where cgroup v2 is mounted (the unified hierarchy on a hybrid host), from /proc/self/mounts.
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    cgroup2_in(procfs::mounts().ok()?)
}

fn cgroup2_in(mounts: Vec<MountEntry>) -> Option<std::path::PathBuf> {
    mounts.into_iter().find(|m| m.fs_vfstype == "cgroup2").map(|m| m.fs_file.into())
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
    let p = process(pid)?;
    let stat = p.stat().ok()?;
    let uid = p.status().ok()?.ruid;
    let exe = p.exe().ok().map(|p| p.display().to_string());
    Some(ProcInfo { pid, ppid: u32::try_from(stat.ppid).unwrap_or(0), uid, comm: stat.comm, exe, argv: argv(&p) })
}

/// The command line of `pid` (see [`argv`]); empty when it cannot be read.
pub fn cmdline(pid: u32) -> Vec<String> {
    process(pid).map(|p| argv(&p)).unwrap_or_default()
}

/// The environment of `pid` as `(name, value)` in its order, repeated names kept, both taken
/// lossily; empty when it cannot be read (gone, or another user's). [`environ`] keeps one value
/// per name; this is every variable the process was given.
pub fn environ_vars(pid: u32) -> Vec<(String, String)> {
    let mut raw = vec![];
    let Some(p) = process(pid) else { return vec![] };
    if p.open_relative("environ").and_then(|mut f| f.read_to_end(&mut raw).map_err(Into::into)).is_err() {
        return vec![];
    }
    raw.split(|&c| c == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|&c| c == b'=')?;
            Some((String::from_utf8_lossy(&kv[..eq]).into_owned(), String::from_utf8_lossy(&kv[eq + 1..]).into_owned()))
        })
        .collect()
}

/// (CPU seconds, resident bytes) of this process, 0 for what cannot be read.
pub fn self_usage() -> (f64, u64) {
    let Ok(me) = Process::myself() else { return (0.0, 0) };
    let cpu = me.stat().map(|s| (s.utime + s.stime) as f64 / procfs::ticks_per_second().max(1) as f64).unwrap_or(0.0);
    let rss = me.statm().map(|m| m.resident * procfs::page_size()).unwrap_or(0);
    (cpu, rss)
}

/// The command line, each argument taken lossily: `Process::cmdline` fails on the first byte that
/// is not UTF-8 and would leave a server with such an argument unnamed and unmatched.
fn argv(p: &Process) -> Vec<String> {
    let mut raw = vec![];
    if p.open_relative("cmdline").and_then(|mut f| f.read_to_end(&mut raw).map_err(Into::into)).is_err() {
        return vec![];
    }
    raw.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
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
    fn finds_the_cgroup2_mount_on_hybrid_and_unified_hosts() {
        let root = |text: &str| cgroup2_in(<Vec<MountEntry> as procfs::FromBufRead>::from_buf_read(text.as_bytes()).unwrap());
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(root(hybrid).unwrap().to_str(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(root("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n").unwrap().to_str(), Some("/sys/fs/cgroup"));
        assert!(root("proc /proc proc rw 0 0\n").is_none());
    }

    #[test]
    fn a_comm_with_spaces_and_parentheses_is_read_whole() {
        // comm may hold spaces and ')': it ends at the last ')'.
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("a) b");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let mut c = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while comm(c.id()).as_deref() != Some("a) b") {
            assert!(std::time::Instant::now() < deadline, "comm {:?}", comm(c.id()));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let me = std::process::id();
        assert_eq!(process_info(c.id()).map(|i| i.ppid), Some(me));
        assert!(!is_zombie(c.id()) && !exiting_or_gone(c.id()));
        c.kill().unwrap();
        // Killed but not yet reaped: a zombie until wait().
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_zombie(c.id()) {
            assert!(std::time::Instant::now() < deadline, "never a zombie");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(exists(c.id()) && exiting_or_gone(c.id()));
        c.wait().unwrap();
        assert!(!exists(c.id()) && exiting_or_gone(c.id()));
        assert_eq!(comm(u32::MAX), None);
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
