//! The rest of what `PROTECTED` names, held so its numbers stay its own. The gate (or, without
//! it, `keep.rs`) holds the read-protected files; the kernel's map also names files by inode
//! for writes (`~/.bashrc`, `authorized_keys`), executables (`/usr/bin/nc`) and the classified
//! ones. ext4 gives a freed number to the next file made: `sed -i ~/.bashrc` frees the old
//! inode at its rename, and until the next plan a tracked process's new file with that number
//! was killed at its first write. Each of these is held (O_PATH) while the map names it, and
//! closed only once the map no longer does. So are the directories the kernel judges new files
//! in (`UNSEEN_DIRS`, `unseen.rs`): a removed `~/.password-store/web`'s number, given to a new
//! directory elsewhere, would have every file made there refused as a password until the next
//! plan.
use std::{
    collections::BTreeMap,
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
};

use super::{unseen::Unseen, Plan};
use crate::{events::Inode, gate::fanotify};

#[derive(Default)]
pub struct Pins {
    held: BTreeMap<Inode, OwnedFd>,
    dirs: BTreeMap<Inode, OwnedFd>,
    /// No plan names these any more, or their last link is gone: closed at `synced`.
    releasing: Vec<OwnedFd>,
}

impl Pins {
    /// Holds the plan's files that `held_elsewhere` does not, and takes out of the plan those
    /// no longer there: deleted, or replaced at their path since the scan read it (their
    /// numbers may be a new file's). Those no plan names any more are set aside until `synced`.
    /// Past `MAX_HELD`, and without a path, a file stays in the plan unheld (`hold_each`).
    pub fn apply(&mut self, plan: &mut Plan, held_elsewhere: impl Fn(&Inode) -> bool) {
        let gone: Vec<Inode> = self.held.keys().filter(|i| !plan.files.contains_key(i) || held_elsewhere(i)).copied().collect();
        for i in gone {
            self.releasing.extend(self.held.remove(&i));
        }
        let want = plan.files.keys().filter(|i| !held_elsewhere(i)).map(|i| (*i, plan.paths.get(i)));
        let stale = hold_each(&mut self.held, want, self.dirs.len(), false);
        for i in stale {
            plan.files.remove(&i);
            plan.paths.remove(&i);
            // A launcher replaced since the scan (an upgrade): its old number must not let the
            // next image made read the launcher's credentials.
            plan.root_readers.retain(|(r, _)| *r != i);
            self.releasing.extend(self.held.remove(&i));
        }
    }

    /// The same for the directories of `UNSEEN_DIRS`: a stale one leaves `dirs` and its names.
    pub fn apply_dirs(&mut self, u: &mut Unseen) {
        let gone: Vec<Inode> = self.dirs.keys().filter(|i| !u.dirs.contains_key(i)).copied().collect();
        for i in gone {
            self.releasing.extend(self.dirs.remove(&i));
        }
        let stale = hold_each(&mut self.dirs, u.dirs.keys().map(|i| (*i, u.dir_paths.get(i))), self.held.len(), true);
        for i in stale {
            u.dirs.remove(&i);
            u.names.retain(|(d, _), _| *d != i);
            self.releasing.extend(self.dirs.remove(&i));
        }
    }

    /// The kernel's map no longer names what was set aside: those inodes may go now.
    pub fn synced(&mut self) {
        self.releasing.clear();
    }
}

/// Holds each of `want` (inode, where it was found) in `held`, and returns those no longer
/// there: held with their last link gone, or their path naming another object now (or, with
/// `dir`, no directory). Without a path (mcpmon's own images, `ROOT_VIA`) there is nothing to
/// check one by, and past `MAX_HELD` (with `others` held beside) one is left unheld.
fn hold_each<'a>(held: &mut BTreeMap<Inode, OwnedFd>, want: impl Iterator<Item = (Inode, Option<&'a PathBuf>)>, others: usize, dir: bool) -> Vec<Inode> {
    let mut stale = Vec::new();
    for (i, path) in want {
        if let Some(fd) = held.get(&i) {
            if !fanotify::linked(fd.as_fd()) {
                stale.push(i);
            }
            continue;
        }
        let Some(path) = path else { continue };
        if held.len() + others >= crate::gate::MAX_HELD {
            continue;
        }
        match fanotify::open_checked(path, i) {
            Some((fd, is_dir)) if is_dir || !dir => {
                held.insert(i, fd);
            }
            _ => stale.push(i),
        }
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::protect::inode_of;

    /// A file replaced by a rename since the scan leaves the plan, and its number goes to no
    /// new file until the map is synced; one the plan still names stays held.
    #[test]
    fn replaced_files_leave_the_plan_and_are_held_until_synced() {
        let d = tempfile::tempdir().unwrap();
        let (rc, other) = (d.path().join(".bashrc"), d.path().join(".profile"));
        std::fs::write(&rc, "rc").unwrap();
        std::fs::write(&other, "p").unwrap();
        let (old, keep) = (inode_of(&rc).unwrap(), inode_of(&other).unwrap());
        let mut plan = Plan::default();
        for (i, p) in [(old, &rc), (keep, &other)] {
            plan.files.insert(i, 1);
            plan.paths.insert(i, p.clone());
        }
        let mut pins = Pins::default();
        pins.apply(&mut plan.clone(), |_| false);
        std::fs::write(d.path().join("new"), "edited").unwrap();
        std::fs::rename(d.path().join("new"), &rc).unwrap();
        let made = d.path().join("made");
        std::fs::write(&made, "x").unwrap();
        assert_ne!(inode_of(&made), Some(old), "held: a new file gets another number");
        let mut p = plan.clone();
        pins.apply(&mut p, |_| false);
        assert_eq!(p.files.keys().copied().collect::<Vec<_>>(), vec![keep], "replaced: out of the plan");
        assert_eq!(pins.releasing.len(), 1);
        pins.synced();
        assert!(pins.releasing.is_empty() && pins.held.contains_key(&keep));
        // Held elsewhere (the gate's): let go here.
        pins.apply(&mut p, |_| true);
        assert!(pins.held.is_empty() && pins.releasing.len() == 1);
    }

    /// A directory of `UNSEEN_DIRS` removed since it was read leaves it, with its names, and its
    /// number goes to no new directory until the map is synced.
    #[test]
    fn removed_directories_leave_the_unseen_maps_and_are_held_until_synced() {
        let d = tempfile::tempdir().unwrap();
        let web = d.path().join("web");
        std::fs::create_dir(&web).unwrap();
        let i = inode_of(&web).unwrap();
        let mut u = Unseen::default();
        u.dirs.insert(i, 1);
        u.dir_paths.insert(i, web.clone());
        u.names.insert((i, [0; monitor_common::NAME_CAP]), 1);
        let mut pins = Pins::default();
        pins.apply_dirs(&mut u.clone());
        std::fs::remove_dir(&web).unwrap();
        let made = d.path().join("made");
        std::fs::create_dir(&made).unwrap();
        assert_ne!(inode_of(&made), Some(i), "held: a new directory gets another number");
        pins.apply_dirs(&mut u);
        assert!(u.dirs.is_empty() && u.names.is_empty(), "removed: out of the maps");
        assert_eq!(pins.releasing.len(), 1);
        pins.synced();
        assert!(pins.releasing.is_empty() && pins.dirs.is_empty());
    }
}
