//! The fields a rule can test, their types, and the per-event context that holds their values.
use std::{collections::HashMap, fmt, net::IpAddr};

use super::Text;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// A file path: globs treat `/` specially and `~/` means every user's home directory.
    Path,
    Num,
    Bool,
    /// Several strings (argv, access modes, ancestry): a test holds if any element matches.
    List,
    Ip,
}

/// Every field, with its type and meaning (docs/rules.md lists the same table).
pub const FIELDS: &[(&str, Kind, &str)] = &[
    ("event", Kind::Str, "exec, open, connect, send, io_uring, proc_access, result"),
    ("proc.pid", Kind::Num, "process id"),
    ("proc.ppid", Kind::Num, "parent process id"),
    ("proc.uid", Kind::Num, "user id"),
    ("proc.exe", Kind::Path, "executable (for exec: the real image from /proc/PID/exe when readable)"),
    ("proc.name", Kind::Str, "last path component of proc.exe"),
    ("proc.argv", Kind::List, "arguments"),
    ("proc.cmdline", Kind::Str, "arguments joined by spaces"),
    ("proc.applet", Kind::Str, "for busybox/toybox: the tool it runs (argv[0]'s name, or argv[1] when called by its own name)"),
    ("proc.ancestors", Kind::List, "executables of the ancestors inside the server's tree, nearest first"),
    ("proc.is_server_root", Kind::Bool, "the process is the server's root process"),
    ("proc.is_runner", Kind::Bool, "the server's root process, still the runner it was launched through (npx, uvx, pipx, bunx, docker run…), by the argv of its latest exec: its own traffic fetches the package"),
    ("exec.filename", Kind::Path, "the file the exec was given (e.g. /dev/fd/3 for fexecve)"),
    ("exec.ok", Kind::Bool, "the exec succeeded; failed execs (ENOENT in a PATH search, EACCES) have no proc.exe and match only rules that test exec.ok"),
    ("file.path", Kind::Path, "resolved absolute path (absent when the path is empty or cannot be resolved)"),
    ("file.resolved", Kind::Bool, "the open's path resolved to an absolute path (false: empty, or relative to a directory no longer known)"),
    ("file.raw_path", Kind::Str, "path as the process passed it"),
    ("file.access", Kind::List, "read, write, read_write, create, truncate, append, path, …"),
    ("file.write", Kind::Bool, "opened for writing, truncation or creation"),
    ("file.ok", Kind::Bool, "the open succeeded"),
    ("file.proc_foreign", Kind::Bool, "a /proc/PID/… file of a process outside the opener's server tree, or of its server's root while that is a package runner (it holds the registry login it read)"),
    ("access.syscall", Kind::Str, "proc_access events: ptrace, process_vm_readv, process_vm_writev or pidfd_getfd"),
    ("access.request", Kind::Str, "proc_access events: the ptrace request (attach, seize, peekdata, pokedata, …), or `fd N` for pidfd_getfd"),
    ("access.target_pid", Kind::Num, "proc_access events: the process (or thread) reached into (0 for pidfd_getfd: its pidfd is not resolved)"),
    ("access.target_exe", Kind::Path, "proc_access events: its executable (absent when it is gone or unreadable)"),
    ("net.family", Kind::Str, "inet, inet6, unix"),
    ("net.addr", Kind::Ip, "destination address"),
    ("net.port", Kind::Num, "destination port"),
    ("net.unix_path", Kind::Path, "unix socket path (abstract names start with @)"),
    ("net.ok", Kind::Bool, "the connect/send succeeded"),
    ("server.name", Kind::Str, "tracked server name"),
    ("server.how", Kind::Str, "how it was found: exec, track_pid, config, sniffed, procfs, url, handshake"),
    ("server.client", Kind::Str, "MCP client that runs it"),
    ("mcp.state", Kind::Str, "call, ambiguous, idle"),
    ("mcp.tool", Kind::List, "tool name(s) of the call(s) in flight"),
    ("mcp.finding", Kind::Str, "tool-check alerts (mcp.tool_*) only: what the check found (hidden_tag, cross_server_reference, …)"),
    ("mcp.args", Kind::Str, "arguments of the call in flight, as JSON"),
    ("mcp.in_scope", Kind::Bool, "mcp.scope is not outside: the file belongs to the call, the server or its runtime (absent when file.path is)"),
    ("mcp.scope", Kind::Str, "call, container, server, runtime, created or outside (docs/rules.md, Scope)"),
    ("mcp.call_id", Kind::Str, "JSON-RPC id of the call in flight (result events: of the request answered)"),
    ("mcp.method", Kind::Str, "result events: tools/call, resources/read or prompts/get"),
    ("mcp.result.injection", Kind::Bool, "result events: the result carries a prompt injection"),
    ("mcp.result.injection_kinds", Kind::List, "model_instruction, tool_chain, hidden_unicode, role_spoofing"),
    ("mcp.result.injection_span", Kind::Str, "the first offending text, secrets in it masked"),
    ("mcp.result.secrets", Kind::Bool, "result events: the result carries a secret"),
    ("mcp.result.secret_kinds", Kind::List, "private_key, aws_access_key, github_token, slack_token, openai_key, anthropic_key, jwt, connection_string, password, generic_secret"),
    ("mcp.result.secret_span", Kind::Str, "the first secret, masked (a prefix and the length)"),
    ("mcp.session.injected", Kind::Bool, "the call in flight started after a result carrying an injection in the same client session"),
    ("mcp.session.injection_call", Kind::Str, "that result: server, tool and call id"),
    ("profile.exists", Kind::Bool, "the server has a learned profile (for its version)"),
    ("profile.fits", Kind::Bool, "the event's exe, path or address is in the server's profile"),
    ("kernel.action", Kind::Str, "what the kernel did: killed, denied, denied_and_killed"),
    ("syscall.compat", Kind::Bool, "the syscall came in through the ia32 entry (int $0x80) instead of the 64-bit one"),
];

