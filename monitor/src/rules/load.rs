//! Loading a rules directory: every `*.yaml`/`*.yml` file, lists and macros shared across files,
//! every rule compiled and checked. Any error rejects the whole set (the caller keeps the old
//! one) and names the file, the line and the reason.
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{
    cond::{Cidr, Env, RawCond},
    fields::Ctx,
    template::Template,
    Action, KernelSpec, Rule, RuleSet, Severity,
};

#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

/// `result`: a reply to tools/call, resources/read or prompts/get, after the result checks.
pub const EVENTS: &[&str] = &["exec", "open", "connect", "send", "io_uring", "proc_access", "result"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    lists: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    macros: BTreeMap<String, RawCond>,
    #[serde(default)]
    rules: Vec<RuleDoc>,
    /// Server name (from the client's config or `mcpmon exec --name`) → ids of file rules it
    /// may break (e.g. a server named `aws` may read what `cloud-credentials-read` protects).
    #[serde(default)]
    grants: BTreeMap<String, Vec<String>>,
    /// Site tuning: where a rule must not fire (a server, paths, programs, tools), without
    /// editing the shipped file that defines it.
    #[serde(default)]
    exceptions: Vec<ExceptionDoc>,
}

/// `exceptions: [{rule: ID, server: NAME, path_glob: GLOB, …}]`: the rule does not fire for an
/// event that meets every key given (each key takes one value or a list of alternatives).
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct ExceptionDoc {
    rule: String,
    /// server.name (the configured name, as for grants)
    #[serde(default)]
    server: Option<OneOrMany>,
    /// file.path globs (`~/` and `@lists` work as in conditions)
    #[serde(default)]
    path_glob: Option<OneOrMany>,
    /// proc.name
    #[serde(default)]
    proc_name: Option<OneOrMany>,
    /// mcp.tool
    #[serde(default)]
    tool: Option<OneOrMany>,
    /// net.addr prefixes
    #[serde(default)]
    addr_cidr: Option<OneOrMany>,
    /// Anything else, as a condition.
    #[serde(default)]
    condition: Option<RawCond>,
}

