//! The plan against a filesystem made for each test.
use super::*;

/// The ssh-private-key rule as the shipped one is, for the homes under `root`: `id_*` under
/// `ROOT/*/.ssh`, `.pub` excepted (the no-gate tests of `unseen.rs` and `keep.rs`).
pub(super) fn ssh_rules(root: &Path, secret_content: bool) -> RuleSet {
    let r = root.display();
    let text = format!(
        "rules:\n  - id: ssh\n    description: d\n    severity: high\n    action: kill\n    event: open\n    condition: {{file.path: {{glob: \"{r}/*/.ssh/id_*\"}}}}\n    kernel: {{files: [\"{r}/*/.ssh/id_*\"], except: [\"**/*.pub\"], on: [read], secret_content: {secret_content}}}\n    output: o\n    tags: [T1552]\n"
    );
    crate::rules::load::load_texts(&[(PathBuf::from("t.yaml"), text)], &[]).unwrap()
}

#[test]
fn expands_globs_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("u1/.ssh")).unwrap();
    std::fs::create_dir_all(root.join("u2/.ssh")).unwrap();
    std::fs::create_dir_all(root.join("p/a/b/.git/hooks")).unwrap();
    for f in ["u1/.ssh/id_rsa", "u1/.ssh/id_rsa.pub", "u2/.ssh/id_ed25519", "u2/.ssh/config"] {
        std::fs::write(root.join(f), "x").unwrap();
    }
    let r = root.display();
    let mut got = expand(&format!("{r}/*/.ssh/id_*"));
    got.sort();
    assert_eq!(got, vec![root.join("u1/.ssh/id_rsa"), root.join("u1/.ssh/id_rsa.pub"), root.join("u2/.ssh/id_ed25519")]);
    assert_eq!(expand(&format!("{r}/**/.git/hooks")), vec![root.join("p/a/b/.git/hooks")]);
    assert!(expand("relative/*").is_empty());
    let i = inode_of(&root.join("u1/.ssh/id_rsa")).unwrap();
    std::fs::hard_link(root.join("u1/.ssh/id_rsa"), root.join("link")).unwrap();
    assert_eq!(inode_of(&root.join("link")), Some(i), "hardlinks share the key");
}

/// `kernel.sockets`: socket files only (a regular file of the same name is not one), keyed
/// by inode; `root_may_connect`: the executable's real file, and only a file that is itself
/// one of the named tools (not a multi-call binary a named symlink leads to).
#[test]
fn sockets_are_planned_by_inode_and_engine_clis_by_their_file() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let sock = root.join("run/engine.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::write(root.join("run/plain.sock"), "not a socket").unwrap();
    std::fs::write(root.join("cli"), "#!/bin/sh\n").unwrap();
    std::fs::write(root.join("multi"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(root.join("multi"), root.join("cli-link")).unwrap();
    let r = root.display();
    let text = format!(
        "rules:\n  - id: engine\n    description: d\n    severity: high\n    action: kill\n    event: connect\n    condition: {{net.family: {{equals: unix}}}}\n    kernel: {{sockets: [\"{r}/run/*.sock\"], root_may_connect: [\"{r}/cli\", \"{r}/cli-link\"]}}\n    output: o\n    tags: [T1610]\n"
    );
    let rules = crate::rules::load::load_texts(&[(PathBuf::from("t.yaml"), text)], &[]).unwrap();
    let p = plan(&rules);
    let s = inode_of(&sock).unwrap();
    assert_eq!(p.files.get(&s).map(|v| v & protect::KILL_CONNECT), Some(protect::KILL_CONNECT));
    assert!(!p.files.contains_key(&inode_of(&root.join("run/plain.sock")).unwrap()), "a regular file is no socket");
    let cli = inode_of(&root.join("cli")).unwrap();
    assert_eq!(p.files.get(&cli).map(|v| v & protect::ROOT_MAY_CONNECT), Some(protect::ROOT_MAY_CONNECT));
    assert_eq!(p.paths[&cli], root.join("cli"), "named by its real file");
    assert!(!p.files.contains_key(&inode_of(&root.join("multi")).unwrap()), "a named symlink into another binary");
    // Neither is a file to read or write: the gate and the open checks leave them alone.
    assert_eq!(p.files[&s] & (protect::KILL_READ | protect::KILL_WRITE | protect::KILL_EXEC), 0);
}

/// A socket made after the plan (an agent started at a later login) is planned as it appears:
/// the existing directories of the pattern are watched for everything, the ones above them for
/// new directories only (`/tmp` above ssh-agent's `ssh-XXXX`).
#[test]
fn socket_directories_are_watched_for_sockets_and_above_for_new_directories() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("tmp/ssh-AAAA")).unwrap();
    std::fs::create_dir_all(root.join("tmp/other")).unwrap();
    let r = root.display();
    let text = format!(
        "rules:\n  - id: agent\n    description: d\n    severity: high\n    action: kill\n    event: connect\n    condition: {{net.family: {{equals: unix}}}}\n    kernel: {{sockets: [\"{r}/tmp/ssh-*/agent.*\"]}}\n    output: o\n    tags: [T1563]\n"
    );
    let rules = crate::rules::load::load_texts(&[(PathBuf::from("t.yaml"), text)], &[]).unwrap();
    let p = plan(&rules);
    assert!(p.watch.contains(&root.join("tmp/ssh-AAAA")), "{:?}", p.watch);
    assert!(!p.watch.contains(&root.join("tmp")) && !p.watch.contains(&root.join("tmp/other")), "{:?}", p.watch);
    assert!(p.watch_new_dirs.contains(&root.join("tmp")), "{:?}", p.watch_new_dirs);
    assert!(!p.watch_new_dirs.contains(&root.join("tmp/ssh-AAAA")), "{:?}", p.watch_new_dirs);
}

