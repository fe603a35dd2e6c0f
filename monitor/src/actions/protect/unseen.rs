//! What the kernel needs to judge a file no plan has seen, for when the open gate is not there
//! (a kernel without fanotify permission events, a seccomp profile that refuses
//! `fanotify_init`). The gate judges a new name in a secret directory at its first open; without
//! it the kernel's map of inodes is all there is, and a key written, copied, linked or renamed
//! into `~/.ssh` since the last plan had no entry: 157 of 200 such keys were read.
//!
//! So, without the gate, each secret directory goes into the kernel's `UNSEEN_DIRS` with the
//! read policy of its patterns, and every file in it that the plan has seen and no rule protects
//! (known_hosts, a `.pub`) into `PROTECTED` as `KNOWN`. A read of a file in such a directory with
//! no entry at all is refused until a plan has judged it: the watch re-plans when the directory
//! changes, so a new harmless file waits for one re-plan (rate-limited, at most a few seconds).
//!
//! Literal names (`~/.netrc`, `~/.aws/credentials`), with the gate or without it: the gate marks
//! no directory of theirs (a home's every open would go through it), and a credential written
//! for the first time (`npm login`, `aws configure`) was read before the watch's re-plan: 40 of
//! 40 in the secrets suite. Each existing directory of such a name goes into `UNSEEN_DIRS` with
//! `protect::NAMED`, and the name into `UNSEEN_NAMES` with its rule's policy: the kernel judges
//! a file there with no `PROTECTED` entry by its name, and kills a read of a protected one at
//! the open's exit, before a byte reaches the process. A directory made later with the file in
//! it (`~/.aws` and `credentials` at once; 36 of 36 were read) is judged one level up: each
//! existing directory above (a home) is `protect::NAMED_BELOW`, with `.aws/credentials` (and
//! `.azure/` for every file of a new `~/.azure`) in `UNSEEN_NAMES`. Two levels of new
//! directories at once wait for the re-plan.
use std::{
    collections::BTreeMap,
    io::Read,
    path::PathBuf,
};

use monitor_common::protect;

use super::{inode, Plan};
use crate::events::Inode;

/// How much of a file is read to tell a private key by its content (the markers are on its
/// first line).
const HEAD: usize = 512;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unseen {
    /// Secret directories by inode → the `PROTECTED` value an unseen file in them gets (without
    /// the gate), with `protect::NAMED` where literal names are protected in them.
    pub dirs: BTreeMap<Inode, u32>,
    /// Where each of `dirs` was found (to hold it: `pins.rs`).
    pub dir_paths: BTreeMap<Inode, PathBuf>,
    /// (directory, literal name as the kernel compares it) → the read policy of its rule.
    pub names: BTreeMap<(Inode, [u8; monitor_common::NAME_CAP]), u32>,
    /// Files in them the plan has seen that no rule protects, where they were seen.
    pub known: BTreeMap<Inode, PathBuf>,
    /// Files in them the plan did not name but the gate would protect: by their name alone in
    /// a renamed directory (`~/.ssh-old/id_new`), or by their content (a private key renamed to
    /// `.pub`): inode, policy, path.
    pub classified: Vec<(Inode, u32, PathBuf)>,
}

