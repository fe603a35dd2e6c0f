//! Credentials made after the daemon started, the way the tools that make them do, each
//! opened at once by a tracked reader that was already running, with the gate and the shipped
//! rules: a first `aws configure` or `npm login`, a directory made with its credential, a
//! `pass insert` deep in the store, a browser saving a login, `ssh-keygen`'s new `~/.ssh`, and a
//! new key hard-linked out of it. Every one must read 0 bytes and be killed in the kernel.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::Stdio,
};

use common::{
    daemon::Daemon,
    user::{alert, start, Reader, User},
};

const SECRET: &str = "SECRET-KEY-MATERIAL-5f3a";

/// A credential with a literal name (`~/.aws/credentials`, `~/.npmrc`) is protected by inode
/// once a plan has seen it, and its directory, often a busy home, is only watched: written for
/// the first time (`aws configure`, `npm login`), it was opened before the watch's re-plan.
/// Each trial makes one, by a write or by a rename over it as those tools do, and a tracked
/// reader that was already running opens it at once: how many were read.
fn literal_name_trials(u: &User, d: &Daemon, trials: usize) -> usize {
    let names = [".aws/credentials", ".npmrc", ".git-credentials", ".kube/config"];
    let mut leaked = 0;
    for i in 0..trials {
        let target = u.home.join(names[i % names.len()]);
        let _ = std::fs::remove_file(&target);
        let r = Reader::start(u, d, "literal");
        if i % 2 == 0 {
            std::fs::write(&target, format!("{SECRET}\n")).unwrap();
        } else {
            let tmp = target.with_extension("tmp-new");
            std::fs::write(&tmp, format!("{SECRET}\n")).unwrap();
            std::fs::rename(&tmp, &target).unwrap();
        }
        let (got, _) = r.open(&target);
        if got.contains(SECRET) {
            leaked += 1;
        }
    }
    leaked
}

#[test]
fn credentials_written_later_are_refused_at_their_first_open() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("literal", true);
    u.write(".aws/notes.txt", "[default]\n");
    u.write(".kube/cache/x", "x\n");
    let d = start(tmp.path(), "");
    let trials = 40;
    let leaked = literal_name_trials(&u, &d, trials);
    assert_eq!(leaked, 0, "{trials} trials: {leaked} credentials read");
    for rule in ["cloud-credentials-read", "registry-token-read", "kube-docker-credentials-read"] {
        let a = alert(&d, "literal", rule);
        assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    }
    // What the directories hold besides stays readable: a home's other files, new ones too.
    let out = u.run(&d, "literal-other", "cat $HOME/.aws/notes.txt && echo x > $HOME/notes && cat $HOME/notes");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("[default]"), "{out:?}");
    d.stop();
}

/// Credentials whose directory is made with them (`aws configure` makes `~/.aws` and writes
/// `credentials` at once; `pass insert` makes `~/.password-store`), each opened at once by a
/// tracked reader that was already running: how many were read.
fn new_directory_trials(u: &User, d: &Daemon, trials: usize) -> (usize, usize) {
    let names = [".aws/credentials", ".kube/config", ".docker/config.json", ".config/gh/hosts.yml", ".azure/msal_token_cache.json", ".password-store/bank.gpg", ".ssh/id_ed25519"];
    let (mut leaked, mut pub_refused) = (0, 0);
    for i in 0..trials {
        let target = u.home.join(names[i % names.len()]);
        let dir = target.parent().unwrap();
        let _ = std::fs::remove_dir_all(dir);
        let r = Reader::start(u, d, "newdir");
        // With a new `~/.ssh`, its public key too, opened at once: a public key stays readable.
        let pub_reader = target.ends_with("id_ed25519").then(|| Reader::start(u, d, "newdir-pub"));
        std::fs::create_dir(dir).unwrap();
        if i % 2 == 0 {
            std::fs::write(&target, format!("{SECRET}\n")).unwrap();
        } else {
            let tmp = dir.join("tmp-new");
            std::fs::write(&tmp, format!("{SECRET}\n")).unwrap();
            std::fs::rename(&tmp, &target).unwrap();
        }
        if let Some(pr) = pub_reader {
            let public = dir.join("id_ed25519.pub");
            std::fs::write(&public, "ssh-ed25519 AAAA\n").unwrap();
            if !pr.open(&public).0.contains("ssh-ed25519") {
                pub_refused += 1;
            }
        }
        let (got, _) = r.open(&target);
        if got.contains(SECRET) {
            leaked += 1;
        }
    }
    (leaked, pub_refused)
}

