//! Builds the rule context of one kernel event: the event's own fields, the process (from the
//! process tree), the server (from the tracker) and the tool call in flight (from correlation).
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::{
    events::{Access, Body, Event, Inode},
    jsonrpc::session::Attribution,
    process_tree::{ProcessTree, ScopeHit},
    rules::{Ctx, Text, Val},
    tracker::ServerInfo,
};

const AT_FDCWD: i32 = -100;

/// A field's slot in the context, found when the daemon is built (an unknown name fails the
/// build): setting a field costs no lookup.
macro_rules! f {
    ($name:literal) => {
        const { crate::rules::fields::at($name) }
    };
}

/// Lexical normalisation (`.`/`..`), for paths whose process is gone.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn link(p: String) -> Option<PathBuf> {
    std::fs::read_link(p).ok()
}

/// The image an exec named, once its process is gone and /proc cannot tell: the name with its
/// symlinks resolved, as the kernel resolved them at the exec. A venv's `bin/python` is a link
/// to the interpreter; named by the link, a short-lived venv python (uv asking an interpreter's
/// version) looked like a program run from wherever the venv lives (a home under /tmp), and
/// only when it exited before its exec was handled. Not for names the daemon would resolve in
/// its own context (`/dev/fd/3`, `/proc/self/…`), nor relative ones (the cwd is gone too).
fn image_of(filename: &str) -> Option<PathBuf> {
    if !filename.starts_with('/') || filename.starts_with("/proc/") || filename.starts_with("/dev/") {
        return None;
    }
    std::fs::canonicalize(filename).ok()
}

/// The absolute path an open reached: the open fd itself while the process lives (and it is
/// still the same inode), else the path joined to the cwd or dirfd. Protected inodes are named
/// from the protection table before this is asked.
pub fn resolve_open(pid: u32, dirfd: i32, raw: &str, ret: i64, inode: Option<Inode>) -> String {
    if let (true, Some(want)) = (ret >= 0, inode) {
        // The fd may have been closed and reused since: trust it only if it is the same inode.
        let fd = format!("/proc/{pid}/fd/{ret}");
        if crate::actions::protect::inode_of(Path::new(&fd)) == Some(want) {
            if let Some(p) = link(fd).filter(|p| p.is_absolute()) {
                return p.display().to_string();
            }
        }
    }
    // An empty path (AT_EMPTY_PATH, or user memory that could not be read) names no file: only
    // the fd above can say what was opened.
    if raw.is_empty() {
        return String::new();
    }
    let raw_p = Path::new(raw);
    let joined = if raw_p.is_absolute() {
        normalize(raw_p)
    } else {
        let base = if dirfd == AT_FDCWD { link(format!("/proc/{pid}/cwd")) } else { link(format!("/proc/{pid}/fd/{dirfd}")) };
        match base {
            Some(b) => normalize(&b.join(raw_p)),
            None => return raw.to_string(),
        }
    };
    // The file the kernel opened, not the text the process wrote: through symlinks (and `..`
    // after one), as long as that name still leads to the inode the kernel reported.
    if let Some(want) = inode {
        let real = std::fs::canonicalize(&joined).ok();
        if let Some(real) = real.filter(|r| crate::actions::protect::inode_of(r) == Some(want)) {
            return real.display().to_string();
        }
    }
    joined.display().to_string()
}


/// Multi-call binaries (busybox, toybox) run the tool their argv[0] names (a symlink `nc` to
/// busybox), or argv[1] when called by their own name (`busybox nc`): that tool, so rules on
/// `nc` see `busybox nc` too.
pub fn applet(exe: Option<&str>, argv: &[String]) -> Option<String> {
    const MULTI: &[&str] = &["busybox", "toybox", "busybox.static"];
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    if !MULTI.contains(&base(exe?).as_str()) {
        return None;
    }
    let a0 = base(argv.first()?);
    if !MULTI.contains(&a0.as_str()) {
        return Some(a0);
    }
    argv.iter().skip(1).find(|a| !a.starts_with('-')).map(|a| base(a))
}