/// The directories of `plan`'s literal names, and, without the gate (`gate` false), its secret
/// directories and what is in them now.
pub fn unseen(plan: &Plan, gate: bool) -> Unseen {
    let mut out = Unseen::default();
    for (dir, names) in &plan.named {
        let Ok(m) = std::fs::metadata(dir) else { continue };
        let i = inode(&m);
        *out.dirs.entry(i).or_insert(0) |= protect::NAMED;
        out.dir_paths.entry(i).or_insert_with(|| dir.clone());
        for (name, policy) in names {
            out.names.entry((i, monitor_common::name_bytes(name.as_bytes()))).or_insert(*policy);
        }
    }
    for (dir, below) in &plan.below {
        let Ok(m) = std::fs::metadata(dir) else { continue };
        let i = inode(&m);
        *out.dirs.entry(i).or_insert(0) |= protect::NAMED_BELOW;
        out.dir_paths.entry(i).or_insert_with(|| dir.clone());
        for ((name, file), policy) in below {
            let k = monitor_common::below_bytes(name.as_bytes(), file.as_ref().map(|f| f.as_bytes()));
            out.names.entry((i, k)).or_insert(*policy);
            // A directory's entry is for a new one: the one that is there now (`~/.ssh`, with
            // its known_hosts) gets an entry of its own, so the kernel does not look above it.
            if let (None, Ok(m)) = (file, std::fs::metadata(dir.join(name))) {
                if m.is_dir() {
                    out.dirs.entry(inode(&m)).or_insert(0);
                    out.dir_paths.entry(inode(&m)).or_insert_with(|| dir.join(name));
                }
            }
        }
    }
    for (dir, policy) in &plan.subtree {
        let Ok(m) = std::fs::metadata(dir) else { continue };
        out.dir_paths.entry(inode(&m)).or_insert_with(|| dir.clone());
        let v = out.dirs.entry(inode(&m)).or_insert(0);
        if *v & !protect::DIR_FLAGS == 0 {
            *v |= policy;
        }
        *v |= protect::SUBTREE;
    }
    if gate {
        return out;
    }
    for (dir, patterns) in &plan.secret_dirs {
        let (Some(first), Ok(m)) = (patterns.first(), std::fs::metadata(dir)) else { continue };
        out.dir_paths.entry(inode(&m)).or_insert_with(|| dir.clone());
        let v = out.dirs.entry(inode(&m)).or_insert(0);
        if *v & !protect::DIR_FLAGS == 0 {
            *v |= first.policy;
        }
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            // Not followed: a symlink's target is opened in its own directory, and only what is
            // here counts.
            let Ok(m) = e.metadata() else { continue };
            let i = inode(&m);
            if plan.files.contains_key(&i) {
                continue;
            }
            let path = e.path();
            let head = || if m.is_file() { head(&path) } else { Vec::new() };
            match crate::gate::classify(&plan.read_patterns, patterns, &path, head) {
                Some(policy) => out.classified.push((i, policy, path)),
                None => {
                    out.known.insert(i, path);
                }
            }
        }
    }
    out
}

