//! Zero-config discovery decisions. The kernel tracks provisionally, at exec, every process whose
//! comm is a configured MCP command or whose parent is an MCP client (`CANDIDATE_COMMS`); this
//! stage decides what each one is:
//! - its exec matches a server in a client config → tracked under the configured name. The exec
//!   is judged by the event's own filename and argv (the kernel copies the new image's argv),
//!   not by /proc, which may already show a later image of the launch or a rewritten title;
//! - a child of an MCP client with pipes on stdin and stdout → sniffed: tracked while its first
//!   stdin message is awaited; an MCP `initialize` makes it a server named from the handshake and
//!   its command line, anything else (or silence) drops it;
//! - otherwise dropped at once.
//! Handshake discovery reaches further: any process with pipes on stdin and stdout whose first
//! stdin read opened a JSON object (the kernel tracked it at that read) is a server if that
//! first line is an MCP `initialize`, under the highest ancestor on the same streams; anything
//! else is dropped before any record names it.
//! At start-up, running processes that match a config are taken too. And on every tick (and at
//! start-up) a process listening on a local URL that a config names is taken under that name
//! (`sockets.rs`): again after a restart, since its new socket is a new listener.
use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use monitor_common::{candidate, STDIO_CHUNK};
use serde_json::{json, Value};

use super::{
    clients::{runners::{self, RunnerLaunch}, ClientConfigs, ConfiguredServer, ExecView},
    container::{self, Container},
    sockets::UrlWatch,
};
use crate::{
    sys::procfs,
    tracker::{Discovery, ServerInfo},
};

/// MCP client programs by comm (their children are sniffed).
pub const DEFAULT_CLIENT_COMMS: &[&str] =
    &["claude", "Claude", "cursor", "Cursor", "code", "Code", "code-insiders", "windsurf", "Windsurf", "codex", "goose", "zed", "zed-editor"];

/// How long a sniffed process may stay silent before it is dropped.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// `url`: the configured URL it listens on (a `Discovery::Url` match). `runner`: what the
    /// configured runner (`uvx`, `npx`, `docker run`…) runs, for `found`.
    Track { pid: u32, name: String, how: Discovery, client: Option<String>, config: Option<String>, url: Option<String>, runner: Option<RunnerLaunch> },
    /// `parent`: the client's pid and comm, for "how was it found". `how`: `Sniffed` (a known
    /// client's child) or `Handshake` (any parent; its first stdin read opened a JSON object).
    Sniff { pid: u32, name: String, how: Discovery, parent: (u32, String), runner: Option<RunnerLaunch> },
    Drop { pid: u32, reason: &'static str },
}

pub struct Discoverer {
    pub configs: ClientConfigs,
    client_comms: Vec<String>,
    /// Sniffing servers and when they give up.
    sniffing: HashMap<u32, Instant>,
    /// How each discovered root was found (by root pid), for `found` in records and `servers`.
    origins: HashMap<u32, Value>,
    /// URL entries and the listeners they were matched to.
    urls: UrlWatch,
    /// Handshake candidates whose first seen stdin read opened a JSON object, by pid, until its
    /// bytes arrive.
    handshakes: HashMap<u32, PendingHandshake>,
}

struct PendingHandshake {
    /// The hooks were detached at its exec: the read seen may not be its first.
    late: bool,
    at: Instant,
    /// Its stdin bytes so far: a reader that takes a byte at a time (a shell's `read`) has only
    /// `{` after its first read.
    bytes: Vec<u8>,
    /// What /proc said of it when its first read was seen. The decision waits for the end of the
    /// line, and a short session (a shell server that reads a byte at a time, answers one call
    /// and exits) can be over by then: its queued events still need a server.
    seen: Seen,
}

/// A handshake candidate as /proc showed it at its first read: taken by the ring reader, on its
/// own thread, as it takes the record ([`snapshot`]). The pipeline may get to the record a
/// hundred milliseconds later on a busy machine (it was setting up the `docker run` CLI's
/// server meanwhile), and a container that answered one call and exited was gone by then, its
/// shim with it: its events were discarded unattributed (their in-kernel kills unreported).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Its stdin and stdout (from the kernel's record, not /proc).
    pub streams: (u64, u64),
    /// What it would be tracked as: the highest ancestor on the same streams (a Sniff).
    intent: Option<Intent>,
    /// The container it runs in.
    pub container: Option<Container>,
    /// Its parent, image and command line.
    pub proc: Option<procfs::ProcInfo>,
    /// The same of the root `intent` names (itself, or the runner above it on its streams).
    /// A server can be killed, or end its session, before the pipeline decides on it; its
    /// parent reaps it later, and until then /proc shows a zombie with no command line and no
    /// image: the server is tracked with its command line from here.
    pub root: Option<procfs::ProcInfo>,
}