#[test]
fn credentials_in_directories_made_later_are_refused_at_their_first_open() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("newdirs", true);
    u.write(".config/other/x", "x\n");
    let d = start(tmp.path(), "");
    let trials = 42;
    let (leaked, pub_refused) = new_directory_trials(&u, &d, trials);
    assert_eq!(leaked, 0, "{trials} trials: {leaked} credentials read");
    assert_eq!(pub_refused, 0, "public keys in a new ~/.ssh refused");
    for rule in ["cloud-credentials-read", "registry-token-read", "kube-docker-credentials-read", "password-store-read", "ssh-private-key-read"] {
        let a = alert(&d, "newdir", rule);
        assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    }
    // A new directory's other files stay readable (a new `~/.ssh`'s public key at once), and so
    // does a new directory no rule names.
    std::fs::remove_dir_all(u.home.join(".ssh")).unwrap();
    u.write(".ssh/id_ed25519.pub", "ssh-ed25519 AAAA\n");
    u.write(".aws/notes.txt", "[default]\n");
    u.write("project/notes.txt", "[default]\n");
    let out = u.run(&d, "newdir-other", "cat $HOME/.ssh/id_ed25519.pub $HOME/.aws/notes.txt $HOME/project/notes.txt");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("[default]"), "{out:?}");
    d.stop();
}

/// Files that a `**` rule protects (`~/.password-store/**`), made below its directory since
/// the start: in a subdirectory that was there (`pass insert web/new`), or in one made with
/// them, each opened at once by a tracked reader that was already running.
#[test]
fn new_files_deep_in_a_protected_tree_are_refused_at_their_first_open() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("deeptree", true);
    u.write(".password-store/web/old.gpg", &format!("{SECRET}\n"));
    u.write(".password-store/.gpg-id", "me\n");
    let d = start(tmp.path(), "");
    let r = Reader::start(&u, &d, "deeptree-old");
    let (got, _) = r.open(&u.home.join(".password-store/web/old.gpg"));
    assert!(!got.contains(SECRET), "a file that was there before the start was read");
    let trials = 20;
    let mut leaked = 0;
    for i in 0..trials {
        let dir = match i % 2 {
            0 => u.home.join(".password-store/web"),
            _ => u.home.join(format!(".password-store/web/sub{i}")),
        };
        let r = Reader::start(&u, &d, "deeptree");
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join(format!("site{i}.gpg"));
        if i % 4 < 2 {
            std::fs::write(&target, format!("{SECRET}\n")).unwrap();
        } else {
            std::fs::write(dir.join("tmp"), format!("{SECRET}\n")).unwrap();
            std::fs::rename(dir.join("tmp"), &target).unwrap();
        }
        let (got, _) = r.open(&target);
        if got.contains(SECRET) {
            leaked += 1;
        }
    }
    assert_eq!(leaked, 0, "{trials} trials: {leaked} passwords read");
    let a = alert(&d, "deeptree", "password-store-read");
    assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    // Listing is no read: a new directory of the tree, and the tree, stay listable.
    std::fs::create_dir_all(u.home.join(".password-store/web/new-dir")).unwrap();
    let out = u.run(&d, "deeptree-ls", "ls -R $HOME/.password-store/web/new-dir $HOME/.password-store");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("old.gpg"), "{out:?}");
    d.stop();
}

