//! The open gate: read-protected files (keys, credentials) are refused *before* an fd exists.
//!
//! Why: the kill at an open's exit runs after the fd is in a table that sibling threads share
//! (sendfile, SCM_RIGHTS, dup2 races), and io_uring opens pass no syscall hook at all. A
//! fanotify permission event (`FAN_OPEN_PERM`) stops every open of a marked file inside the
//! kernel, whatever path, link, thread or io_uring worker made it, until we answer.
//!
//! What is marked:
//! - every read-protected inode the plan found, held by an O_PATH fd: the mark and the
//!   protection follow the inode through renames and hardlinks (to `.pub`, to `/tmp`) for as
//!   long as it has a link; the inode number cannot be reused while we hold it;
//! - every directory that holds read-protected files (`~/.ssh`, `~/.aws`, …), with
//!   `FAN_EVENT_ON_CHILD`: a key created later is judged at its very first open, by name or, for
//!   rules with `secret_content`, by content (a private key renamed to `.pub` stays a key).
//!
//! Who is refused: processes in the kernel's `TRACKED` map (by the opener's thread group), not
//! holding a grant for the rule. Everyone else is answered at once. One read is held rather
//! than answered: a server root's read of its runner's registry login while the daemon has not
//! yet judged the root's latest exec (`ROOT_RUNNERS`, decide.rs), for at most 5 s. The answer comes from a
//! dedicated thread that takes no lock the pipeline holds while it opens files, so the daemon's
//! own opens of marked files (client configs) cannot deadlock; if the thread or the daemon dies,
//! the group closes and the kernel allows every waiting open (the in-kernel exit kill remains).
mod decide;
pub mod fanotify;
pub mod persist;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    thread::JoinHandle,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use monitor_common::{protect, OpenEvent, TrackInfo};
use tokio::sync::mpsc;

pub use decide::Verdict;
pub(crate) use decide::classify;

use crate::{actions::protect::Plan, events::Inode};

/// Read access under kill or deny.
pub const READ_BITS: u32 = protect::KILL_READ | protect::DENY_READ;

/// Second handles on the kernel maps the gate thread reads and marks.
pub struct GateMaps {
    pub tracked: BpfHashMap<MapData, u32, TrackInfo>,
    pub pending_open: BpfHashMap<MapData, u32, OpenEvent>,
    /// Server roots that exec'd from an image of their own (no launcher allowances).
    pub root_tainted: BpfHashMap<MapData, u32, u32>,
    /// The daemon's judgements of server roots' execs (stamp | runner).
    pub root_runners: BpfHashMap<MapData, u32, u64>,
    /// The stamp of each server root's latest exec: which exec a judgement must name.
    pub root_images: BpfHashMap<MapData, u32, u64>,
    /// `PROTECTED`: a secret the gate sees made is in it before the making open returns.
    pub protected: BpfHashMap<MapData, monitor_common::InodeKey, u32>,
}

/// What the gate thread judges by; the pipeline swaps it in whole.
#[derive(Default)]
pub struct GateState {
    /// Read-protected inodes → `PROTECTED` value.
    pub files: HashMap<Inode, u32>,
    pub patterns: Vec<crate::actions::protect::ReadPattern>,
    /// Held secret directories (by inode, so after a rename too) → the patterns whose files
    /// they hold; a new file in one is judged by its name against these.
    pub dirs: HashMap<Inode, Vec<crate::actions::protect::ReadPattern>>,
    /// (server id, rule slot) pairs granted.
    pub grants: HashSet<(u32, u32)>,
    /// (executable, rule slot): a server's root running it may read that rule's files.
    pub root_readers: HashSet<(Inode, u32)>,
}

/// A refused open, for the pipeline to alert on.
#[derive(Debug)]
pub struct Denial {
    pub ts_mono_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub server_id: u32,
    pub path: PathBuf,
    pub inode: Inode,
    pub policy: u32,
    pub killed: bool,
    /// The thread's pending open (syscall hooks) was marked, so the kernel's own open event
    /// carries the refusal; otherwise (io_uring, a full pending table) the pipeline builds one.
    pub in_event: bool,
}

