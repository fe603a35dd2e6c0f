//! The daemon's view of every tracked process: parent, server, current image and argv, kept up to
//! date from fork/exec/exit events (seeded from procfs for trees taken over while running).
//! Correlation and the rules use it for ancestry, and the daemon to know when a server's last
//! process is gone.
// foldhash, not SipHash: the tree is looked up several times per kernel event (process, its
// server's scope, its container, its working directory), and pids are the kernel's, not a
// client's, to choose. SipHash was a visible share of a flood's profile.
use foldhash::HashMap;

use serde::Serialize;

use crate::events::{Body, Event};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcNode {
    pub pid: u32,
    pub ppid: u32,
    pub server_id: u32,
    /// Shared with every event line and rule context of the process (no copy per event).
    pub exe: Option<std::sync::Arc<str>>,
    pub argv: Vec<String>,
}

/// What an event changed in the tree.
#[derive(Debug, PartialEq, Eq)]
pub enum TreeChange {
    None,
    /// The last process of this server exited.
    ServerGone(u32),
}

#[derive(Default)]
pub struct ProcessTree {
    nodes: HashMap<u32, ProcNode>,
    members: HashMap<u32, usize>,
    /// Working directory of each process, as last seen (exec, fork, or a live read): relative
    /// opens of a process already gone resolve against it. chdir is not observed, so a process
    /// that changes directory after its exec and exits before its opens are handled keeps the
    /// directory it had at exec.
    cwds: HashMap<u32, String>,
    /// Files each server created itself (O_CREAT with O_EXCL or O_TRUNC, or O_TMPFILE): its own
    /// temp and data files, in scope when it opens them again.
    created: HashMap<u32, std::collections::HashSet<String>>,
    /// The container each process runs in, for processes of a container joined to a server
    /// (inherited at fork; `docker run -i`'s container under its CLI's server).
    containers: HashMap<u32, std::sync::Arc<crate::discovery::container::Container>>,
    /// What each server's scope holds beyond its calls (roots, runtime), computed once. A
    /// `RefCell`, not a lock: the tree lives on the pipeline's thread, and the lock was taken
    /// for every open.
    scopes: std::cell::RefCell<HashMap<u32, Scope>>,
}

/// A server's scope, and where the last path asked about stood against it.
#[derive(Debug)]
struct Scope {
    of: std::sync::Arc<ServerScope>,
    /// A server that opens one path again and again asks the same question each time: the
    /// answer is kept with the path (held, so its address is no other path's meanwhile).
    last: Option<(std::sync::Arc<str>, ScopeHit)>,
}

/// Where a path stands against a server's own scope (`ServerScope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeHit {
    /// Under one of its roots.
    Roots,
    /// Under its runtime (and none of its roots).
    Runtime,
    Neither,
}

/// The paths a server owns beyond its tool calls' arguments (see docs/rules.md, "Scope").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerScope {
    /// Absolute paths from its command line and from path-valued variables of its environment
    /// (MEMORY_FILE_PATH=…): its roots and data files.
    pub roots: Vec<String>,
    /// Its own install: the virtualenv or node_modules its command runs from.
    pub runtime: Vec<String>,
}

/// Most files remembered per server as created by it.
const CREATED_CAP: usize = 4096;

fn live_cwd(pid: u32) -> Option<String> {
    crate::sys::procfs::cwd(pid).filter(|p| p.is_absolute()).map(|p| p.display().to_string())
}

impl ProcessTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, pid: u32) -> Option<&ProcNode> {
        self.nodes.get(&pid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of live processes of a server.
    pub fn members(&self, server_id: u32) -> usize {
        self.members.get(&server_id).copied().unwrap_or(0)
    }

    pub fn insert(&mut self, node: ProcNode) {
        let server = node.server_id;
        if let Some(old) = self.nodes.insert(node.pid, node) {
            self.leave(old.server_id);
        }
        *self.members.entry(server).or_default() += 1;
    }

    fn leave(&mut self, server_id: u32) -> bool {
        if let Some(n) = self.members.get_mut(&server_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.members.remove(&server_id);
                return true;
            }
        }
        false
    }

    /// Processes the tree holds that no longer exist (their exit event was lost): removed, with
    /// the servers that lost their last process.
    pub fn reap(&mut self, alive: impl Fn(u32) -> bool) -> (Vec<u32>, Vec<u32>) {
        let dead: Vec<u32> = self.nodes.keys().copied().filter(|p| !alive(*p)).collect();
        let mut gone = vec![];
        for p in &dead {
            self.cwds.remove(p);
            self.containers.remove(p);
            if let Some(n) = self.nodes.remove(p) {
                if self.leave(n.server_id) {
                    self.forget_server(n.server_id);
                    gone.push(n.server_id);
                }
            }
        }
        (dead, gone)
    }

    /// Marks `pid` (and, from now on, the children it forks) as running in container `c`.
    pub fn set_container(&mut self, pid: u32, c: std::sync::Arc<crate::discovery::container::Container>) {
        self.containers.insert(pid, c);
    }