/// The process a `/proc/PID/…` path (or `/proc/PID/task/TID/…`) belongs to.
pub fn proc_pid(path: &str) -> Option<u32> {
    let rest = path.strip_prefix("/proc/")?;
    rest.split('/').next()?.parse().ok()
}

/// Whether an exec's argv (the kernel's copy, not /proc: npm retitles itself) is a package
/// runner's launch (`npx -y PKG`, `node /usr/bin/npx …`, `uv tool uvx PKG`): `proc.is_runner`
/// for a root, and the kernel's `ROOT_RUNNERS`.
pub fn is_runner(argv: &[String]) -> bool {
    crate::discovery::clients::runners::launch(crate::discovery::adopt::past_interpreter(argv)).is_some()
}

fn c_path(c: &crate::rules::Ctx) -> &str {
    match c.get_at(f!("file.path")) {
        Some(Val::Str(s)) => s,
        _ => "",
    }
}

/// Absolute paths named in a call's arguments (any string value that looks like a path).
pub fn arg_paths(args: &Value, out: &mut Vec<String>) {
    match args {
        Value::String(s) if s.starts_with('/') || s.starts_with("~/") => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| arg_paths(v, out)),
        Value::Object(m) => m.values().for_each(|v| arg_paths(v, out)),
        _ => {}
    }
}

/// `path` is `root` or lies below it; for a root that names a file (a `.` in its last
/// component), its siblings made from its name (`memory.jsonl.1f2e.tmp`, `a.txt~`: the
/// write-then-rename of editors and stores; `notes.db-journal`, `-wal`, `-shm`: SQLite's
/// companions of its database) count too, and so does the directory holding it, itself and
/// nothing in it (SQLite opens it to sync a new journal; a directory's open reads no file).
fn under_one(path: &str, r: &str) -> bool {
    let r = r.trim_end_matches('/');
    if r.is_empty() {
        return false;
    }
    // Asked for every open against every root: the root's name is only looked at when one of
    // the two paths starts with the other (most roots share no prefix with the path at all).
    let file_like = || r.rsplit('/').next().is_some_and(|name| name.contains('.'));
    let Some(rest) = path.strip_prefix(r) else {
        // The directory holding a file-like root (`/d` for `/d/notes.db`), not `/` itself.
        return !path.is_empty() && r.strip_prefix(path).is_some_and(|tail| tail.starts_with('/') && !tail[1..].contains('/')) && file_like();
    };
    if rest.is_empty() || rest.starts_with('/') {
        return true;
    }
    (rest.starts_with('.') || rest.starts_with('~') || rest.starts_with('-')) && !rest.contains('/') && file_like()
}

fn under(path: &str, roots: &[String]) -> bool {
    roots.iter().any(|r| under_one(path, r))
}

/// Environment variables that name where a process runs or who runs it, not what a server owns.
const ENV_NOT_ROOTS: &[&str] = &["HOME", "PWD", "OLDPWD", "SHELL", "PATH", "MAIL", "TMPDIR", "TMP", "TEMP", "_", "LOGNAME", "USER", "TERM"];

/// A path-valued environment value a server may own: absolute, one path (no `:`), at least two
/// components deep, and neither a home directory, a parent of one, nor a shared system or temp
/// directory itself.
fn env_root(name: &str, value: &str) -> Option<String> {
    if ENV_NOT_ROOTS.contains(&name) || name.starts_with("XDG_") || name.starts_with("SUDO_") || name.starts_with("CARGO_") || name.starts_with("npm_") {
        return None;
    }
    let v = value.trim_end_matches('/');
    if !v.starts_with('/') || v.contains(':') || v.matches('/').count() < 2 || v.contains("/../") {
        return None;
    }
    let shared = ["/home", "/root", "/tmp", "/var/tmp", "/dev/shm", "/run/user", "/usr", "/etc", "/var", "/proc", "/sys", "/dev", "/opt", "/srv", "/mnt", "/media"];
    if shared.iter().any(|s| v == *s) || ["/proc/", "/sys/", "/dev/"].iter().any(|p| v.starts_with(p)) {
        return None;
    }
    // A home directory itself (/home/alice, /run/user/1000).
    if (v.starts_with("/home/") || v.starts_with("/run/user/")) && v.matches('/').count() == 2 {
        return None;
    }
    Some(v.to_string())
}

