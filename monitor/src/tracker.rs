//! Owns the kernel's `TRACKED` map and the registry of servers (tracked roots).
//!
//! Only the daemon writes roots into the map; the kernel adds children on fork and removes a
//! process when it exits. There is deliberately no "untrack" operation: a tracked process cannot
//! get itself out of sight, whatever it sends to the control socket.
use std::{collections::HashMap, time::SystemTime};

use aya::maps::{Array as BpfArray, HashMap as BpfHashMap, MapData, MapError};
use monitor_common::{comm_filter_of, comm_key, stdio_dir, Comm, CommFilter, SockStream, StdioPipe, TrackInfo, PROVISIONAL_SERVER};
use serde::Serialize;
use tokio::sync::oneshot;

/// How a server came under watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// `mcpmon exec --name NAME -- CMD` asked over the control socket.
    Exec,
    /// `mcpmon run --track-pid PID` or a `track` request for another pid.
    TrackPid,
    /// Its command line matches a server in an MCP client's config (seen at exec).
    Config,
    /// Its command line matches a configured server, found running at start-up.
    Procfs,
    /// A child of an MCP client that opened with an MCP `initialize` on its stdin.
    Sniffed,
    /// Listening on the local URL (`http`/`sse`) a client config names it by.
    Url,
    /// Any process with pipes on stdin and stdout whose first stdin read was an MCP
    /// `initialize`, whatever its parent (an agent on an SDK, a framework, a script).
    Handshake,
}

impl Discovery {
    /// The serialized name (the same as serde's).
    pub fn as_str(self) -> &'static str {
        match self {
            Discovery::Exec => "exec",
            Discovery::TrackPid => "track_pid",
            Discovery::Config => "config",
            Discovery::Procfs => "procfs",
            Discovery::Sniffed => "sniffed",
            Discovery::Url => "url",
            Discovery::Handshake => "handshake",
        }
    }
}

