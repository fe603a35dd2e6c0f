//! The gate thread: reads permission events and answers each one. Untracked openers are
//! allowed at once (a new file a read pattern names is protected first: `learn_made`); a
//! tracked opener of a read-protected file without a grant is refused (and,
//! under a kill rule, killed while it still waits in the kernel). A server root's read of a
//! file its package runner may read waits, held, until the daemon has judged the root's latest
//! exec (`Judged::Later`), while the thread goes on answering other opens.
use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use monitor_common::{flags, protect, TrackInfo};
use tokio::sync::mpsc;

use super::{fanotify, Denial, GateMaps, GateRecord, GateState, READ_BITS};
use crate::{actions::protect::ReadPattern, events::Inode, sys::procfs::tgid_of};

pub(super) struct Judge {
    pub group: Arc<OwnedFd>,
    pub state: Arc<RwLock<GateState>>,
    pub maps: GateMaps,
    pub tx: mpsc::Sender<GateRecord>,
    pub daemon_tgid: u32,
}

/// What the gate answers for one open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse; `kill` under a kill rule.
    Deny { policy: u32, kill: bool },
}

/// What `judge` decided: an answer now, or a read to hold until the daemon has judged the
/// root's exec (then allowed, or refused as `Refusal` says).
enum Judged {
    Now(Verdict),
    Later(Refusal),
}

/// A refusal's facts, read while the opener waits in the kernel.
struct Refusal {
    tgid: u32,
    tid: u32,
    server_id: u32,
    path: std::path::PathBuf,
    inode: Inode,
    policy: u32,
    kill: bool,
}

/// A read held for the daemon's judgement.
struct Waiting {
    ev: fanotify::PermEvent,
    refusal: Refusal,
    since: Instant,
}

/// Longest a read waits for the daemon's judgement of its root's exec; then it is refused
/// (fail closed): the daemon is that far behind, or the exec's event was lost. The opener is
/// held in the kernel meanwhile, and so is nothing else: the gate answers other opens.
const JUDGEMENT_WAIT: Duration = Duration::from_secs(5);

/// Milliseconds between looks at held reads (the daemon judges an exec within milliseconds).
const WAIT_POLL_MS: i32 = 2;

/// Bytes of a file's head the content check reads.
const HEAD: usize = 8192;