/// `root_may_read`: the named executable's inode with the slot of the rule that names it,
/// nothing for another rule's files, and not a multi-call binary a named symlink leads to.
#[test]
fn root_readers_are_planned_per_rule_by_inode() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("h/.docker")).unwrap();
    std::fs::write(root.join("h/.docker/config.json"), "{}").unwrap();
    std::fs::write(root.join("h/id_rsa"), "k").unwrap();
    std::fs::write(root.join("cli"), "#!/bin/sh\n").unwrap();
    std::fs::write(root.join("multi"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(root.join("multi"), root.join("cli-link")).unwrap();
    let r = root.display();
    let rule = |id: &str, file: &str, readers: &str| {
        format!("  - id: {id}\n    description: d\n    severity: high\n    action: deny\n    event: open\n    condition: {{file.path: {{glob: \"{r}/h/{file}\"}}}}\n    kernel: {{files: [\"{r}/h/{file}\"], on: [read]{readers}}}\n    output: o\n    tags: [T1552.001]\n")
    };
    let text = format!("rules:\n{}{}", rule("key", "id_rsa", ""), rule("docker", ".docker/config.json", &format!(", root_may_read: [\"{r}/cli\", \"{r}/cli-link\"]")));
    let rules = crate::rules::load::load_texts(&[(PathBuf::from("t.yaml"), text)], &[]).unwrap();
    let p = plan(&rules);
    let cli = inode_of(&root.join("cli")).unwrap();
    assert_eq!(p.root_readers.iter().copied().collect::<Vec<_>>(), vec![(cli, 1)], "the cli, for rule slot 1 only");
    assert_eq!(p.files.get(&cli).map(|v| v & !(0xffff << protect::SLOT_SHIFT)), Some(protect::ROOT_VIA), "the reader is a launcher, nothing more");
}

/// `runner_may_read`: the named files of the rule carry the bit, its other files do not,
/// and so do the gate's patterns for files made later.
#[test]
fn runner_reads_are_planned_per_file() {
    let d = tempfile::tempdir().unwrap();
    let h = d.path().display();
    std::fs::write(d.path().join(".npmrc"), "t").unwrap();
    std::fs::write(d.path().join(".pypirc"), "t").unwrap();
    let text = format!("rules:\n  - id: tokens\n    description: d\n    severity: high\n    action: deny\n    event: open\n    condition: {{file.path: {{glob: \"{h}/*\"}}}}\n    kernel: {{files: [\"{h}/.npmrc\", \"{h}/.pypirc\"], on: [read], runner_may_read: [\"{h}/.npmrc\"]}}\n    output: o\n    tags: [T1552.001]\n");
    let rules = crate::rules::load::load_texts(&[(PathBuf::from("t.yaml"), text)], &[]).unwrap();
    let p = plan(&rules);
    let bit = |name: &str| p.files[&inode_of(&d.path().join(name)).unwrap()] & protect::RUNNER_MAY_READ;
    assert_eq!(bit(".npmrc"), protect::RUNNER_MAY_READ);
    assert_eq!(bit(".pypirc"), 0);
    let pat = |name: &str| p.read_patterns.iter().find(|r| r.glob.matches(&format!("{h}/{name}"))).map(|r| r.policy & protect::RUNNER_MAY_READ);
    assert_eq!(pat(".npmrc"), Some(protect::RUNNER_MAY_READ));
    assert_eq!(pat(".pypirc"), Some(0));
}

/// One scan looks each path up once however many patterns share it (each pattern walked
/// alone repeats `/`, the homes and their `.ssh`), and finds what each pattern alone finds.
#[test]
fn a_scan_looks_each_path_up_once() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    for h in 0..20 {
        std::fs::create_dir_all(root.join(format!("h{h}/.ssh"))).unwrap();
        for f in ["id_rsa", "id_rsa.pub", "config"] {
            std::fs::write(root.join(format!("h{h}/.ssh/{f}")), "k").unwrap();
        }
    }
    std::fs::create_dir_all(root.join("h3/.aws")).unwrap();
    std::fs::write(root.join("h3/.aws/credentials"), "k").unwrap();
    std::fs::create_dir_all(root.join("p/a/b/.git/hooks")).unwrap();
    std::os::unix::fs::symlink(root.join("h0/.ssh/id_rsa"), root.join("key-link")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("h2/.ssh/id_gone")).unwrap();
    std::os::unix::fs::symlink(root.join("h1"), root.join("dir-link")).unwrap();
    let r = root.display();
    let mut pats = vec![format!("{r}/*/.ssh/id_*"), format!("{r}/**/hooks"), format!("{r}/key-link"), format!("{r}/nope/*"), format!("{r}/nope/.ssh/id_*")];
    for h in 0..20 {
        for name in [".ssh/id_*", ".ssh/*.pem", ".ssh/*.key", ".aws/credentials", ".aws/config", ".netrc", ".docker/config.json", ".kube/config"] {
            pats.push(format!("{r}/h{h}/{name}"));
        }
    }
    let mut scan = Scan::default();
    let shared: Vec<Vec<PathBuf>> = pats.iter().map(|p| expand_in(&mut scan, p)).collect();
    let mut alone = 0;
    for (pat, got) in pats.iter().zip(&shared) {
        let mut s = Scan::default();
        assert_eq!(&expand_in(&mut s, pat), got, "{pat}");
        alone += s.calls;
    }
    // Wildcards (a dangling symlink is a name; a symlinked home is walked through), `**`
    // (not through symlinks), a symlink as the last component, missing directories.
    let mut ids = shared[0].clone();
    ids.sort();
    let mut want: Vec<PathBuf> = (0..20).flat_map(|h| ["id_rsa", "id_rsa.pub"].map(|f| root.join(format!("h{h}/.ssh/{f}")))).collect();
    want.extend([root.join("dir-link/.ssh/id_rsa"), root.join("dir-link/.ssh/id_rsa.pub"), root.join("h2/.ssh/id_gone")]);
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(shared[1], vec![root.join("p/a/b/.git/hooks")]);
    assert_eq!(shared[2], vec![root.join("key-link")]);
    assert!(scan.is_file(&root.join("key-link")) && !scan.is_file(&root.join("h2/.ssh/id_gone")));
    assert!(shared[3].is_empty() && shared[4].is_empty());
    assert_eq!(shared[5 + 8 * 3 + 3], vec![root.join("h3/.aws/credentials")]);
    assert!(shared[5 + 8 * 4 + 3].is_empty() && shared[5 + 5].is_empty());
    // Each lookup once, a handful per path, against the prefixes of every pattern alone.
    // (Names answered from a directory's listing are kept without a lookup of their own.)
    let entries = |s: &Scan| s.exists.len() + s.meta.len() + s.lists.len() + s.real.len();
    assert!(scan.calls <= entries(&scan));
    assert!(scan.calls * 3 < alone, "{} lookups shared, {alone} alone", scan.calls);
    // A home asked for its five names (`.ssh`, `.aws`, `.netrc`, `.docker`, `.kube`) is
    // listed once, at the fifth, instead of a statx per name; the answers are the same.
    let mut lit = Scan::default();
    let literal: Vec<Vec<PathBuf>> = pats[5..].iter().map(|p| expand_in(&mut lit, p)).collect();
    assert_eq!(literal, shared[5..]);
    assert!((0..20).all(|h| lit.lists.contains_key(&root.join(format!("h{h}")))));
    assert!(!lit.exists[&root.join("h4/.aws")] && lit.exists[&root.join("h3/.aws")] && !lit.exists[&root.join("h5/.kube")]);
    assert!(lit.calls < entries(&lit), "{} lookups for {} answers", lit.calls, entries(&lit));
    // More patterns in the same directories, and a plan of them, read nothing listed again.
    let (lists, calls) = (scan.lists.len(), scan.calls);
    for h in 0..20 {
        expand_in(&mut scan, &format!("{r}/h{h}/.ssh/*.crt"));
        expand_in(&mut scan, &format!("{r}/h{h}/.config/gh/hosts.yml"));
    }
    expand_in(&mut scan, &format!("{r}/*/.ssh/*"));
    assert_eq!((scan.calls, scan.lists.len()), (calls, lists), "a listed home answers `.config` too");
    let files: Vec<String> = (0..20).map(|h| format!("\"{r}/h{h}/.ssh/id_*\"")).collect();
    let text = format!("rules:\n  - id: keys\n    description: d\n    severity: high\n    action: deny\n    event: open\n    condition: {{file.path: {{glob: \"{r}/*\"}}}}\n    kernel: {{files: [{}], on: [read]}}\n    output: o\n    tags: [T1552.001]\n", files.join(", "));
    let rules = crate::rules::load::load_texts(&[(PathBuf::from("t.yaml"), text)], &[]).unwrap();
    let p = plan_in(&mut scan, &rules);
    assert_eq!(p.files.len(), 40, "two keys per home; the dangling link is no file");
    assert_eq!(p.secret_dirs.len(), 20);
    assert_eq!(scan.lists.len(), lists);
}

