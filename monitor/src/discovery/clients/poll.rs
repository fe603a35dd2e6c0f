//! The once-a-second check for a changed client config, without reading any config.
//!
//! Statting every candidate path of every user each second (about 40 per home, and the project
//! list parsed again) was 35% of the idle daemon's CPU. The candidates form a tree instead:
//! a directory whose stamp is unchanged (and settled, below) has the same entries as at the last
//! check, so a name that was absent in it is still absent and is not statted, nor anything below
//! it; only what exists is statted again (a file edited in place keeps its directory's mtime).
//! A Debian host with 25 users (homes /usr/sbin, /bin, /nonexistent, ...) went from 534 statx,
//! 42 openat and a parse of each ~/.claude.json per second to 22 statx (1.8 ms to 0.1 ms).
//! When a check sees a change the tree is built again, and, as before, the configs are read
//! again if a candidate file's stamp differs from the last read's.
use std::{
    collections::BTreeMap,
    ffi::{OsStr, OsString},
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
    time::{Duration, SystemTime},
};

/// What stat says of a path: enough to see a file replaced or rewritten (the mtime alone misses a
/// rewrite within one timestamp tick), and a directory's entries added or removed (its mtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: Option<SystemTime>,
    dir: bool,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Stamp { dev: m.dev(), ino: m.ino(), size: m.size(), mtime: m.modified().ok(), dir: m.is_dir() }
    }
}

/// The stamp of what `p` names, a symlink followed.
pub fn stamp(p: &Path) -> Option<Stamp> {
    #[cfg(test)]
    tests::STATS.with(|n| n.set(n.get() + 1));
    std::fs::metadata(p).ok().map(|m| Stamp::of(&m))
}

/// `stamp`, and whether an entry of that name exists (a dangling symlink does: its target may
/// come); one syscall unless `p` is a symlink.
fn look(p: &Path) -> (Option<Stamp>, bool) {
    #[cfg(test)]
    tests::STATS.with(|n| n.set(n.get() + 1));
    match std::fs::symlink_metadata(p) {
        Err(_) => (None, false),
        Ok(m) if m.file_type().is_symlink() => (stamp(p), true),
        Ok(m) => (Some(Stamp::of(&m)), true),
    }
}

fn is_dir(s: Option<Stamp>) -> bool {
    s.is_some_and(|s| s.dir)
}

/// An entry added within one timestamp tick (a jiffy) of the last change leaves a directory's
/// mtime as it was: a directory changed this recently has its entries looked at again.
const SETTLE: Duration = Duration::from_secs(2);

/// Every this many checks no directory is trusted: a filesystem that does not update a
/// directory's mtime (some FUSE or network mounts) is then late by this many seconds, not forever.
/// Such a check stats every candidate under an existing directory (about 450 stat on a Debian
/// host with 25 users, against 22 for a trusting one): 8 a second on average.
const FULL_EVERY: u32 = 60;

struct Node {
    name: OsString,
    path: PathBuf,
    /// A config file, or Continue's block directory: a new stamp is a change.
    leaf: bool,
    /// A home in the user database: whether it is a directory decides who is a user.
    home: bool,
    /// Continue's block directory: the block files it held (a new one is a new config).
    blocks: Option<Vec<PathBuf>>,
    children: Vec<Node>,
    stamp: Option<Stamp>,
    /// The stamp's mtime was SETTLE old when taken: any entry added since has changed it.
    settled: bool,
    /// An entry of this name exists in the parent (a dangling symlink too).
    present: bool,
}

impl Node {
    fn new(name: &OsStr, path: PathBuf) -> Self {
        Node { name: name.to_owned(), path, leaf: false, home: false, blocks: None, children: vec![], stamp: None, settled: false, present: false }
    }

