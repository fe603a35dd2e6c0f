//! Live inputs of the protection plan, followed with inotify instead of a timer: the user
//! database (a new user, an edited home) and the places where homes and secret directories
//! appear (a home created or mounted later, a first `~/.ssh`, a new key). The pipeline re-plans
//! on each change; the periodic rescan stays only as a backstop.
use std::{
    cell::Cell,
    collections::{BTreeSet, HashMap},
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use tokio::io::unix::AsyncFd;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The user database: reload the rules (`~/` expands to the new homes).
    Users,
    /// A directory appeared, moved or went away where protected files live.
    Tree,
}

pub struct Watcher {
    fd: AsyncFd<OwnedFd>,
    /// `/proc/self/mountinfo`: the kernel flags it (POLLPRI) on every mount or unmount, so a
    /// home mounted later is planned at once, not at the next rescan.
    mounts: Option<AsyncFd<std::fs::File>>,
    passwd: PathBuf,
    /// The user database's directory (entries renamed or created in it).
    passwd_wd: i32,
    /// The user database itself (edited in place); re-aimed at each change, since a rename
    /// replaces the inode it watched. -1 while the file is missing.
    passwd_file_wd: Cell<i32>,
    /// watch descriptor → directory (and whether only new directories in it count), and back.
    wds: HashMap<i32, (PathBuf, bool)>,
    by_path: HashMap<PathBuf, i32>,
}

const TREE_MASK: u32 = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_MOVED_FROM | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_ONLYDIR | libc::IN_MASK_ADD;
/// Entry events only. An inotify watch on a directory always asks for its children's events
/// too, and with a per-file interest such as IN_CLOSE_WRITE the kernel takes every open and
/// close of every file in `/etc` (`ld.so.cache` at each exec) to the parent's watch: +9% on an
/// untracked open+close of `/etc/hostname`. Edits in place are seen on the file itself.
const PASSWD_DIR_MASK: u32 = libc::IN_MOVED_TO | libc::IN_CREATE | libc::IN_ONLYDIR;
const PASSWD_FILE_MASK: u32 = libc::IN_CLOSE_WRITE;

/// Past this many tree watches, new places rely on the periodic rescan.
const MAX_WATCHES: usize = 4096;