/// Where a program file is installed: the virtualenv holding it (the directory with
/// `pyvenv.cfg`), or the `node_modules` directory holding it.
fn install_root(p: &Path) -> Option<String> {
    for a in p.ancestors().skip(1) {
        if a.file_name().is_some_and(|n| n == "node_modules") {
            return Some(a.display().to_string());
        }
        if a.join("pyvenv.cfg").is_file() {
            return Some(a.display().to_string());
        }
    }
    None
}

/// The scope a server has beyond its calls: its roots (absolute paths in its command line, the
/// launcher's and the running server's, and path-valued variables of its environment) and its
/// runtime (the install its command runs from).
pub fn server_scope(s: &ServerInfo) -> crate::process_tree::ServerScope {
    let mut args: Vec<String> = s.command.clone();
    args.extend(crate::sys::procfs::cmdline(s.root_pid));
    let mut roots = Vec::new();
    let mut runtime = Vec::new();
    for a in args.iter().filter(|a| a.starts_with('/')) {
        roots.push(normalize(Path::new(a)).display().to_string());
        let real = std::fs::canonicalize(a).unwrap_or_else(|_| PathBuf::from(a));
        for p in [PathBuf::from(a), real] {
            if let Some(r) = install_root(&p) {
                runtime.push(r);
            }
        }
    }
    // `--opt=/path` forms.
    for a in &args {
        if let Some((_, v)) = a.split_once('=').filter(|(k, v)| k.starts_with('-') && v.starts_with('/')) {
            roots.push(normalize(Path::new(v)).display().to_string());
        }
    }
    for (k, v) in crate::sys::procfs::environ_vars(s.root_pid) {
        if let Some(r) = env_root(&k, &v) {
            if let Some(i) = install_root(Path::new(&r)) {
                runtime.push(i);
            }
            roots.push(r);
        }
    }
    for v in [&mut roots, &mut runtime] {
        v.retain(|r| r != "/");
        v.sort();
        v.dedup();
    }
    crate::process_tree::ServerScope { roots, runtime }
}

/// Where an opened path stands: `call` (under a path the call's arguments name), `server` (the
/// server's roots and data files), `runtime` (its own install), `created` (a file it created
/// itself), else `outside`.
/// A create in a temp directory is the server's own temp file from its first open; elsewhere the
/// creating open itself is judged like any other, and only reopens count as the server's own.
fn scope_kind(path: &str, call: &[String], i: &Inputs, server_id: u32, creating: bool, fresh: bool) -> &'static str {
    if under(path, call) {
        return "call";
    }
    // A container's process opening a path of its own image or layer (not a host path mounted
    // in): the container's files, as a runtime is the server's.
    if i.tree.container(i.ev.header.pid).is_some_and(|c| c.owns(path)) {
        return "container";
    }
    if let Some(s) = i.server {
        let judge = |sc: &crate::process_tree::ServerScope, path: &str| match (under(path, &sc.roots), under(path, &sc.runtime)) {
            (true, _) => ScopeHit::Roots,
            (false, true) => ScopeHit::Runtime,
            (false, false) => ScopeHit::Neither,
        };
        // The resolved path as the path cache shares it: a repeated open is the same text.
        let hit = match i.path.filter(|p| ***p == *path) {
            Some(shared) => i.tree.scope_hit(s.id, shared, || server_scope(s), judge),
            None => judge(&i.tree.server_scope(s.id, || server_scope(s)), path),
        };
        match hit {
            ScopeHit::Roots => return "server",
            ScopeHit::Runtime => return "runtime",
            ScopeHit::Neither => {}
        }
    }
    const TEMP: &[&str] = &["/tmp/", "/var/tmp/", "/dev/shm/"];
    // O_CREAT|O_EXCL that succeeded in a temp directory: a brand-new file, nobody else's content,
    // whatever name it has by the time its fd is resolved (temp files are often renamed at once).
    let in_temp = TEMP.iter().any(|t| path.starts_with(t));
    if (fresh && in_temp) || (i.tree.created_by(server_id, path) && (!creating || in_temp)) {
        return "created";
    }
    "outside"
}