impl ExceptionDoc {
    fn raw(&self) -> Result<RawCond, String> {
        let many = |v: &Option<OneOrMany>| -> Option<Vec<String>> {
            v.as_ref().map(|v| match v {
                OneOrMany::One(s) => vec![s.clone()],
                OneOrMany::Many(v) => v.clone(),
            })
        };
        let mut all = Vec::new();
        for (field, op, vals) in [
            ("server.name", "in", many(&self.server)),
            ("file.path", "glob", many(&self.path_glob)),
            ("proc.name", "in", many(&self.proc_name)),
            ("mcp.tool", "in", many(&self.tool)),
            ("net.addr", "cidr", many(&self.addr_cidr)),
        ] {
            if let Some(values) = vals {
                let (field, kind) = super::fields::kind_of(field).expect("exception fields are in the field table");
                all.push(RawCond::Test { field, kind, op, values });
            }
        }
        if let Some(c) = &self.condition {
            all.push(c.clone());
        }
        if all.is_empty() {
            return Err(format!("exception for {} names no server, path_glob, proc_name, tool, addr_cidr or condition (it would silence the rule everywhere: set `enabled: false` instead)", self.rule));
        }
        Ok(RawCond::All(all))
    }
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    id: String,
    description: String,
    severity: Severity,
    action: Action,
    event: OneOrMany,
    #[serde(default)]
    condition: Option<RawCond>,
    output: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    kernel: Option<KernelDoc>,
    #[serde(default)]
    fixtures: FixturesDoc,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KernelDoc {
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    dirs: Vec<String>,
    /// Executables (globs) whose exec by a tracked process the kernel kills.
    #[serde(default)]
    executables: Vec<String>,
    /// Globs of paths left out of `files` (e.g. public keys next to private ones).
    #[serde(default)]
    except: Vec<String>,
    /// read, write
    #[serde(default)]
    on: Vec<String>,
    #[serde(default)]
    addrs: Vec<String>,
    #[serde(default)]
    io_uring: bool,
    /// A file in one of the protected directories whose content is a private key is protected
    /// whatever its name (a key renamed to `.pub` before the rescan saw it).
    #[serde(default)]
    secret_content: bool,
    /// Kill a tracked process that opens /proc/PID/{environ,mem,maps,…} of a process outside
    /// its server's tree (checked in the kernel at the open).
    #[serde(default)]
    foreign_proc: bool,
    /// Kill a tracked process that calls ptrace or process_vm_readv/writev on a process
    /// outside its server's tree (checked in the kernel at the syscall's entry).
    #[serde(default)]
    proc_access: bool,
    /// Unix socket files whose connect by a tracked process the kernel kills (checked at the
    /// connect's exit on the socket file reached, whatever name was used).
    #[serde(default)]
    sockets: Vec<String>,
    /// Executables that may connect to `sockets` as their server's root process.
    #[serde(default)]
    root_may_connect: Vec<String>,
    /// Executables that may read `files` as their server's root process (a launcher's own
    /// credentials: the docker CLI's `~/.docker/config.json`).
    #[serde(default)]
    root_may_read: Vec<String>,
    /// Those of `files` the server's root may read while it is still the package runner it
    /// was launched through (npm's `~/.npmrc`: by the exec's argv, the image is `node`).
    #[serde(default)]
    runner_may_read: Vec<String>,
    /// Images a root may run before it execs one of those and keep their allowance
    /// (`env`, `setpriv`: they run no code of the server's).
    #[serde(default)]
    root_via: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FixturesDoc {
    #[serde(default, rename = "match")]
    matches: Vec<serde_yaml::Mapping>,
    #[serde(default)]
    no_match: Vec<serde_yaml::Mapping>,
}

/// Home directories `~/` stands for: every user's from the user database, plus the usual places
/// (so fixtures and users added later match too). Not a shared temp directory an account names
/// as its home (world-writable and sticky, like `/tmp`), nor one above the shipped temp roots
/// (Debian's `sys` has `/dev`, above `/dev/shm`): `~/` taken for those would turn a rule's "not
/// in a home" into "not in /dev/shm". A root added to `@temp_dirs` locally is not known here.
pub fn homes_from_passwd(passwd: &str) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    const TEMP_ROOTS: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/run/user"];
    let shared = |p: &Path| TEMP_ROOTS.iter().any(|t| Path::new(t).starts_with(p)) || std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o1002 == 0o1002);
    let mut h: Vec<String> = crate::sys::users::users(passwd).into_iter().filter(|u| !shared(&u.home)).map(|u| u.home.display().to_string()).collect();
    for d in ["/home/*", "/root"] {
        if !h.iter().any(|x| x == d) {
            h.push(d.into());
        }
    }
    h.sort();
    h.dedup();
    h
}

fn is_mitre(t: &str) -> bool {
    let t = t.strip_prefix("mitre:").unwrap_or(t);
    let b = t.as_bytes();
    b.len() >= 5 && b[0] == b'T' && b[1..5].iter().all(u8::is_ascii_digit) && (b.len() == 5 || (b.len() == 9 && b[5] == b'.' && b[6..].iter().all(u8::is_ascii_digit)))
}

pub fn load_dir(dir: &Path, homes: &[String]) -> Result<RuleSet, LoadError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LoadError { file: dir.into(), line: None, column: None, reason: e.to_string() })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| LoadError { file: f.clone(), line: None, column: None, reason: e.to_string() })?;
        docs.push((f.clone(), text));
    }
    load_texts(&docs, homes)
}

