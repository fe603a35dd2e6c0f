//! Turns the rules' `kernel:` sections into kernel policy: file globs are expanded on the
//! filesystem (every user's home from the user database), each match keyed by device+inode;
//! address prefixes and the io_uring knob come straight from the rules. Rescanned periodically so
//! files created after start-up (a new key) are protected too.
use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
};

use monitor_common::{net_policy, protect};

use super::kernel::NetEntry;
use crate::{
    events::Inode,
    rules::{glob::Glob, Action, RuleSet},
};

/// Matches per pattern are capped so a careless `**` cannot stall the daemon.
const MAX_MATCHES: usize = 20_000;
const MAX_DEPTH: usize = 8;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub files: BTreeMap<Inode, u32>,
    /// Where each protected inode was found (for alerts).
    pub paths: BTreeMap<Inode, PathBuf>,
    pub nets: BTreeMap<NetEntry, u32>,
    /// 0, or 1 | slot << 16.
    pub io_uring_kill: u32,
    /// 0, or 1 | slot << 16: /proc secrets of processes outside the opener's tree.
    pub foreign_proc_kill: u32,
    /// 0, or 1 | slot << 16: ptrace / process_vm_{readv,writev} outside the caller's tree.
    pub proc_access_kill: u32,
    /// What the open gate (`crate::gate`) judges new names by: read-protected patterns.
    pub read_patterns: Vec<ReadPattern>,
    /// Existing directories that hold read-protected files (any pattern's parent): the gate
    /// sees every open of a file in them, so a file created later is judged at its first open.
    pub secret_dirs: BTreeMap<PathBuf, Vec<ReadPattern>>,
    /// Where a new home, user or secret directory would appear: the nearest existing ancestor of
    /// each secret directory pattern (and the secret directories themselves, for `**`).
    pub watch: std::collections::BTreeSet<PathBuf>,
    /// (executable, rule slot): the executable may read that rule's files when it runs as its
    /// server's root process (`kernel.root_may_read`).
    pub root_readers: std::collections::BTreeSet<(Inode, u32)>,
}

/// A read-protected file pattern of one rule (kill or deny), as the gate matches it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadPattern {
    /// The `PROTECTED` value a match gets (bits | slot << 16).
    pub policy: u32,
    /// Shared, as are `name` and `except`: a plan puts each pattern in the gate's list and in
    /// every secret directory it marks, every 2 s; deep copies and compiling the globs anew were
    /// a third of the idle daemon's CPU.
    pub glob: Arc<Glob>,
    /// The last component alone: what a file in a protected directory is judged by after the
    /// directory was renamed (`~/.ssh` → `~/.ssh-old`: `id_*` still applies there).
    pub name: Arc<Glob>,
    pub except: Arc<[Glob]>,
    /// A private key's content in a secret directory matches whatever the name.
    pub secret_content: bool,
}

/// The kernel's `dev_t` for a `stat` `st_dev` (the kernel packs major << 20 | minor).
pub fn kernel_dev(st_dev: u64) -> u32 {
    let (ma, mi) = (libc::major(st_dev) as u32, libc::minor(st_dev) as u32);
    (ma << 20) | mi
}

pub fn inode_of(path: &Path) -> Option<Inode> {
    std::fs::metadata(path).ok().map(|m| inode(&m))
}

/// The kernel's identity of a file from its `stat`.
fn inode(m: &std::fs::Metadata) -> Inode {
    Inode { dev: kernel_dev(m.dev()), ino: m.ino() }
}