impl Judge {
    pub fn run(mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 64 * 1024];
        // Reads held until the daemon has judged their root's exec (`Judged::Later`).
        let mut held: Vec<Waiting> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&*self.group), events: libc::POLLIN, revents: 0 };
            // The timeout lets the thread see `stop`, and look at held reads again soon.
            let timeout = if held.is_empty() { 200 } else { WAIT_POLL_MS };
            // SAFETY: pfd is one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if r > 0 {
                let events = match fanotify::read_events(self.group.as_fd(), &mut buf) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "gate: reading fanotify events failed; gate stops (opens are allowed by the kernel once the group closes)");
                        return;
                    }
                };
                for ev in events {
                    match self.judge(&ev) {
                        Judged::Now(verdict) => self.answer(&ev, verdict),
                        Judged::Later(refusal) => held.push(Waiting { ev, refusal, since: Instant::now() }),
                    }
                }
            }
            if !held.is_empty() {
                held.retain(|w| !self.settle(w));
            }
        }
    }

    fn answer(&self, ev: &fanotify::PermEvent, verdict: Verdict) {
        if let Err(e) = fanotify::respond(self.group.as_fd(), ev, verdict == Verdict::Allow) {
            // ENOENT: the opener was killed while it waited; nothing left to answer.
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::warn!(tid = ev.tid, error = %e, "gate: answering");
            }
        }
    }

    /// Answers a held read once the daemon has judged its root's exec, or once it waited
    /// `JUDGEMENT_WAIT`. Whether it was answered.
    fn settle(&mut self, w: &Waiting) -> bool {
        let verdict = match self.runner_judged(w.refusal.tgid) {
            Some(true) => {
                tracing::debug!(pid = w.refusal.tgid, waited_us = w.since.elapsed().as_micros() as u64, "gate: a runner's read waited for its judgement");
                Verdict::Allow
            }
            Some(false) => self.refuse(&w.refusal),
            None if w.since.elapsed() < JUDGEMENT_WAIT => return false,
            None => {
                tracing::warn!(pid = w.refusal.tgid, waited_ms = w.since.elapsed().as_millis() as u64, "gate: the daemon has not judged a server root's exec in time (behind, or its event was lost): its read of a runner's login is refused");
                self.refuse(&w.refusal)
            }
        };
        self.answer(&w.ev, verdict);
        true
    }

    fn judge(&mut self, ev: &fanotify::PermEvent) -> Judged {
        let allow = Judged::Now(Verdict::Allow);
        let Some((tgid, info)) = self.tracked(ev.tid) else {
            self.learn_made(ev);
            return allow;
        };
        if tgid == self.daemon_tgid || tgid <= 1 {
            return allow;
        }
        let Ok((dev, ino, _, is_dir)) = fanotify::stat_fd(ev.file.as_fd()) else { return allow };
        if is_dir {
            return allow;
        }
        let inode = Inode { dev, ino };
        let path = fanotify::fd_path(ev.file.as_fd()).unwrap_or_default();
        let (verdict, learned) = {
            let Ok(st) = self.state.read() else { return allow };
            match st.files.get(&inode) {
                Some(p) => (verdict_for(*p, info.server_id, &st), false),
                None => match classify(&st.patterns, parent_patterns(&st, &path), &path, || head(&ev.file)) {
                    Some(p) => (verdict_for(p, info.server_id, &st), true),
                    None => (Verdict::Allow, false),
                },
            }
        };
        let Verdict::Deny { policy, kill } = verdict else { return allow };
        if learned {
            self.learned(ev, inode, path.clone(), policy);
        }
        let refusal = Refusal { tgid, tid: ev.tid, server_id: info.server_id, path, inode, policy, kill };
        if tgid == info.root_tgid && self.maps.root_tainted.get(&tgid, 0).is_err() {
            if self.root_reader(tgid, policy) {
                return Judged::Now(Verdict::Allow);
            }
            if policy & protect::RUNNER_MAY_READ != 0 {
                match self.runner_judged(tgid) {
                    Some(true) => return Judged::Now(Verdict::Allow),
                    // A runner is often quicker than the daemon (uv reads `~/.netrc` within
                    // milliseconds of its exec): the read waits for the judgement, not refused
                    // for being early. It waits in the kernel, before any fd exists.
                    None if self.maps.root_images.get(&tgid, 0).is_ok() => return Judged::Later(refusal),
                    _ => {}
                }
            }
        }
        Judged::Now(self.refuse(&refusal))
    }

    /// An untracked opener (the user's `ssh-keygen`, `cp`) of a file no plan has seen, whose
    /// name a read pattern protects: its inode goes into `PROTECTED` before this open returns,
    /// and the daemon learns it (held from now on). The gate sees opens in its directory only:
    /// a tracked process that hard-links the new key out (`~/stash/k`) the moment it is
    /// written, and opens it there, met the kernel's map before the watch's re-plan had the
    /// inode, and 20 of 20 keys were read. By name only: the file is new (empty as it is made),
    /// and a user's own reads of their files are not read by the gate.
    fn learn_made(&mut self, ev: &fanotify::PermEvent) {
        let Ok((dev, ino, _, is_dir)) = fanotify::stat_fd(ev.file.as_fd()) else { return };
        if is_dir {
            return;
        }
        let inode = Inode { dev, ino };
        let Some(path) = fanotify::fd_path(ev.file.as_fd()) else { return };
        let policy = {
            let Ok(st) = self.state.read() else { return };
            // A number the map has is this file's, unless the file is being made now: ext4 gives
            // a freed number (a key renamed over and let go) to the next new file.
            if st.files.contains_key(&inode) && !fanotify::being_made(ev.file.as_fd()) {
                return;
            }
            classify(&st.patterns, parent_patterns(&st, &path), &path, Vec::new)
        };
        let Some(policy) = policy else { return };
        if let Err(e) = self.maps.protected.insert(monitor_common::InodeKey { dev, _pad: 0, ino }, policy, 0) {
            tracing::warn!(path = %path.display(), error = %e, "gate: a new secret's inode could not go into PROTECTED; the daemon's plan puts it there");
        }
        self.learned(ev, inode, path, policy);
    }

    /// Tells the daemon of a file learned at an open, with a handle that holds it from now on
    /// (O_PATH through the event's fd: the same inode).
    fn learned(&self, ev: &fanotify::PermEvent, inode: Inode, path: std::path::PathBuf, policy: u32) {
        if let Ok(h) = fanotify::open_path(Path::new(&format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&ev.file)))) {
            let _ = self.tx.try_send(GateRecord::Learned { inode, path, policy, handle: h });
        }
    }

    /// Refuses the open (and under a kill rule kills the opener, which waits in the kernel):
    /// reads what the alert needs now, marks its pending open (before the kill, which ends the
    /// syscall and drops that entry), then kills.
    fn refuse(&mut self, r: &Refusal) -> Verdict {
        let uid = uid_of(r.tid);
        let in_event = self.mark_pending(r.tid, r.policy, r.kill);
        let killed = r.kill && self.kill(r.tgid);
        let d = Denial { ts_mono_ns: crate::output::monotonic_ns(), tgid: r.tgid, tid: r.tid, uid, server_id: r.server_id, path: r.path.clone(), inode: r.inode, policy: r.policy, killed, in_event };
        if self.tx.try_send(GateRecord::Denied(d)).is_err() {
            tracing::warn!(tid = r.tid, "gate: pipeline queue full; a refusal goes without its own record");
        }
        Verdict::Deny { policy: r.policy, kill: r.kill }
    }

    /// The opener's thread group and its tracking entry. The kernel map is the truth (a child
    /// is tracked there before user space hears of it).
    fn tracked(&self, tid: u32) -> Option<(u32, TrackInfo)> {
        if let Ok(i) = self.maps.tracked.get(&tid, 0) {
            return Some((tid, i));
        }
        let tgid = tgid_of(tid)?;
        if tgid == tid {
            return None;
        }
        self.maps.tracked.get(&tgid, 0).ok().map(|i| (tgid, i))
    }

    /// Whether the server root `tgid` (never tainted: it has run launcher images only) runs an
    /// image that may read the files of the rule in policy value `p` (`kernel.root_may_read`).
    /// Its image cannot change meanwhile: the opener waits in the kernel, and an exec by
    /// another thread would have to end this one first.
    fn root_reader(&self, tgid: u32, p: u32) -> bool {
        let Ok(st) = self.state.read() else { return false };
        if st.root_readers.is_empty() {
            return false;
        }
        let Some(exe) = crate::actions::protect::inode_of(Path::new(&format!("/proc/{tgid}/exe"))) else { return false };
        st.root_readers.contains(&(exe, p >> protect::SLOT_SHIFT))
    }

    /// The daemon's judgement of the latest exec of server root `tgid` (never tainted): whether
    /// it is the package runner it was launched through, whose registry login (a file of
    /// `kernel.runner_may_read`, npm's `~/.npmrc`) it may read. None: that exec is not judged
    /// yet, or none was seen. The same facts the kernel's open checks read.
    fn runner_judged(&self, tgid: u32) -> Option<bool> {
        let image = self.maps.root_images.get(&tgid, 0).ok()?;
        let judged = self.maps.root_runners.get(&tgid, 0).ok()?;
        (monitor_common::exec_stamp(judged) == image).then_some(judged & 1 != 0)
    }

    /// Marks the thread's pending open (if the syscall hooks saw its entry) as refused here, so
    /// the open's own event carries the refusal and the rule.
    fn mark_pending(&mut self, tid: u32, policy: u32, killed: bool) -> bool {
        let Ok(mut ev) = self.maps.pending_open.get(&tid, 0) else { return false };
        ev.hdr.flags |= flags::DENIED | flags::GATED | if killed { flags::KILLED } else { 0 };
        ev.policy = policy;
        // BPF_EXIST: only update the entry that is still there, never re-create a finished one.
        self.maps.pending_open.insert(tid, ev, 2 /* BPF_EXIST */).is_ok()
    }

    /// SIGKILL through a pidfd while the opener waits in the kernel: it never returns to user
    /// code. Only tracked processes reach here, and never pid 1 or the daemon.
    fn kill(&self, tgid: u32) -> bool {
        // SAFETY: plain syscalls; the pidfd is closed below.
        unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, tgid as libc::c_int, 0);
            if fd < 0 {
                return false;
            }
            let r = libc::syscall(libc::SYS_pidfd_send_signal, fd as libc::c_int, libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0);
            libc::close(fd as libc::c_int);
            r == 0
        }
    }
}

