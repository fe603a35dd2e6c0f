//! MCP client configurations of every user on the host, and matching an exec against them.
//!
//! Read for each user in the user database (so a home outside /home counts too):
//! Claude Desktop `~/.config/Claude/claude_desktop_config.json`, Claude Code `~/.claude.json`
//! (top-level and per-project servers) and each project's `.mcp.json`, Cursor `~/.cursor/mcp.json`
//! and `<project>/.cursor/mcp.json`, VS Code `<project>/.vscode/mcp.json`, the user `mcp.json` and
//! the `mcp.servers` of the user settings, Windsurf `~/.codeium/windsurf/mcp_config.json`.
//! Projects are those Claude Code knows plus any `--project-root` given to the daemon.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfiguredServer {
    pub client: &'static str,
    pub config: PathBuf,
    pub uid: u32,
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
}

impl ConfiguredServer {
    /// The command line that actually runs: a server already wrapped in `mcpmon exec … -- CMD`
    /// runs as CMD once exec'd.
    pub fn effective(&self) -> (String, Vec<String>) {
        if base(&self.command) == "mcpmon" && self.args.first().map(String::as_str) == Some("exec") {
            if let Some(i) = self.args.iter().position(|a| a == "--") {
                if let Some((c, rest)) = self.args[i + 1..].split_first() {
                    return (c.clone(), rest.to_vec());
                }
            }
        }
        (self.command.clone(), self.args.clone())
    }

    /// Does this exec (argv as the kernel saw it) run this server?
    /// The command's basename must match argv[0]'s (or the exe's), and the configured args must
    /// appear in argv in order (launchers such as npx insert their own flags).
    pub fn matches(&self, exe: Option<&str>, argv: &[String]) -> bool {
        let (cmd, args) = self.effective();
        let cmd = base(&cmd);
        // The command is argv[0], or argv[1] when it is a script run by its shebang interpreter
        // (`/usr/bin/python3 /venv/bin/mcp-server-time`).
        let at = if argv.first().is_some_and(|a| base(a) == cmd) || (argv.len() == 1 && exe.map(base) == Some(cmd)) {
            0
        } else if argv.get(1).is_some_and(|a| base(a) == cmd) {
            1
        } else {
            return false;
        };
        let mut it = argv[at + 1..].iter();
        args.iter().all(|a| it.any(|b| b == a))
    }
}

fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// A user from the user database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub home: PathBuf,
}

/// Users with a home directory, from /etc/passwd (`getent`-style file parsing). A home that
/// does not exist yet still counts (a first login, a home mounted later) unless the account
/// cannot log in at all (a system account with a `nologin`/`false` shell and no home).
pub fn users(passwd: &str) -> Vec<User> {
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid = f.get(2)?.parse().ok()?;
            let home = PathBuf::from(f.get(5)?);
            let shell = f.get(6).copied().unwrap_or("");
            let no_login = shell.ends_with("nologin") || shell.ends_with("/false");
            let real = home.is_absolute() && home != Path::new("/") && (home.is_dir() || !no_login);
            real.then_some(User { uid, home })
        })
        .collect()
}

fn servers_in(v: &Value, key: &str, client: &'static str, config: &Path, uid: u32, out: &mut Vec<ConfiguredServer>) {
    let Some(map) = v.get(key).and_then(Value::as_object) else { return };
    for (name, s) in map {
        let Some(command) = s.get("command").and_then(Value::as_str) else { continue }; // remote (url) servers
        let args = s
            .get("args")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        out.push(ConfiguredServer { client, config: config.to_path_buf(), uid, name: name.clone(), command: command.into(), args });
    }
}

/// Reads JSON with `//` comments and trailing commas tolerated (VS Code settings are JSONC).
fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok().or_else(|| serde_json::from_str(&strip_jsonc(&text)).ok())
}