/// A request to put a process (and its current descendants) under watch.
#[derive(Debug)]
pub struct TrackRequest {
    pub pid: u32,
    pub name: String,
    pub how: Discovery,
    /// uid of whoever asked (already checked against the target by the caller).
    pub requester_uid: u32,
    pub reply: oneshot::Sender<Result<TrackAck, TrackError>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrackAck {
    pub server_id: u32,
    pub name: String,
    /// The pid was already tracked (possibly under another server): it stays where it was.
    pub already_tracked: bool,
    /// Processes put in the map (the root and its descendants found in procfs).
    pub tracked_pids: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("pid {0} does not exist")]
    NoSuchProcess(u32),
    #[error("refusing to track pid {0}: {1}")]
    Refused(u32, &'static str),
    #[error("tracked-process map: {0}")]
    Map(#[from] MapError),
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("attaching the syscall hooks: {0}")]
    Sensors(String),
}

/// What the daemon knows about one tracked server.
#[derive(Clone, Debug, Serialize)]
pub struct ServerInfo {
    pub id: u32,
    /// Shared with every event line and rule context of the server (no copy per event).
    pub name: std::sync::Arc<str>,
    pub root_pid: u32,
    pub how: Discovery,
    pub uid: u32,
    #[serde(with = "crate::output::rfc3339")]
    pub since: SystemTime,
    /// Inodes of the stdin/stdout pipes whose bytes the kernel captures (JSON-RPC).
    pub stdio_inodes: Vec<u64>,
    /// The MCP client that runs it (from its config, or the handshake's clientInfo).
    pub client: Option<String>,
    /// The client config that names it.
    pub config: Option<String>,
    /// Taken provisionally: waiting for an MCP handshake on its stdin.
    pub sniffing: bool,
    pub command: Vec<String>,
    /// Containers whose processes joined this server: a `docker run -i` CLI's container, whose
    /// processes run under the engine's shim, not below the CLI.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<std::sync::Arc<crate::discovery::container::Container>>,
}

pub struct Tracker {
    map: BpfHashMap<MapData, u32, TrackInfo>,
    pipes: BpfHashMap<MapData, u64, StdioPipe>,
    /// Stdio pipes the daemon could not register (`STDIO_PIPES` full): servers not captured.
    pub stdio_pipes_full: u64,
    candidates: BpfHashMap<MapData, Comm, u32>,
    /// `COMM_FILTER`: the bits of `candidates`' keys, which exec tests before a lookup.
    comm_filter: BpfArray<MapData, CommFilter>,
    /// `HTTP_SOCKS`: sockets the servers accepted (the kernel adds and removes them; the daemon
    /// only clears a forgotten server's, whose last close it may not have seen).
    http_socks: Option<BpfHashMap<MapData, u64, SockStream>>,
    /// By server id, looked up for every kernel event (foldhash: see process_tree.rs).
    servers: foldhash::HashMap<u32, ServerInfo>,
    /// The last servers forgotten, newest last: records that trail a server's exit (an open
    /// gate refusal comes on a channel of its own, and may be taken after the exit that ended
    /// the server) still name it. Ids are never reused.
    gone: std::collections::VecDeque<ServerInfo>,
    next_id: u32,
    daemon_pid: u32,
    /// The hooks' filter: a pid's byte is set before the pid goes into `map` (probes/maybe.rs).
    maybe: crate::probes::maybe::MaybeTracked,
}

/// How many forgotten servers [`Tracker::server_or_gone`] still names.
const GONE_KEPT: usize = 64;

/// The kernel maps the tracker owns, as the loader hands them over.
pub struct TrackerMaps {
    pub tracked: BpfHashMap<MapData, u32, TrackInfo>,
    pub pipes: BpfHashMap<MapData, u64, StdioPipe>,
    pub candidates: BpfHashMap<MapData, Comm, u32>,
    pub comm_filter: BpfArray<MapData, CommFilter>,
    pub http_socks: BpfHashMap<MapData, u64, SockStream>,
    pub maybe: crate::probes::maybe::MaybeTracked,
}

impl Tracker {
    pub fn from_maps(m: TrackerMaps) -> Self {
        Self {
            map: m.tracked,
            pipes: m.pipes,
            stdio_pipes_full: 0,
            candidates: m.candidates,
            comm_filter: m.comm_filter,
            http_socks: Some(m.http_socks),
            servers: Default::default(),
            gone: Default::default(),
            next_id: 1,
            daemon_pid: std::process::id(),
            maybe: m.maybe,
        }
    }

    /// Puts `pid` into `TRACKED`, its filter byte first (else the hooks could skip it).
    fn insert(&mut self, pid: u32, info: TrackInfo) -> Result<(), aya::maps::MapError> {
        self.maybe.set(pid).map_err(|io_error| aya::maps::MapError::from(aya::sys::SyscallError { call: "bpf_prog_test_run (mcpm_maybe)", io_error }))?;
        self.map.insert(pid, info, 0)
    }

    /// Removes the sockets of `server` from `HTTP_SOCKS` (a process that exits closes its sockets
    /// without a `close` call the hook sees).
    fn forget_sockets(&mut self, server: u32) {
        let Some(m) = self.http_socks.as_mut() else { return };
        let gone: Vec<u64> = m.iter().filter_map(Result::ok).filter(|(_, v)| v.server_id == server).map(|(k, _)| k).collect();
        for k in gone {
            let _ = m.remove(&k);
        }
    }