/// What the stdin bytes of a handshake candidate settle.
#[derive(Debug, PartialEq)]
pub enum HandshakeBytes {
    /// No whole line yet: wait for its next read.
    Wait,
    /// Decided; `bytes` is all it read so far, to stand in for this record's data when more
    /// than one read made it up.
    Decided { intent: Intent, bytes: Option<Vec<u8>>, seen: Seen },
}

/// How long a handshake's first line may take to follow its first read (its bytes are the next
/// record of the same syscall, the rest of the line its next reads; a loss or a reader that
/// stalls delays them forever: it is then tracked as an unidentified server).
const HANDSHAKE_BYTES_WITHIN: Duration = Duration::from_secs(5);

/// Whether the first bytes a process read from its stdin are an MCP `initialize` request: its
/// first line parsed as JSON-RPC, or, when the capture holds no whole line, both markers.
pub fn is_initialize(data: &[u8]) -> bool {
    first_message(data).is_some_and(|v| v["method"] == "initialize" && !v["id"].is_null())
        || (!data.contains(&b'\n') && has_markers(data, &[b"\"method\":\"initialize\"", b"\"method\": \"initialize\""]))
}

/// Whether the bytes start with a JSON-RPC 2.0 request or notification (any method): what a
/// server whose first reads went unseen (it exec'd while the hooks were detached) reads next.
pub fn is_jsonrpc_message(data: &[u8]) -> bool {
    first_message(data).is_some_and(|v| v["method"].is_string()) || (!data.contains(&b'\n') && has_markers(data, &[b"\"method\":", b"\"method\" :", b"\"method\": "]))
}

/// The first line, parsed, when it is JSON-RPC 2.0 (the whole capture when it holds no newline).
fn first_message(data: &[u8]) -> Option<Value> {
    let line = data.split(|&b| b == b'\n').next().unwrap_or(data);
    serde_json::from_slice::<Value>(line).ok().filter(|v| v["jsonrpc"] == "2.0")
}

/// A capture cut short (no whole line): `"jsonrpc"` and one of `needles`.
fn has_markers(data: &[u8], needles: &[&[u8]]) -> bool {
    let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
    has(b"\"jsonrpc\"") && needles.iter().any(|n| has(n))
}


/// Origins kept before the entries of exited roots are pruned.
const MAX_ORIGINS: usize = 4096;

/// The command line as a client typed it: without `mcpmon exec … --` (the wrapper execs what
/// follows), without `env` and its settings (`env FOO=1 node srv.js`), and without the
/// interpreter of a shebang script when the script is a runner (`/usr/bin/env node
/// /usr/bin/npx …`, `python3 /venv/bin/pipx run …`).
pub(crate) fn past_interpreter(argv: &[String]) -> &[String] {
    // Borrowed, not allocated: asked at every exec of a server's root, and for each event of a
    // root whose exec the daemon did not see (`proc.is_runner`).
    let base = crate::discovery::clients::matching::base;
    let argv = match (argv.first().map(String::as_str).map(base), argv.get(1).map(String::as_str)) {
        (Some("mcpmon"), Some("exec")) => argv.iter().position(|a| a == "--").map_or(argv, |i| &argv[i + 1..]),
        _ => argv,
    };
    let argv = match argv.first().map(String::as_str).map(base) {
        Some("env") => {
            let n = argv[1..].iter().take_while(|a| a.contains('=') || a.starts_with('-')).count();
            &argv[1 + n..]
        }
        _ => argv,
    };
    match argv.first().map(String::as_str).map(base) {
        Some(i) if (i == "node" || i.starts_with("python")) && runners::launch(&argv[1..]).is_some() => &argv[1..],
        _ => argv,
    }
}

/// What a runner runs, by the configured command line.
fn configured_runner(s: &ConfiguredServer) -> Option<RunnerLaunch> {
    let (cmd, args) = s.effective()?;
    runners::launch(&[vec![cmd], args].concat())
}