pub fn kind_of(field: &str) -> Option<(&'static str, Kind)> {
    FIELDS.iter().find(|(n, _, _)| *n == field).map(|(n, k, _)| (*n, *k))
}

/// How many fields there are: a context holds one slot for each.
const N: usize = FIELDS.len();

/// A field's slot in a context: its place in `FIELDS`.
pub fn index(field: &str) -> Option<usize> {
    static INDEX: std::sync::LazyLock<HashMap<&'static str, usize, foldhash::fast::FixedState>> = std::sync::LazyLock::new(|| FIELDS.iter().enumerate().map(|(i, (n, _, _))| (*n, i)).collect());
    INDEX.get(field).copied()
}

#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// A field's text, shared where it is kept elsewhere (`Text`).
    Str(Text),
    Num(i64),
    Bool(bool),
    List(Vec<Text>),
    Ip(IpAddr),
    /// An open's flags by name (`file.access`): a list of words, named from the flags when a
    /// rule reads them (a list built per open was an allocation per event).
    Access(crate::events::Accesses),
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Str(s) => f.write_str(s),
            Val::Num(n) => write!(f, "{n}"),
            Val::Bool(b) => write!(f, "{b}"),
            Val::List(l) => f.write_str(&l.join(" ")),
            Val::Ip(a) => write!(f, "{a}"),
            Val::Access(a) => {
                for (i, w) in a.iter().enumerate() {
                    f.write_str(if i > 0 { " " } else { "" })?;
                    f.write_str(w.as_str())?;
                }
                Ok(())
            }
        }
    }
}