    /// Sets the comms the kernel tracks provisionally at exec: `(name, candidate bits)`.
    pub fn set_candidates(&mut self, entries: &[(String, u32)]) {
        let want: HashMap<Comm, u32> = entries.iter().fold(HashMap::new(), |mut m, (n, f)| {
            *m.entry(comm_key(n)).or_default() |= f;
            m
        });
        // The keys go in before their bits, and old keys out after the bits that pass to them
        // are gone: a set bit may lead to a missing key (a lookup for nothing), while a key whose
        // bit is clear would be a comm the kernel skips.
        for (k, f) in &want {
            if let Err(e) = self.candidates.insert(k, f, 0) {
                tracing::warn!(error = %e, "candidate map full");
            }
        }
        // One element, written whole: bits set before and after stay set while it is copied.
        if let Err(e) = self.comm_filter.set(0, comm_filter_of(want.keys()), 0) {
            tracing::warn!(error = %e, "comm filter not written: configured commands and clients' children go unseen at exec");
        }
        let old: Vec<Comm> = self.candidates.keys().filter_map(Result::ok).collect();
        for k in old.iter().filter(|k| !want.contains_key(*k)) {
            let _ = self.candidates.remove(k);
        }
    }

    pub fn server_mut(&mut self, id: u32) -> Option<&mut ServerInfo> {
        self.servers.get_mut(&id)
    }

    /// Drops a provisional or rejected tree: the root and every descendant still carrying
    /// `server_id` (or the provisional id) leave the map. Only the daemon does this, never on a
    /// tracked process's request.
    pub fn drop_tree(&mut self, pid: u32, server_id: u32) {
        for p in std::iter::once(pid).chain(crate::sys::procfs::descendants(pid)) {
            if self.lookup(p).is_some_and(|i| i.server_id == server_id || i.server_id == PROVISIONAL_SERVER) {
                let _ = self.map.remove(&p);
            }
        }
        if let Some(s) = self.servers.remove(&server_id) {
            for ino in &s.stdio_inodes {
                let _ = self.pipes.remove(ino);
            }
        }
        self.forget_sockets(server_id);
        self.sweep_exec_pipes(|_, owner| owner == pid);
    }

    /// Removes the stdio entries the kernel made at a provisional exec (`owner_tgid` set) that no
    /// server claimed and whose owner `gone` says is no longer a candidate. A claimed entry leaves
    /// with its server (`forget`).
    fn sweep_exec_pipes(&mut self, gone: impl Fn(&Self, u32) -> bool) {
        let claimed: std::collections::HashSet<u64> = self.servers.values().flat_map(|s| s.stdio_inodes.iter().copied()).collect();
        let stale: Vec<u64> = self
            .pipes
            .iter()
            .filter_map(Result::ok)
            .filter(|(ino, p)| p.owner_tgid != 0 && !claimed.contains(ino) && gone(self, p.owner_tgid))
            .map(|(ino, _)| ino)
            .collect();
        for ino in stale {
            let _ = self.pipes.remove(&ino);
        }
    }

    /// Drops the kernel-made stdio entries of candidates that left the map without being adopted
    /// (exited before the daemon decided, or their exec event was lost). Run periodically.
    pub fn sweep_unclaimed_pipes(&mut self) {
        self.sweep_exec_pipes(|t, owner| t.lookup(owner).is_none());
    }

    /// Registers the root's stdin and stdout pipes (matched by inode in the kernel, whatever fd
    /// numbers the server later reads and writes them through).
    fn register_stdio(&mut self, pid: u32, server_id: u32) -> Vec<u64> {
        let mut inodes = vec![];
        let (i, o) = crate::sys::procfs::stdio_streams(pid);
        for (ino, dir) in [(i, stdio_dir::IN), (o, stdio_dir::OUT)] {
            let Some(ino) = ino else { continue };
            // The kernel registered it at the provisional exec and has been counting its bytes
            // since: keep that count (the record numbering starts at the first byte).
            if self.pipes.get(&ino, 0).is_ok_and(|p| p.dir == dir) {
                inodes.push(ino);
                continue;
            }
            let pipe = StdioPipe { server_id, dir, ..Default::default() };
            match self.pipes.insert(ino, pipe, 0) {
                Ok(()) => inodes.push(ino),
                Err(e) => {
                    self.stdio_pipes_full += 1;
                    tracing::error!(server_id, ino, error = %e, "stdio pipe not registered: this server's JSON-RPC is not captured");
                }
            }
        }
        inodes
    }