/// A relative path whose process is gone (so /proc/PID/cwd cannot say where it was): the
/// directory it was relative to is one of the process's last known working directory, the
/// paths of the call in flight and the server's roots, and the right one is the one where that
/// name leads to the inode the kernel opened. Without an inode to check (a failed open) only the
/// known working directory is taken. None: unresolvable.
fn resolve_relative(o: &crate::events::Open, i: &Inputs, call: &[String]) -> Option<String> {
    let mut bases: Vec<String> = Vec::new();
    if o.dirfd == AT_FDCWD {
        bases.extend(i.tree.cwd(i.ev.header.pid));
    }
    let Some(want) = o.inode else {
        return bases.first().map(|b| normalize(&Path::new(b).join(&*o.path)).display().to_string());
    };
    bases.extend(call.iter().cloned());
    if let Some(s) = i.server {
        bases.extend(i.tree.server_scope(s.id, || server_scope(s)).roots.iter().cloned());
    }
    bases.iter().map(|b| normalize(&Path::new(b).join(&*o.path))).find(|p| crate::actions::protect::inode_of(p) == Some(want)).map(|p| p.display().to_string())
}

pub struct Inputs<'a> {
    pub ev: &'a Event,
    pub tree: &'a ProcessTree,
    pub server: Option<&'a ServerInfo>,
    pub attribution: &'a Attribution,
    /// Resolved path for open events (shared with the event line and the path cache).
    pub path: Option<&'a std::sync::Arc<str>>,
    /// Fields the rules read (None: all); the rest are not computed.
    pub want: Option<&'a crate::rules::FieldSet>,
    /// Whether the server's root is a package runner, if already judged at its latest exec
    /// (None: judged here, from its argv).
    pub root_runner: Option<bool>,
}

/// The arguments of the event's process: the new ones for an exec, else as the tree knows them.
pub fn argv_of<'a>(ev: &'a Event, tree: &'a ProcessTree) -> &'a [String] {
    match &ev.body {
        Body::Exec(x) => &x.argv,
        _ => tree.get(ev.header.pid).map(|n| n.argv.as_slice()).unwrap_or(&[]),
    }
}