/// A field's slot, found at compile time: `at("proc.pid")` in a `const` block names a field
/// that exists, or the build fails.
pub const fn at(name: &str) -> usize {
    let mut i = 0;
    while i < N {
        let (a, b) = (FIELDS[i].0.as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("unknown field")
}

const _: () = assert!(N <= 64, "FieldSet holds the fields as the bits of one u64");

/// A set of fields, one bit per slot: the context builder asks it for every field it might
/// compute, for every event.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldSet(u64);

impl FieldSet {
    /// Adds a field by name (unknown names are not fields, and are not added).
    pub fn insert(&mut self, field: &str) {
        if let Some(i) = index(field) {
            self.0 |= 1 << i;
        }
    }
    pub fn contains(&self, field: &str) -> bool {
        index(field).is_some_and(|i| self.has(i))
    }
    /// The field in slot `at` is in the set.
    pub fn has(&self, at: usize) -> bool {
        at < N && self.0 & (1 << at) != 0
    }
}

impl<'a> Extend<&'a str> for FieldSet {
    fn extend<T: IntoIterator<Item = &'a str>>(&mut self, iter: T) {
        iter.into_iter().for_each(|f| self.insert(f));
    }
}

impl<'a> FromIterator<&'a str> for FieldSet {
    fn from_iter<T: IntoIterator<Item = &'a str>>(iter: T) -> Self {
        let mut s = FieldSet::default();
        s.extend(iter);
        s
    }
}

impl fmt::Debug for FieldSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries((0..N).filter(|i| self.has(*i)).map(|i| FIELDS[i].0)).finish()
    }
}

/// An earlier event's value that owns something (a shared text: most events replace a few),
/// dropped out of line so that the drop glue is not copied into every inlined `Ctx::set_at`.
#[inline(never)]
fn drop_owned(v: Option<Val>) {
    drop(v);
}

/// The values of one event's fields. Missing fields fail every test except `exists: false`.
/// One slot per field, in `FIELDS` order: a rule's test reads its field's slot directly (the
/// slot is found when the rule is compiled), and building a context inserts into no map.
#[derive(Clone)]
pub struct Ctx {
    vals: [Option<Val>; N],
    /// Bit `i` set when slot `i` holds this event's value (a slot without its bit may hold an
    /// earlier event's, never read: `clear`).
    set: u64,
}

// One bit per field in `Ctx::set`.
const _: () = assert!(N <= 64);

impl Default for Ctx {
    fn default() -> Self {
        Self { vals: std::array::from_fn(|_| None), set: 0 }
    }
}

/// Equal when the same fields are set to the same values (stale slots do not count).
impl PartialEq for Ctx {
    fn eq(&self, other: &Self) -> bool {
        self.set == other.set && (0..N).all(|at| self.get_at(at) == other.get_at(at))
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(FIELDS.iter().enumerate().filter_map(|(at, (n, _, _))| Some((n, self.get_at(at)?)))).finish()
    }
}

impl Ctx {
    pub fn set(&mut self, field: &'static str, v: Val) {
        match index(field) {
            Some(i) => self.set_at(i, v),
            None => debug_assert!(false, "unknown field {field}"),
        }
    }
    pub fn str(&mut self, field: &'static str, v: impl Into<Text>) {
        self.set(field, Val::Str(v.into()));
    }
    pub fn get(&self, field: &str) -> Option<&Val> {
        self.get_at(index(field)?)
    }
    /// The value in slot `at` (`index` of its field), if set since the last `clear`.
    pub fn get_at(&self, at: usize) -> Option<&Val> {
        if at >= N || self.set >> at & 1 == 0 {
            return None;
        }
        self.vals[at].as_ref()
    }
    /// `set` by slot (`at` of its field). Inlined into each caller: called out of line, the
    /// value was written to the caller's stack and read back in two halves, which the CPU
    /// could not forward from the stores (half of this function's samples, a tenth of a
    /// flood's, sat on that load).
    #[inline(always)]
    pub fn set_at(&mut self, at: usize, v: Val) {
        let old = self.vals[at].replace(v);
        // Most old values own nothing (a number, a flag, one of the daemon's words): no call
        // into the drop glue for them (it was 2.8% of a flood's samples).
        if matches!(old, None | Some(Val::Num(_) | Val::Bool(_) | Val::Ip(_) | Val::Access(_) | Val::Str(Text::Word(_)))) {
            std::mem::forget(old);
        } else {
            drop_owned(old);
        }
        self.set |= 1 << at;
    }
    #[inline(always)]
    pub fn str_at(&mut self, at: usize, v: impl Into<Text>) {
        self.set_at(at, Val::Str(v.into()));
    }
    /// Empties every slot, keeping the context's storage for the next event: building one per
    /// event moved and zeroed its whole slot array (52 slots) every time. Only the marks go:
    /// a slot's old value is dropped when the slot is next set (dropping each one here, then
    /// writing the next, was two passes over the slots an event sets). At most one stale value
    /// per field stays held meanwhile, and none is ever read (`get_at` checks the mark).
    pub fn clear(&mut self) {
        self.set = 0;
    }

