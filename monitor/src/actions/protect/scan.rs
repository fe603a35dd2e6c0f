//! The filesystem side of a plan: globs walked on disk, each lookup made once per plan.
use std::{
    collections::HashMap,
    ffi::OsString,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
};

use super::inode;
use crate::{events::Inode, rules::glob::Glob};

/// Matches per pattern are capped so a careless `**` cannot stall the daemon.
const MAX_MATCHES: usize = 20_000;
const MAX_DEPTH: usize = 8;

/// One plan's filesystem lookups, each made once: rules expanded per home share their prefixes
/// (`/var/lib`, `/home/x/.ssh`), and walking each pattern alone made ~23,650 statx a scan.
/// Never kept across plans: a rescan is there to see new files.
#[derive(Default)]
pub(super) struct Scan {
    /// `symlink_metadata` succeeded (a dangling symlink exists too).
    pub(super) exists: foldhash::HashMap<PathBuf, bool>,
    /// `metadata`, symlinks followed.
    pub(super) meta: foldhash::HashMap<PathBuf, Option<Meta>>,
    /// `read_dir`, empty where it failed.
    pub(super) lists: foldhash::HashMap<PathBuf, Rc<[Entry]>>,
    pub(super) real: foldhash::HashMap<PathBuf, Option<PathBuf>>,
    /// Names asked of each directory by `exists`: past `LIST_AFTER`, the directory is listed
    /// and answers the rest.
    pub(super) asked: foldhash::HashMap<PathBuf, u32>,
    /// Compiled globs, lent by the plan's owner for the plan.
    pub(super) globs: Globs,
    /// Lookups that reached the filesystem.
    pub(super) calls: usize,
}

#[derive(Clone, Copy)]
pub(super) struct Meta {
    pub(super) file: bool,
    pub(super) dir: bool,
    pub(super) socket: bool,
    pub(super) inode: Inode,
}

/// A directory entry; `dir` as its own type says (a symlink to a directory is none).
pub(super) struct Entry {
    pub(super) name: OsString,
    pub(super) dir: bool,
}

/// Names asked of one directory before it is listed instead: each home is asked for every
/// literal name of the rules (`.aws`, `.netrc`, `.docker`, ...), a statx each, where one
/// listing answers them all; a directory asked for one or two names (`/usr/bin/nc`) is not
/// listed (it may hold thousands).
const LIST_AFTER: u32 = 4;

fn memo<T: Clone>(map: &mut foldhash::HashMap<PathBuf, T>, calls: &mut usize, path: &Path, look: impl FnOnce(&Path) -> T) -> T {
    if let Some(v) = map.get(path) {
        return v.clone();
    }
    *calls += 1;
    let v = look(path);
    map.insert(path.to_path_buf(), v.clone());
    v
}

impl Scan {
    pub(super) fn exists(&mut self, path: &Path) -> bool {
        if let Some(e) = self.exists.get(path) {
            return *e;
        }
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            let asked = self.asked.entry(dir.to_path_buf()).or_default();
            *asked += 1;
            if *asked > LIST_AFTER || self.lists.contains_key(dir) {
                let listed = self.list(dir);
                // An empty listing may be a failed one (not a directory, no access): asked.
                if !listed.is_empty() {
                    let e = listed.iter().any(|x| x.name == name);
                    self.exists.insert(path.to_path_buf(), e);
                    return e;
                }
            }
        }
        memo(&mut self.exists, &mut self.calls, path, |p| std::fs::symlink_metadata(p).is_ok())
    }

    pub(super) fn meta(&mut self, path: &Path) -> Option<Meta> {
        memo(&mut self.meta, &mut self.calls, path, |p| {
            let m = std::fs::metadata(p).ok()?;
            let t = m.file_type();
            Some(Meta { file: t.is_file(), dir: t.is_dir(), socket: t.is_socket(), inode: inode(&m) })
        })
    }

    pub(super) fn is_file(&mut self, path: &Path) -> bool {
        self.meta(path).is_some_and(|m| m.file)
    }

    pub(super) fn is_dir(&mut self, path: &Path) -> bool {
        self.meta(path).is_some_and(|m| m.dir)
    }

    pub(super) fn list(&mut self, dir: &Path) -> Rc<[Entry]> {
        memo(&mut self.lists, &mut self.calls, dir, |d| match std::fs::read_dir(d) {
            Ok(rd) => rd.flatten().map(|e| Entry { dir: e.file_type().is_ok_and(|t| t.is_dir()), name: e.file_name() }).collect(),
            Err(_) => Rc::from([]),
        })
    }

    pub(super) fn real(&mut self, path: &Path) -> Option<PathBuf> {
        memo(&mut self.real, &mut self.calls, path, |p| std::fs::canonicalize(p).ok())
    }
}

