//! A thin, safe wrapper over the fanotify calls the gate uses: a content-class group with
//! thread ids, permission marks on inodes and directories, reading events, answering them.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

/// One permission event: the opener's thread id, and an fd (opened by the kernel for us,
/// without notification) on the file being opened.
pub struct PermEvent {
    pub tid: u32,
    pub file: OwnedFd,
}

/// `FAN_CLASS_CONTENT` group: permission events are answered before the open completes, so a
/// denied open never creates an fd in the opener's table. `FAN_REPORT_TID` names the thread
/// (the pending open of that thread is what the kernel hooks track).
pub fn init() -> io::Result<OwnedFd> {
    let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_REPORT_TID | libc::FAN_UNLIMITED_QUEUE;
    // SAFETY: plain syscall wrapper; the returned fd is checked and owned below.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens of this file (any name, any link: the mark is on the inode) wait for our answer.
pub fn mark_inode(group: BorrowedFd, file: BorrowedFd) -> io::Result<()> {
    mark(group, libc::FAN_MARK_ADD, libc::FAN_OPEN_PERM, file.as_raw_fd())
}

/// Opens of any file directly inside this directory wait for our answer (the mark is on the
/// directory's inode, so it follows a rename of the directory).
pub fn mark_dir(group: BorrowedFd, dir: BorrowedFd) -> io::Result<()> {
    mark(group, libc::FAN_MARK_ADD, libc::FAN_OPEN_PERM | libc::FAN_EVENT_ON_CHILD, dir.as_raw_fd())
}

pub fn unmark(group: BorrowedFd, obj: BorrowedFd, dir: bool) -> io::Result<()> {
    let mask = if dir { libc::FAN_OPEN_PERM | libc::FAN_EVENT_ON_CHILD } else { libc::FAN_OPEN_PERM };
    mark(group, libc::FAN_MARK_REMOVE, mask, obj.as_raw_fd())
}

/// Marks the object an fd refers to. fanotify_mark with a NULL path wants a real (not O_PATH)
/// fd, so the object is named through its `/proc/self/fd` link, which resolves to the very
/// inode we hold whatever it is called now.
fn mark(group: BorrowedFd, how: u32, mask: u64, fd: RawFd) -> io::Result<()> {
    let c = CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: group is an open descriptor borrowed for the call; c is NUL-terminated and
    // outlives the call.
    let r = unsafe { libc::fanotify_mark(group.as_raw_fd(), how, mask, libc::AT_FDCWD, c.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks until events arrive; returns the permission events (others are closed and skipped).
pub fn read_events(group: BorrowedFd, buf: &mut [u8]) -> io::Result<Vec<PermEvent>> {
    // SAFETY: buf is a writable buffer of buf.len() bytes.
    let n = unsafe { libc::read(group.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
    let (mut off, n, mut out) = (0usize, n as usize, Vec::new());
    while off + meta_len <= n {
        // SAFETY: at least meta_len bytes remain at off; read_unaligned copes with alignment.
        let m: libc::fanotify_event_metadata = unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
        if (m.event_len as usize) < meta_len || m.vers != libc::FANOTIFY_METADATA_VERSION {
            break;
        }
        if m.fd >= 0 {
            // SAFETY: the kernel installed this fd for us; we own it from here on.
            let file = unsafe { OwnedFd::from_raw_fd(m.fd) };
            if m.mask & libc::FAN_OPEN_PERM != 0 {
                out.push(PermEvent { tid: m.pid as u32, file });
            }
        }
        off += m.event_len as usize;
    }
    Ok(out)
}

/// Answers a permission event. The opener's open returns EPERM on deny.
pub fn respond(group: BorrowedFd, ev: &PermEvent, allow: bool) -> io::Result<()> {
    let r = libc::fanotify_response { fd: ev.file.as_raw_fd(), response: if allow { libc::FAN_ALLOW } else { libc::FAN_DENY } };
    let len = std::mem::size_of::<libc::fanotify_response>();
    // SAFETY: r is a valid fanotify_response of len bytes.
    let n = unsafe { libc::write(group.as_raw_fd(), (&r as *const libc::fanotify_response).cast(), len) };
    if n != len as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An O_PATH handle: keeps the inode alive (its number cannot be reused while we hold it) and
/// names the object for marks and `fstat` whatever it is renamed to. Symlinks are followed, as
/// the plan follows them (a `~/.bashrc` linked into a dotfiles repository is protected by its
/// target's inode), and callers check the inode they got. With `O_NOFOLLOW`, a handle of
/// `/proc/self/fd/N` was the magic link itself: it held nothing, and a key the gate learned at
/// its first open and that was then moved out of `~/.ssh` lost its protection at the next plan
/// (6 of 6 were read).
pub fn open_path(p: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is NUL-terminated and outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd, owned from here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstat` of an fd: (kernel dev_t, inode, link count, is a directory).
pub fn stat_fd(fd: BorrowedFd) -> io::Result<(u32, u64, u64, bool)> {
    let st = fstat(fd)?;
    Ok((crate::actions::protect::kernel_dev(st.st_dev), st.st_ino, st.st_nlink, st.st_mode & libc::S_IFMT == libc::S_IFDIR))
}

fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    // SAFETY: st is written by fstat before it is read; zeroed is a valid bit pattern for stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the call; st is a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Whether the fd's file is being made: empty, and its inode changed within the last 2 s (the
/// making open of `ssh-keygen` or `cp`; an old empty file is not).
pub fn being_made(fd: BorrowedFd) -> bool {
    let Ok(st) = fstat(fd) else { return false };
    if st.st_size != 0 {
        return false;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    (now - st.st_ctime).abs() <= 2
}

/// An O_PATH handle of `path` if it still is `want` (the plan's inode, found with symlinks
/// followed), and whether it is a directory.
pub fn open_checked(path: &Path, want: crate::events::Inode) -> Option<(OwnedFd, bool)> {
    let fd = open_path(path).ok()?;
    let (dev, ino, _, is_dir) = stat_fd(std::os::fd::AsFd::as_fd(&fd)).ok()?;
    ((crate::events::Inode { dev, ino }) == want).then_some((fd, is_dir))
}

/// Whether a held object still has a link (a failed `fstat` counts as none): one without is
/// let go once no map names it, since its number may then be a new file's.
pub fn linked(fd: BorrowedFd) -> bool {
    stat_fd(fd).is_ok_and(|(_, _, nlink, _)| nlink > 0)
}

/// The current path of an fd's file (as `/proc/self/fd` shows it; " (deleted)" when unlinked).
pub fn fd_path(fd: BorrowedFd) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// Up to `buf.len()` bytes from the start of the file.
pub fn read_head(fd: BorrowedFd, buf: &mut [u8]) -> usize {
    // SAFETY: buf is writable for buf.len() bytes; pread does not move a shared offset.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    n.max(0) as usize
}