/// Browser stores as browsers write them: Firefox saves `logins.json` by writing a new file and
/// renaming it over the old one (every saved login), and a new Chrome profile makes its
/// directory with its `Cookies` and `Login Data`; each opened at once by a running tracked
/// reader.
#[test]
fn browser_stores_rewritten_or_new_are_refused_at_their_first_open() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("browser", true);
    u.write(".mozilla/firefox/abc.default-release/logins.json", &format!("{SECRET}\n"));
    u.write(".mozilla/firefox/abc.default-release/prefs.js", "x\n");
    u.write(".config/google-chrome/Default/Network/Cookies", &format!("{SECRET}\n"));
    u.write(".config/google-chrome/Default/Preferences", "x\n");
    let d = start(tmp.path(), "");
    let trials = 12;
    let mut leaked = 0;
    for i in 0..trials {
        let r = Reader::start(&u, &d, "browser");
        let target = match i % 3 {
            0 => {
                let ff = u.home.join(".mozilla/firefox/abc.default-release");
                std::fs::write(ff.join("logins.json.tmp"), format!("{SECRET}\n")).unwrap();
                std::fs::rename(ff.join("logins.json.tmp"), ff.join("logins.json")).unwrap();
                ff.join("logins.json")
            }
            1 => {
                let p = u.home.join(format!(".config/google-chrome/Profile {i}"));
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join("Login Data"), format!("{SECRET}\n")).unwrap();
                p.join("Login Data")
            }
            _ => {
                let n = u.home.join(".config/google-chrome/Default/Network");
                std::fs::write(n.join("Cookies-new"), format!("{SECRET}\n")).unwrap();
                std::fs::rename(n.join("Cookies-new"), n.join("Cookies")).unwrap();
                n.join("Cookies")
            }
        };
        let (got, _) = r.open(&target);
        if got.contains(SECRET) {
            leaked += 1;
        }
    }
    assert_eq!(leaked, 0, "{trials} trials: {leaked} browser stores read");
    let a = alert(&d, "browser", "browser-store-read");
    assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    // The profile's other files stay readable.
    let out = u.run(&d, "browser-other", "cat $HOME/.mozilla/firefox/abc.default-release/prefs.js $HOME/.config/google-chrome/Default/Preferences");
    assert!(out.status.success(), "{out:?}");
    d.stop();
}

/// A key just made in `~/.ssh` (by the user's `ssh-keygen`: untracked), hard-linked out of it
/// by a tracked process that was already running, and opened through the link at once: the
/// gate marks `~/.ssh` only, so an open elsewhere is the kernel's, which knew the inode only
/// after the watch's re-plan.
#[test]
fn new_keys_linked_out_of_ssh_are_refused_through_the_link() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("linkout", true);
    u.write("stash/.keep", "");
    let d = start(tmp.path(), "");
    let code = "import os,sys\nprint('ready', flush=True)\nsrc,dst=sys.stdin.readline().split()\nos.link(src,dst)\nprint(open(dst).read(), flush=True)\n";
    let trials = 20;
    let mut leaked = 0;
    for i in 0..trials {
        let mut child = u.exec(&d, "linkout", &[common::python(), "-c", code]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "ready");
        let key = u.write(&format!(".ssh/id_link{i}"), &format!("{SECRET}\n"));
        let dst = u.home.join(format!("stash/k{i}"));
        writeln!(child.stdin.as_mut().unwrap(), "{} {}", key.display(), dst.display()).unwrap();
        let mut got = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut got);
        let _ = child.wait();
        if got.contains(SECRET) {
            leaked += 1;
        }
    }
    assert_eq!(leaked, 0, "{trials} trials: {leaked} keys read through a link");
    // Killed at the open's exit by `PROTECTED`, or, once the gate has marked the inode it
    // learned, refused before an fd exists.
    let a = alert(&d, "linkout", "ssh-private-key-read");
    assert!(a["action"]["result"] == "killed_in_kernel" || d.refused_before_fd(&a, true), "{a}");
    d.stop();
}

/// Credentials made in a home that appeared after the start (the user too), the way the tools
/// make them in a fresh home: `mkdir -p` of every directory on the way (`~/.config` and
/// `~/.local/share` are not there yet), then the file, written or renamed into place. Each is
/// opened at once by a tracked reader that was already running: which were read.
fn fresh_home_trials(u: &User, d: &Daemon, rounds: usize) -> Vec<String> {
    let names = [
        ".aws/credentials",
        ".config/gh/hosts.yml",
        ".config/gcloud/application_default_credentials.json",
        ".local/share/keyrings/login.keyring",
        ".aws/sso/cache/0a1b.json",
        ".gnupg/private-keys-v1.d/0A1B.key",
        ".config/Code/User/settings.json",
        ".cargo/credentials.toml",
        ".local/share/fish/fish_history",
        ".kube/config",
    ];
    let mut leaked = Vec::new();
    for i in 0..rounds * names.len() {
        let rel = names[i % names.len()];
        let target = u.home.join(rel);
        // The whole chain is new each time: the top directory goes first.
        let top = u.home.join(rel.split('/').next().unwrap());
        let _ = std::fs::remove_dir_all(&top);
        let r = Reader::start(u, d, "fresh");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if i % 2 == 0 {
            std::fs::write(&target, format!("{SECRET}\n")).unwrap();
        } else {
            let tmp = target.with_file_name("tmp-new");
            std::fs::write(&tmp, format!("{SECRET}\n")).unwrap();
            std::fs::rename(&tmp, &target).unwrap();
        }
        if r.open(&target).0.contains(SECRET) {
            leaked.push(rel.to_string());
        }
    }
    leaked
}