/// Globs compiled for plans, kept from one plan to the next (patterns come from the rules, and
/// the rules outlive many plans; the owner empties it with a new rule set).
#[derive(Default)]
pub struct Globs(HashMap<String, Option<Arc<Glob>>>);

impl Globs {
    pub(super) fn get(&mut self, pattern: &str) -> Option<Arc<Glob>> {
        if let Some(g) = self.0.get(pattern) {
            return g.clone();
        }
        let g = Glob::new(pattern, true).ok().map(Arc::new);
        self.0.insert(pattern.to_string(), g.clone());
        g
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

pub(super) fn expand_in(scan: &mut Scan, pattern: &str) -> Vec<PathBuf> {
    if !pattern.starts_with('/') {
        return vec![];
    }
    let parts: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::new();
    walk(scan, PathBuf::from("/"), &parts, 0, &mut out);
    out
}

pub(super) fn is_wild(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn walk(scan: &mut Scan, base: PathBuf, parts: &[&str], depth: usize, out: &mut Vec<PathBuf>) {
    if out.len() >= MAX_MATCHES {
        return;
    }
    let Some((first, rest)) = parts.split_first() else {
        out.push(base);
        return;
    };
    if *first == "**" {
        // Zero directories, then one more level of any name.
        walk(scan, base.clone(), rest, depth, out);
        if rest.is_empty() {
            // A trailing `**` is every path below, the files of each level as well as its
            // directories: only those were expanded, and `~/.password-store/web/site.gpg`, in a
            // subdirectory the gate does not mark, had no protection at all.
            for e in scan.list(&base).iter().filter(|e| !e.dir) {
                if out.len() >= MAX_MATCHES {
                    return;
                }
                out.push(base.join(&e.name));
            }
        }
        if depth >= MAX_DEPTH {
            return;
        }
        for e in subdirs(scan, &base) {
            walk(scan, e, parts, depth + 1, out);
        }
        return;
    }
    if !is_wild(first) {
        let next = base.join(first);
        if scan.exists(&next) {
            walk(scan, next, rest, depth, out);
        }
        return;
    }
    let Some(g) = scan.globs.get(first) else { return };
    for e in scan.list(&base).iter() {
        let Some(name) = e.name.to_str() else { continue };
        if g.matches(name) {
            walk(scan, base.join(name), rest, depth, out);
        }
    }
}

/// `base` and the directories below it, at most `depth` levels down (as `**` walks them).
pub(super) fn dirs_within(scan: &mut Scan, base: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = vec![base.to_path_buf()];
    let mut level = vec![base.to_path_buf()];
    for _ in 0..depth {
        level = level.iter().flat_map(|d| subdirs(scan, d)).collect();
        out.extend(level.iter().cloned());
    }
    out
}

fn subdirs(scan: &mut Scan, base: &Path) -> Vec<PathBuf> {
    scan.list(base)
        .iter()
        .filter(|e| e.dir)
        .filter(|e| !matches!(e.name.to_str(), Some("proc" | "sys" | "dev" | "node_modules" | ".cache")))
        .map(|e| base.join(&e.name))
        .collect()
}