    /// The container `pid` runs in, if it joined a server as part of one.
    pub fn container(&self, pid: u32) -> Option<&std::sync::Arc<crate::discovery::container::Container>> {
        self.containers.get(&pid)
    }

    /// Every pid in the tree.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.keys().copied().collect()
    }

    /// Live pids of a server, sorted.
    pub fn pids_of(&self, server_id: u32) -> Vec<u32> {
        let mut v: Vec<u32> = self.nodes.values().filter(|n| n.server_id == server_id).map(|n| n.pid).collect();
        v.sort();
        v
    }

    /// Forgets every process of a server (it was dropped, not exited).
    pub fn remove_server(&mut self, server_id: u32) {
        self.nodes.retain(|_, n| n.server_id != server_id);
        let nodes = &self.nodes;
        self.containers.retain(|p, _| nodes.contains_key(p));
        self.members.remove(&server_id);
        self.forget_server(server_id);
    }

    /// The process's working directory: live when it still runs, else as last seen.
    pub fn cwd(&self, pid: u32) -> Option<String> {
        live_cwd(pid).or_else(|| self.cwds.get(&pid).cloned())
    }

    /// The server created this file itself (and has not been forgotten since).
    pub fn created_by(&self, server_id: u32, path: &str) -> bool {
        self.created.get(&server_id).is_some_and(|s| s.contains(path))
    }

    /// The server's scope beyond its calls, computed by `make` at the first ask.
    pub fn server_scope(&self, server_id: u32, make: impl FnOnce() -> ServerScope) -> std::sync::Arc<ServerScope> {
        if let Some(s) = self.scopes.borrow().get(&server_id) {
            return s.of.clone();
        }
        // Made outside any borrow: `make` reads /proc and may take its time.
        let s = std::sync::Arc::new(make());
        self.scopes.borrow_mut().insert(server_id, Scope { of: s.clone(), last: None });
        s
    }

    /// Where `path` stands against the server's scope (made by `make` at the first ask), as
    /// `judge` says: asked again for the path it was last asked for, the answer is the one
    /// kept (a server's scope does not change once made).
    pub fn scope_hit(&self, server_id: u32, path: &std::sync::Arc<str>, make: impl FnOnce() -> ServerScope, judge: impl FnOnce(&ServerScope, &str) -> ScopeHit) -> ScopeHit {
        if let Some(Scope { last: Some((p, hit)), .. }) = self.scopes.borrow().get(&server_id) {
            if std::sync::Arc::ptr_eq(p, path) {
                return *hit;
            }
        }
        let of = self.server_scope(server_id, make);
        let hit = judge(&of, path);
        if let Some(s) = self.scopes.borrow_mut().get_mut(&server_id) {
            s.last = Some((path.clone(), hit));
        }
        hit
    }

    fn forget_server(&mut self, server_id: u32) {
        self.created.remove(&server_id);
        self.scopes.get_mut().remove(&server_id);
    }

    /// Records a file the server created (the open must have succeeded).
    fn note_open(&mut self, ev: &Event, o: &crate::events::Open) {
        use crate::events::Access;
        let made = o.access.contains(&Access::Create) && (o.access.contains(&Access::Exclusive) || o.access.contains(&Access::Truncate));
        if !o.result.ok || !made || o.path.is_empty() {
            return;
        }
        let raw = std::path::Path::new(&*o.path);
        let full = if raw.is_absolute() {
            raw.to_path_buf()
        } else if o.dirfd == -100 {
            match self.cwd(ev.header.pid) {
                Some(c) => std::path::Path::new(&c).join(raw),
                None => return,
            }
        } else {
            match crate::sys::procfs::fd_path(ev.header.pid, o.dirfd) {
                Some(d) => d.join(raw),
                None => return,
            }
        };
        let full = crate::daemon::context::normalize(&full);
        let set = self.created.entry(ev.header.server_id).or_default();
        if set.len() >= CREATED_CAP {
            set.clear();
        }
        // A file in a temp directory: the directories between it and the temp root are the
        // server's too (mkdtemp is not observed; its first file is).
        const TEMP: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];
        if let Some(t) = TEMP.iter().find(|t| full.starts_with(t)) {
            for a in full.ancestors().skip(1).take_while(|a| a != &std::path::Path::new(t)) {
                set.insert(a.display().to_string());
            }
        }
        set.insert(full.display().to_string());
    }

    /// pids from `pid` up through its tracked ancestors (nearest first).
    pub fn ancestry(&self, pid: u32) -> Vec<u32> {
        let mut out = vec![];
        let mut cur = self.nodes.get(&pid);
        while let Some(n) = cur {
            if out.contains(&n.ppid) || out.len() > 64 {
                break;
            }
            out.push(n.ppid);
            cur = self.nodes.get(&n.ppid);
        }
        out
    }

    pub fn apply(&mut self, ev: &Event) -> TreeChange {
        let h = &ev.header;
        match &ev.body {
            Body::Fork(f) => {
                let parent = self.nodes.get(&h.pid);
                let node = ProcNode {
                    pid: f.child_pid,
                    ppid: h.pid,
                    server_id: h.server_id,
                    exe: parent.and_then(|p| p.exe.clone()),
                    argv: parent.map(|p| p.argv.clone()).unwrap_or_default(),
                };
                if let Some(c) = self.containers.get(&h.pid).cloned() {
                    self.containers.insert(f.child_pid, c);
                }
                // The child starts where its parent is (and may have moved on already).
                if let Some(c) = live_cwd(f.child_pid).or_else(|| self.cwd(h.pid)) {
                    self.cwds.insert(f.child_pid, c);
                }
                self.insert(node);
            }
            Body::Exec(x) if x.result.ok => {
                if let Some(c) = live_cwd(h.pid) {
                    self.cwds.insert(h.pid, c);
                }
                if let Some(node) = self.nodes.get_mut(&h.pid) {
                    node.exe = Some(x.filename.as_str().into());
                    node.argv = x.argv.clone();
                } else {
                    // Tracked by the daemon between fork and exec: first sight of this process.
                    self.insert(ProcNode {
                        pid: h.pid,
                        ppid: h.ppid,
                        server_id: h.server_id,
                        exe: Some(x.filename.as_str().into()),
                        argv: x.argv.clone(),
                    });
                }
            }
            Body::Exit(_) => {
                self.cwds.remove(&h.pid);
                self.containers.remove(&h.pid);
                if let Some(old) = self.nodes.remove(&h.pid) {
                    if self.leave(old.server_id) {
                        self.forget_server(old.server_id);
                        return TreeChange::ServerGone(old.server_id);
                    }
                }
            }
            Body::Open(o) => {
                self.note_open(ev, o);
                if let Some(n) = self.nodes.get_mut(&h.pid) {
                    n.ppid = h.ppid;
                }
            }
            _ => {
                // Keep ppid current: a process reparented to a subreaper shows it here first.
                if let Some(n) = self.nodes.get_mut(&h.pid) {
                    n.ppid = h.ppid;
                }
            }
        }
        TreeChange::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Exit, Fork, Header, SysResult};

    fn ev(pid: u32, body: Body) -> Event {
        Event {
            header: Header { ts_mono_ns: 0, pid, tid: pid, ppid: 1, uid: 0, server_id: 5, truncated: vec![], kernel_action: None, compat_syscall: false, gated: false },
            body,
        }
    }

    #[test]
    fn a_scope_answer_is_kept_for_the_path_asked_last() {
        let t = ProcessTree::new();
        let make = || ServerScope { roots: vec!["/srv/a".into()], runtime: vec![] };
        let judge = |sc: &ServerScope, p: &str| if sc.roots.iter().any(|r| p.starts_with(r.as_str())) { ScopeHit::Roots } else { ScopeHit::Neither };
        let a: std::sync::Arc<str> = "/srv/a/x".into();
        let b: std::sync::Arc<str> = "/etc/x".into();
        assert_eq!(t.scope_hit(1, &a, make, judge), ScopeHit::Roots);
        // The same path again: the kept answer, no judging.
        assert_eq!(t.scope_hit(1, &a, make, |_, _| unreachable!("kept")), ScopeHit::Roots);
        assert_eq!(t.scope_hit(1, &b, make, judge), ScopeHit::Neither);
        // The same text in another allocation is judged again (the key is the shared text).
        let a2: std::sync::Arc<str> = "/srv/a/x".into();
        assert_eq!(t.scope_hit(1, &a2, make, judge), ScopeHit::Roots);
        // Per server.
        assert_eq!(t.scope_hit(2, &a2, || ServerScope::default(), judge), ScopeHit::Neither);
    }

    #[test]
    fn fork_exec_exit_lifecycle() {
        let mut t = ProcessTree::new();
        t.insert(ProcNode { pid: 10, ppid: 1, server_id: 5, exe: Some("/bin/sh".into()), argv: vec!["sh".into()] });
        assert_eq!(t.apply(&ev(10, Body::Fork(Fork { child_pid: 11, clone_flags: 0 }))), TreeChange::None);
        assert_eq!(t.get(11).unwrap().exe.as_deref(), Some("/bin/sh"));
        let exec = crate::events::Exec {
            syscall: "execve",
            filename: "/usr/bin/cat".into(),
            argv: vec!["cat".into()],
            argv_truncated: false,
            dirfd: -100,
            policy: 0,
            result: SysResult::from_ret(0),
        };
        t.apply(&ev(11, Body::Exec(exec)));
        assert_eq!(t.get(11).unwrap().exe.as_deref(), Some("/usr/bin/cat"));
        assert_eq!(t.ancestry(11), vec![10, 1]);
        assert_eq!(t.members(5), 2);
        let exit = || Body::Exit(Exit { code: Some(0), signal: None, signal_name: None, core_dumped: false, status: 0 });
        assert_eq!(t.apply(&ev(10, exit())), TreeChange::None);
        assert_eq!(t.apply(&ev(11, exit())), TreeChange::ServerGone(5));
        assert!(t.is_empty());
    }
}
