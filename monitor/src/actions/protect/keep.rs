//! Without the open gate, what its holds do for renames. The gate holds every read-protected
//! file and secret directory open (O_PATH) and keeps protecting it by inode after the plan
//! stops naming it: a key renamed to `id_ed25519.pub` or moved to `/tmp`, a `~/.ssh` renamed
//! to `~/.ssh-old`. Without the gate the plan alone named what the kernel protects, and a
//! re-plan after such a rename let the key go (the secrets suite, run without the gate: the
//! renamed key was read). This holds the same objects the same way, without marks, and gives
//! the plan back what it no longer names, where it is now.
use std::{
    collections::BTreeMap,
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
};

use super::{Plan, ReadPattern};
use crate::{events::Inode, gate::fanotify};

/// A protected object held open by an O_PATH fd: its inode cannot be reused while held.
struct Held {
    fd: OwnedFd,
    path: PathBuf,
    policy: u32,
    /// Directories: the patterns of the files they hold.
    patterns: Vec<ReadPattern>,
}

#[derive(Default)]
pub struct Keep {
    files: BTreeMap<Inode, Held>,
    dirs: BTreeMap<Inode, Held>,
    /// The files in secret directories that a plan has seen and no rule protects (`KNOWN` in
    /// the kernel, `unseen.rs`). A `KNOWN` entry lets its inode be read: held, that inode
    /// cannot go to a new key (ext4 gives a freed number to the next file of the directory)
    /// while the entry is there.
    known: BTreeMap<Inode, OwnedFd>,
    /// Known files no plan names any more, and held objects whose last link is gone: closed
    /// only once the kernel's map has let their entries go (`synced`). ext4 gives a freed
    /// number to the next file made, and a harmless file that got a deleted key's number while
    /// `PROTECTED` still named it was refused (18 of 24 by a process making files as the key was
    /// deleted).
    releasing: Vec<OwnedFd>,
    nofile_raised: bool,
}

impl Keep {
    /// Holds the plan's read-protected files and secret directories, sets aside those whose
    /// last link is gone, and adds to the plan those it no longer names, by where they are now.
    /// Files no longer there leave the plan: deleted, or replaced at their path since the scan.
    pub fn apply(&mut self, plan: &mut Plan) {
        if !self.nofile_raised {
            crate::gate::raise_nofile();
            self.nofile_raised = true;
        }
        let mut stale = Vec::new();
        for (inode, policy) in plan.files.iter().filter(|(_, p)| **p & crate::gate::READ_BITS != 0) {
            match self.files.get_mut(inode) {
                Some(h) => h.policy = *policy,
                None => {
                    if let Some(path) = plan.paths.get(inode) {
                        if self.hold(path.clone(), *inode, *policy, false, vec![]) {
                            stale.push(*inode);
                        }
                    }
                }
            }
        }
        for (dir, pats) in &plan.secret_dirs {
            let Some(i) = super::inode_of(dir) else { continue };
            match self.dirs.get_mut(&i) {
                Some(h) => h.patterns = pats.clone(),
                None => {
                    self.hold(dir.clone(), i, pats.first().map_or(0, |p| p.policy), true, pats.clone());
                }
            }
        }
        stale.extend(self.prune());
        for i in stale {
            plan.files.remove(&i);
            plan.paths.remove(&i);
        }
        for (i, h) in &self.files {
            plan.files.entry(*i).or_insert(h.policy);
            plan.paths.entry(*i).or_insert_with(|| h.path.clone());
        }
        for h in self.dirs.values() {
            plan.secret_dirs.entry(h.path.clone()).or_insert_with(|| h.patterns.clone());
        }
    }

    /// Holds the known files of a plan (`unseen.rs`) and sets aside those it no longer names.
    /// A file replaced since the plan read its directory leaves `known`: its old inode was not
    /// held, so its number may already be a new file's (the watch re-plans for the new one).
    /// Past the cap, a known file stays known unheld, as before holds.
    pub fn hold_known(&mut self, known: &mut BTreeMap<Inode, PathBuf>) {
        let gone: Vec<Inode> = self.known.keys().filter(|i| !known.contains_key(i)).copied().collect();
        for i in gone {
            self.releasing.extend(self.known.remove(&i));
        }
        known.retain(|i, path| {
            if self.known.contains_key(i) || self.held() >= crate::gate::MAX_HELD {
                return true;
            }
            match fanotify::open_checked(path, *i) {
                Some((fd, _)) => {
                    self.known.insert(*i, fd);
                    true
                }
                None => false,
            }
        });
    }

    /// Whether `i` is one of the plan's files held here.
    pub fn holds(&self, i: &Inode) -> bool {
        self.files.contains_key(i)
    }

    /// The kernel's map no longer names what was set aside: those inodes may go now.
    pub fn synced(&mut self) {
        self.releasing.clear();
    }

    fn held(&self) -> usize {
        self.files.len() + self.dirs.len() + self.known.len()
    }