    /// Stats this node and whatever below it may have changed; true if a config file, a block
    /// directory's listing or a home's existence did. Keeps what it saw for the next call.
    fn check(&mut self, now: SystemTime, trust: bool) -> bool {
        let (new, present) = look(&self.path);
        self.present = present;
        let mut changed = (self.leaf && new != self.stamp) || (self.home && is_dir(new) != is_dir(self.stamp));
        let clean = trust && new == self.stamp && self.settled;
        if let Some(files) = &self.blocks {
            changed |= !clean && !changed && is_dir(new) && blocks_in(&self.path) != *files;
        }
        if is_dir(new) {
            for c in &mut self.children {
                if !clean || c.present {
                    changed |= c.check(now, trust);
                }
            }
        } else {
            changed |= self.children.iter().any(Node::holds);
        }
        self.settled = new.is_none_or(|s| s.mtime.is_some_and(|t| t + SETTLE <= now));
        self.stamp = new;
        changed
    }

    /// Whether this node or one below it was there: gone with its directory, that is a change.
    fn holds(&self) -> bool {
        (self.leaf && self.stamp.is_some()) || (self.home && is_dir(self.stamp)) || self.children.iter().any(Node::holds)
    }

    fn leaves(&self, out: &mut BTreeMap<PathBuf, Option<Stamp>>) {
        if self.leaf {
            out.insert(self.path.clone(), self.stamp);
        }
        self.children.iter().for_each(|c| c.leaves(out));
    }
}

fn blocks_in(dir: &Path) -> Vec<PathBuf> {
    super::sources::continue_blocks(dir).into_iter().map(|s| s.path).collect()
}

fn child<'a>(nodes: &'a mut Vec<Node>, parent: &Path, name: &OsStr) -> &'a mut Node {
    let i = nodes.iter().position(|n| n.name == name).unwrap_or_else(|| {
        nodes.push(Node::new(name, parent.join(name)));
        nodes.len() - 1
    });
    &mut nodes[i]
}

/// The candidate paths of every user, built at each read of the configs and checked each second.
#[derive(Default)]
pub struct Tree {
    roots: Vec<Node>,
    checks: u32,
}

impl Tree {
    fn at(&mut self, path: &Path) -> &mut Node {
        let mut comps = path.components().peekable();
        let top = if comps.peek() == Some(&Component::RootDir) { "/" } else { "." };
        let mut n = child(&mut self.roots, Path::new(""), OsStr::new(top));
        for c in comps.filter(|c| !matches!(c, Component::RootDir | Component::CurDir)) {
            let Node { children, path, .. } = n;
            n = child(children, path, c.as_os_str());
        }
        n
    }

    /// A config file (or the user database).
    pub fn file(&mut self, p: &Path) {
        self.at(p).leaf = true;
    }

    pub fn home(&mut self, p: &Path) {
        self.at(p).home = true;
    }

    /// Continue's block directory: its stamp, and the block files in it.
    pub fn blocks(&mut self, dir: &Path) {
        let n = self.at(dir);
        n.leaf = true;
        let files = blocks_in(&n.path);
        for f in &files {
            self.file(f);
        }
        self.at(dir).blocks = Some(files);
    }

    /// Stats what may have changed since the last call (the first call stats everything).
    pub fn changed(&mut self) -> bool {
        let (now, trust) = (SystemTime::now(), !self.checks.is_multiple_of(FULL_EVERY));
        self.checks = self.checks.wrapping_add(1);
        self.roots.iter_mut().fold(false, |c, r| r.check(now, trust) | c)
    }

    /// Records the stamp a file had when it was read, before the tree was statted: a change in
    /// between is then seen by the next check.
    pub fn pin(&mut self, p: &Path, s: Option<Stamp>) {
        self.at(p).stamp = s;
    }

    /// Every config file (and the user database) with its stamp: the tree's contents compared
    /// from one read to the next.
    pub fn files(&self) -> BTreeMap<PathBuf, Option<Stamp>> {
        let mut out = BTreeMap::new();
        self.roots.iter().for_each(|r| r.leaves(&mut out));
        out
    }
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
