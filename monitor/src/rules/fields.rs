//! The fields a rule can test, their types, and the per-event context that holds their values.
use std::{collections::HashMap, fmt, net::IpAddr};

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
    ("exec.filename", Kind::Path, "the file the exec was given (e.g. /dev/fd/3 for fexecve)"),
    ("exec.ok", Kind::Bool, "the exec succeeded; failed execs (ENOENT in a PATH search, EACCES) have no proc.exe and match only rules that test exec.ok"),
    ("file.path", Kind::Path, "resolved absolute path (absent when the path is empty or cannot be resolved)"),
    ("file.resolved", Kind::Bool, "the open's path resolved to an absolute path (false: empty, or relative to a directory no longer known)"),
    ("file.raw_path", Kind::Str, "path as the process passed it"),
    ("file.access", Kind::List, "read, write, read_write, create, truncate, append, path, …"),
    ("file.write", Kind::Bool, "opened for writing, truncation or creation"),
    ("file.ok", Kind::Bool, "the open succeeded"),
    ("file.proc_foreign", Kind::Bool, "a /proc/PID/… file of a process outside the opener's server tree"),
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

#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Str(String),
    Num(i64),
    Bool(bool),
    List(Vec<String>),
    Ip(IpAddr),
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Str(s) => f.write_str(s),
            Val::Num(n) => write!(f, "{n}"),
            Val::Bool(b) => write!(f, "{b}"),
            Val::List(l) => f.write_str(&l.join(" ")),
            Val::Ip(a) => write!(f, "{a}"),
        }
    }
}

/// A set of field names. Hashed with foldhash's fixed-seed hasher, not SipHash: the keys are the
/// field table's own names, never input, and the rules look several up for every event.
pub type FieldSet = std::collections::HashSet<&'static str, foldhash::fast::FixedState>;

/// The values of one event's fields. Missing fields fail every test except `exists: false`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ctx {
    pub vals: HashMap<&'static str, Val, foldhash::fast::FixedState>,
}

impl Ctx {
    pub fn set(&mut self, field: &'static str, v: Val) {
        debug_assert!(kind_of(field).is_some(), "unknown field {field}");
        self.vals.insert(field, v);
    }
    pub fn str(&mut self, field: &'static str, v: impl Into<String>) {
        self.set(field, Val::Str(v.into()));
    }
    pub fn get(&self, field: &str) -> Option<&Val> {
        self.vals.get(field)
    }
    pub fn event(&self) -> &str {
        match self.vals.get("event") {
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
                Kind::Str | Kind::Path => Val::Str(scalar(v).ok_or_else(bad)?),
                Kind::Num => Val::Num(scalar(v).and_then(|s| s.parse().ok()).ok_or_else(bad)?),
                Kind::Bool => Val::Bool(v.as_bool().ok_or_else(bad)?),
                Kind::Ip => Val::Ip(scalar(v).and_then(|s| s.parse().ok()).ok_or_else(bad)?),
                Kind::List => match v {
                    serde_yaml::Value::Sequence(items) => Val::List(items.iter().map(|i| scalar(i).ok_or_else(bad)).collect::<Result<_, _>>()?),
                    other => Val::List(vec![scalar(other).ok_or_else(bad)?]),
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
    fn every_field_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules.md")).unwrap();
        for (name, _, _) in super::FIELDS {
            assert!(doc.contains(&format!("`{name}`")), "docs/rules.md does not list field {name}");
        }
    }
}
