//! Entries placed into persistence directories without an open: a file renamed in from
//! elsewhere (`mv /tmp/x ~/.config/systemd/user/x.service`), a hard link or a symlink made
//! there, a directory made there (a drop-in `foo.service.d/`). The kernel's write check and the
//! open gate judge opens, and none of these opens anything in the protected directory.
//!
//! A second fanotify group (notification class, directory-entry events named by the directory's
//! file handle and the entry's name, with the thread id) watches the protected directories and
//! the directories of protected files. An entry a tracked process places there that a write rule
//! protects is moved to the quarantine directory at once, before anything runs it (these files
//! take effect at the next login, boot or timer), and reported to the pipeline, where it is an
//! open for writing of that path: the rule (`persistence-write`) alerts and kills.
use std::{
    collections::HashMap,
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use monitor_common::TrackInfo;
use tokio::sync::mpsc;

use super::GateRecord;
use crate::sys::procfs;

/// An entry a tracked process placed where a write rule protects.
#[derive(Debug)]
pub struct Placed {
    pub ts_mono_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub server_id: u32,
    /// Where it was placed.
    pub path: PathBuf,
    /// `moved` (rename or hard link) or `created` (symlink, directory, mknod).
    pub how: &'static str,
    /// Where it is now (None: it could not be moved away).
    pub quarantined: Option<PathBuf>,
}

/// What the watcher judges by; the pipeline swaps it in whole.
#[derive(Default)]
pub struct PersistState {
    /// Watched directory (by file handle) → its path, and whether any entry in it is protected
    /// (a protected directory) or only the names in `files`.
    pub dirs: HashMap<Vec<u8>, (PathBuf, bool)>,
    /// Protected files, by path.
    pub files: std::collections::HashSet<PathBuf>,
}

pub struct PersistWatch {
    group: Arc<OwnedFd>,
    state: Arc<RwLock<PersistState>>,
    marked: std::collections::BTreeSet<PathBuf>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const MASK: u64 = libc::FAN_MOVED_TO | libc::FAN_CREATE | libc::FAN_ONDIR;
// Entry events only: a directory mark asking for its files' events (open, close, access,
// modify) would put every open and close in the watched directories (`/etc`, homes) through
// the kernel's parent check, for every process on the host (docs/architecture.md).
const _: () = assert!(MASK & (libc::FAN_ACCESS | libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE | libc::FAN_CLOSE_NOWRITE | libc::FAN_OPEN | libc::FAN_OPEN_EXEC | libc::FAN_EVENT_ON_CHILD) == 0);

impl PersistWatch {
    pub fn start(maps: (BpfHashMap<MapData, u32, TrackInfo>, BpfHashMap<MapData, u32, TrackInfo>), tx: mpsc::Sender<GateRecord>, quarantine: PathBuf) -> io::Result<Self> {
        let group = Arc::new(group()?);
        let state = Arc::new(RwLock::new(PersistState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st, s) = (group.clone(), state.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("mcpmon-persist".into()).spawn(move || run(&g, &st, &s, &maps, &tx, &quarantine))?;
        Ok(Self { group, state, marked: Default::default(), stop, thread: Some(thread) })
    }

    /// Watches `dirs` (every entry protected) and the directories of `files` (those names).
    pub fn sync(&mut self, dirs: &[PathBuf], files: &[PathBuf]) {
        let mut st = PersistState::default();
        let mut want: Vec<(PathBuf, bool)> = dirs.iter().map(|d| (d.clone(), true)).collect();
        // A drop-in directory below a protected one is as much persistence as the unit.
        for d in dirs {
            if let Ok(rd) = std::fs::read_dir(d) {
                want.extend(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| (e.path(), true)));
            }
        }
        for f in files {
            if let Some(p) = f.parent() {
                want.push((p.to_path_buf(), false));
            }
            st.files.insert(f.clone());
        }
        for (dir, all) in want {
            let Some(h) = handle(&dir) else { continue };
            if !self.marked.contains(&dir) {
                if let Err(e) = mark(&self.group, &dir) {
                    tracing::debug!(dir = %dir.display(), error = %e, "persistence watch");
                    continue;
                }
                self.marked.insert(dir.clone());
            }
            let e = st.dirs.entry(h).or_insert((dir, all));
            e.1 |= all;
        }
        if let Ok(mut w) = self.state.write() {
            *w = st;
        }
    }
}

impl Drop for PersistWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The watch's fanotify group: notification class, entries named by their directory's file
/// handle and their name, with the thread id. Public, with `mark`, for the benchmark's `marks`
/// configuration, which holds the same marks without the daemon.
pub fn group() -> io::Result<OwnedFd> {
    let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_REPORT_DFID_NAME | libc::FAN_REPORT_TID | libc::FAN_UNLIMITED_QUEUE;
    // SAFETY: plain syscall; the fd is checked and owned below.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_CLOEXEC) as u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches `dir` for entries made in it (`MASK`).
pub fn mark(group: &OwnedFd, dir: &Path) -> io::Result<()> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: group is open; c is NUL-terminated and outlives the call.
    let r = unsafe { libc::fanotify_mark(group.as_raw_fd(), libc::FAN_MARK_ADD | libc::FAN_MARK_ONLYDIR, MASK, libc::AT_FDCWD, c.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A directory's file handle (type and bytes), the name fanotify gives it in events.
fn handle(dir: &Path) -> Option<Vec<u8>> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[] }, 128 bytes max.
    let mut buf = [0u8; 8 + 128];
    buf[..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id = 0;
    // SAFETY: buf is a file_handle with room for 128 handle bytes, as its header says.
    let r = unsafe { libc::name_to_handle_at(libc::AT_FDCWD, c.as_ptr(), buf.as_mut_ptr().cast(), &mut mount_id, 0) };
    if r < 0 {
        return None;
    }
    let n = u32::from_ne_bytes(buf[..4].try_into().ok()?) as usize;
    Some(buf[4..8 + n.min(128)].to_vec())
}

/// `maps`: TRACKED (by tgid) and EXITED (by tid, for doers already gone).
fn run(group: &OwnedFd, state: &RwLock<PersistState>, stop: &AtomicBool, maps: &(BpfHashMap<MapData, u32, TrackInfo>, BpfHashMap<MapData, u32, TrackInfo>), tx: &mpsc::Sender<GateRecord>, quarantine: &Path) {
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd { fd: group.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 250) } <= 0 {
            continue;
        }
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(group.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        for (tid, mask, dir_handle, name) in parse(&buf[..n as usize]) {
            // Names first: a home directory sees every user's renames, most of them nothing of ours.
            let path = {
                let Ok(st) = state.read() else { continue };
                let Some((dir, all)) = st.dirs.get(&dir_handle) else { continue };
                let p = dir.join(&name);
                if !*all && !st.files.contains(&p) {
                    continue;
                }
                p
            };
            // Alive: its process's entry; exiting or gone (a `mv` exits at once): its thread's.
            // The kernel's exit hook puts the thread in EXITED, then takes the process out of
            // TRACKED, while the task is still alive and not yet a zombie (it has its memory
            // and files to release first): a miss in TRACKED is followed by a look at the
            // thread's state *after* it, and an exiting, exited or gone thread stands by its
            // EXITED entry. A live thread is judged by TRACKED alone: EXITED may hold a reused
            // tid. (Judging "gone" by the zombie state alone missed a `mv` caught in that
            // window under load: its entry stayed in place unreported.)
            let found = procfs::tgid_of(tid)
                .and_then(|tgid| maps.0.get(&tgid, 0).ok().map(|i| (tgid, i)))
                .or_else(|| if procfs::exiting_or_gone(tid) { maps.1.get(&tid, 0).ok().map(|i| (tid, i)) } else { None });
            let Some((tgid, info)) = found else { continue };
            let quarantined = move_away(&path, quarantine);
            let how = if mask & libc::FAN_MOVED_TO != 0 { "moved" } else { "created" };
            tracing::warn!(pid = tgid, path = %path.display(), how, quarantined = ?quarantined, "persistence: entry placed in a protected directory");
            let uid = procfs::owner_uid(tgid).unwrap_or(0);
            let rec = Placed { ts_mono_ns: crate::output::monotonic_ns(), tgid, tid, uid, server_id: info.server_id, path, how, quarantined };
            let _ = tx.blocking_send(GateRecord::Placed(rec));
        }
    }
}


/// (tid, mask, directory handle, entry name) of each directory-entry event.
fn parse(buf: &[u8]) -> Vec<(u32, u64, Vec<u8>, String)> {
    let meta = std::mem::size_of::<libc::fanotify_event_metadata>();
    let (mut off, mut out) = (0, Vec::new());
    while off + meta <= buf.len() {
        // SAFETY: meta bytes remain at off; read_unaligned copes with alignment.
        let m: libc::fanotify_event_metadata = unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
        let len = m.event_len as usize;
        if len < meta || off + len > buf.len() {
            break;
        }
        // Info records: u8 type, u8 pad, u16 len; DFID_NAME: fsid (8), file_handle, name\0.
        let rec = &buf[off + meta..off + len];
        if rec.len() > 4 + 8 + 8 && rec[0] == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
            let body = &rec[4 + 8..u16::from_ne_bytes([rec[2], rec[3]]) as usize];
            let hb = u32::from_ne_bytes(body[..4].try_into().unwrap_or([0; 4])) as usize;
            if body.len() >= 8 + hb {
                let handle = body[4..8 + hb].to_vec();
                let name = &body[8 + hb..];
                let name = String::from_utf8_lossy(&name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())]).into_owned();
                out.push((m.pid as u32, m.mask, handle, name));
            }
        }
        off += len;
    }
    out
}

/// Moves the entry into the quarantine directory (same filesystem: a rename; elsewhere a
/// symlink is recreated by its target and other entries are copied, then removed). None when
/// it could not be moved away.
fn move_away(path: &Path, quarantine: &Path) -> Option<PathBuf> {
    let _ = std::fs::create_dir_all(quarantine);
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dest = quarantine.join(format!("{stamp}-{name}"));
    if std::fs::rename(path, &dest).is_ok() {
        return Some(dest);
    }
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).ok()?;
        std::os::unix::fs::symlink(&target, &dest).ok()?;
        std::fs::remove_file(path).ok()?;
    } else if meta.is_file() {
        std::fs::copy(path, &dest).ok()?;
        std::fs::remove_file(path).ok()?;
    } else {
        return None;
    }
    Some(dest)
}