#[derive(Debug)]
pub enum GateRecord {
    Denied(Denial),
    /// A file first judged protected at its open (created after the last scan): hold it.
    Learned { inode: Inode, path: PathBuf, policy: u32, handle: OwnedFd },
    /// An entry a tracked process placed in a persistence directory without opening it there
    /// (rename, link, symlink, mkdir), already moved to quarantine.
    Placed(persist::Placed),
}

/// A protected object we hold open (O_PATH) and keep marked.
struct Held {
    fd: OwnedFd,
    path: PathBuf,
    policy: u32,
    /// Directories: the patterns of the files they hold.
    patterns: Vec<crate::actions::protect::ReadPattern>,
}

pub struct Gate {
    group: Arc<OwnedFd>,
    state: Arc<RwLock<GateState>>,
    files: BTreeMap<Inode, Held>,
    dirs: BTreeMap<Inode, Held>,
    /// Objects whose last link is gone, unmarked and out of the thread's view, closed only once
    /// the kernel's map no longer names them (`synced`). Held, their numbers go to no new file:
    /// ext4 gives a freed number to the next file made, and a harmless file that got a dead
    /// key's number while `PROTECTED` still named it was refused (24 of 24 by a process making
    /// files as the key was deleted).
    releasing: Vec<Held>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("fanotify_init: {0} (needs CONFIG_FANOTIFY_ACCESS_PERMISSIONS and CAP_SYS_ADMIN)")]
    Init(std::io::Error),
    #[error("gate thread: {0}")]
    Thread(std::io::Error),
}

/// Most protected objects a gate holds; past it, new ones rely on the kernel map alone.
pub(crate) const MAX_HELD: usize = 60_000;