fn strip_jsonc(s: &str) -> String {
    let (mut out, mut in_str, mut chars) = (String::new(), false, s.chars().peekable());
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if c == '/' && chars.peek() == Some(&'/') {
            for n in chars.by_ref() {
                if n == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    // Trailing commas before } or ].
    let mut cleaned = String::with_capacity(out.len());
    let b: Vec<char> = out.chars().collect();
    for (i, &c) in b.iter().enumerate() {
        if c == ',' {
            if let Some(next) = b[i + 1..].iter().find(|c| !c.is_whitespace()) {
                if *next == '}' || *next == ']' {
                    continue;
                }
            }
        }
        cleaned.push(c);
    }
    cleaned
}

/// Every config file that may exist for `user`, with the projects it knows (for change polling).
pub fn config_paths(user: &User, extra_projects: &[PathBuf]) -> Vec<PathBuf> {
    let h = &user.home;
    let mut v = vec![
        h.join(".config/Claude/claude_desktop_config.json"),
        h.join(".claude.json"),
        h.join(".cursor/mcp.json"),
        h.join(".config/Code/User/settings.json"),
        h.join(".config/Code/User/mcp.json"),
        h.join(".codeium/windsurf/mcp_config.json"),
    ];
    for p in projects(user, extra_projects) {
        v.extend([p.join(".mcp.json"), p.join(".cursor/mcp.json"), p.join(".vscode/mcp.json")]);
    }
    v
}

fn projects(user: &User, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut p: Vec<PathBuf> = read_json(&user.home.join(".claude.json"))
        .and_then(|v| v.get("projects").and_then(Value::as_object).map(|m| m.keys().map(PathBuf::from).collect()))
        .unwrap_or_default();
    p.push(user.home.clone());
    p.extend(extra.iter().cloned());
    p.sort();
    p.dedup();
    p
}

/// Every stdio server configured for `user`.
pub fn read_user(user: &User, extra_projects: &[PathBuf]) -> Vec<ConfiguredServer> {
    let (h, uid, mut out) = (&user.home, user.uid, Vec::new());
    let desktop = h.join(".config/Claude/claude_desktop_config.json");
    if let Some(v) = read_json(&desktop) {
        servers_in(&v, "mcpServers", "claude-desktop", &desktop, uid, &mut out);
    }
    let code = h.join(".claude.json");
    if let Some(v) = read_json(&code) {
        servers_in(&v, "mcpServers", "claude-code", &code, uid, &mut out);
        if let Some(projects) = v.get("projects").and_then(Value::as_object) {
            for p in projects.values() {
                servers_in(p, "mcpServers", "claude-code", &code, uid, &mut out);
            }
        }
    }
    for (path, key, client) in [
        (h.join(".cursor/mcp.json"), "mcpServers", "cursor"),
        (h.join(".config/Code/User/mcp.json"), "servers", "vscode"),
        (h.join(".codeium/windsurf/mcp_config.json"), "mcpServers", "windsurf"),
    ] {
        if let Some(v) = read_json(&path) {
            servers_in(&v, key, client, &path, uid, &mut out);
        }
    }
    let settings = h.join(".config/Code/User/settings.json");
    if let Some(mcp) = read_json(&settings).and_then(|v| v.get("mcp").cloned()) {
        servers_in(&mcp, "servers", "vscode", &settings, uid, &mut out);
    }
    let mut done = vec![h.join(".cursor/mcp.json")];
    for p in projects(user, extra_projects) {
        for (path, key, client) in [
            (p.join(".mcp.json"), "mcpServers", "claude-code"),
            (p.join(".cursor/mcp.json"), "mcpServers", "cursor"),
            (p.join(".vscode/mcp.json"), "servers", "vscode"),
        ] {
            // The home directory is also a project: read each file once.
            if done.contains(&path) {
                continue;
            }
            if let Some(v) = read_json(&path) {
                servers_in(&v, key, client, &path, uid, &mut out);
            }
            done.push(path);
        }
    }
    out
}

/// All configured servers on the host, re-read when a config file changes.
#[derive(Default)]
pub struct ClientConfigs {
    pub servers: Vec<ConfiguredServer>,
    extra_projects: Vec<PathBuf>,
    passwd: PathBuf,
    /// mtime of every candidate config path at the last read (None = absent).
    seen: BTreeMap<PathBuf, Option<SystemTime>>,
}

impl ClientConfigs {
    pub fn new(passwd: PathBuf, extra_projects: Vec<PathBuf>) -> Self {
        Self { passwd, extra_projects, ..Default::default() }
    }

    fn snapshot(&self) -> BTreeMap<PathBuf, Option<SystemTime>> {
        let passwd = std::fs::read_to_string(&self.passwd).unwrap_or_default();
        let mut m = BTreeMap::new();
        m.insert(self.passwd.clone(), std::fs::metadata(&self.passwd).and_then(|m| m.modified()).ok());
        for u in users(&passwd) {
            for p in config_paths(&u, &self.extra_projects) {
                let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                m.insert(p, t);
            }
        }
        m
    }

    /// Re-reads everything if any config appeared, changed or went away. Returns true if it did.
    pub fn refresh(&mut self) -> bool {
        let now = self.snapshot();
        if now == self.seen {
            return false;
        }
        let passwd = std::fs::read_to_string(&self.passwd).unwrap_or_default();
        self.servers = users(&passwd).iter().flat_map(|u| read_user(u, &self.extra_projects)).collect();
        self.seen = now;
        true
    }

    /// The configured server an exec runs, if any (the first match, in config order).
    pub fn match_exec(&self, exe: Option<&str>, argv: &[String]) -> Option<&ConfiguredServer> {
        self.servers.iter().find(|s| s.matches(exe, argv))
    }

    /// Basenames of every configured command (the kernel's exec filter).
    pub fn commands(&self) -> Vec<String> {
        let mut v: Vec<String> = self.servers.iter().map(|s| base(&s.effective().0).to_string()).collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
#[path = "clients_tests.rs"]
mod tests;