fn command_name(argv: &[String], exe: Option<&str>) -> String {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let argv = past_interpreter(argv);
    // A runner's launch is named after what it runs: the package, or the image of a container.
    if let Some(l) = runners::launch(argv) {
        return if matches!(l.runner, "docker" | "podman") { l.target } else { base(&l.target) };
    }
    // A shell that runs a command line (`sh -c "node srv.js stdio; exit $?"`, how agents wrap a
    // server): name its first command.
    let shell = |s: &str| matches!(s, "sh" | "bash" | "dash" | "zsh");
    if let (Some(sh), Some("-c"), Some(script)) = (argv.first().map(|a| base(a)), argv.get(1).map(String::as_str), argv.get(2)) {
        if shell(&sh) {
            let words: Vec<String> = script
                .split_whitespace()
                .take_while(|w| !w.starts_with(['|', '&', ';']))
                .map(|w| w.trim_end_matches([';', '&', '|']).to_string())
                .filter(|w| !w.is_empty() && w != "exec")
                .collect();
            if !words.is_empty() {
                return command_name(&words, exe);
            }
        }
    }
    // Interpreters run scripts: name the script, not python/node.
    let interp = |s: &str| s.starts_with("python") || s == "node" || s == "deno" || s == "bun" || s == "uv" || shell(s);
    match argv.first().map(|a| base(a)) {
        Some(a) if interp(&a) => runners::interpreted_script(argv).map(runners::script_program).unwrap_or(a),
        Some(a) => a,
        None => exe.map(base).unwrap_or_else(|| "?".into()),
    }
}

impl Discoverer {
    pub fn new(passwd: PathBuf, projects: Vec<PathBuf>, extra_clients: &[String]) -> Self {
        let mut client_comms: Vec<String> = DEFAULT_CLIENT_COMMS.iter().map(|s| s.to_string()).collect();
        client_comms.extend(extra_clients.iter().cloned());
        Self { configs: ClientConfigs::new(passwd, projects), client_comms, sniffing: HashMap::new(), origins: HashMap::new(), urls: UrlWatch::default(), handshakes: HashMap::new() }
    }

    /// Remembers how the process about to be tracked was found.
    pub fn note_origin(&mut self, intent: &Intent) {
        let (pid, v) = match intent {
            Intent::Track { pid, how, client, config, url: None, .. } => (*pid, json!({"how": how, "client": client, "config": config})),
            Intent::Track { pid, how, client, config, url: Some(url), .. } => (*pid, json!({"how": how, "client": client, "config": config, "url": url})),
            Intent::Sniff { pid, how, parent: (ppid, comm), .. } => (*pid, json!({"how": how, "handshake_under": {"pid": ppid, "comm": comm}})),
            Intent::Drop { .. } => return,
        };
        // A launch through a runner says what it runs (`"runner": {"runner": "docker", "target":
        // "mcp/time"}`): the package, or the image, which the command's name alone does not.
        let v = match intent {
            Intent::Track { runner: Some(r), .. } | Intent::Sniff { runner: Some(r), .. } => {
                let mut v = v;
                v["runner"] = json!(r);
                v
            }
            _ => v,
        };
        if self.origins.len() >= MAX_ORIGINS {
            self.origins.retain(|p, _| procfs::exists(*p));
        }
        self.origins.insert(pid, v);
    }

    /// How a tracked server was found: which client's config and file, a handshake under which
    /// parent, `mcpmon exec`, or `--track-pid`.
    pub fn found(&self, s: &ServerInfo) -> Value {
        match s.how {
            Discovery::Exec => json!({"how": s.how, "via": "mcpmon exec"}),
            Discovery::TrackPid => json!({"how": s.how, "via": "--track-pid or a track request"}),
            _ => self.origins.get(&s.root_pid).cloned().unwrap_or_else(|| json!({"how": s.how, "client": s.client, "config": s.config})),
        }
    }

    /// Re-reads configs if they changed; returns the kernel's candidate comms when it did.
    pub fn refresh(&mut self) -> Option<Vec<(String, u32)>> {
        if !self.configs.refresh() {
            return None;
        }
        let mut c: Vec<(String, u32)> = self.configs.commands().into_iter().map(|n| (n, candidate::CONFIGURED)).collect();
        c.extend(self.client_comms.iter().map(|n| (n.clone(), candidate::CLIENT)));
        Some(c)
    }