/// Every socket pattern of the shipped rules is matched by its last two names in the kernel
/// too, under its own rule (an agent or engine started after the plan made its socket before
/// any plan could key it by inode), and each kind of socket they name is told from a neighbour.
#[test]
fn the_shipped_socket_patterns_are_all_matched_by_name_under_their_rule() {
    let homes = ["/root", "/home/*"].map(String::from);
    let set = crate::rules::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules"), &homes).unwrap();
    let p = plan(&set);
    let slot = |id: &str| (set.rules.iter().position(|r| r.id == id).unwrap() as u32) << protect::SLOT_SHIFT;
    let (agents, engines) = (slot("key-agent-connect") | protect::KILL_CONNECT, slot("container-engine-socket") | protect::KILL_CONNECT);
    let parts = |dir: &str, name: &str| {
        let mut s = monitor_common::SockParts::default();
        s.dir[..dir.len()].copy_from_slice(dir.as_bytes());
        s.name[..name.len()].copy_from_slice(name.as_bytes());
        s
    };
    let policy = |dir: &str, name: &str| p.socket_names.iter().find(|n| n.matches(&parts(dir, name))).map(|n| n.policy);
    for (dir, name) in [("ssh-AbC123", "agent.4242"), ("1001", "openssh_agent"), ("1001", "ssh-agent.socket"), ("gcr", "ssh"), ("keyring", "ssh"), ("gnupg", "S.gpg-agent.ssh"), (".gnupg", "S.gpg-agent"), (".1password", "agent.sock"), ("bob", ".bitwarden-ssh-agent.sock"), ("agent", "s.XyZ")] {
        assert_eq!(policy(dir, name), Some(agents), "{dir}/{name}");
    }
    for (dir, name) in [("run", "docker.sock"), ("1001", "docker.sock"), ("podman", "podman.sock"), ("containerd", "containerd.sock"), ("buildkit", "buildkitd.sock")] {
        assert_eq!(policy(dir, name), Some(engines), "{dir}/{name}");
    }
    for (dir, name) in [("1001", "bus"), ("1001", "pulse"), ("ssh-AbC123", "notes"), ("run", "systemd.sock"), ("gnupg", "S.dirmngr")] {
        assert_eq!(policy(dir, name), None, "{dir}/{name}");
    }
    assert!(p.socket_names.len() <= monitor_common::SOCK_NAMES_MAX as usize);
}