/// The start of a regular file (only those are read: a FIFO left in `~/.ssh` never blocks a plan).
fn head(p: &std::path::Path) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD);
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.take(HEAD as u64).read_to_end(&mut b);
    }
    b
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::actions::protect::{inode_of, plan};

    /// The secret directory with its rule's policy; what is in it sorted into protected (left
    /// to the plan), known, and a private key by content; nothing outside it.
    #[test]
    fn a_secret_directory_and_what_is_in_it() {
        let d = tempfile::tempdir().unwrap();
        let ssh = d.path().join("u/.ssh");
        std::fs::create_dir_all(ssh.join("sub")).unwrap();
        std::fs::write(ssh.join("id_rsa"), "key").unwrap();
        std::fs::write(ssh.join("known_hosts"), "h").unwrap();
        std::fs::write(ssh.join("id_rsa.pub"), "ssh-rsa AAAA").unwrap();
        std::fs::write(ssh.join("renamed.pub"), "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n").unwrap();
        std::fs::write(d.path().join("u/notes"), "n").unwrap();
        let rules = crate::actions::protect::tests::ssh_rules(d.path(), true);
        let p = plan(&rules);
        let u = unseen(&p, false);
        let i = |n: &str| inode_of(&ssh.join(n)).unwrap();
        assert_eq!(u.dirs.len(), 2, "{u:?}");
        assert_eq!(u.dirs[&inode_of(&d.path().join("u")).unwrap()], protect::NAMED_BELOW, "the home, for a new .ssh");
        assert!(u.names.contains_key(&(inode_of(&d.path().join("u")).unwrap(), monitor_common::below_bytes(b".ssh", None))));
        let policy = u.dirs[&inode_of(&ssh).unwrap()];
        assert_eq!(policy & protect::KILL_READ, protect::KILL_READ);
        assert_eq!(Some(policy), p.files.get(&i("id_rsa")).copied(), "the rule's own policy");
        let want: BTreeSet<Inode> = [i("known_hosts"), i("id_rsa.pub"), i("sub")].into();
        assert_eq!(u.known.keys().copied().collect::<BTreeSet<_>>(), want, "seen, unprotected: the key is the plan's, notes is elsewhere");
        assert_eq!(u.classified, vec![(i("renamed.pub"), policy, ssh.join("renamed.pub"))]);
    }

    /// The names below a directory are laid out as the kernel reads them: each part cut to
    /// `PART_CAP - 1` bytes, the file's name right after the `/`, NUL-padded.
    #[test]
    fn names_below_are_laid_out_as_the_kernel_reads_them() {
        use monitor_common::{below_bytes, NAME_CAP, PART_CAP};
        let k = below_bytes(b".aws", Some(b"credentials"));
        assert_eq!(&k[..17], b".aws/credentials\0");
        assert_eq!(&below_bytes(b".azure", None)[..8], b".azure/\0");
        let long = [b'x'; 40];
        let k = below_bytes(&long, Some(&[b'y'; 40]));
        assert_eq!(k[PART_CAP - 1], b'/');
        assert!(k[..PART_CAP - 1].iter().all(|b| *b == b'x') && k[PART_CAP..2 * PART_CAP - 1].iter().all(|b| *b == b'y'));
        assert!(k[2 * PART_CAP - 1..].iter().all(|b| *b == 0));
        // Two or three directories: each name, then the file's, in a slot of its own.
        let k = below_bytes(b".config/gh", Some(b"hosts.yml"));
        assert_eq!((&k[..8], &k[PART_CAP..PART_CAP + 3], &k[2 * PART_CAP..2 * PART_CAP + 10]), (&b".config\0"[..], &b"gh\0"[..], &b"hosts.yml\0"[..]));
        assert!(k[3 * PART_CAP..].iter().all(|b| *b == 0));
        let k = below_bytes(b".gnupg/private-keys-v1.d", None);
        assert_eq!((&k[..7], &k[PART_CAP..PART_CAP + 18]), (&b".gnupg\0"[..], &b"private-keys-v1.d\0"[..]));
        assert!(k[2 * PART_CAP..].iter().all(|b| *b == 0));
        let k = below_bytes(&[&long[..], b"/", &long[..], b"/", &long[..]].concat(), Some(&long));
        for slot in 0..4 {
            let s = &k[slot * PART_CAP..(slot + 1) * PART_CAP];
            assert!(s[..PART_CAP - 1].iter().all(|b| *b == b'x') && s[PART_CAP - 1] == 0, "slot {slot}");
        }
        assert_eq!(4 * PART_CAP, NAME_CAP);
    }

    /// Two or three new directories at once below an existing one (`mkdir -p ~/.config/gh` in a
    /// new home): their names and the file's, keyed in the existing one, which is
    /// `NAMED_BELOW`; and `dir/dir/` for a `**` pattern's directory.
    #[test]
    fn names_two_directories_below_are_keyed_in_the_existing_one() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().display();
        std::fs::create_dir_all(d.path().join("u")).unwrap();
        let text = format!(
            "rules:\n  - id: t\n    description: d\n    severity: high\n    action: deny\n    event: open\n    condition: {{file.path: {{glob: \"{r}/u/.config/gh/hosts.yml\"}}}}\n    kernel: {{files: [\"{r}/u/.config/gh/hosts.yml\", \"{r}/u/.config/gcloud/**\", \"{r}/u/.local/share/keyrings/**\"], except: [\"{r}/u/.config/gcloud/logs/**\"], on: [read]}}\n    output: o\n    tags: [T1552]\n"
        );
        let rules = crate::rules::load::load_texts(&[(std::path::PathBuf::from("t.yaml"), text)], &[]).unwrap();
        let u = unseen(&plan(&rules), true);
        let home = inode_of(&d.path().join("u")).unwrap();
        let below = |sub: &str, name: Option<&str>| u.names.get(&(home, monitor_common::below_bytes(sub.as_bytes(), name.map(str::as_bytes)))).copied();
        let policy = below(".config/gh", Some("hosts.yml")).expect("two levels below the home");
        assert_eq!(policy & protect::KILL_READ, protect::KILL_READ);
        assert_eq!(below(".config/gcloud", None), None, "an except reaches into the tree: not as a whole");
        assert_eq!(below(".local/share/keyrings", None), Some(policy), "three new directories");
        assert_eq!(below("share/keyrings", None), None, "keyed only in an existing directory");
        assert_eq!(u.dirs[&home] & protect::NAMED_BELOW, protect::NAMED_BELOW, "{u:?}");
    }

    /// A literal name below a `**`: keyed in each directory of the tree two levels down, and
    /// as any new directory's (`*/name`) in the top two; deeper directories are left to plans.
    #[test]
    fn names_below_a_double_star_are_keyed_near_the_top_of_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().display();
        std::fs::create_dir_all(d.path().join("u/.mozilla/firefox/p1/sub/deep")).unwrap();
        let text = format!(
            "rules:\n  - id: b\n    description: d\n    severity: high\n    action: kill\n    event: open\n    condition: {{file.path: {{glob: \"{r}/*/.mozilla/firefox/**/logins.json\"}}}}\n    kernel: {{files: [\"{r}/*/.mozilla/firefox/**/logins.json\"], on: [read]}}\n    output: o\n    tags: [T1555]\n"
        );
        let rules = crate::rules::load::load_texts(&[(std::path::PathBuf::from("t.yaml"), text)], &[]).unwrap();
        let u = unseen(&plan(&rules), true);
        let dir = |n: &str| inode_of(&d.path().join("u/.mozilla/firefox").join(n)).unwrap();
        let name = |n: &str| u.names.get(&(dir(n), monitor_common::name_bytes(b"logins.json"))).copied();
        let any = |n: &str| u.names.get(&(dir(n), monitor_common::below_bytes(b"*", Some(b"logins.json")))).copied();
        let policy = name("").expect("the top of the tree");
        assert_eq!((name("p1"), name("p1/sub"), name("p1/sub/deep")), (Some(policy), Some(policy), None), "{u:?}");
        assert_eq!((any(""), any("p1"), any("p1/sub")), (Some(policy), Some(policy), None), "{u:?}");
        assert_eq!(u.dirs[&dir("p1")], protect::NAMED | protect::NAMED_BELOW);
        assert_eq!(u.dirs[&dir("p1/sub")], protect::NAMED);
    }

    /// A literal name's existing directory is marked `NAMED` and the name keyed under it,
    /// with the gate too; a directory not made yet, and an excepted name, are not; the gate
    /// leaves the secret directories to itself. One level up, each existing directory is
    /// `NAMED_BELOW`, with the name below it, made yet or not (`.aws/credentials`), and `.azure/`
    /// for a `**` pattern's directory; a wildcard directory name (a home's `*`) is not keyed.
    /// Each directory of the `**` tree is `SUBTREE` with its policy, and its files are the
    /// plan's.
    #[test]
    fn literal_names_are_keyed_in_their_directories() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().display();
        std::fs::create_dir_all(d.path().join("u/.aws")).unwrap();
        std::fs::create_dir_all(d.path().join("u/.ssh")).unwrap();
        let text = format!(
            "rules:\n  - id: cloud\n    description: d\n    severity: high\n    action: deny\n    event: open\n    condition: {{file.path: {{glob: \"{r}/*/.aws/credentials\"}}}}\n    kernel: {{files: [\"{r}/*/.aws/credentials\", \"{r}/*/.netrc\", \"{r}/*/.kube/config\", \"{r}/*/.ssh/id_*\", \"{r}/*/.azure/**\"], except: [\"{r}/skip/.netrc\", \"{r}/skip/.kube/config\"], on: [read]}}\n    output: o\n    tags: [T1552]\n"
        );
        std::fs::create_dir_all(d.path().join("skip")).unwrap();
        std::fs::create_dir_all(d.path().join("u/.azure/sub")).unwrap();
        std::fs::write(d.path().join("u/.azure/sub/t.json"), "t").unwrap();
        let rules = crate::rules::load::load_texts(&[(std::path::PathBuf::from("t.yaml"), text)], &[]).unwrap();
        let p = plan(&rules);
        let policy = p.files[&inode_of(&d.path().join("u/.azure/sub/t.json")).unwrap()];
        assert_eq!(policy & protect::KILL_READ, protect::KILL_READ, "a file below a `**` directory is protected by inode");
        let dir = |n: &str| inode_of(&d.path().join(n)).unwrap();
        for gate in [true, false] {
            let u = unseen(&p, gate);
            let key = |n: &str, name: &str| (dir(n), monitor_common::name_bytes(name.as_bytes()));
            let below = |n: &str, sub: &str, name: Option<&str>| (dir(n), monitor_common::below_bytes(sub.as_bytes(), name.map(str::as_bytes)));
            let policy = u.names[&key("u/.aws", "credentials")];
            assert_eq!(policy & protect::KILL_READ, protect::KILL_READ, "{u:?}");
            assert_eq!(u.names.get(&key("u", ".netrc")), Some(&policy));
            for n in ["u", "skip"] {
                assert_eq!(u.names.get(&below(n, ".aws", Some("credentials"))), Some(&policy), "{n}");
                assert_eq!(u.names.get(&below(n, ".azure", None)), Some(&policy), "{n}");
            }
            assert_eq!(u.names.get(&below("u", ".kube", Some("config"))), Some(&policy));
            for n in ["u", "skip"] {
                assert_eq!(u.names.get(&below(n, ".ssh", None)), Some(&policy), "{n}: a new .ssh's every file (a wildcard name)");
            }
            assert_eq!(u.names.len(), 9, "no .kube yet, skip/.netrc and skip/.kube/config are excepted, no `*` for a home: {u:?}");
            assert_eq!(u.dirs[&dir("u/.aws")], protect::NAMED);
            assert_eq!(u.dirs[&dir("u")], protect::NAMED | protect::NAMED_BELOW);
            assert_eq!(u.dirs[&dir("skip")], protect::NAMED_BELOW);
            for n in ["u/.azure", "u/.azure/sub"] {
                assert_eq!(u.dirs[&dir(n)], policy | protect::SUBTREE, "{n}: every directory of the tree");
            }
            let ssh = u.dirs.get(&dir("u/.ssh")).copied();
            assert_eq!(ssh == Some(0), gate, "with the gate, the existing .ssh only stops the look above it");
            assert_eq!(ssh.is_some_and(|v| v & protect::KILL_READ != 0), !gate, "the secret directory, without the gate only");
        }
    }
}