    pub fn event(&self) -> &str {
        // `event` is the first field (a test below keeps it so).
        match self.get_at(0) {
            Some(Val::Str(s)) => s,
            _ => "",
        }
    }

    /// A fixture: field → YAML scalar or list, typed by the field table.
    pub fn from_fixture(map: &serde_yaml::Mapping) -> Result<Self, String> {
        let mut ctx = Ctx::default();
        for (k, v) in map {
            let k = k.as_str().ok_or("fixture keys must be field names")?;
            let (name, kind) = kind_of(k).ok_or_else(|| format!("fixture: unknown field {k:?}"))?;
            let scalar = |v: &serde_yaml::Value| -> Option<String> {
                match v {
                    serde_yaml::Value::String(s) => Some(s.clone()),
                    serde_yaml::Value::Number(n) => Some(n.to_string()),
                    serde_yaml::Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                }
            };
            let bad = || format!("fixture: field {k} wants {kind:?}, got {v:?}");
            let val = match kind {
                Kind::Str | Kind::Path => Val::Str(scalar(v).ok_or_else(bad)?.into()),
                Kind::Num => Val::Num(scalar(v).and_then(|s| s.parse().ok()).ok_or_else(bad)?),
                Kind::Bool => Val::Bool(v.as_bool().ok_or_else(bad)?),
                Kind::Ip => Val::Ip(scalar(v).and_then(|s| s.parse().ok()).ok_or_else(bad)?),
                Kind::List => match v {
                    serde_yaml::Value::Sequence(items) => Val::List(items.iter().map(|i| scalar(i).map(Text::from).ok_or_else(bad)).collect::<Result<_, _>>()?),
                    other => Val::List(vec![scalar(other).ok_or_else(bad)?.into()]),
                },
            };
            ctx.set(name, val);
        }
        if ctx.get("event").is_none() {
            return Err("fixture: needs an `event` field".into());
        }
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_is_the_first_slot() {
        assert_eq!(super::FIELDS[0].0, "event");
        let mut c = super::Ctx::default();
        c.str("event", "open");
        c.str("file.path", "/x");
        assert_eq!((c.event(), c.get("file.path")), ("open", Some(&super::Val::Str("/x".into()))));
        assert_eq!(c.get_at(super::index("file.path").unwrap()), c.get("file.path"));
        assert_eq!((c.get("proc.exe"), c.get("no.such")), (None, None));
        assert_eq!(super::at("mcp.scope"), super::index("mcp.scope").unwrap());
        let set: super::FieldSet = ["proc.exe", "syscall.compat", "no.such"].into_iter().collect();
        assert!(set.contains("proc.exe") && set.contains("syscall.compat") && !set.contains("file.path") && !set.contains("no.such"));
        assert!(set.has(super::at("syscall.compat")) && !set.has(64));
    }

    /// A context kept across events and emptied holds nothing of the last one, whichever
    /// slots it had filled (the first, the last, repeated sets).
    #[test]
    fn a_cleared_context_is_a_fresh_one() {
        let mut c = super::Ctx::default();
        for (i, (name, _, _)) in super::FIELDS.iter().enumerate().filter(|(i, _)| i % 3 != 1) {
            c.set_at(i, super::Val::Str((*name).into()));
            c.set(name, super::Val::Num(i as i64));
        }
        c.set_at(super::N - 1, super::Val::Bool(true));
        c.clear();
        assert_eq!(c, super::Ctx::default());
        assert!((0..super::N).all(|i| c.get_at(i).is_none()));
        c.str("file.path", "/y");
        c.clear();
        assert_eq!(c, super::Ctx::default());
    }

    #[test]
    fn every_field_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules.md")).unwrap();
        for (name, _, _) in super::FIELDS {
            assert!(doc.contains(&format!("`{name}`")), "docs/rules.md does not list field {name}");
        }
    }
}