    /// What to do with a process the kernel tracked provisionally at exec. `exec`: the file the
    /// exec named and the new image's argv, from the event. They are the exec's own: /proc is
    /// read later and may show a later image of the same launch, or a rewritten title (node's
    /// `process.title`: npx becomes `npm exec PKG …`, its `-y` gone).
    pub fn on_provisional_exec(&self, pid: u32, exec: Option<(&str, &[String])>) -> Intent {
        let Some(info) = procfs::process_info(pid) else {
            tracing::debug!(pid, still_there = procfs::exists(pid), "discovery: unreadable in /proc");
            return Intent::Drop { pid, reason: "exited before it could be examined" };
        };
        let filename = exec.map(|e| e.0).filter(|f| !f.is_empty());
        let argv = exec.map(|e| e.1).filter(|a| !a.is_empty()).unwrap_or(&info.argv);
        if let Some(s) = self.configs.match_exec(&ExecView::new(filename, info.exe.as_deref(), argv, Some(pid))) {
            return Intent::Track {
                pid,
                name: s.name.clone(),
                how: Discovery::Config,
                client: Some(s.client.to_string()),
                config: Some(s.config.display().to_string()),
                url: None,
                runner: configured_runner(s),
            };
        }
        let parent = procfs::process_info(info.ppid).map(|p| p.comm).unwrap_or_default();
        let piped = procfs::fd_stream_inode(pid, 0).is_some() && procfs::fd_stream_inode(pid, 1).is_some();
        if piped && self.client_comms.iter().any(|c| c.as_str() == parent.as_str()) {
            // Named from the exec's own argv: /proc may show a later image (`node`) or a title.
            return Intent::Sniff {
                pid,
                name: command_name(argv, info.exe.as_deref()),
                how: Discovery::Sniffed,
                parent: (info.ppid, parent),
                runner: runners::launch(past_interpreter(argv)),
            };
        }
        tracing::debug!(pid, ?filename, ?argv, exe = ?info.exe, "discovery: exec matches no configured server");
        Intent::Drop { pid, reason: if piped { "not a configured server" } else { "stdio is not a pipe" } }
    }

    /// The kernel tracked `pid` provisionally: its first stdin read opened a JSON object. The
    /// bytes follow as its next stdio record ([`Self::handshake_bytes`]). `seen`: /proc at the
    /// read, as the ring reader found it; taken here when the record came without it.
    pub fn handshake_seen(&mut self, pid: u32, ppid: u32, streams: (u64, u64), late: bool, seen: Option<Seen>) {
        if self.handshakes.len() >= MAX_ORIGINS {
            self.handshakes.retain(|p, _| procfs::exists(*p));
        }
        let seen = seen.unwrap_or_else(|| snapshot(pid, ppid, streams));
        tracing::debug!(pid, late, alive = seen.proc.is_some(), container = ?seen.container.as_ref().map(|c| &c.id), "discovery: a handshake candidate read JSON");
        self.handshakes.insert(pid, PendingHandshake { late, at: Instant::now(), bytes: vec![], seen });
    }

    /// The first bytes a handshake candidate read from its stdin (None: `pid` is not one): an
    /// MCP `initialize` makes it a sniffed server; anything else (`jq` reading a JSON file from
    /// a pipe) drops it before any record names it.
    pub fn handshake_bytes(&mut self, pid: u32, data: &[u8]) -> Option<HandshakeBytes> {
        let h = self.handshakes.get_mut(&pid)?;
        let first = h.bytes.is_empty();
        h.bytes.extend_from_slice(data);
        if !h.bytes.contains(&b'\n') && h.bytes.len() < STDIO_CHUNK {
            return Some(HandshakeBytes::Wait);
        }
        let h = self.handshakes.remove(&pid)?;
        let bytes = (!first).then_some(h.bytes);
        let all = bytes.as_deref().unwrap_or(data);
        // Late (the hooks came on after its exec), its initialize may have gone by unseen: any
        // JSON-RPC message (`notifications/initialized`, `tools/list`) is the session going on.
        let mut seen = h.seen;
        let intent = if is_initialize(all) || (h.late && is_jsonrpc_message(all)) {
            // As it was at its first read, not as it is now: by now it may have exited (/proc
            // gone, or a zombie with an empty command line that would leave it unnamed and its
            // scope without roots).
            seen.intent.take().unwrap_or(Intent::Drop { pid, reason: "exited before it could be examined" })
        } else {
            Intent::Drop { pid, reason: "its first stdin message is not an MCP initialize" }
        };
        Some(HandshakeBytes::Decided { intent, bytes, seen })
    }

