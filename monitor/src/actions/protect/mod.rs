//! Turns the rules' `kernel:` sections into kernel policy: file globs are expanded on the
//! filesystem (every user's home from the user database), each match keyed by device+inode;
//! address prefixes and the io_uring knob come straight from the rules. Rescanned periodically so
//! files created after start-up (a new key) are protected too.
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use monitor_common::{net_policy, protect};

use super::kernel::NetEntry;
use crate::{
    events::Inode,
    rules::{glob::Glob, Action, RuleSet},
};

pub mod keep;
pub mod pins;
mod scan;
pub mod unseen;

pub use scan::Globs;
use scan::{dirs_within, expand_in, is_wild, Scan};

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
    /// Literal names of read-protected patterns (`.netrc`, `credentials`) in each existing
    /// directory they name (a home, `~/.aws`), with their policy: a file of that name made
    /// after the plan is judged by it in the kernel at its first open (`unseen.rs`).
    pub named: BTreeMap<PathBuf, BTreeMap<String, u32>>,
    /// The same one directory further up, for a directory made together with its credential
    /// (`aws configure` makes `~/.aws`, then `credentials`): in each existing directory above
    /// (a home), (directory name, file name) with its policy, or (directory name, None) for
    /// every file of a `**` pattern's directory (`~/.azure/**`) (`unseen.rs`).
    pub below: BTreeMap<PathBuf, BTreeMap<(String, Option<String>), u32>>,
    /// Each existing directory of a `**` pattern (`~/.password-store` and every directory below
    /// it) with the pattern's policy: a file made in one, or in a new directory directly below
    /// one, is judged by it in the kernel at its first open (`unseen.rs`).
    pub subtree: BTreeMap<PathBuf, u32>,
    /// Where a new home, user or secret directory would appear: the nearest existing ancestor of
    /// each secret directory pattern (and the secret directories themselves, for `**`).
    pub watch: std::collections::BTreeSet<PathBuf>,
    /// Where only a new directory matters (a file made there never re-plans): above the
    /// directories of `kernel.sockets` patterns, as `/tmp` is above ssh-agent's `ssh-XXXX`.
    pub watch_new_dirs: std::collections::BTreeSet<PathBuf>,
    /// (executable, rule slot): the executable may read that rule's files when it runs as its
    /// server's root process (`kernel.root_may_read`).
    pub root_readers: std::collections::BTreeSet<(Inode, u32)>,
    /// `kernel.sockets` patterns by their last two names, with their policy (`AGENT_SOCKETS`):
    /// a socket no plan has seen yet (an agent started since) is killed at the connect by them.
    pub socket_names: Vec<monitor_common::SockName>,
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
                    if scan.is_file(&path) && !excepted(&k.except, &path) {
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
                watch_sockets(&mut p, scan, pat);
                add_socket_name(&mut p, pat, protect::KILL_CONNECT | slot_bits);
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

/// `pat`'s last two names into the kernel's list, once; a pattern they cannot tell (or one past
/// the list's room) is killed by inode only, once a plan has seen its socket.
fn add_socket_name(p: &mut Plan, pat: &str, policy: u32) {
    let Some(n) = monitor_common::SockName::of_pattern(pat, policy) else {
        tracing::info!(pattern = pat, "socket pattern not matched by name in the kernel: its sockets are killed once a plan has seen them");
        return;
    };
    // The same two parts under an earlier rule: that rule's stands.
    let same_parts = |x: &monitor_common::SockName| {
        let mut y = n;
        y.policy = x.policy;
        y == *x
    };
    if p.socket_names.iter().any(same_parts) {
        return;
    }
    if p.socket_names.len() >= monitor_common::SOCK_NAMES_MAX as usize {
        tracing::warn!(pattern = pat, max = monitor_common::SOCK_NAMES_MAX, "too many socket patterns to match by name in the kernel: this one is killed once a plan has seen its socket");
        return;
    }
    p.socket_names.push(n);
}

/// Where a socket of `pat` appears after the plan (an agent started at a later login): its
/// existing directories are watched, so the socket is planned as it is made; above them only
/// new directories re-plan (`/tmp` for `/tmp/ssh-*/agent.*`, `/run/user` for a login's own
/// directory), since a busy `/tmp` must not re-plan at every file made in it.
fn watch_sockets(p: &mut Plan, scan: &mut Scan, pat: &str) {
    let Some((dir_pat, _)) = pat.rsplit_once('/') else { return };
    for d in expand_in(scan, dir_pat) {
        if scan.is_dir(&d) {
            p.watch.insert(d);
        }
    }
    let parts: Vec<&str> = dir_pat.split('/').filter(|s| !s.is_empty()).collect();
    for n in 1..parts.len() {
        for d in expand_in(scan, &format!("/{}", parts[..n].join("/"))) {
            if scan.is_dir(&d) {
                p.watch_new_dirs.insert(d);
            }
        }
    }
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
    // A literal name is judged by name in the kernel until a plan has its inode, wherever the
    // gate runs or not (`unseen.rs`): that costs the home's opens nothing in user space.
    let literal = !is_wild(name) && !dir_pat.contains("**");
    for d in expand_in(scan, dir_pat) {
        if scan.is_dir(&d) {
            if mark_dirs {
                p.secret_dirs.entry(d.clone()).or_default().push(rp.clone());
            }
            if literal && !excepted(except, &d.join(name)) {
                p.named.entry(d.clone()).or_default().entry(name.to_string()).or_insert(policy);
            }
            if !dir_pat.contains("**") {
                p.watch.insert(d);
            }
        }
    }
    add_below(p, scan, dir_pat, name, policy, except);
    add_in_tree(p, scan, dir_pat, name, policy, except);
    if name == "**" && !dir_pat.contains("**") {
        for d in expand_in(scan, pat) {
            if scan.is_dir(&d) && !d.to_str().is_none_or(|s| except_reaches(except, s)) {
                p.subtree.entry(d).or_insert(policy);
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

/// A literal name (`~/.aws/credentials`), or every file of a `**` or wildcard-name pattern's
/// directory (`~/.azure/**`, `~/.ssh/id_*`), in [`Plan::below`] of each existing directory
/// one, two and three levels above its own: the kernel
/// judges by it a file in a directory made since the plan, until a re-plan has the directory.
/// A name an `except` covers is left out, and so is a `**` directory an `except` may reach
/// into (its literal start and the directory's path overlap).
fn add_below(p: &mut Plan, scan: &mut Scan, dir_pat: &str, name: &str, policy: u32, except: &Arc<[Glob]>) {
    if dir_pat.contains("**") {
        return;
    }
    // A wildcard name (`~/.ssh/id_*`) stands for every file of a new directory: `ssh-keygen`
    // makes `~/.ssh` and the key at once. The kernel spares `.pub` names there.
    let file = if name == "**" || is_wild(name) { None } else { Some(name.to_string()) };
    // One, two or three new directories at once (`aws configure` makes `~/.aws`; `mkdir -p
    // ~/.config/gh` in a new home, then `hosts.yml`): keyed by their names in the existing
    // directory above them.
    let parts: Vec<&str> = dir_pat.rsplit('/').take(3).collect();
    for levels in 1..=3 {
        let Some(rel) = parts.get(..levels) else { return };
        if rel.iter().any(|c| c.is_empty() || is_wild(c)) {
            return;
        }
        let rel = rel.iter().rev().copied().collect::<Vec<_>>().join("/");
        let top_pat = &dir_pat[..dir_pat.len() - rel.len() - 1];
        if top_pat.is_empty() {
            return;
        }
        for top in expand_in(scan, top_pat) {
            if !scan.is_dir(&top) {
                continue;
            }
            let dir = format!("{}/{rel}", top.display());
            let skip = match &file {
                Some(f) => excepted(except, &Path::new(&dir).join(f)),
                None => except_reaches(except, &dir),
            };
            if !skip {
                p.below.entry(top).or_default().entry((rel.clone(), file.clone())).or_insert(policy);
            }
        }
    }
}

/// How far below a `**` a literal name is keyed in its directories (`UNSEEN_NAMES`): a browser
/// keeps its stores one or two levels into its tree (`Default/Network/Cookies`,
/// `abc.default-release/logins.json`), and a walk of the whole tree (caches, extensions: thousands
/// of directories) every plan would cost more than it covers.
const TREE_NAME_DEPTH: usize = 2;

/// A literal name below a `**` (`~/.mozilla/firefox/**/logins.json`), in [`Plan::named`] of each
/// directory of the tree down to [`TREE_NAME_DEPTH`], and in [`Plan::below`] of the top two as
/// any directory's (`*`): Firefox saves `logins.json` by renaming a new file over it, and a new
/// Chrome profile makes its directory with its `Login Data`; neither had an entry until a plan.
fn add_in_tree(p: &mut Plan, scan: &mut Scan, dir_pat: &str, name: &str, policy: u32, except: &Arc<[Glob]>) {
    let Some(base_pat) = dir_pat.strip_suffix("/**") else { return };
    if is_wild(name) || base_pat.contains("**") {
        return;
    }
    for base in expand_in(scan, base_pat) {
        if !scan.is_dir(&base) {
            continue;
        }
        let base_depth = base.components().count();
        for d in dirs_within(scan, &base, TREE_NAME_DEPTH) {
            if excepted(except, &d.join(name)) {
                continue;
            }
            p.named.entry(d.clone()).or_default().entry(name.to_string()).or_insert(policy);
            if d.components().count() - base_depth < TREE_NAME_DEPTH {
                p.below.entry(d).or_default().entry(("*".to_string(), Some(name.to_string()))).or_insert(policy);
            }
        }
    }
}

/// Whether an `except` glob matches `path`.
fn excepted(except: &[Glob], path: &Path) -> bool {
    path.to_str().is_some_and(|p| except.iter().any(|g| g.matches(p)))
}

/// Whether an `except` glob may match a path below `dir` (a pattern or a path): their literal
/// starts overlap. Then a directory's every file is not its pattern's, and not judged as one.
fn except_reaches(except: &[Glob], dir: &str) -> bool {
    let lit = |s: &str| s.split(['*', '?', '[', '{']).next().unwrap_or("").to_string();
    let dir = format!("{}/", lit(dir).trim_end_matches('/'));
    // The kernel never judges a `.pub` by a directory's entry: that `except` reaches nothing.
    except.iter().filter(|g| !g.source.ends_with("/*.pub")).any(|g| {
        let start = lit(&g.source);
        dir.starts_with(&start) || start.starts_with(&dir)
    })
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


#[cfg(test)]
mod tests;