/// Deny or allow under policy value `p` for this server.
fn verdict_for(p: u32, server_id: u32, st: &GateState) -> Verdict {
    if p & READ_BITS == 0 || st.grants.contains(&(server_id, p >> protect::SLOT_SHIFT)) {
        return Verdict::Allow;
    }
    Verdict::Deny { policy: p, kill: p & protect::DENY_READ == 0 }
}

/// A file the plan did not know: by name against the read patterns, then (for patterns with
/// `secret_content`) by content. Returns the `PROTECTED` value it gets.
pub(crate) fn classify(patterns: &[ReadPattern], in_dir: &[ReadPattern], path: &Path, head: impl FnOnce() -> Vec<u8>) -> Option<u32> {
    if let Some(s) = path.to_str() {
        let excluded = |p: &ReadPattern| p.except.iter().any(|e| e.matches(s));
        if let Some(p) = patterns.iter().find(|p| p.glob.matches(s) && !excluded(p)) {
            return Some(p.policy);
        }
        // In a protected directory, wherever it is now: by the file's name alone.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(p) = in_dir.iter().find(|p| p.name.matches(name) && !excluded(p)) {
            return Some(p.policy);
        }
    }
    let by_content = patterns.iter().find(|p| p.secret_content)?;
    is_private_key(&head()).then_some(by_content.policy)
}