/// One plan's filesystem lookups, each made once: rules expanded per home share their prefixes
/// (`/var/lib`, `/home/x/.ssh`), and walking each pattern alone made ~23,650 statx a scan.
/// Never kept across plans: a rescan is there to see new files.
#[derive(Default)]
struct Scan {
    /// `symlink_metadata` succeeded (a dangling symlink exists too).
    exists: foldhash::HashMap<PathBuf, bool>,
    /// `metadata`, symlinks followed.
    meta: foldhash::HashMap<PathBuf, Option<Meta>>,
    /// `read_dir`, empty where it failed.
    lists: foldhash::HashMap<PathBuf, Rc<[Entry]>>,
    real: foldhash::HashMap<PathBuf, Option<PathBuf>>,
    /// Names asked of each directory by `exists`: past `LIST_AFTER`, the directory is listed
    /// and answers the rest.
    asked: foldhash::HashMap<PathBuf, u32>,
    /// Compiled globs, lent by the plan's owner for the plan.
    globs: Globs,
    /// Lookups that reached the filesystem.
    calls: usize,
}

#[derive(Clone, Copy)]
struct Meta {
    file: bool,
    dir: bool,
    socket: bool,
    inode: Inode,
}

/// A directory entry; `dir` as its own type says (a symlink to a directory is none).
struct Entry {
    name: OsString,
    dir: bool,
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
    fn exists(&mut self, path: &Path) -> bool {
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

    fn meta(&mut self, path: &Path) -> Option<Meta> {
        memo(&mut self.meta, &mut self.calls, path, |p| {
            let m = std::fs::metadata(p).ok()?;
            let t = m.file_type();
            Some(Meta { file: t.is_file(), dir: t.is_dir(), socket: t.is_socket(), inode: inode(&m) })
        })
    }

    fn is_file(&mut self, path: &Path) -> bool {
        self.meta(path).is_some_and(|m| m.file)
    }

    fn is_dir(&mut self, path: &Path) -> bool {
        self.meta(path).is_some_and(|m| m.dir)
    }

    fn list(&mut self, dir: &Path) -> Rc<[Entry]> {
        memo(&mut self.lists, &mut self.calls, dir, |d| match std::fs::read_dir(d) {
            Ok(rd) => rd.flatten().map(|e| Entry { dir: e.file_type().is_ok_and(|t| t.is_dir()), name: e.file_name() }).collect(),
            Err(_) => Rc::from([]),
        })
    }

    fn real(&mut self, path: &Path) -> Option<PathBuf> {
        memo(&mut self.real, &mut self.calls, path, |p| std::fs::canonicalize(p).ok())
    }
}

/// Globs compiled for plans, kept from one plan to the next (patterns come from the rules, and
/// the rules outlive many plans; the owner empties it with a new rule set).
#[derive(Default)]
pub struct Globs(HashMap<String, Option<Arc<Glob>>>);

impl Globs {
    fn get(&mut self, pattern: &str) -> Option<Arc<Glob>> {
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

pub fn plan(rules: &RuleSet) -> Plan {
    plan_with(rules, &mut Globs::default())
}

/// `plan`, with the globs compiled by earlier plans for the same rules.
pub fn plan_with(rules: &RuleSet, globs: &mut Globs) -> Plan {
    let mut scan = Scan { globs: std::mem::take(globs), ..Default::default() };
    let p = plan_in(&mut scan, rules);
    *globs = scan.globs;
    p
}

fn plan_in(scan: &mut Scan, rules: &RuleSet) -> Plan {
    let mut p = Plan::default();
    for (slot, r) in rules.rules.iter().enumerate() {
        let Some(k) = &r.kernel else { continue };
        let slot_bits = (slot as u32) << protect::SLOT_SHIFT;
        if r.action == Action::Kill || r.action == Action::Deny {
            // Deny: EPERM from the BPF LSM where it runs; the kill bits are the fallback (a
            // denied open fails, so its exit never kills).
            let deny = r.action == Action::Deny;
            let mut bits = 0;
            if k.on_read {
                bits |= protect::KILL_READ | if deny { protect::DENY_READ } else { 0 };
            }
            if k.on_write {
                bits |= protect::KILL_WRITE | if deny { protect::DENY_WRITE } else { 0 };
            }
            // A runner's own registry login (npm's `~/.npmrc`), per file of the rule.
            let runner = |pat: &String| if k.on_read && k.runner_may_read.contains(pat) { protect::RUNNER_MAY_READ } else { 0 };
            if k.on_read {
                for pat in &k.files {
                    add_read_pattern(&mut p, scan, pat, bits | runner(pat) | slot_bits, &k.except, k.secret_content);
                }
            }
            for pat in &k.files {
                for path in expand_in(scan, pat) {
                    let excluded = path.to_str().map(|p| k.except.iter().any(|g| g.matches(p))).unwrap_or(false);
                    if scan.is_file(&path) && !excluded {
                        add(&mut p, scan, &path, bits | runner(pat), slot_bits);
                    }
                }
            }
            for pat in &k.dirs {
                for path in expand_in(scan, pat) {
                    if scan.is_dir(&path) {
                        add(&mut p, scan, &path, protect::KILL_DIR_WRITE, slot_bits);
                    }
                }
            }
            for real in named_executables(scan, &k.executables) {
                add(&mut p, scan, &real, protect::KILL_EXEC | if deny { protect::DENY_EXEC } else { 0 }, slot_bits);
            }
            // Sockets by inode (a symlink or another name reaches the same one), and the
            // engines' own CLIs, which may reach them as a server's root.
            for pat in &k.sockets {
                for path in expand_in(scan, pat) {
                    if scan.meta(&path).is_some_and(|m| m.socket) {
                        add(&mut p, scan, &path, protect::KILL_CONNECT, slot_bits);
                    }
                }
            }
            for real in named_executables(scan, &k.root_may_connect) {
                add(&mut p, scan, &real, protect::ROOT_MAY_CONNECT, slot_bits);
            }
            // A launcher's own credentials (the docker CLI's config), by the image's inode.
            for real in named_executables(scan, &k.root_may_read) {
                if let Some(m) = scan.meta(&real) {
                    p.root_readers.insert((m.inode, slot as u32));
                }
                add(&mut p, scan, &real, protect::ROOT_VIA, slot_bits);
            }
            // What a root may run before a launcher and keep its allowances (`env`, `setpriv`).
            for real in named_executables(scan, &k.root_via) {
                add(&mut p, scan, &real, protect::ROOT_VIA, slot_bits);
            }
            if k.io_uring && p.io_uring_kill == 0 {
                p.io_uring_kill = 1 | slot_bits;
            }
            if k.foreign_proc && p.foreign_proc_kill == 0 {
                p.foreign_proc_kill = 1 | slot_bits;
            }
            if k.proc_access && p.proc_access_kill == 0 {
                p.proc_access_kill = 1 | slot_bits;
            }
        }
        let bits = match r.action {
            Action::Deny => net_policy::DENY,
            Action::Kill => net_policy::DENY | net_policy::KILL,
            Action::Alert => 0,
        };
        for c in &k.addrs {
            p.nets.entry(NetEntry { addr: c.addr, prefix: c.prefix }).or_insert(bits | slot_bits);
            // An IPv6 socket reaches an IPv4 address as `::ffff:a.b.c.d`; the cgroup connect6
            // program sees that form, so every IPv4 prefix is denied in it too.
            if let std::net::IpAddr::V4(a) = c.addr {
                p.nets.entry(NetEntry { addr: std::net::IpAddr::V6(a.to_ipv6_mapped()), prefix: 96 + c.prefix }).or_insert(bits | slot_bits);
            }
        }
    }
    p
}

/// The real files of executables named by `globs`, but only where the file itself is one of
/// the named tools: a symlink into a multi-call binary (busybox's /bin/nc → /bin/busybox, a
/// snap's /snap/bin/docker → /usr/bin/snap) would otherwise mark that binary, and every tool it
/// runs, by inode.
fn named_executables(scan: &mut Scan, globs: &[String]) -> Vec<PathBuf> {
    let exe_globs: Vec<Arc<Glob>> = globs.iter().filter_map(|g| scan.globs.get(g)).collect();
    let mut out = Vec::new();
    for pat in globs {
        for path in expand_in(scan, pat) {
            let real = scan.real(&path).unwrap_or_else(|| path.clone());
            let named = real.to_str().is_some_and(|r| exe_globs.iter().any(|g| g.matches(r)));
            if !named {
                tracing::info!(path = %path.display(), resolves_to = %real.display(), "not one of the named executables; not marked by inode");
                continue;
            }
            if scan.is_file(&real) {
                out.push(real);
            }
        }
    }
    out
}

/// Records a read-protected pattern for the gate, the existing directories its files live in,
/// and where to watch for those directories to appear.
fn add_read_pattern(p: &mut Plan, scan: &mut Scan, pat: &str, policy: u32, except: &Arc<[Glob]>, secret_content: bool) {
    let Some((dir_pat, name)) = pat.rsplit_once('/') else { return };
    let (Some(glob), Some(name_glob)) = (scan.globs.get(pat), scan.globs.get(name)) else { return };
    let rp = ReadPattern { policy, glob, name: name_glob, except: Arc::clone(except), secret_content };
    p.read_patterns.push(rp.clone());
    if dir_pat.is_empty() {
        return;
    }
    // A wildcard name (`id_*`, `*.pem`) can be a file created at any moment: the directory is
    // marked so its first open is judged. A literal name (`~/.netrc`, `~/.claude.json`) is
    // marked by inode once it exists, and its directory (often a busy home) only watched: a
    // directory mark would put every open in a home through the gate. Below `**` only the
    // files are marked (a browser profile has thousands of files).
    let mark_dirs = is_wild(name) && !dir_pat.contains("**");
    for d in expand_in(scan, dir_pat) {
        if scan.is_dir(&d) {
            if mark_dirs {
                p.secret_dirs.entry(d.clone()).or_default().push(rp.clone());
            }
            if !dir_pat.contains("**") {
                p.watch.insert(d);
            }
        }
    }
    // The static part of the directory pattern, then its nearest existing ancestor: that is
    // where a later home, `.ssh` or `.aws` is created.
    let stat: Vec<&str> = dir_pat.split('/').take_while(|c| !is_wild(c)).collect();
    let mut at = PathBuf::from(if stat.len() <= 1 { "/".to_string() } else { stat.join("/") });
    while !scan.is_dir(&at) {
        match at.parent() {
            Some(up) => at = up.to_path_buf(),
            None => return,
        }
    }
    p.watch.insert(at.clone());
    // Below a wildcard (`/home/*/.ssh`), each existing match of the path so far is a place too.
    let parts: Vec<&str> = dir_pat.split('/').filter(|s| !s.is_empty()).collect();
    for n in 1..parts.len() {
        if !parts[..n].iter().any(|c| is_wild(c)) || parts[..n].iter().any(|c| *c == "**") {
            continue;
        }
        for d in expand_in(scan, &format!("/{}", parts[..n].join("/"))) {
            if scan.is_dir(&d) {
                p.watch.insert(d);
            }
        }
    }
}

fn add(p: &mut Plan, scan: &mut Scan, path: &Path, bits: u32, slot_bits: u32) {
    let Some(i) = scan.meta(path).map(|m| m.inode) else { return };
    let v = p.files.entry(i).or_insert(slot_bits);
    *v |= bits;
    p.paths.entry(i).or_insert_with(|| path.to_path_buf());
}

/// Paths on this filesystem matching a glob (symlinks followed for the last component only).
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    expand_in(&mut Scan::default(), pattern)
}

fn expand_in(scan: &mut Scan, pattern: &str) -> Vec<PathBuf> {
    if !pattern.starts_with('/') {
        return vec![];
    }
    let parts: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::new();
    walk(scan, PathBuf::from("/"), &parts, 0, &mut out);
    out
}

fn is_wild(s: &str) -> bool {
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

fn subdirs(scan: &mut Scan, base: &Path) -> Vec<PathBuf> {
    scan.list(base)
        .iter()
        .filter(|e| e.dir)
        .filter(|e| !matches!(e.name.to_str(), Some("proc" | "sys" | "dev" | "node_modules" | ".cache")))
        .map(|e| base.join(&e.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