/// Loads rule files given as (name, text).
pub fn load_texts(docs: &[(PathBuf, String)], homes: &[String]) -> Result<RuleSet, LoadError> {
    let mut lists = BTreeMap::new();
    let mut macros = BTreeMap::new();
    let mut parsed = Vec::new();
    let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut grant_at = Vec::new();
    let mut exceptions = Vec::new();
    for (file, text) in docs {
        let doc: FileDoc = serde_yaml::from_str(text).map_err(|e| LoadError {
            file: file.clone(),
            line: e.location().map(|l| l.line()),
            column: e.location().map(|l| l.column()),
            reason: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        })?;
        for (k, v) in doc.lists {
            if lists.insert(k.clone(), v).is_some() {
                return Err(at(file, text, &format!("{k}:"), format!("list {k:?} is defined twice")));
            }
        }
        for (k, v) in doc.macros {
            if macros.insert(k.clone(), v).is_some() {
                return Err(at(file, text, &format!("{k}:"), format!("macro {k:?} is defined twice")));
            }
        }
        for (server, ids) in doc.grants {
            grant_at.push((file, text, server.clone(), ids.clone()));
            grants.entry(server).or_default().extend(ids);
        }
        for x in doc.exceptions {
            exceptions.push((file, text, x));
        }
        parsed.push((file, text, doc.rules));
    }
    let env = Env { lists: &lists, macros: &macros, homes };
    let mut set = RuleSet { rules: Vec::new(), files: docs.iter().map(|(f, _)| f.clone()).collect(), grants, builtin_exceptions: BTreeMap::new(), by_kind: Default::default() };
    let mut disabled: Vec<String> = Vec::new();
    for (file, text, rules) in parsed {
        for r in rules {
            let needle = format!("id: {}", r.id);
            let id = r.id.clone();
            let fail = |reason: String| at(file, text, &needle, format!("rule {id}: {reason}"));
            if !r.enabled {
                disabled.push(r.id.clone());
                continue;
            }
            if set.rules.iter().any(|x: &Rule| x.id == r.id) {
                return Err(fail("id used twice".into()));
            }
            let rule = compile(r, &env, file, line_of(text, &needle).unwrap_or(0)).map_err(fail)?;
            set.rules.push(rule);
        }
    }
    for (file, text, server, ids) in grant_at {
        for id in ids {
            match set.rules.iter().find(|r| r.id == id) {
                None => return Err(at(file, text, &format!("{server}:"), format!("grant for {server}: no rule {id:?}"))),
                Some(r) if !r.grantable() => {
                    return Err(at(file, text, &format!("{server}:"), format!("grant for {server}: rule {id} enforces no files or io_uring (grants lift kernel file and io_uring enforcement)")))
                }
                Some(_) => {}
            }
        }
    }
    for (file, text, x) in exceptions {
        let fail = |reason: String| at(file, text, &format!("rule: {}", x.rule), reason);
        let raw = x.raw().map_err(fail)?;
        let cond = env.compile(&raw, 0).map_err(|e| fail(format!("exception for {}: {e}", x.rule)))?;
        let Some(r) = set.rules.iter_mut().find(|r| r.id == x.rule) else {
            // The daemon's own checks of tool lists know a server, a tool and a finding.
            if crate::toolcheck::BUILTIN_RULES.contains(&x.rule.as_str()) {
                if x.path_glob.is_some() || x.proc_name.is_some() || x.addr_cidr.is_some() {
                    return Err(fail(format!("exception for {}: a tool-list check knows server, tool and condition (server.name, mcp.tool, mcp.finding), not path_glob, proc_name or addr_cidr", x.rule)));
                }
                set.builtin_exceptions.entry(x.rule.clone()).or_default().push(cond);
                continue;
            }
            // A rule switched off (or not shipped on this version) needs no exception.
            if disabled.contains(&x.rule) {
                continue;
            }
            return Err(fail(format!("exception: no rule {:?}", x.rule)));
        };
        if r.kernel.is_some() {
            return Err(fail(format!("exception for {}: the rule is enforced in the kernel; lift it for a server with `grants` instead", x.rule)));
        }
        r.exceptions.push(cond);
    }
    if set.rules.len() > u16::MAX as usize {
        return Err(LoadError { file: PathBuf::new(), line: None, column: None, reason: "too many rules".into() });
    }
    Ok(set)
}