    /// Whether the plan's number is stale: its path names another object now, or none.
    fn hold(&mut self, path: PathBuf, want: Inode, policy: u32, dir: bool, patterns: Vec<ReadPattern>) -> bool {
        if self.held() >= crate::gate::MAX_HELD {
            return false;
        }
        // None: replaced between the scan and now; the next plan sees the new one.
        let Some((fd, is_dir)) = fanotify::open_checked(&path, want) else { return true };
        if is_dir != dir {
            return true;
        }
        let held = Held { fd, path, policy, patterns };
        if dir {
            self.dirs.insert(want, held);
        } else {
            self.files.insert(want, held);
        }
        false
    }

    /// Sets aside objects whose last link is gone (their inode may be reused once let go: see
    /// `releasing`), and refreshes where the others are now. Returns those set aside.
    fn prune(&mut self) -> Vec<Inode> {
        let mut dead = Vec::new();
        for map in [&mut self.files, &mut self.dirs] {
            let gone = map.extract_if(.., |_, h| !fanotify::linked(h.fd.as_fd()));
            for (i, h) in gone {
                self.releasing.push(h.fd);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::protect::{inode_of, plan};

    /// A home with `.ssh/id_rsa`, the ssh rules, and the key's inode.
    fn one_key() -> (tempfile::TempDir, PathBuf, crate::rules::RuleSet, Inode) {
        let d = tempfile::tempdir().unwrap();
        let ssh = d.path().join("u/.ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::write(ssh.join("id_rsa"), "key").unwrap();
        let rules = crate::actions::protect::tests::ssh_rules(d.path(), false);
        let key = inode_of(&ssh.join("id_rsa")).unwrap();
        (d, ssh, rules, key)
    }

    /// A key renamed to a name no rule protects stays in the plan, under its new name, until
    /// its last link is gone; a renamed secret directory stays one, under its new name.
    #[test]
    fn renamed_keys_and_directories_stay_until_deleted() {
        let (d, ssh, rules, key) = one_key();
        let mut keep = Keep::default();
        let mut p = plan(&rules);
        keep.apply(&mut p);
        let policy = p.files[&key];
        std::fs::rename(ssh.join("id_rsa"), ssh.join("id_rsa.pub")).unwrap();
        let mut p = plan(&rules);
        assert!(!p.files.contains_key(&key), "the plan alone lets it go");
        keep.apply(&mut p);
        assert_eq!(p.files.get(&key), Some(&policy));
        assert_eq!(p.paths[&key], ssh.join("id_rsa.pub"));
        let old = d.path().join("u/.ssh-old");
        std::fs::rename(&ssh, &old).unwrap();
        let mut p = plan(&rules);
        keep.apply(&mut p);
        assert!(p.secret_dirs.contains_key(&old), "{:?}", p.secret_dirs.keys());
        assert_eq!(p.paths[&key], old.join("id_rsa.pub"));
        std::fs::remove_file(old.join("id_rsa.pub")).unwrap();
        let mut p = plan(&rules);
        keep.apply(&mut p);
        assert!(!p.files.contains_key(&key), "deleted: let go");
    }

    /// A held key deleted after the scan that named it leaves the plan, and its number goes to
    /// no new file until the kernel's map has let it go.
    #[test]
    fn deleted_keys_leave_the_plan_and_are_held_until_the_map_lets_them_go() {
        let (_d, ssh, rules, key) = one_key();
        let mut keep = Keep::default();
        keep.apply(&mut plan(&rules));
        let mut p = plan(&rules);
        assert!(p.files.contains_key(&key));
        std::fs::remove_file(ssh.join("id_rsa")).unwrap();
        keep.apply(&mut p);
        assert!(!p.files.contains_key(&key) && !p.paths.contains_key(&key), "deleted since the scan: out of the plan");
        let notes = ssh.join("notes");
        std::fs::write(&notes, "n").unwrap();
        assert_ne!(inode_of(&notes), Some(key), "set aside: a new file gets another inode");
        assert_eq!(keep.releasing.len(), 1);
        keep.synced();
        assert!(keep.releasing.is_empty());
    }

    /// A known file is held while the kernel's map names it: deleted, its inode goes to no
    /// new key; once no plan names it, it is let go only after the map is synced. A file
    /// replaced since its directory was read leaves the known set.
    #[test]
    fn known_files_are_held_until_the_map_lets_them_go() {
        let d = tempfile::tempdir().unwrap();
        let ssh = d.path().join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        let hosts = ssh.join("known_hosts");
        std::fs::write(&hosts, "h").unwrap();
        let i = inode_of(&hosts).unwrap();
        let mut keep = Keep::default();
        let mut known = BTreeMap::from([(i, hosts.clone())]);
        keep.hold_known(&mut known);
        assert!(keep.known.contains_key(&i) && known.contains_key(&i));
        std::fs::remove_file(&hosts).unwrap();
        let key = ssh.join("id_new");
        std::fs::write(&key, "key").unwrap();
        assert_ne!(inode_of(&key), Some(i), "held: a new file gets another inode");
        keep.hold_known(&mut BTreeMap::new());
        assert!(keep.known.is_empty() && keep.releasing.len() == 1);
        keep.synced();
        assert!(keep.releasing.is_empty());
        let mut stale = BTreeMap::from([(i, key)]);
        keep.hold_known(&mut stale);
        assert!(stale.is_empty() && keep.known.is_empty(), "replaced: not known");
    }
}