/// Builds the context of `i` into `c`, a context the caller keeps across events (emptied
/// first).
pub fn build(c: &mut Ctx, i: &Inputs) {
    c.clear();
    let want = |at: usize| i.want.is_none_or(|w| w.has(at));
    let h = &i.ev.header;
    c.str_at(f!("event"), i.ev.kind());
    c.set_at(f!("proc.pid"), Val::Num(h.pid.into()));
    c.set_at(f!("proc.ppid"), Val::Num(h.ppid.into()));
    c.set_at(f!("proc.uid"), Val::Num(h.uid.into()));
    let node = i.tree.get(h.pid);
    let mut exec_image = None;
    // `argv_of`, from the node already found.
    let argv = match &i.ev.body {
        Body::Exec(x) => x.argv.as_slice(),
        _ => node.map_or(&[][..], |n| n.argv.as_slice()),
    };
    if let Body::Exec(x) = &i.ev.body {
        c.str_at(f!("exec.filename"), x.filename.clone());
        c.set_at(f!("exec.ok"), Val::Bool(x.result.ok));
        exec_image = if x.result.ok {
            // The real image: a memfd or a deleted file shows here even when the name lies.
            link(format!("/proc/{}/exe", h.pid)).or_else(|| image_of(&x.filename)).map(|p| p.display().to_string()).or(Some(x.filename.clone()))
        } else {
            // A failed exec (ENOENT in a PATH search, EACCES) started no image: the process
            // still runs its old one, which is not what was executed.
            None
        };
    }
    let exe: Option<Text> = match &i.ev.body {
        Body::Exec(_) => exec_image.map(Text::from),
        _ => node.and_then(|n| n.exe.as_ref()).map(Text::from),
    };
    let exe_str = exe.as_deref();
    if let Some(e) = &exe {
        c.str_at(f!("proc.name"), e.file_name());
    }
    if want(f!("proc.cmdline")) {
        c.str_at(f!("proc.cmdline"), argv.join(" "));
    }
    if want(f!("proc.applet")) {
        if let Some(a) = applet(exe_str, argv) {
            c.str_at(f!("proc.applet"), a);
        }
    }
    if let Some(e) = exe {
        c.str_at(f!("proc.exe"), e);
    }
    if want(f!("proc.argv")) {
        c.set_at(f!("proc.argv"), Val::List(argv.iter().map(|a| Text::from(a.clone())).collect()));
    }
    if want(f!("proc.ancestors")) {
        let ancestors: Vec<Text> = i.tree.ancestry(h.pid).iter().skip(1).filter_map(|p| i.tree.get(*p).and_then(|n| n.exe.as_ref()).map(Text::from)).collect();
        c.set_at(f!("proc.ancestors"), Val::List(ancestors));
    }
    if let Some(s) = i.server {
        let root = s.root_pid == h.pid;
        c.set_at(f!("proc.is_server_root"), Val::Bool(root));
        if want(f!("proc.is_runner")) {
            // By the argv of its latest exec (the kernel's copy, not /proc: npm retitles itself):
            // `pipx run` execs the app, and from then on the root is the server.
            let runner = root && i.root_runner.unwrap_or_else(|| is_runner(argv));
            c.set_at(f!("proc.is_runner"), Val::Bool(runner));
        }
        c.str_at(f!("server.name"), s.name.clone());
        c.str_at(f!("server.how"), s.how.as_str());
        if let Some(cl) = s.client.as_ref().filter(|_| want(f!("server.client"))) {
            c.str_at(f!("server.client"), cl.clone());
        }
    }
    if let Some(k) = h.kernel_action {
        c.str_at(f!("kernel.action"), k.as_str());
    }
    c.set_at(f!("syscall.compat"), Val::Bool(h.compat_syscall));
    let mut scope: Vec<String> = Vec::new();
    match i.attribution {
        Attribution::Call { tool, arguments, .. } => {
            c.str_at(f!("mcp.state"), "call");
            c.set_at(f!("mcp.tool"), Val::List(vec![tool.clone().into()]));
            if want(f!("mcp.args")) {
                c.str_at(f!("mcp.args"), arguments.to_string());
            }
            arg_paths(arguments, &mut scope);
        }
        Attribution::Ambiguous { candidates } => {
            c.str_at(f!("mcp.state"), "ambiguous");
            c.set_at(f!("mcp.tool"), Val::List(candidates.iter().map(|x| x.tool.clone().into()).collect()));
        }
        Attribution::Idle => c.str_at(f!("mcp.state"), "idle"),
    }
    match &i.ev.body {
        Body::Open(o) => {
            let mut path: Text = i.path.map_or_else(|| o.path.clone().into(), Text::from);
            if !path.starts_with('/') && !o.path.is_empty() {
                path = resolve_relative(o, i, &scope).map_or(path, Text::from);
            }
            let resolved = path.starts_with('/');
            c.set_at(f!("file.resolved"), Val::Bool(resolved));
            // An empty or unresolvable path is no path: no path test can match it.
            if resolved {
                if want(f!("mcp.in_scope")) || want(f!("mcp.scope")) {
                    let creating = o.access.contains(&Access::Create);
                    let fresh = creating && o.access.contains(&Access::Exclusive) && o.result.ok;
                    let kind = scope_kind(&path, &scope, i, h.server_id, creating, fresh);
                    c.set_at(f!("mcp.in_scope"), Val::Bool(kind != "outside"));
                    c.str_at(f!("mcp.scope"), kind);
                }
                c.str_at(f!("file.path"), path);
            }
            if want(f!("file.raw_path")) {
                c.str_at(f!("file.raw_path"), o.path.clone());
            }
            let write = o.access.iter().any(|a| a.writes());
            if want(f!("file.access")) {
                c.set_at(f!("file.access"), Val::Access(o.access));
            }
            c.set_at(f!("file.write"), Val::Bool(write));
            c.set_at(f!("file.ok"), Val::Bool(o.result.ok));
            if want(f!("file.proc_foreign")) {
                // The server's root too while it is a package runner (`ROOT_RUNNERS`): it holds
                // the registry login it read, and the package is its child.
                let runner_root = |p: u32| i.server.is_some_and(|s| s.root_pid == p) && i.tree.get(p).is_some_and(|n| is_runner(&n.argv));
                let foreign = proc_pid(c_path(c)).is_some_and(|p| p != i.ev.header.pid && (i.tree.get(p).map(|n| n.server_id) != Some(i.ev.header.server_id) || runner_root(p)));
                c.set_at(f!("file.proc_foreign"), Val::Bool(foreign));
            }
        }
        Body::Connect(n) | Body::Send(n) => {
            c.str_at(f!("net.family"), n.family.clone());
            if let Some(a) = n.addr {
                c.set_at(f!("net.addr"), Val::Ip(a));
            }
            if let Some(p) = n.port {
                c.set_at(f!("net.port"), Val::Num(p.into()));
            }
            if let Some(u) = &n.unix_path {
                c.str_at(f!("net.unix_path"), u.clone());
            }
            c.set_at(f!("net.ok"), Val::Bool(n.result.ok));
        }
        Body::ProcAccess(a) => {
            c.str_at(f!("access.syscall"), a.syscall.to_string());
            if let Some(r) = &a.request {
                c.str_at(f!("access.request"), r.clone());
            }
            c.set_at(f!("access.target_pid"), Val::Num(a.target_pid.into()));
            if let Ok(exe) = std::fs::read_link(format!("/proc/{}/exe", a.target_pid)) {
                c.str_at(f!("access.target_exe"), exe.display().to_string());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
        assert_eq!(resolve_open(u32::MAX, AT_FDCWD, "/x/../etc/passwd", -2, None), "/etc/passwd");
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(resolve_open(me, AT_FDCWD, "a/../b", -2, None), cwd.join("b").display().to_string());
        let mut v = vec![];
        arg_paths(&serde_json::json!({"path": "/srv/x", "n": 3, "more": ["/a", "rel"]}), &mut v);
        v.sort();
        assert_eq!(v, vec!["/a".to_string(), "/srv/x".to_string()]);
        assert!(under("/srv/x/y", &["/srv/x".into()]) && !under("/srv/xy", &["/srv/x".into()]));
        // SQLite's journal, WAL and shared-memory files beside a database the server was given
        // (mcp-server-sqlite --db-path); not a name that merely starts like it, nor below it.
        let db = ["/home/u/notes.db".to_string()];
        assert!(["/home/u/notes.db-journal", "/home/u/notes.db-wal", "/home/u/notes.db-shm"].iter().all(|p| under(p, &db)));
        assert!(!under("/home/u/notes.dbx", &db) && !under("/home/u/notes.db-x/y", &db) && !under("/srv/x-y", &["/srv/x".into()]));
        // The directory holding it (SQLite syncs it), itself only: not what else is in it, nor
        // its parent; a directory root's parent is not the server's.
        assert!(under("/home/u", &db) && !under("/home/u/.ssh/id_rsa", &db) && !under("/home/u/other.db", &db) && !under("/home", &db));
        assert!(!under("/srv", &["/srv/x".into()]) && !under("", &["/notes.db".into()]));
    }

    #[test]
    fn a_gone_exec_is_named_by_its_image() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("python3.11");
        std::fs::write(&real, "").unwrap();
        let venv = dir.path().join("venv/bin");
        std::fs::create_dir_all(&venv).unwrap();
        std::os::unix::fs::symlink(&real, venv.join("python")).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(image_of(venv.join("python").to_str().unwrap()), Some(real));
        // Names the daemon would resolve as itself, relative names, and missing files: none.
        for name in ["/dev/fd/0", "/proc/self/exe", "bin/python", "/nonexistent/x"] {
            assert_eq!(image_of(name), None, "{name}");
        }
    }

    /// `under_one` as first written (split the root first, then compare), kept as the reference
    /// the faster order must agree with.
    fn under_one_reference(path: &str, r: &str) -> bool {
        let r = r.trim_end_matches('/');
        if r.is_empty() {
            return false;
        }
        let (dir, name) = r.rsplit_once('/').unwrap_or(("", r));
        let file_like = name.contains('.');
        let Some(rest) = path.strip_prefix(r) else {
            return file_like && !dir.is_empty() && path == dir;
        };
        if rest.is_empty() || rest.starts_with('/') {
            return true;
        }
        file_like && (rest.starts_with('.') || rest.starts_with('~') || rest.starts_with('-')) && !rest.contains('/')
    }

    #[test]
    fn under_agrees_with_its_reference() {
        let roots = ["/", "/a", "/a/", "/a/b", "/a/b.db", "/a/b.db/", "/x.txt", "a.txt", "/a/b/c.d/e", "/a.b/c", ""];
        let paths = ["", "/", "/a", "/a/", "/a/b", "/a/b.db", "/a/b.db-wal", "/a/b.db~", "/a/b.db.1/x", "/a/b.dbx", "/a/bc", "/a/b/c", "/x.txt", "/x.txt.tmp", "/x", "a", "a.txt", "/a/b/c.d", "/a/b/c.d/e/f", "/a.b", "/a.b/c.tmp"];
        for r in roots {
            for p in paths {
                assert_eq!(under_one(p, r), under_one_reference(p, r), "path {p:?} root {r:?}");
            }
        }
    }

    #[test]
    fn applets_of_multi_call_binaries() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(applet(Some("/usr/bin/busybox"), &v(&["busybox", "nc", "-e", "/bin/sh", "x", "1"])), Some("nc".into()));
        assert_eq!(applet(Some("/usr/bin/busybox"), &v(&["/tmp/nc", "x", "1"])), Some("nc".into()));
        assert_eq!(applet(Some("/bin/busybox"), &v(&["busybox", "--install"])), None);
        assert_eq!(applet(Some("/usr/bin/nc.openbsd"), &v(&["nc", "x"])), None, "only multi-call binaries have applets");
    }

    #[test]
    fn symlinks_resolve_to_the_file_opened() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("store/history.jsonl");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "x").unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("innocent.txt")).unwrap();
        std::os::unix::fs::symlink(d.path().join("store"), d.path().join("dirlink")).unwrap();
        let inode = crate::actions::protect::inode_of(&real);
        let real_s = real.canonicalize().unwrap().display().to_string();
        let via = |p: &Path| resolve_open(u32::MAX, AT_FDCWD, p.to_str().unwrap(), -2, inode);
        assert_eq!(via(&d.path().join("innocent.txt")), real_s, "a symlink is the file it points to");
        assert_eq!(via(&d.path().join("dirlink/../store/history.jsonl")), real_s, "`..` after a directory symlink");
        // Without the kernel's inode the text is all there is.
        assert_eq!(resolve_open(u32::MAX, AT_FDCWD, d.path().join("innocent.txt").to_str().unwrap(), -2, None), d.path().join("innocent.txt").display().to_string());
    }
}