impl Watcher {
    pub fn new(passwd: &Path) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is checked and owned below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd, owned from here; the OwnedFd stays open and unchanged while
        // the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(OwnedFd::from_raw_fd(raw), tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        let passwd_dir = passwd.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/")).to_path_buf();
        let mounts = std::fs::File::open("/proc/self/mountinfo").ok().and_then(|f| {
            // SAFETY: the File owns its fd and keeps it open and unchanged while the AsyncFd
            // owns the File.
            unsafe { AsyncFd::register_with_interest(f, tokio::io::Interest::PRIORITY) }.ok()
        });
        let mut w = Self { fd, mounts, passwd: passwd.to_path_buf(), passwd_wd: -1, passwd_file_wd: Cell::new(-1), wds: HashMap::new(), by_path: HashMap::new() };
        // The directory: useradd and editors replace the file by a rename.
        w.passwd_wd = w.add(&passwd_dir, PASSWD_DIR_MASK)?;
        w.rewatch_passwd();
        Ok(w)
    }

    /// Aims the file watch at the user database's current inode.
    fn rewatch_passwd(&self) {
        let old = self.passwd_file_wd.get();
        let new = self.add(&self.passwd, PASSWD_FILE_MASK).unwrap_or(-1);
        if old >= 0 && old != new {
            // SAFETY: plain syscall on our own fd; the old inode may be gone already (EINVAL).
            unsafe { libc::inotify_rm_watch(self.fd.get_ref().as_raw_fd(), old) };
        }
        self.passwd_file_wd.set(new);
    }

    /// Watches exactly `dirs` and `new_dirs` (plus the user database). In `new_dirs` only a
    /// directory made, moved or gone counts: a file made there is no change (a directory in
    /// both counts everything).
    pub fn set(&mut self, dirs: &BTreeSet<PathBuf>, new_dirs: &BTreeSet<PathBuf>) {
        let stale: Vec<PathBuf> = self.by_path.keys().filter(|p| !dirs.contains(*p) && !new_dirs.contains(*p)).cloned().collect();
        for p in stale {
            if let Some(wd) = self.by_path.remove(&p) {
                self.wds.remove(&wd);
                if wd != self.passwd_wd {
                    // SAFETY: plain syscall on our own fd.
                    unsafe { libc::inotify_rm_watch(self.fd.get_ref().as_raw_fd(), wd) };
                }
            }
        }
        let wanted = dirs.iter().map(|d| (d, false)).chain(new_dirs.iter().filter(|d| !dirs.contains(*d)).map(|d| (d, true)));
        for (d, only_dirs) in wanted.take(MAX_WATCHES) {
            if let Some(wd) = self.by_path.get(d) {
                if let Some(w) = self.wds.get_mut(wd) {
                    w.1 = only_dirs;
                }
                continue;
            }
            match self.add(d, TREE_MASK) {
                Ok(wd) => {
                    self.wds.insert(wd, (d.clone(), only_dirs));
                    self.by_path.insert(d.clone(), wd);
                }
                Err(e) => tracing::debug!(dir = %d.display(), error = %e, "watch"),
            }
        }
    }

    pub fn watched(&self) -> usize {
        self.by_path.len()
    }

    fn add(&self, dir: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: c is NUL-terminated and outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.get_ref().as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Waits for the next change; a burst of events is read at once and folded into one.
    pub async fn next(&mut self) -> io::Result<Change> {
        loop {
            let mounted = async {
                match &self.mounts {
                    Some(m) => m.ready(tokio::io::Interest::PRIORITY).await.map(|mut g| {
                        // Reading the table to its end re-arms the notification.
                        let _ = std::io::Read::read_to_end(&mut &*g.get_inner(), &mut Vec::new());
                        let _ = std::io::Seek::rewind(&mut &*g.get_inner());
                        g.clear_ready();
                    }),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = mounted => {
                    r?;
                    return Ok(Change::Tree);
                }
                r = self.fd.readable() => {
                    let mut guard = r?;
                    match self.drain() {
                        Ok(Some(c)) => return Ok(c),
                        Ok(None) => guard.clear_ready(),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Reads what is queued without waiting (before acknowledging a new server, so the plan
    /// is current when its first instruction runs).
    pub fn poll_now(&self) -> Option<Change> {
        self.drain().ok().flatten()
    }

    fn drain(&self) -> io::Result<Option<Change>> {
        let mut buf = [0u8; 16 * 1024];
        let passwd_name = self.passwd.file_name().map_or(&[][..], |n| n.as_bytes());
        // Re-aimed only once the drain ends.
        let file = self.passwd_file_wd.get();
        let mut out = None;
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::read(self.fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock && out.is_some() {
                    // Once per drain, after every event of the old inode was read as a change.
                    if out == Some(Change::Users) {
                        self.rewatch_passwd();
                    }
                    return Ok(out);
                }
                return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
            }
            let n = n as usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            let mut off = 0;
            while off + head <= n {
                // SAFETY: at least `head` bytes remain at off; read_unaligned copes with alignment.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
                let name_end = (off + head + ev.len as usize).min(n);
                let name = &buf[off + head..name_end];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                let c = if (ev.wd == self.passwd_wd && name == passwd_name) || (ev.wd == file && file >= 0) {
                    Some(Change::Users)
                } else if (ev.wd == self.passwd_wd || ev.mask & libc::IN_IGNORED != 0) && !self.wds.contains_key(&ev.wd) {
                    // Another file in /etc, or a watch we dropped (a replaced user database, a
                    // directory let go).
                    None
                } else if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    Some(Change::Users) // lost events: re-read everything
                } else if ev.mask & (libc::IN_ISDIR | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) == 0 && self.wds.get(&ev.wd).is_some_and(|w| w.1) {
                    None // a file made where only new directories count
                } else {
                    Some(Change::Tree)
                };
                out = match (out, c) {
                    (Some(Change::Users), _) | (_, Some(Change::Users)) => Some(Change::Users),
                    (a, b) => a.or(b),
                };
                off += head + ev.len as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// The mask our inotify group holds on inode `ino`, from `/proc/self/fdinfo`.
    fn mask_on(w: &Watcher, ino: u64) -> Option<u32> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", w.fd.get_ref().as_raw_fd())).unwrap();
        info.lines().filter(|l| l.starts_with("inotify ")).find_map(|l| {
            let field = |k: &str| l.split_whitespace().find_map(|f| f.strip_prefix(k)).and_then(|v| u64::from_str_radix(v, 16).ok());
            (field("ino:")? == ino).then(|| field("mask:").map(|m| m as u32)).flatten()
        })
    }

    /// Events of a directory's files, not of its entries: a directory watch asking for one of
    /// them puts every open and close of every file in it on the parent's path.
    const PER_FILE: u32 = libc::IN_ACCESS | libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_CLOSE_WRITE | libc::IN_CLOSE_NOWRITE | libc::IN_OPEN;

    #[tokio::test]
    async fn user_database_is_followed_without_a_watch_on_its_siblings() {
        let t = tempfile::tempdir().unwrap();
        let passwd = t.path().join("passwd");
        std::fs::write(&passwd, "a:x:1001:1001::/tmp/a:/bin/sh\n").unwrap();
        let w = Watcher::new(&passwd).unwrap();
        // The directory's watch holds no per-file event, so opens and closes of the other files
        // there (all of /etc) do not go to the watch.
        let dir = mask_on(&w, t.path().metadata().unwrap().ino()).expect("the directory is watched");
        assert_eq!(dir & PER_FILE, 0, "directory mask {dir:#x}");
        std::fs::write(t.path().join("hostname"), "box\n").unwrap();
        assert_eq!(w.poll_now(), None, "another file written");

        std::fs::write(&passwd, "b:x:1002:1002::/tmp/b:/bin/sh\n").unwrap();
        assert_eq!(w.poll_now(), Some(Change::Users), "edited in place");
        // Replaced by a rename, as useradd and vipw do.
        let next = t.path().join("passwd+");
        std::fs::write(&next, "c:x:1003:1003::/tmp/c:/bin/sh\n").unwrap();
        std::fs::rename(&next, &passwd).unwrap();
        assert_eq!(w.poll_now(), Some(Change::Users), "renamed over");
        // The file's watch followed the new inode.
        std::fs::write(&passwd, "d:x:1004:1004::/tmp/d:/bin/sh\n").unwrap();
        assert_eq!(w.poll_now(), Some(Change::Users), "the new file edited in place");
        assert!(mask_on(&w, passwd.metadata().unwrap().ino()).is_some_and(|m| m & libc::IN_CLOSE_WRITE != 0));
        // The dropped watch on the old inode is not a change.
        assert_eq!(w.poll_now(), None);
    }

    #[tokio::test]
    async fn user_database_made_later_is_followed() {
        let t = tempfile::tempdir().unwrap();
        let passwd = t.path().join("passwd");
        let w = Watcher::new(&passwd).unwrap();
        std::fs::write(&passwd, "a:x:1001:1001::/tmp/a:/bin/sh\n").unwrap();
        assert_eq!(w.poll_now(), Some(Change::Users), "created");
        std::fs::write(&passwd, "b:x:1002:1002::/tmp/b:/bin/sh\n").unwrap();
        assert_eq!(w.poll_now(), Some(Change::Users), "then edited in place");
    }

    #[tokio::test]
    async fn tree_watches_ask_for_entries_only() {
        let t = tempfile::tempdir().unwrap();
        let passwd = t.path().join("passwd");
        std::fs::write(&passwd, "").unwrap();
        let home = t.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let mut w = Watcher::new(&passwd).unwrap();
        // The user database's directory among them: both masks add up on its inode.
        let dirs: BTreeSet<PathBuf> = [home.clone(), t.path().to_path_buf()].into();
        w.set(&dirs, &BTreeSet::new());
        assert_eq!(w.watched(), 2);
        for d in &dirs {
            let m = mask_on(&w, d.metadata().unwrap().ino()).expect("watched");
            assert_eq!(m & PER_FILE, 0, "{} mask {m:#x}", d.display());
        }
        std::fs::write(home.join(".bashrc"), "").unwrap();
        assert_eq!(w.poll_now(), Some(Change::Tree), "an entry made in a home");
        std::fs::create_dir(home.join(".ssh")).unwrap();
        assert_eq!(w.poll_now(), Some(Change::Tree), "a first ~/.ssh");
    }

    /// Above a socket's directory (`/tmp` above `ssh-XXXX`) only a new directory re-plans: a
    /// busy `/tmp` makes files all the time. A directory in both sets counts everything.
    #[tokio::test]
    async fn new_directory_watches_ignore_files() {
        let t = tempfile::tempdir().unwrap();
        let passwd = t.path().join("passwd");
        std::fs::write(&passwd, "").unwrap();
        let (tmp, both) = (t.path().join("tmp"), t.path().join("both"));
        std::fs::create_dir(&tmp).unwrap();
        std::fs::create_dir(&both).unwrap();
        let mut w = Watcher::new(&passwd).unwrap();
        w.set(&[both.clone()].into(), &[tmp.clone(), both.clone()].into());
        assert_eq!(w.watched(), 2);
        std::fs::write(tmp.join("cc1.s"), "").unwrap();
        std::fs::rename(tmp.join("cc1.s"), tmp.join("cc2.s")).unwrap();
        std::fs::remove_file(tmp.join("cc2.s")).unwrap();
        assert_eq!(w.poll_now(), None, "files made, moved and removed in /tmp");
        std::fs::create_dir(tmp.join("ssh-XXXXq5cL")).unwrap();
        assert_eq!(w.poll_now(), Some(Change::Tree), "ssh-agent's new directory");
        std::fs::write(both.join("agent.sock"), "").unwrap();
        assert_eq!(w.poll_now(), Some(Change::Tree), "a file where everything counts");
        // Aimed again: /tmp now counts everything.
        w.set(&[tmp.clone()].into(), &BTreeSet::new());
        assert_eq!(w.watched(), 1);
        std::fs::write(tmp.join("x"), "").unwrap();
        assert_eq!(w.poll_now(), Some(Change::Tree), "re-aimed");
    }
}