fn compile(r: RuleDoc, env: &Env, file: &Path, line: usize) -> Result<Rule, String> {
    let events = match r.event {
        OneOrMany::One(e) => vec![e],
        OneOrMany::Many(v) => v,
    };
    if let Some(e) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(format!("unknown event {e:?}; one of {}", EVENTS.join(", ")));
    }
    let only = |allowed: &[&str]| events.iter().all(|e| allowed.contains(&e.as_str()));
    let mitre: Vec<String> = r.tags.iter().filter(|t| is_mitre(t)).map(|t| t.trim_start_matches("mitre:").to_string()).collect();
    if mitre.is_empty() {
        return Err("tags need at least one MITRE ATT&CK technique id (e.g. T1552.004)".into());
    }
    let kernel = match r.kernel {
        None => None,
        Some(k) => {
            let on_read = k.on.iter().any(|o| o == "read");
            let on_write = k.on.iter().any(|o| o == "write");
            if let Some(o) = k.on.iter().find(|o| *o != "read" && *o != "write") {
                return Err(format!("kernel.on: {o:?} is not read or write"));
            }
            if (!k.files.is_empty() || !k.dirs.is_empty()) && !only(&["open"]) {
                return Err("kernel.files/dirs apply to open rules only".into());
            }
            if !k.files.is_empty() && !on_read && !on_write {
                return Err("kernel.files needs `on: [read]` and/or `[write]`".into());
            }
            if !k.executables.is_empty() && !only(&["exec"]) {
                return Err("kernel.executables apply to exec rules only".into());
            }
            if !k.addrs.is_empty() && !only(&["connect", "send"]) {
                return Err("kernel.addrs apply to connect/send rules only".into());
            }
            if k.foreign_proc && !only(&["open"]) {
                return Err("kernel.foreign_proc applies to open rules only".into());
            }
            if k.proc_access && !only(&["proc_access"]) {
                return Err("kernel.proc_access applies to proc_access rules only".into());
            }
            if !k.sockets.is_empty() && (!only(&["connect"]) || r.action != Action::Kill) {
                return Err("kernel.sockets apply to connect rules with action kill (a connect cannot be refused by socket file)".into());
            }
            if !k.root_may_connect.is_empty() && k.sockets.is_empty() {
                return Err("kernel.root_may_connect needs kernel.sockets".into());
            }
            if !k.root_may_read.is_empty() && (k.files.is_empty() || !on_read) {
                return Err("kernel.root_may_read needs kernel.files with `on: [read]`".into());
            }
            if !k.runner_may_read.is_empty() && !on_read {
                return Err("kernel.runner_may_read needs kernel.files with `on: [read]`".into());
            }
            let files = env.values(&k.files, true)?;
            let runner_may_read = env.values(&k.runner_may_read, true)?;
            if let Some(f) = runner_may_read.iter().find(|f| !files.contains(f)) {
                return Err(format!("kernel.runner_may_read names {f}, which is not in kernel.files"));
            }
            if !k.root_via.is_empty() && k.root_may_connect.is_empty() && k.root_may_read.is_empty() && k.runner_may_read.is_empty() {
                return Err("kernel.root_via needs kernel.root_may_connect, root_may_read or runner_may_read".into());
            }
            if k.io_uring && !only(&["io_uring"]) {
                return Err("kernel.io_uring applies to io_uring rules only".into());
            }
            if r.action == Action::Alert {
                return Err("a `kernel:` section enforces; use action kill or deny (or drop the section)".into());
            }
            let addrs = env.values(&k.addrs, false)?.iter().map(|a| Cidr::parse(a)).collect::<Result<_, _>>()?;
            let except = env.values(&k.except, true)?.iter().map(|g| crate::rules::glob::Glob::new(g, true)).collect::<Result<Vec<_>, _>>()?.into();
            Some(KernelSpec { executables: env.values(&k.executables, true)?, files, dirs: env.values(&k.dirs, true)?, except, on_read, on_write, addrs, io_uring: k.io_uring, secret_content: k.secret_content, foreign_proc: k.foreign_proc, proc_access: k.proc_access, sockets: env.values(&k.sockets, true)?, root_may_connect: env.values(&k.root_may_connect, true)?, root_may_read: env.values(&k.root_may_read, true)?, runner_may_read, root_via: env.values(&k.root_via, true)? })
        }
    };
    let net_deny = only(&["connect", "send"]) && kernel.as_ref().is_some_and(|k| !k.addrs.is_empty());
    let file_deny = only(&["open"]) && kernel.as_ref().is_some_and(|k| !k.files.is_empty() || k.foreign_proc);
    let exec_deny = only(&["exec"]) && kernel.as_ref().is_some_and(|k| !k.executables.is_empty());
    if r.action == Action::Deny && !net_deny && !file_deny && !exec_deny {
        return Err("deny works on connect/send with `kernel: {addrs: …}` (cgroup sock_addr), on open with `kernel: {files: …}` and on exec with `kernel: {executables: …}` (BPF-LSM, else kill); use kill for other events".into());
    }
    let cond = match &r.condition {
        Some(c) => env.compile(c, 0)?,
        None => super::cond::Cond::All(vec![]),
    };
    let fixtures = |v: &[serde_yaml::Mapping]| v.iter().map(Ctx::from_fixture).collect::<Result<Vec<_>, _>>();
    let mut used = super::FieldSet::default();
    cond.fields(&mut used);
    Ok(Rule {
        sees_failed_execs: used.contains("exec.ok"),
        exceptions: Vec::new(),
        output: Template::parse(&r.output)?,
        fixtures_match: fixtures(&r.fixtures.matches)?,
        fixtures_no_match: fixtures(&r.fixtures.no_match)?,
        id: r.id,
        description: r.description,
        severity: r.severity,
        action: r.action,
        events,
        cond,
        tags: r.tags,
        mitre,
        kernel,
        file: file.to_path_buf(),
        line,
    })
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.trim_start().trim_start_matches("- ").starts_with(needle)).map(|i| i + 1)
}