    /// Whether `pid` is a handshake candidate that read JSON and is not decided on yet.
    pub fn handshake_pending(&self, pid: u32) -> bool {
        self.handshakes.contains_key(&pid)
    }

    /// Handshake candidates whose first line has not come within `HANDSHAKE_BYTES_WITHIN`,
    /// taken out of the waiting set. One still running comes with what to track it as: waiting
    /// proves nothing (a reader that takes `{` and stalls, or bytes lost in a flood), and
    /// dropping it would untrack it in the kernel, so a process could leave the monitor's sight
    /// by waiting out the daemon. One that has exited comes without (it is dropped).
    pub fn handshakes_expired(&mut self) -> Vec<(u32, Option<(Intent, Seen)>)> {
        let due: Vec<u32> = self.handshakes.iter().filter(|(_, h)| h.at.elapsed() > HANDSHAKE_BYTES_WITHIN).map(|(p, _)| *p).collect();
        let mut out = Vec::with_capacity(due.len());
        for pid in due {
            let Some(mut h) = self.handshakes.remove(&pid) else { continue };
            if !procfs::exists(pid) {
                out.push((pid, None));
                continue;
            }
            // As at its first read; /proc now when that showed nothing to track it as.
            let (in_ino, out_ino) = h.seen.streams;
            let intent = h.seen.intent.take().filter(|i| !matches!(i, Intent::Drop { .. })).unwrap_or_else(|| handshake_root(pid, in_ino, out_ino));
            out.push((pid, Some((intent, h.seen))));
        }
        out
    }

    /// Running processes that match a configured server.
    pub fn startup_scan(&self) -> Vec<Intent> {
        let me = std::process::id();
        let mut out = vec![];
        let mut pids = procfs::pids();
        pids.sort();
        for pid in pids {
            if pid == me {
                continue;
            }
            let Some(info) = procfs::process_info(pid) else { continue };
            if let Some(s) = self.configs.match_exec(&ExecView::new(None, info.exe.as_deref(), &info.argv, Some(pid))) {
                out.push(Intent::Track {
                    pid,
                    name: s.name.clone(),
                    how: Discovery::Procfs,
                    client: Some(s.client.to_string()),
                    config: Some(s.config.display().to_string()),
                    url: None,
                    runner: configured_runner(s),
                });
            }
        }
        out
    }

    /// Processes listening on a local URL a config names, not matched before: a server that
    /// started, or restarted (a new socket), since the last scan. `tracked`: whether a pid is
    /// under watch. Costs nothing without URL entries, two /proc/net reads without changes.
    pub fn url_scan(&mut self, tracked: impl Fn(u32) -> bool) -> Vec<Intent> {
        self.urls
            .scan(self.configs.remote(), tracked)
            .into_iter()
            .map(|m| {
                let s = m.server;
                tracing::info!(server = %s.name, url = s.url.as_deref().unwrap_or(""), config = %s.config.display(), pid = m.pid, listener = %m.listener, "discovery: a configured URL's listener");
                Intent::Track {
                    pid: m.pid,
                    name: s.name.clone(),
                    how: Discovery::Url,
                    client: Some(s.client.to_string()),
                    config: Some(s.config.display().to_string()),
                    url: s.url.clone(),
                    runner: None,
                }
            })
            .collect()
    }

    pub fn sniff_started(&mut self, server_id: u32) {
        self.sniffing.insert(server_id, Instant::now() + SNIFF_TIMEOUT);
    }

    pub fn is_sniffing(&self, server_id: u32) -> bool {
        self.sniffing.contains_key(&server_id)
    }

    /// The first message a sniffed server read settles it: true = it is an MCP server.
    pub fn sniff_result(&mut self, server_id: u32) {
        self.sniffing.remove(&server_id);
    }

    /// Sniffed servers that stayed silent too long.
    pub fn expired(&mut self) -> Vec<u32> {
        let now = Instant::now();
        let gone: Vec<u32> = self.sniffing.iter().filter(|(_, t)| **t <= now).map(|(id, _)| *id).collect();
        for id in &gone {
            self.sniffing.remove(id);
        }
        gone
    }
}