    pub fn server(&self, id: u32) -> Option<&ServerInfo> {
        self.servers.get(&id)
    }

    /// A live server, or one of the last forgotten (`GONE_KEPT`): for naming a record that
    /// trails its exit.
    pub fn server_or_gone(&self, id: u32) -> Option<&ServerInfo> {
        self.servers.get(&id).or_else(|| self.gone.iter().rev().find(|s| s.id == id))
    }

    pub fn servers(&self) -> impl Iterator<Item = &ServerInfo> {
        self.servers.values()
    }

    /// True when the kernel tracks no process at all (every tree has exited).
    pub fn map_is_empty(&self) -> bool {
        self.map.keys().next().is_none()
    }

    /// Tracking info of a pid as the kernel has it.
    pub fn lookup(&self, pid: u32) -> Option<TrackInfo> {
        self.map.get(&pid, 0).ok()
    }

    /// Whether the hooks' filter lets `pid` through to `TRACKED` (its `MAYBE_TRACKED` byte).
    pub fn may_be_tracked(&self, pid: u32) -> std::io::Result<bool> {
        self.maybe.get(pid)
    }

    /// Puts `pid` under watch as a new server, then its descendants (found through procfs).
    ///
    /// The root goes into the map first, so anything it forks from then on is inherited in the
    /// kernel; the procfs walk is repeated until it finds nothing new, which closes the window for
    /// children forked by descendants during the walk.
    pub fn track(&mut self, pid: u32, name: &str, how: Discovery, uid: u32) -> Result<TrackAck, TrackError> {
        if pid == 0 || pid == 1 {
            return Err(TrackError::Refused(pid, "pid 0 and 1 are never tracked"));
        }
        if pid == self.daemon_pid {
            return Err(TrackError::Refused(pid, "the daemon never traces itself"));
        }
        if let Some(info) = self.lookup(pid).filter(|i| i.server_id != PROVISIONAL_SERVER) {
            let name = self.servers.get(&info.server_id).map(|s| s.name.clone()).unwrap_or_default();
            return Ok(TrackAck { server_id: info.server_id, name: name.to_string(), already_tracked: true, tracked_pids: vec![] });
        }
        if !crate::sys::procfs::exists(pid) {
            return Err(TrackError::NoSuchProcess(pid));
        }
        let id = self.next_id;
        self.next_id += 1;
        let info = TrackInfo { server_id: id, root_tgid: pid };
        self.insert(pid, info)?;
        let mut tracked = vec![pid];
        // `mcpmon exec` asks for itself before it execs the server: it has no children to find,
        // and skipping the procfs walk keeps a burst of starting servers cheap.
        if how != Discovery::Exec {
            self.take_descendants(pid, info, &mut tracked);
        }
        let stdio_inodes = self.register_stdio(pid, id);
        self.servers.insert(
            id,
            ServerInfo {
                id,
                name: name.into(),
                root_pid: pid,
                how,
                uid,
                since: SystemTime::now(),
                stdio_inodes,
                client: None,
                config: None,
                sniffing: false,
                command: crate::sys::procfs::process_info(pid).map(|i| i.argv).unwrap_or_default(),
                containers: vec![],
            },
        );
        Ok(TrackAck { server_id: id, name: name.to_string(), already_tracked: false, tracked_pids: tracked })
    }

    /// A server whose process exited, and was reaped, before the daemon decided on it (a
    /// handshake's session that ended within the pipeline's lag): its events are still queued
    /// and need a server. Nothing goes into the map (the pid may be another process's by now);
    /// `streams`, its stdin and stdout as the kernel recorded them, are released at its retiring.
    pub fn track_ended(&mut self, pid: u32, name: &str, how: Discovery, uid: u32, command: Vec<String>, streams: (u64, u64)) -> TrackAck {
        let id = self.next_id;
        self.next_id += 1;
        let stdio_inodes = [streams.0, streams.1].into_iter().filter(|i| *i != 0 && self.pipes.get(i, 0).is_ok()).collect();
        let since = SystemTime::now();
        let info = ServerInfo { id, name: name.into(), root_pid: pid, how, uid, since, stdio_inodes, client: None, config: None, sniffing: false, command, containers: vec![] };
        self.servers.insert(id, info);
        TrackAck { server_id: id, name: name.to_string(), already_tracked: false, tracked_pids: vec![] }
    }