fn at(file: &Path, text: &str, needle: &str, reason: String) -> LoadError {
    LoadError { file: file.to_path_buf(), line: line_of(text, needle), column: None, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_temp_directory_is_no_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home/u");
        let shared = dir.path().join("drop");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        let passwd = format!("tmpd:x:5:5::/tmp:/bin/sh\nsys:x:3:3::/dev:/usr/sbin/nologin\nd:x:6:6::{}:/bin/sh\nu:x:1001:1001::{}:/bin/sh\n", shared.display(), home.display());
        let homes = homes_from_passwd(&passwd);
        assert!(homes.contains(&home.display().to_string()), "{homes:?}");
        for h in ["/tmp", "/dev", shared.to_str().unwrap()] {
            assert!(!homes.iter().any(|x| x == h), "{h} in {homes:?}");
        }
    }

    fn load(text: &str) -> Result<RuleSet, LoadError> {
        load_texts(&[(PathBuf::from("t.yaml"), text.to_string())], &["/home/*".to_string(), "/srv/u".to_string()])
    }

    const OK: &str = r#"
lists:
  keys: ["~/.ssh/id_*"]
macros:
  reads: {file.access: {in: [read, read_write]}}
rules:
  - id: key-read
    description: d
    severity: critical
    action: kill
    event: open
    condition:
      all:
        - file.path: {glob: "@keys"}
        - not: {file.path: {suffix: .pub}}
        - macro: reads
    kernel: {files: ["@keys"], on: [read]}
    output: "{proc.exe} read {file.path}"
    tags: [credential_access, T1552.004]
    fixtures:
      match:
        - {event: open, file.path: /srv/u/.ssh/id_rsa, file.access: [read]}
      no_match:
        - {event: open, file.path: /home/a/.ssh/id_rsa.pub, file.access: [read]}
        - {event: exec, file.path: /home/a/.ssh/id_rsa}
"#;

    #[test]
    fn socket_kills_are_connect_rules_that_kill() {
        let rule = |action: &str, event: &str, kernel: &str| format!("rules:\n  - id: e\n    description: d\n    severity: high\n    action: {action}\n    event: {event}\n    condition: {{net.family: {{equals: unix}}}}\n    kernel: {kernel}\n    output: o\n    tags: [T1610]\n");
        assert!(load(&rule("kill", "connect", "{sockets: [/run/docker.sock], root_may_connect: [/usr/bin/docker]}")).is_ok());
        let e = load(&rule("deny", "connect", "{sockets: [/run/docker.sock]}")).err().unwrap();
        assert!(e.reason.contains("kernel.sockets"), "{e:?}");
        let e = load(&rule("kill", "open", "{sockets: [/run/docker.sock]}")).err().unwrap();
        assert!(e.reason.contains("kernel.sockets"), "{e:?}");
        let e = load(&rule("kill", "connect", "{root_may_connect: [/usr/bin/docker]}")).err().unwrap();
        assert!(e.reason.contains("root_may_connect"), "{e:?}");
        assert!(load(&rule("kill", "connect", "{sockets: [/run/docker.sock], root_may_connect: [/usr/bin/docker], root_via: [/usr/bin/env]}")).is_ok());
        let e = load(&rule("kill", "connect", "{sockets: [/run/docker.sock], root_via: [/usr/bin/env]}")).err().unwrap();
        assert!(e.reason.contains("root_via"), "{e:?}");
    }

    #[test]
    fn root_readers_read_the_rules_own_files() {
        let rule = |kernel: &str| format!("rules:\n  - id: e\n    description: d\n    severity: high\n    action: deny\n    event: open\n    condition: {{file.path: {{glob: /x}}}}\n    kernel: {kernel}\n    output: o\n    tags: [T1552.001]\n");
        assert!(load(&rule("{files: [~/.docker/config.json], on: [read], root_may_read: [/usr/bin/docker]}")).is_ok());
        let e = load(&rule("{files: [~/.docker/config.json], on: [write], root_may_read: [/usr/bin/docker]}")).err().unwrap();
        assert!(e.reason.contains("root_may_read"), "{e:?}");
        let e = load(&rule("{dirs: [~/.docker], on: [write], root_may_read: [/usr/bin/docker]}")).err().unwrap();
        assert!(e.reason.contains("root_may_read"), "{e:?}");
    }

    #[test]
    fn a_runner_may_read_only_the_rules_own_files() {
        let rule = |kernel: &str| format!("rules:\n  - id: e\n    description: d\n    severity: high\n    action: deny\n    event: open\n    condition: {{file.path: {{glob: /x}}}}\n    kernel: {kernel}\n    output: o\n    tags: [T1552.001]\n");
        assert!(load(&rule("{files: [~/.npmrc, ~/.pypirc], on: [read], runner_may_read: [~/.npmrc], root_via: [/usr/bin/uvx]}")).is_ok());
        let e = load(&rule("{files: [~/.pypirc], on: [read], runner_may_read: [~/.npmrc]}")).err().unwrap();
        assert!(e.reason.contains("not in kernel.files"), "{e:?}");
        let e = load(&rule("{files: [~/.npmrc], on: [write], runner_may_read: [~/.npmrc]}")).err().unwrap();
        assert!(e.reason.contains("runner_may_read"), "{e:?}");
    }

    #[test]
    fn loads_and_runs_fixtures() {
        let set = load(OK).unwrap();
        assert_eq!(set.rules.len(), 1);
        assert!(set.check_fixtures().is_empty(), "{:?}", set.check_fixtures());
        let k = set.rules[0].kernel.as_ref().unwrap();
        assert_eq!(k.files, vec!["/home/*/.ssh/id_*", "/srv/u/.ssh/id_*"]);
        assert_eq!(set.rules[0].mitre, vec!["T1552.004"]);
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let bad = OK.replace("file.path: {suffix: .pub}", "file.pth: {suffix: .pub}");
        let e = load(&bad).unwrap_err();
        assert_eq!(e.line, Some(15), "{e}");
        assert!(e.to_string().starts_with("t.yaml:15:") && e.reason.contains("file.pth"), "{e}");

        let e = load(&OK.replace("\"@keys\"}", "\"@nokeys\"}")).unwrap_err();
        assert!(e.reason.contains("unknown list @nokeys") && e.line == Some(7), "{e}");
        let e = load(&OK.replace("T1552.004", "secrets")).unwrap_err();
        assert!(e.reason.contains("MITRE"), "{e}");
        let e = load(&OK.replace("action: kill", "action: deny").replace("    kernel: {files: [\"@keys\"], on: [read]}\n", "")).unwrap_err();
        assert!(e.reason.contains("deny works on connect"), "{e}");
        let e = load(&OK.replace("severity: critical", "severity: huge")).unwrap_err();
        assert!(e.line == Some(9) && e.reason.contains("unknown variant"), "{e}");
    }

    #[test]
    fn failing_fixture_is_reported() {
        let set = load(&OK.replace("/srv/u/.ssh/id_rsa,", "/srv/u/.ssh/known_hosts,")).unwrap();
        let f = set.check_fixtures();
        assert_eq!(f.len(), 1);
        assert!(f[0].1.contains("match fixture #1 did not match"), "{f:?}");
    }

    #[test]
    fn exceptions_silence_one_rule_for_one_server_and_path() {
        let alert = OK.replace("action: kill", "action: alert").replace("    kernel: {files: [\"@keys\"], on: [read]}\n", "");
        let site = "exceptions:\n  - {rule: key-read, server: deploy, path_glob: [\"~/.ssh/id_deploy*\"]}\n";
        let set = load_texts(&[(PathBuf::from("a.yaml"), alert.clone()), (PathBuf::from("local.yaml"), site.into())], &["/home/*".to_string()]).unwrap();
        let ev = |server: &str, path: &str| {
            let mut c = Ctx::default();
            c.str("event", "open");
            c.str("server.name", server.to_string());
            c.str("file.path", path.to_string());
            c.set("file.access", super::super::Val::List(vec!["read".into()]));
            c
        };
        let r = &set.rules[0];
        assert!(!r.matches(&ev("deploy", "/home/a/.ssh/id_deploy")), "excepted");
        assert!(r.matches(&ev("deploy", "/home/a/.ssh/id_rsa")), "other path");
        assert!(r.matches(&ev("web", "/home/a/.ssh/id_deploy")), "other server");
        let e = load_texts(&[(PathBuf::from("a.yaml"), alert.clone()), (PathBuf::from("l.yaml"), "exceptions:\n  - {rule: nope, server: x}\n".into())], &["/home/*".to_string()]).unwrap_err();
        assert!(e.reason.contains("no rule") && e.to_string().starts_with("l.yaml"), "{e}");
        let e = load_texts(&[(PathBuf::from("a.yaml"), alert), (PathBuf::from("l.yaml"), "exceptions:\n  - {rule: key-read}\n".into())], &["/home/*".to_string()]).unwrap_err();
        assert!(e.reason.contains("names no server"), "{e}");
        let e = load_texts(&[(PathBuf::from("a.yaml"), OK.into()), (PathBuf::from("l.yaml"), site.into())], &["/home/*".to_string()]).unwrap_err();
        assert!(e.reason.contains("grants"), "kernel rules are lifted by grants: {e}");
    }

    #[test]
    fn exceptions_silence_tool_checks_for_one_server_and_tool() {
        use crate::toolcheck::alert_ctx;
        let site = r#"
exceptions:
  # Our docs server names the wiki's tools on purpose.
  - {rule: mcp.tool_poisoning, server: docs, tool: search_docs, condition: {mcp.finding: {equals: cross_server_reference}}}
  - {rule: mcp.tool_set_changed, server: nightly}
  - {rule: mcp.tool_name_collision, server: [gh, git], tool: status}
"#;
        let set = load_texts(&[(PathBuf::from("local.yaml"), site.into())], &["/home/*".to_string()]).unwrap();
        let p = |server, tool, finding| set.silenced("mcp.tool_poisoning", &alert_ctx(server, Some(tool), Some(finding)));
        assert!(p("docs", "search_docs", "cross_server_reference"), "the excepted server, tool and finding");
        assert!(!p("docs", "search_docs", "hidden_tag"), "another finding of the same tool");
        assert!(!p("docs", "fetch_page", "cross_server_reference"), "another tool of the same server");
        assert!(!p("wiki", "search_docs", "cross_server_reference"), "the same tool name on another server");
        assert!(set.silenced("mcp.tool_set_changed", &alert_ctx("nightly", None, None)));
        assert!(!set.silenced("mcp.tool_set_changed", &alert_ctx("stable", None, None)));
        assert!(!set.silenced("mcp.tool_poisoning", &alert_ctx("nightly", Some("x"), Some("hidden_tag"))), "an exception names one rule");
        assert!(set.silenced("mcp.tool_name_collision", &alert_ctx("gh", Some("status"), None)));
        assert!(!set.silenced("mcp.tool_name_collision", &alert_ctx("evil", Some("status"), None)));
        let e = load_texts(&[(PathBuf::from("l.yaml"), "exceptions:\n  - rule: mcp.tool_poisoning\n    path_glob: /x\n".into())], &[]).unwrap_err();
        assert!(e.reason.contains("not path_glob") && e.line == Some(2), "{e}");
        let e = load_texts(&[(PathBuf::from("l.yaml"), "exceptions:\n  - {rule: mcp.tool_poisoning}\n".into())], &[]).unwrap_err();
        assert!(e.reason.contains("names no server"), "{e}");
    }
}