/// A process the kernel tracked provisionally because its first read of its stdin (pipe or
/// socket `in_ino`; stdout `out_ino`) opened a JSON object, whatever its parent: sniffed for
/// an MCP `initialize`. The server's root is the highest ancestor on the same two streams: a
/// runner or shell the agent started (`npx -y pkg` → `sh -c` → `node`) passes its stdio down,
/// and the tree is named once, after what the runner runs. As /proc shows it now.
pub fn handshake_root(pid: u32, in_ino: u64, out_ino: u64) -> Intent {
    match procfs::process_info(pid) {
        Some(info) => sniff_from(info, in_ino, out_ino).0,
        None => Intent::Drop { pid, reason: "exited before it could be examined" },
    }
}

/// [`handshake_root`] from the candidate's /proc entry, read once by the caller; with the
/// root's entry.
fn sniff_from(mut root: procfs::ProcInfo, in_ino: u64, out_ino: u64) -> (Intent, procfs::ProcInfo) {
    let me = std::process::id();
    for _ in 0..8 {
        let p = root.ppid;
        if p <= 1 || p == me || procfs::fd_stream_inode(p, 0) != Some(in_ino) || procfs::fd_stream_inode(p, 1) != Some(out_ino) {
            break;
        }
        match procfs::process_info(p) {
            Some(i) => root = i,
            None => break,
        }
    }
    let parent = procfs::process_info(root.ppid).map(|p| p.comm).unwrap_or_default();
    // The root's current argv: a process that passed the handshake on has exec'd long ago, and
    // a process.title rewrite (npx) still keeps the package name.
    let intent = Intent::Sniff {
        pid: root.pid,
        name: command_name(&root.argv, root.exe.as_deref()),
        how: Discovery::Handshake,
        parent: (root.ppid, parent),
        runner: runners::launch(past_interpreter(&root.argv)),
    };
    (intent, root)
}