    /// Puts `pid` (tracked provisionally: a container's first process, found by its handshake)
    /// and its descendants into server `id`, whose tree does not hold it (its CLI is the root).
    /// The stdio streams the kernel registered for it are dropped: the JSON-RPC they carry is the
    /// one the server's root relays, already captured there, and would be counted twice.
    pub fn join(&mut self, pid: u32, id: u32, stdin: u64) -> Result<Vec<u32>, TrackError> {
        let root = self.servers.get(&id).map(|s| s.root_pid).ok_or(TrackError::Refused(pid, "the server to join is gone"))?;
        if pid == self.daemon_pid || pid <= 1 {
            return Err(TrackError::Refused(pid, "never tracked"));
        }
        let info = TrackInfo { server_id: id, root_tgid: root };
        self.insert(pid, info)?;
        // Decided after its session ended (its first line comes long after its first read): the
        // exit hook has already removed it, and an entry put back now would track whatever
        // reuses the pid. Its events still queued join the server through the process tree.
        if !crate::sys::procfs::exists(pid) {
            let _ = self.map.remove(&pid);
        }
        let mut tracked = vec![pid];
        self.take_descendants(pid, info, &mut tracked);
        // Its stdin no longer; its stdout until its first reply pairs it with its CLI
        // ([`Self::unrelay`]).
        let _ = self.pipes.remove(&stdin);
        Ok(tracked)
    }

    /// Stops the kernel capturing a joined container's stream `ino`.
    pub fn unrelay(&mut self, ino: u64) {
        let _ = self.pipes.remove(&ino);
    }

    /// Moves the tracked processes `pids` (a container that joined the wrong server) to server
    /// `id`. A pid the map no longer holds (exited) is not put back.
    pub fn rehome(&mut self, pids: &[u32], id: u32) {
        let Some(root) = self.servers.get(&id).map(|s| s.root_pid) else { return };
        for &p in pids {
            if self.map.get(&p, 0).is_ok() {
                let _ = self.insert(p, TrackInfo { server_id: id, root_tgid: root });
            }
        }
    }

    /// Puts the current descendants of `pid` (in the map already) under `info`, appending them to
    /// `tracked`: untracked ones and provisional ones, never another server's. Walked again until
    /// a pass adds nothing: a child forked during the walk is found next.
    fn take_descendants(&mut self, pid: u32, info: TrackInfo, tracked: &mut Vec<u32>) {
        let mut walk = true;
        while walk {
            walk = false;
            for child in crate::sys::procfs::descendants(pid) {
                if child == self.daemon_pid || self.lookup(child).is_some_and(|i| i.server_id != PROVISIONAL_SERVER) {
                    continue;
                }
                // A descendant may have exited since the walk: nothing to do then.
                if self.insert(child, info).is_ok() {
                    tracked.push(child);
                    walk = true;
                }
            }
        }
    }

    /// The last process of a server exited: forget it.
    pub fn forget(&mut self, id: u32) -> Option<ServerInfo> {
        let s = self.servers.remove(&id)?;
        for ino in &s.stdio_inodes {
            let _ = self.pipes.remove(ino);
        }
        self.forget_sockets(id);
        if self.gone.len() >= GONE_KEPT {
            self.gone.pop_front();
        }
        self.gone.push_back(s.clone());
        Some(s)
    }
}

#[cfg(test)]
mod discovery_name_tests {
    use super::Discovery;

    #[test]
    fn names_match_serde() {
        for d in [Discovery::Exec, Discovery::TrackPid, Discovery::Config, Discovery::Procfs, Discovery::Sniffed, Discovery::Url, Discovery::Handshake] {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
        }
    }
}