#[test]
fn a_home_made_after_the_start_keeps_credentials_made_in_it() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = start(tmp.path(), "");
    // The user and the home appear after the daemon is ready; nothing is reloaded by hand.
    let u = User::add("fresh", false);
    std::fs::create_dir_all(&u.home).unwrap();
    u.chown(&u.home);
    let leaked = fresh_home_trials(&u, &d, 2);
    assert!(leaked.is_empty(), "credentials read: {leaked:?}");
    for rule in ["cloud-credentials-read", "registry-token-read", "kube-docker-credentials-read", "password-store-read", "shell-history-read", "mcp-client-config-read"] {
        let a = alert(&d, "fresh", rule);
        assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    }
    // What else the new directories hold stays readable.
    u.write(".config/other/notes.txt", "[default]\n");
    u.write(".local/share/notes.txt", "[default]\n");
    let out = u.run(&d, "fresh-other", "cat $HOME/.config/other/notes.txt $HOME/.local/share/notes.txt");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("[default]"), "{out:?}");
    d.stop();
}

/// A key just made in `~/.ssh` (untracked, as `ssh-keygen` makes it) and moved out of it at
/// once, to a name no rule protects (`mv ~/.ssh/id_new ~/stash/k`), is still the key after the
/// watch's re-plans, which no longer find it by name: a tracked reader that opens it later
/// reads nothing.
#[test]
fn new_keys_moved_out_of_ssh_stay_protected_after_the_next_plans() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("moveout", true);
    u.write("stash/.keep", "");
    let d = start(tmp.path(), "");
    let trials = 6;
    let mut leaked = 0;
    for i in 0..trials {
        let key = u.write(&format!(".ssh/id_mv{i}"), &format!("{SECRET}\n"));
        let dst = u.home.join(format!("stash/k{i}"));
        std::fs::rename(&key, &dst).unwrap();
        // Re-plans run at most every 100 ms (more on a slow scan): several have run by now.
        std::thread::sleep(std::time::Duration::from_millis(800));
        let r = Reader::start(&u, &d, "moveout");
        if r.open(&dst).0.contains(SECRET) {
            leaked += 1;
        }
    }
    assert_eq!(leaked, 0, "{trials} trials: {leaked} moved keys read after a re-plan");
    // The gate holds and marks the key it learned, wherever it goes.
    let a = alert(&d, "moveout", "ssh-private-key-read");
    d.assert_refused_before_fd(&a, true, "a moved key");
    d.stop();
}

/// Dotfiles kept in a repository and linked into the home (GNU stow, chezmoi's symlink mode):
/// `~/.aws/credentials` and `~/.bashrc` are symlinks. The plan follows them to their targets'
/// inodes, and what holds those inodes must follow them too: the credential stays unreadable
/// by either name, and the rc file unwritable, after re-plans as at the start.
#[test]
fn credentials_and_rc_files_linked_from_a_dotfiles_repository_stay_protected() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("stowed", true);
    let cred = u.write("dotfiles/aws/credentials", &format!("{SECRET}\n"));
    let rc = u.write("dotfiles/bash/bashrc", "# rc\n");
    u.write(".aws/config", "[default]\n");
    std::os::unix::fs::symlink(&cred, u.home.join(".aws/credentials")).unwrap();
    std::os::unix::fs::symlink(&rc, u.home.join(".bashrc")).unwrap();
    let d = start(tmp.path(), "");
    for round in 0..2 {
        // A change in each directory: the watch re-plans.
        u.write(&format!(".aws/notes{round}"), "x\n");
        u.write(&format!("notes{round}"), "x\n");
        std::thread::sleep(std::time::Duration::from_millis(600));
        for p in [u.home.join(".aws/credentials"), cred.clone()] {
            let r = Reader::start(&u, &d, "stowed");
            assert!(!r.open(&p).0.contains(SECRET), "round {round}: {} read", p.display());
        }
        let out = u.run(&d, "stowed-rc", "echo 'export PATH=$HOME/x:$PATH' >> $HOME/.bashrc; echo survived");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"), "round {round}: ~/.bashrc written: {out:?}");
    }
    assert!(!std::fs::read_to_string(&rc).unwrap().contains("export"), "the rc file's target was written");
    let a = alert(&d, "stowed", "cloud-credentials-read");
    d.assert_refused_before_fd(&a, false, "a linked credential");
    alert(&d, "stowed-rc", "persistence-write");
    d.stop();
}
