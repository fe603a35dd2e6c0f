//! MCP client configurations of every user on the host, and matching an exec against them.
//!
//! Read for each user in the user database (so a home outside /home counts too), plus the
//! host-wide managed files; `sources.rs` lists every client, file and format. Projects are those
//! Claude Code knows plus any `--project-root` given to the daemon (and the home itself).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::{Serialize, Serializer};
use serde_json::Value;

pub mod entry;
pub mod jsonc;
pub mod matching;
mod poll;
pub mod runners;
pub mod sources;

pub use matching::ExecView;
use entry::Launch;
use matching::base;
use sources::Source;

use crate::sys::users::{users, User};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfiguredServer {
    pub client: &'static str,
    pub config: PathBuf,
    /// The user whose config names it; None for host-wide (managed) configs.
    pub uid: Option<u32>,
    pub name: String,
    /// Empty for remote servers.
    pub command: String,
    pub args: Vec<String>,
    /// Variables the client sets. Only the names leave the daemon: values are often tokens.
    #[serde(serialize_with = "names_only")]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// A remote server (`http` or `sse` transport): not matched against execs.
    pub url: Option<String>,
    pub transport: &'static str,
}

fn names_only<S: Serializer>(env: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(env.keys())
}

impl ConfiguredServer {
    fn from_entry(src: &Source, uid: Option<u32>, e: entry::Entry) -> Self {
        let mut s = ConfiguredServer {
            client: src.client,
            config: src.path.clone(),
            uid,
            name: e.name,
            command: String::new(),
            args: vec![],
            env: BTreeMap::new(),
            cwd: None,
            url: None,
            transport: "stdio",
        };
        match e.launch {
            Launch::Stdio { command, args, env, cwd } => (s.command, s.args, s.env, s.cwd) = (command, args, env, cwd),
            Launch::Url { url, transport } => (s.url, s.transport) = (Some(url), transport),
        }
        s
    }

    /// The command line that actually runs (None for a remote server): a server already wrapped
    /// in `mcpmon exec … -- CMD` runs as CMD once exec'd.
    pub fn effective(&self) -> Option<(String, Vec<String>)> {
        if self.url.is_some() || self.command.is_empty() {
            return None;
        }
        if base(&self.command) == "mcpmon" && self.args.first().map(String::as_str) == Some("exec") {
            if let Some(i) = self.args.iter().position(|a| a == "--") {
                if let Some((c, rest)) = self.args[i + 1..].split_first() {
                    return Some((c.clone(), rest.to_vec()));
                }
            }
        }
        Some((self.command.clone(), self.args.clone()))
    }

    /// Does this exec (argv as /proc shows it, no kernel filename) run this server?
    pub fn matches(&self, exe: Option<&str>, argv: &[String]) -> bool {
        self.fit(&ExecView::new(None, exe, argv, None)).is_some()
    }
}

/// The projects whose per-project files are read for `user`.
fn projects(user: &User, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut p: Vec<PathBuf> = jsonc::read(&user.home.join(".claude.json"), jsonc::Syntax::Json)
        .ok()
        .flatten()
        .and_then(|v| v.get("projects").and_then(Value::as_object).map(|m| m.keys().map(PathBuf::from).collect()))
        .unwrap_or_default();
    p.push(user.home.clone());
    p.extend(extra.iter().cloned());
    p.sort();
    p.dedup();
    p
}

fn read_sources(srcs: &[Source], uid: Option<u32>, out: &mut Vec<ConfiguredServer>) {
    for src in srcs {
        let v = match jsonc::read(&src.path, src.syntax) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "discovery: skipping a client config");
                continue;
            }
        };
        for keys in src.keys {
            out.extend(entry::entries_at(&v, keys, src.url_means).into_iter().map(|e| ConfiguredServer::from_entry(src, uid, e)));
        }
    }
}