impl Gate {
    pub fn start(maps: GateMaps, tx: mpsc::Sender<GateRecord>, daemon_tgid: u32) -> Result<Self, GateError> {
        let group = Arc::new(fanotify::init().map_err(GateError::Init)?);
        raise_nofile();
        let state = Arc::new(RwLock::new(GateState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let judge = decide::Judge { group: group.clone(), state: state.clone(), maps, tx, daemon_tgid };
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("mcpmon-gate".into()).spawn(move || judge.run(&s)).map_err(GateError::Thread)?;
        Ok(Self { group, state, files: BTreeMap::new(), dirs: BTreeMap::new(), releasing: Vec::new(), stop, thread: Some(thread) })
    }

    /// Brings marks and the thread's view in line with `plan` and `grants`. Objects the plan no
    /// longer names stay protected while they still have a link (renamed keys, renamed `.ssh`).
    /// Files that are no longer there leave the plan: deleted since, or replaced at their path
    /// since the scan read it (their numbers may be a new file's once let go).
    pub fn sync(&mut self, plan: &mut Plan, grants: HashSet<(u32, u32)>) {
        let mut stale = Vec::new();
        for (inode, policy) in plan.files.iter().filter(|(_, p)| **p & READ_BITS != 0) {
            if let Some(h) = self.files.get_mut(inode) {
                h.policy = *policy;
                if let Some(p) = plan.paths.get(inode) {
                    h.path = p.clone();
                }
                continue;
            }
            if let Some(path) = plan.paths.get(inode) {
                if self.hold(path.clone(), *inode, *policy, false, vec![]) == Hold::Stale {
                    stale.push(*inode);
                }
            }
        }
        for (dir, pats) in &plan.secret_dirs {
            if let Some(i) = crate::actions::protect::inode_of(dir) {
                match self.dirs.get_mut(&i) {
                    Some(h) => h.patterns = pats.clone(),
                    None => {
                        self.hold(dir.clone(), i, pats.first().map(|p| p.policy).unwrap_or(0), true, pats.clone());
                    }
                }
            }
        }
        stale.extend(self.prune());
        for i in stale {
            plan.files.remove(&i);
            plan.paths.remove(&i);
        }
        let mut st = GateState { files: HashMap::new(), patterns: plan.read_patterns.clone(), dirs: HashMap::new(), grants, root_readers: plan.root_readers.iter().copied().collect() };
        st.files.extend(self.files.iter().map(|(i, h)| (*i, h.policy)));
        st.dirs.extend(self.dirs.iter().map(|(i, h)| (*i, h.patterns.clone())));
        if let Ok(mut w) = self.state.write() {
            *w = st;
        }
    }

    /// Whether `i` is a file held (and marked) here.
    pub fn holds(&self, i: &Inode) -> bool {
        self.files.contains_key(i)
    }

    /// The kernel's map no longer names what `sync` let go: those inodes may go now.
    pub fn synced(&mut self) {
        self.releasing.clear();
    }

    pub fn set_grants(&mut self, grants: HashSet<(u32, u32)>) {
        if let Ok(mut w) = self.state.write() {
            w.grants = grants;
        }
    }

    /// A file the thread judged protected at its first open: hold and mark it.
    pub fn learn(&mut self, inode: Inode, path: PathBuf, policy: u32, handle: OwnedFd) {
        if self.files.contains_key(&inode) || self.files.len() >= MAX_HELD {
            return;
        }
        if fanotify::mark_inode(self.group.as_fd(), handle.as_fd()).is_ok() {
            self.files.insert(inode, Held { fd: handle, path, policy, patterns: vec![] });
        }
        if let Ok(mut w) = self.state.write() {
            w.files.insert(inode, policy);
        }
    }

    /// Protected files the gate holds (the plan's and those kept after a rename), with where
    /// they are now: the kernel map gets them all.
    pub fn held_files(&self) -> impl Iterator<Item = (Inode, u32, &std::path::Path)> {
        self.files.iter().map(|(i, h)| (*i, h.policy, h.path.as_path()))
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.files.len(), self.dirs.len())
    }

    fn hold(&mut self, path: PathBuf, inode: Inode, policy: u32, dir: bool, patterns: Vec<crate::actions::protect::ReadPattern>) -> Hold {
        if self.files.len() + self.dirs.len() >= MAX_HELD {
            return Hold::Not;
        }
        // Replaced between the scan and now (the next scan sees the new one), or gone.
        let Some((fd, is_dir)) = fanotify::open_checked(&path, inode) else { return Hold::Stale };
        if is_dir != dir {
            return Hold::Stale;
        }
        let r = if dir { fanotify::mark_dir(self.group.as_fd(), fd.as_fd()) } else { fanotify::mark_inode(self.group.as_fd(), fd.as_fd()) };
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "gate: cannot mark");
            return Hold::Not;
        }
        let held = Held { fd, path, policy, patterns };
        if dir {
            self.dirs.insert(inode, held);
        } else {
            self.files.insert(inode, held);
        }
        Hold::Held
    }

    /// Sets aside objects whose last link is gone (their inode may be reused once let go: see
    /// `releasing`), and refreshes where the others are now. Returns those set aside.
    fn prune(&mut self) -> Vec<Inode> {
        let mut dead = Vec::new();
        for (map, dir) in [(&mut self.files, false), (&mut self.dirs, true)] {
            for (i, h) in map.extract_if(.., |_, h| !fanotify::linked(h.fd.as_fd())) {
                let _ = fanotify::unmark(self.group.as_fd(), h.fd.as_fd(), dir);
                self.releasing.push(h);
                dead.push(i);
            }
            for h in map.values_mut() {
                if let Some(p) = fanotify::fd_path(h.fd.as_fd()) {
                    h.path = p;
                }
            }
        }
        dead
    }
}

/// What became of an object a plan named, at its hold.
#[derive(PartialEq)]
enum Hold {
    Held,
    /// Its path names another object now, or none: the plan's number is stale.
    Stale,
    /// Not held (past `MAX_HELD`, or not markable): the plan's entry stands.
    Not,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        tracing::debug!(group_fd = self.group.as_raw_fd(), "gate closed");
    }
}

/// Each held object is one fd: take the hard limit.
pub(crate) fn raise_nofile() {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: r is a valid out pointer for getrlimit and a valid in pointer for setrlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