/// /proc at a handshake candidate's first read of JSON (`ppid`: its parent as the kernel saw
/// it at the read): what it would be tracked as, its container, its command line.
pub fn snapshot(pid: u32, ppid: u32, streams: (u64, u64)) -> Seen {
    let (in_ino, out_ino) = streams;
    let root = std::path::Path::new(container::DOCKER_ROOT);
    let proc = procfs::process_info(pid);
    let (mut intent, root_info) = proc.clone().map(|info| sniff_from(info, in_ino, out_ino)).unzip();
    let mut container = container::of_pid(pid, root);
    if proc.is_none() {
        // Exited already: a container's first process is still known by its shim, which
        // outlives it (`ppid` is its parent as the kernel saw it at the read).
        // Its parent may be `runc` still, or have exited as well (a zombie's stat still
        // names its own parent): up to three ancestors.
        let mut up = procfs::process_info(ppid);
        for _ in 0..3 {
            let Some(p) = up else { break };
            container = container::of_shim(&p.argv, root);
            if let Some(c) = &container {
                let name = c.image.clone().unwrap_or_else(|| format!("{} container {}", c.engine, &c.id[..12]));
                intent = Some(Intent::Sniff { pid, name, how: Discovery::Handshake, parent: (p.pid, p.comm), runner: None });
                break;
            }
            up = procfs::process_info(p.ppid).filter(|_| p.ppid > 1);
        }
    }
    Seen { streams, intent, container, proc, root: root_info }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_scripts_not_interpreters() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command_name(&v(&["/usr/bin/python3", "-u", "/opt/srv/weather.py"]), None), "weather.py");
        assert_eq!(command_name(&v(&["npx", "-y", "@scope/server-x"]), None), "server-x");
        assert_eq!(command_name(&v(&["/usr/local/bin/mcp-server-time"]), None), "mcp-server-time");
        assert_eq!(command_name(&[], Some("/bin/x")), "x");
        // A shell wrapper is named after the command it runs.
        assert_eq!(command_name(&v(&["/bin/sh", "-c", "node /srv/weather.js stdio; exit $?"]), None), "weather.js");
        assert_eq!(command_name(&v(&["bash", "-c", "exec npx -y @scope/server-x"]), None), "server-x");
        assert_eq!(command_name(&v(&["bash", "/srv/mcp.sh"]), None), "mcp.sh");
        assert_eq!(command_name(&v(&["/bin/sh"]), None), "sh");
    }

    /// `mcpmon exec` in a client's config in place of the command: the runner is what it execs.
    #[test]
    fn a_wrapped_runner_is_the_runner() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let argv = v(&["/usr/bin/mcpmon", "exec", "--name", "gh", "--", "docker", "run", "-i", "--rm", "ghcr.io/github/github-mcp-server"]);
        let l = runners::launch(past_interpreter(&argv)).unwrap();
        assert_eq!((l.runner, l.target.as_str()), ("docker", "ghcr.io/github/github-mcp-server"));
        assert_eq!(past_interpreter(&v(&["mcpmon", "exec", "--name", "x"])), &v(&["mcpmon", "exec", "--name", "x"])[..], "no command: unchanged");
    }

    /// A server sniffed under a client is named after what its runner runs, whichever image of
    /// the launch the name is read from, and never after the runner or its flags' values.
    #[test]
    fn names_what_a_runner_runs() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command_name(&v(&["uvx", "--from", "/w/mcp_server_time-1-py3-none-any.whl", "mcp-server-time"]), None), "mcp-server-time");
        assert_eq!(command_name(&v(&["/venv/bin/uv", "tool", "uvx", "mcp-server-git"]), None), "mcp-server-git");
        assert_eq!(command_name(&v(&["/usr/bin/python3", "/venv/bin/pipx", "run", "--spec", "/w/x.whl", "mcp-server-time"]), None), "mcp-server-time");
        assert_eq!(command_name(&v(&["/usr/bin/env", "node", "/usr/bin/npx", "-y", "@scope/server-x"]), None), "server-x");
        assert_eq!(command_name(&v(&["bunx", "@modelcontextprotocol/server-filesystem", "/tmp"]), None), "server-filesystem");
        assert_eq!(command_name(&v(&["docker", "run", "-i", "--rm", "-e", "GITHUB_TOKEN", "ghcr.io/github/github-mcp-server"]), None), "ghcr.io/github/github-mcp-server");
        // A script that is not a runner is still named after itself.
        assert_eq!(command_name(&v(&["/usr/bin/env", "node", "/opt/srv/index.js"]), None), "srv");
        // A package's entry point run by node is named after its package (runners.rs).
        let fs = "/home/u/.npm/lib/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js";
        assert_eq!(command_name(&v(&["node", fs, "/home/u/proj"]), None), "server-filesystem");
        assert_eq!(command_name(&v(&["/bin/sh", "-c", &format!("node {fs} stdio; exit $?")]), None), "server-filesystem");
        // The MCP quickstart's `uv --directory … run weather.py`: the script, not `run`.
        assert_eq!(command_name(&v(&["uv", "--directory", "/home/u/weather", "run", "weather.py"]), None), "weather.py");
    }

    /// What the SDKs write first, and what a JSON pipeline reads first.
    #[test]
    fn only_an_initialize_request_is_a_handshake() {
        // The TypeScript SDK puts "method" first, the Python SDK "jsonrpc".
        assert!(is_initialize(br#"{"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"a","version":"1"}},"jsonrpc":"2.0","id":0}
"#));
        assert!(is_initialize(br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
"#));
        // A capture without a whole line still counts by its markers.
        assert!(is_initialize(br#"{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientInfo": {"name": "#));
        assert!(!is_initialize(b"{\"a\": 1}\n"));
        assert!(!is_initialize(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}
"#));
        // A notification named initialize (no id) is not a request.
        assert!(!is_initialize(br#"{"jsonrpc":"2.0","method":"initialize"}
"#));
        assert!(!is_initialize(b"{ \"log\": \"initialize\" }\n"));
        // What a late server may read first instead.
        assert!(is_jsonrpc_message(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}
"#));
        assert!(is_jsonrpc_message(br#"{"method":"notifications/initialized","jsonrpc":"2.0"}
"#));
        assert!(!is_jsonrpc_message(b"{\"a\": 1}\n"));
        assert!(!is_jsonrpc_message(br#"{"jsonrpc":"2.0","id":1,"result":{}}
"#));
    }

    /// A reader that takes a byte at a time (a shell script's `read`) is decided on its whole
    /// first line, which then stands in for the record that completed it.
    #[test]
    fn a_handshake_read_in_pieces_is_decided_on_the_whole_line() {
        let mut d = Discoverer::new(PathBuf::from("/nonexistent/passwd"), vec![], &[]);
        let me = std::process::id();
        let line = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}
"#;
        d.handshake_seen(me, 0, (1, 2), false, None);
        for b in &line[..line.len() - 1] {
            assert_eq!(d.handshake_bytes(me, &[*b]), Some(HandshakeBytes::Wait));
        }
        match d.handshake_bytes(me, b"\n") {
            Some(HandshakeBytes::Decided { intent: Intent::Sniff { how: Discovery::Handshake, .. }, bytes: Some(b), .. }) => assert_eq!(b, line.to_vec()),
            other => panic!("{other:?}"),
        }
        assert_eq!(d.handshake_bytes(me, b"{"), None, "decided once");
        // Text, or JSON that is not JSON-RPC: dropped.
        d.handshake_seen(me, 0, (1, 2), true, None);
        assert!(matches!(d.handshake_bytes(me, b"{\"a\": 1}\n"), Some(HandshakeBytes::Decided { intent: Intent::Drop { .. }, bytes: None, .. })));
        // Late, a later JSON-RPC message counts.
        d.handshake_seen(me, 0, (1, 2), true, None);
        let later = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}
"#;
        assert!(matches!(d.handshake_bytes(me, later), Some(HandshakeBytes::Decided { intent: Intent::Sniff { .. }, bytes: None, .. })));
        d.handshake_seen(me, 0, (1, 2), false, None);
        assert!(matches!(d.handshake_bytes(me, later), Some(HandshakeBytes::Decided { intent: Intent::Drop { .. }, .. })));
    }

    /// `sleep 30`, once its argv is in place: `spawn` returns at exec's close-on-exec, before
    /// the new image's command line is set up.
    fn sleep_30() -> (std::process::Child, u32) {
        let c = std::process::Command::new("/bin/sleep").arg("30").spawn().unwrap();
        let pid = c.id();
        while procfs::process_info(pid).is_some_and(|p| p.argv.is_empty()) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        (c, pid)
    }

    /// A server whose whole session ends before its first line does (a shell server answering one
    /// call) is decided on what /proc showed at its first read: its queued events need a server.
    #[test]
    fn a_handshake_is_decided_on_its_first_read_when_the_process_is_gone() {
        let mut d = Discoverer::new(PathBuf::from("/nonexistent/passwd"), vec![], &[]);
        let (mut c, pid) = sleep_30();
        d.handshake_seen(pid, 0, (7, 8), false, None);
        c.kill().unwrap();
        c.wait().unwrap();
        match d.handshake_bytes(pid, b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{}}\n") {
            Some(HandshakeBytes::Decided { intent: Intent::Sniff { pid: p, name, how: Discovery::Handshake, .. }, seen, .. }) => {
                assert_eq!(p, pid);
                assert_eq!(name, "sleep");
                assert_eq!(seen.streams, (7, 8));
            }
            other => panic!("{other:?}"),
        }
        // Gone before its first read was seen: nothing to go on.
        d.handshake_seen(pid, 0, (7, 8), false, None);
        assert!(matches!(d.handshake_bytes(pid, b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{}}\n"), Some(HandshakeBytes::Decided { intent: Intent::Drop { .. }, .. })));
    }

    /// A server killed (or done) before the pipeline decides on it is a zombie until its
    /// parent reaps it: /proc then has its pid but no command line and no image. It is named
    /// and described as it was at its first read.
    #[test]
    fn a_handshake_is_decided_on_its_first_read_when_the_process_is_a_zombie() {
        let mut d = Discoverer::new(PathBuf::from("/nonexistent/passwd"), vec![], &[]);
        let (mut c, pid) = sleep_30();
        d.handshake_seen(pid, 0, (7, 8), false, None);
        // SAFETY: kill(2) on our own child, which is not reaped until `wait` below.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        while procfs::process_info(pid).is_some_and(|p| !p.argv.is_empty()) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(procfs::exists(pid), "a zombie until reaped");
        let decided = d.handshake_bytes(pid, b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{}}\n");
        c.wait().unwrap();
        match decided {
            Some(HandshakeBytes::Decided { intent: Intent::Sniff { pid: p, name, .. }, seen, .. }) => {
                assert_eq!(p, pid);
                assert_eq!(name, "sleep");
                assert_eq!(seen.root.map(|r| r.argv), Some(vec!["/bin/sleep".to_string(), "30".to_string()]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unconfigured_unpiped_processes_are_dropped() {
        let d = Discoverer::new(PathBuf::from("/nonexistent/passwd"), vec![], &[]);
        let mut c = std::process::Command::new("/bin/sleep").arg("5").stdin(std::process::Stdio::null()).spawn().unwrap();
        assert!(matches!(d.on_provisional_exec(c.id(), None), Intent::Drop { .. }));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(matches!(d.on_provisional_exec(c.id(), None), Intent::Drop { reason: "exited before it could be examined", .. }));
    }
}