/// PEM/OpenSSH private key markers (RSA, EC, DSA, OPENSSH, PKCS#8, encrypted PKCS#8), and
/// PuTTY keys.
pub(crate) fn is_private_key(head: &[u8]) -> bool {
    let has = |n: &[u8]| head.windows(n.len()).any(|w| w == n);
    has(b"PRIVATE KEY-----") || has(b"PuTTY-User-Key-File-")
}

/// The patterns of the held secret directory this file is in (looked up by the directory's
/// inode, so a renamed `~/.ssh` keeps its patterns).
fn parent_patterns<'a>(st: &'a GateState, path: &Path) -> &'a [ReadPattern] {
    let Some(dir) = path.parent() else { return &[] };
    let Some(i) = crate::actions::protect::inode_of(dir) else { return &[] };
    st.dirs.get(&i).map(Vec::as_slice).unwrap_or(&[])
}

fn head(f: &OwnedFd) -> Vec<u8> {
    let mut b = vec![0u8; HEAD];
    let n = fanotify::read_head(f.as_fd(), &mut b);
    b.truncate(n);
    b
}

/// The opener's uid (owner of its /proc entry).
fn uid_of(tid: u32) -> u32 {
    crate::sys::procfs::owner_uid(tid).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::glob::Glob;

    fn pat(g: &str, policy: u32, content: bool) -> ReadPattern {
        let name = g.rsplit('/').next().unwrap();
        ReadPattern { policy, glob: Glob::new(g, true).unwrap().into(), name: Glob::new(name, true).unwrap().into(), except: vec![Glob::new("**/*.pub", true).unwrap()].into(), secret_content: content }
    }

    #[test]
    fn names_then_content() {
        let pats = vec![pat("/h/a/.ssh/id_*", 1 | 3 << 16, true), pat("/h/a/.aws/credentials", 0x11 | 4 << 16, false)];
        let none = || Vec::new();
        let nodir: &[ReadPattern] = &[];
        assert_eq!(classify(&pats, nodir, Path::new("/h/a/.ssh/id_new"), none), Some(1 | 3 << 16));
        assert_eq!(classify(&pats, nodir, Path::new("/h/a/.aws/credentials"), none), Some(0x11 | 4 << 16));
        assert_eq!(classify(&pats, nodir, Path::new("/h/a/.ssh/id_new.pub"), || b"ssh-ed25519 AAAA".to_vec()), None);
        // A private key under a public name is still a key.
        let key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n".to_vec();
        assert_eq!(classify(&pats, nodir, Path::new("/h/a/.ssh/id_new.pub"), || key.clone()), Some(1 | 3 << 16));
        assert_eq!(classify(&pats, nodir, Path::new("/h/a/.ssh/known_hosts"), none), None);
        // `~/.ssh` renamed: a new `id_*` in it is judged by its name against the directory's patterns.
        assert_eq!(classify(&pats, nodir, Path::new("/h/a/.ssh-old/id_x"), none), None);
        assert_eq!(classify(&pats, &pats[..1], Path::new("/h/a/.ssh-old/id_x"), none), Some(1 | 3 << 16));
        assert_eq!(classify(&pats, &pats[..1], Path::new("/h/a/.ssh-old/id_x.pub"), none), None);
    }

    #[test]
    fn grants_and_deny_versus_kill() {
        let mut st = GateState::default();
        let kill = protect::KILL_READ | 3 << 16;
        let deny = protect::KILL_READ | protect::DENY_READ | 4 << 16;
        assert_eq!(verdict_for(kill, 7, &st), Verdict::Deny { policy: kill, kill: true });
        assert_eq!(verdict_for(deny, 7, &st), Verdict::Deny { policy: deny, kill: false });
        st.grants.insert((7, 4));
        assert_eq!(verdict_for(deny, 7, &st), Verdict::Allow, "server 7 holds a grant for slot 4");
        assert_eq!(verdict_for(deny, 8, &st), Verdict::Deny { policy: deny, kill: false }, "grants are per server");
        assert_eq!(verdict_for(protect::KILL_WRITE | 3 << 16, 7, &st), Verdict::Allow, "write-only protection is not the gate's");
    }

    #[test]
    fn private_key_markers() {
        assert!(is_private_key(b"-----BEGIN RSA PRIVATE KEY-----"));
        assert!(is_private_key(b"x\n-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert!(is_private_key(b"PuTTY-User-Key-File-3: ssh-ed25519"));
        assert!(!is_private_key(b"ssh-ed25519 AAAAC3Nza user@host"));
    }
}