/// All configured servers on the host, re-read when a config file changes.
pub struct ClientConfigs {
    pub servers: Vec<ConfiguredServer>,
    extra_projects: Vec<PathBuf>,
    passwd: PathBuf,
    /// Where host-wide configs live (`/etc`; a temp dir in tests).
    etc: PathBuf,
    /// Every candidate config path, built at the last read and statted each second.
    tree: Option<poll::Tree>,
    /// Stamp of every candidate config path at the last read (None = absent).
    seen: BTreeMap<PathBuf, Option<poll::Stamp>>,
}

impl ClientConfigs {
    pub fn new(passwd: PathBuf, extra_projects: Vec<PathBuf>) -> Self {
        Self::with_etc(passwd, extra_projects, PathBuf::from("/etc"))
    }

    pub fn with_etc(passwd: PathBuf, extra_projects: Vec<PathBuf>, etc: PathBuf) -> Self {
        Self { servers: vec![], passwd, extra_projects, etc, tree: None, seen: BTreeMap::new() }
    }

    /// The users and their projects, and the tree of their candidate paths. The files these come
    /// from are stamped before they are read, so a change while the tree is built is seen next.
    fn walk(&self) -> (Vec<(User, Vec<PathBuf>)>, poll::Tree) {
        let mut pins = vec![(self.passwd.clone(), poll::stamp(&self.passwd))];
        let passwd = std::fs::read_to_string(&self.passwd).unwrap_or_default();
        // Who is a user also depends on whether a home is a directory (`users`), for every line.
        let homes: Vec<&Path> = passwd.lines().filter_map(|l| l.split(':').nth(5)).map(Path::new).filter(|h| h.is_absolute()).collect();
        pins.extend(homes.iter().map(|h| (h.to_path_buf(), poll::stamp(h))));
        let users: Vec<(User, Vec<PathBuf>)> = users(&passwd)
            .into_iter()
            .map(|u| {
                let list = u.home.join(".claude.json");
                pins.push((list.clone(), poll::stamp(&list)));
                let p = projects(&u, &self.extra_projects);
                (u, p)
            })
            .collect();
        let mut t = poll::Tree::default();
        t.file(&self.passwd);
        sources::system_sources(&self.etc).iter().for_each(|s| t.file(&s.path));
        homes.iter().for_each(|h| t.home(h));
        for (u, projects) in &users {
            sources::user_sources(&u.home, projects).iter().for_each(|s| t.file(&s.path));
            sources::user_dirs(&u.home, projects).iter().for_each(|d| t.blocks(d));
        }
        t.changed();
        for (p, s) in pins {
            t.pin(&p, s);
        }
        (users, t)
    }

    /// Re-reads everything if any config appeared, changed or went away. Returns true if it did.
    pub fn refresh(&mut self) -> bool {
        if self.tree.as_mut().is_some_and(|t| !t.changed()) {
            return false;
        }
        let (users, tree) = self.walk();
        let now = tree.files();
        self.tree = Some(tree);
        if now == self.seen {
            return false;
        }
        let mut servers = vec![];
        read_sources(&sources::system_sources(&self.etc), None, &mut servers);
        for (u, projects) in &users {
            read_sources(&sources::user_sources(&u.home, projects), Some(u.uid), &mut servers);
        }
        self.servers = servers;
        self.seen = now;
        true
    }

    /// The configured server an exec runs, if any: the entry that fits it most specifically
    /// (args, env, cwd), the first in config order among equals.
    pub fn match_exec(&self, x: &ExecView) -> Option<&ConfiguredServer> {
        let mut best: Option<(usize, &ConfiguredServer)> = None;
        for s in &self.servers {
            if let Some(score) = s.fit(x) {
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, s));
                }
            }
        }
        best.map(|(_, s)| s)
    }

    /// Basenames of every configured command (the kernel's exec filter).
    pub fn commands(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.servers.iter().filter_map(|s| s.effective()).map(|(c, _)| base(&c).to_string()).collect();
        set.into_iter().collect()
    }

    /// Remote servers, for the HTTP transport.
    pub fn remote(&self) -> impl Iterator<Item = &ConfiguredServer> {
        self.servers.iter().filter(|s| s.url.is_some())
    }
}

#[cfg(test)]
mod tests;
