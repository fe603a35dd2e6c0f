//! The rest of what `PROTECTED` names, held so its numbers stay its own. The gate (or, without
//! it, `keep.rs`) holds the read-protected files; the kernel's map also names files by inode
//! for writes (`~/.bashrc`, `authorized_keys`), executables (`/usr/bin/nc`) and the classified
//! ones. ext4 gives a freed number to the next file made: `sed -i ~/.bashrc` frees the old
//! inode at its rename, and until the next plan a tracked process's new file with that number
//! was killed at its first write. Each of these is held (O_PATH) while the map names it, and
//! closed only once the map no longer does.
use std::{
    collections::BTreeMap,
    os::fd::{AsFd, OwnedFd},
};

use super::Plan;
use crate::{events::Inode, gate::fanotify};

#[derive(Default)]
pub struct Pins {
    held: BTreeMap<Inode, OwnedFd>,
    /// No plan names these any more, or their last link is gone: closed at `synced`.
    releasing: Vec<OwnedFd>,
}

impl Pins {
    /// Holds the plan's files that `held_elsewhere` does not, and takes out of the plan those
    /// no longer there: deleted, or replaced at their path since the scan read it (their
    /// numbers may be a new file's). Those no plan names any more are set aside until `synced`.
    /// Past `MAX_HELD`, and without a path, a file stays in the plan unheld, as before holds.
    pub fn apply(&mut self, plan: &mut Plan, held_elsewhere: impl Fn(&Inode) -> bool) {
        let gone: Vec<Inode> = self.held.keys().filter(|i| !plan.files.contains_key(i) || held_elsewhere(i)).copied().collect();
        for i in gone {
            self.releasing.extend(self.held.remove(&i));
        }
        let mut stale = Vec::new();
        for i in plan.files.keys().filter(|i| !held_elsewhere(i)) {
            match self.held.get(i) {
                Some(fd) => {
                    if !fanotify::stat_fd(fd.as_fd()).is_ok_and(|(_, _, nlink, _)| nlink > 0) {
                        stale.push(*i);
                    }
                }
                // Without a path (mcpmon's own images, `ROOT_VIA`), nothing to check it by.
                None => {
                    let Some(path) = plan.paths.get(i) else { continue };
                    if self.held.len() >= crate::gate::MAX_HELD {
                        continue;
                    }
                    match super::keep::open_checked(path, *i) {
                        Some((fd, _)) => {
                            self.held.insert(*i, fd);
                        }
                        None => stale.push(*i),
                    }
                }
            }
        }
        for i in stale {
            plan.files.remove(&i);
            plan.paths.remove(&i);
            self.releasing.extend(self.held.remove(&i));
        }
    }

    /// The kernel's map no longer names what was set aside: those inodes may go now.
    pub fn synced(&mut self) {
        self.releasing.clear();
    }
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
}
