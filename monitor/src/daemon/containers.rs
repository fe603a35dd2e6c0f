//! A server in a container (`docker run -i IMAGE`), one tree under its runner. The client starts
//! the CLI, which is tracked as the server (by config or by its own handshake) and holds the
//! client's stdio; the container's processes run under the engine's shim, below no tracked
//! process. The container's first process reads the initialize the CLI relayed through the
//! shim's pipes, so handshake discovery finds it; here it joins the CLI's server instead of
//! becoming a second one: same server id, same tool calls in flight, its events carrying the
//! container (engine, id, image, name).
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use super::Pipeline;
use crate::{
    discovery::{
        adopt::{Intent, Seen},
        clients::runners,
        container::{self, Container},
    },
    output::Record,
    sys::{procfs, procmem},
    tracker::Discovery,
};
use monitor_common::PROVISIONAL_SERVER;

/// Whether `argv` runs a container like `c`: a `docker run` (or podman) of its image; without
/// the image (not Docker's record), a runner of the same engine.
fn runs(argv: &[String], c: &Container) -> bool {
    let Some(l) = runners::launch(crate::discovery::adopt::past_interpreter(argv)) else { return false };
    match &c.image {
        Some(img) => matches!(l.runner, "docker" | "podman") && container::same_image(&l.target, img),
        None => l.runner == c.engine || (c.engine == "containerd" && l.runner == "docker"),
    }
}

/// Whether process `pid`'s memory holds container `c`'s id (a full one: a shorter string could
/// be anything's).
fn holds_id(pid: u32, c: &Container) -> bool {
    if c.id.len() != 64 {
        return false;
    }
    let t = Instant::now();
    let found = procmem::holds(pid, c.id.as_bytes(), CLI_MEMORY_BUDGET);
    tracing::debug!(pid, ?found, us = t.elapsed().as_micros() as u64, id = %c.id, "container: its id in a CLI's memory");
    matches!(found, Ok(procmem::Found::Yes))
}

/// A joined container's stdio stream.
pub(super) struct Relayed {
    /// The server it joined.
    sid: u32,
    /// Its first process.
    pid: u32,
    container: Arc<Container>,
    /// Its stdout: Some(whether its first reply went out); None for its stdin.
    reply: Option<bool>,
}

/// Launches of one image side by side: no record of the engine names the CLI, and containers
/// start (and read their first line) in any order. A container joins the CLI whose memory holds
/// its id (`creator_of`). Where none can be read, it first joins by launch order and is then
/// paired by cause: its first reply goes out through exactly one CLI, which writes it to its own
/// stdout next, so the first reply written is paired with the first CLI to relay one. That
/// order is a guess when replies come within milliseconds: the engine relays each container on
/// its own and keeps no order between them.
#[derive(Default)]
pub(super) struct Pairing {
    /// Stdout inodes of containers whose first reply went out, oldest first.
    replies: VecDeque<(u64, Instant)>,
    /// Servers that relayed a reply before any container's was seen.
    clis: VecDeque<(u32, Instant)>,
    /// Servers that wrote to their stdout already.
    wrote: HashSet<u32>,
    /// The CLI processes whose container was found by its id in their memory, (pid, start
    /// time), with their server and the id. Those servers pair with no reply; and a `docker
    /// run` creates one container, so another container's search skips them (N launches side
    /// by side cost N(N+1)/2 searches of a CLI's memory, not N²).
    found_in: HashMap<(u32, u64), (u32, String)>,
}

/// How long either side waits for the other. A relay takes a millisecond; an entry left over
/// (a CLI found after it relayed, a container that exited unseen) must not pair with the next.
const PAIR_WITHIN: Duration = Duration::from_secs(1);

/// Resident memory read per CLI when looking for its container's id: a `docker run` CLI has
/// about 5 MiB resident (its Go heap, where the id is, comes first).
const CLI_MEMORY_BUDGET: usize = 256 << 20;

impl Pairing {
    /// Whether this is the first write of server `sid` to its stdout.
    pub(super) fn first_out(&mut self, sid: u32) -> bool {
        self.wrote.insert(sid)
    }

    /// Whether server `sid`'s container was found in its CLI's memory.
    fn certain(&self, sid: u32) -> bool {
        self.found_in.values().any(|(s, _)| *s == sid)
    }

    fn expire(&mut self) {
        self.replies.retain(|(_, at)| at.elapsed() < PAIR_WITHIN);
        self.clis.retain(|(_, at)| at.elapsed() < PAIR_WITHIN);
    }
}

/// What a handshake candidate's container says (`Err(intent)`: not in one, decide as usual).
pub(super) enum InContainer {
    /// Joined its runner's server; the candidate's own record is not the server's stream.
    Joined,
    /// In a container no tracked runner started: its own server, named after the image.
    Own(Intent, Arc<Container>),
}

impl Pipeline {
    /// Called for a handshake decided as a server: joins a container's process to the server of
    /// the `docker run` (or podman) CLI that runs its image. `seen`: the process at its first
    /// read, which a short session may have outlived (its queued events still join).
    pub(super) async fn container_handshake(&mut self, intent: Intent, seen: Seen) -> Result<InContainer, Intent> {
        let Intent::Sniff { pid, how: Discovery::Handshake, .. } = &intent else { return Err(intent) };
        let pid = *pid;
        let root = std::path::Path::new(container::DOCKER_ROOT);
        let Some(c) = seen.container.or_else(|| container::of_pid(pid, root)) else { return Err(intent) };
        let c = Arc::new(c);
        let searched = std::cell::Cell::new(0);
        let found = self.creator_of(&c, &searched);
        let creator = found.map(|(sid, _)| sid);
        let sid = match creator.or_else(|| self.runner_of(&c, true)) {
            Some(sid) => Some(sid),
            None => self.untracked_runner(&c).await.or_else(|| self.runner_of(&c, false)),
        };
        let Some(sid) = sid else {
            let Intent::Sniff { pid, name, how, parent, runner } = intent else { unreachable!() };
            let name = c.image.clone().unwrap_or(name);
            return Ok(InContainer::Own(Intent::Sniff { pid, name, how, parent, runner }, c));
        };
        let (i, o) = seen.streams;
        let tracked = match self.tracker.join(pid, sid, i) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(pid, server_id = sid, error = %e, "container: joining its runner's server failed");
                return Err(intent);
            }
        };
        // The streams as the kernel saw them at the read: /proc has none once it exited.
        self.relayed_stdio.insert(i, Relayed { sid, pid, container: c.clone(), reply: None });
        // Its creator known, its reply is not paired by order (as if paired already).
        self.relayed_stdio.insert(o, Relayed { sid, pid, container: c.clone(), reply: Some(creator.is_some()) });
        if let Some((_, cli)) = found {
            self.pairing.found_in.insert(cli, (sid, c.id.clone()));
        }
        self.seed_tree(&tracked, sid);
        // Gone already (a short session): its forks and exit, still queued, find it by this.
        if self.tree.get(pid).is_none() {
            let (ppid, exe, argv) = seen.proc.map(|p| (p.ppid, p.exe, p.argv)).unwrap_or_default();
            self.tree.insert(crate::process_tree::ProcNode { pid, ppid, server_id: sid, exe: exe.map(Into::into), argv });
        }
        for &p in &tracked {
            self.tree.set_container(p, c.clone());
        }
        let server = match self.tracker.server_mut(sid) {
            Some(s) => {
                s.containers.push(c.clone());
                s.name.to_string()
            }
            None => String::new(),
        };
        let by = if creator.is_some() { "cli_memory" } else { "launch_order" };
        let searched = searched.get();
        tracing::info!(pid, server_id = sid, server = %server, image = ?c.image, id = %c.id, by, searched, "container: joined its runner's server");
        self.out.emit(Record::ContainerJoined { time: Self::now(), server_id: sid, server, pid, tracked_pids: tracked, container: c, by, moved_from: None }).await;
        Ok(InContainer::Joined)
    }

    /// A record on a joined container's stream: dropped (its CLI relays the same JSON-RPC),
    /// but its first reply is paired with the first CLI to relay one.
    pub(super) async fn on_relayed(&mut self, ino: u64) {
        let Some(r) = self.relayed_stdio.get_mut(&ino) else { return };
        if r.reply != Some(false) {
            return;
        }
        r.reply = Some(true);
        let c = r.container.clone();
        tracing::debug!(ino, server_id = r.sid, clis = self.pairing.clis.len(), "container pairing: a joined container replied");
        self.pairing.expire();
        match self.pairing.clis.iter().position(|&(sid, _)| self.tracker.server(sid).is_some_and(|s| runs(&s.command, &c))) {
            Some(at) => {
                let (sid, _) = self.pairing.clis.remove(at).expect("found");
                self.paired(ino, sid).await;
            }
            None => self.pairing.replies.push_back((ino, Instant::now())),
        }
    }

    /// Server `id` wrote to its stdout for the first time: if its root is a container runner,
    /// that is its container's first reply relayed (its initialize result, or a later one when
    /// the CLI was found late), and the joined container of its image whose reply went out first
    /// and that no CLI relayed yet is its own.
    pub(super) async fn relayed_reply(&mut self, id: u32) {
        if self.pairing.certain(id) {
            return;
        }
        let Some(s) = self.tracker.server(id) else { return };
        if !runners::launch(crate::discovery::adopt::past_interpreter(&s.command)).is_some_and(|l| matches!(l.runner, "docker" | "podman")) {
            return;
        }
        self.pairing.expire();
        tracing::debug!(server_id = id, replies = self.pairing.replies.len(), "container pairing: a CLI relayed a reply");
        let fits = |(ino, _): &(u64, Instant)| self.relayed_stdio.get(ino).is_some_and(|r| runs(&s.command, &r.container));
        match self.pairing.replies.iter().position(fits) {
            Some(at) => {
                let (ino, _) = self.pairing.replies.remove(at).expect("found");
                self.paired(ino, id).await;
            }
            // Relayed before the container's write was seen to return (preempted): the reply
            // pairs when it comes, if a joined container has yet to reply.
            None if self.relayed_stdio.values().any(|r| r.reply == Some(false)) => self.pairing.clis.push_back((id, Instant::now())),
            None => {}
        }
    }

    /// The container replying on `ino` belongs to server `sid`: moved there if it joined another.
    async fn paired(&mut self, ino: u64, sid: u32) {
        self.tracker.unrelay(ino);
        let Some(r) = self.relayed_stdio.get(&ino) else { return };
        let (from, pid, c) = (r.sid, r.pid, r.container.clone());
        if from == sid || self.tracker.server(sid).is_none() {
            return;
        }
        let pids: Vec<u32> = self.tree.pids_of(from).into_iter().filter(|p| self.tree.container(*p).is_some_and(|x| Arc::ptr_eq(x, &c))).collect();
        self.tracker.rehome(&pids, sid);
        for &p in &pids {
            if let Some(n) = self.tree.get(p).cloned() {
                self.tree.insert(crate::process_tree::ProcNode { server_id: sid, ..n });
            }
        }
        for r in self.relayed_stdio.values_mut().filter(|r| Arc::ptr_eq(&r.container, &c)) {
            r.sid = sid;
        }
        if let Some(s) = self.tracker.server_mut(from) {
            s.containers.retain(|x| !Arc::ptr_eq(x, &c));
        }
        let server = match self.tracker.server_mut(sid) {
            Some(s) => {
                s.containers.push(c.clone());
                s.name.to_string()
            }
            None => String::new(),
        };
        tracing::info!(pid, from, server_id = sid, id = %c.id, "container: moved to the server whose CLI relayed its reply");
        self.out.emit(Record::ContainerJoined { time: Self::now(), server_id: sid, server, pid, tracked_pids: pids, container: c, by: "reply_order", moved_from: Some(from) }).await;
    }

    /// The tracked server whose CLI created container `c`, and that CLI (pid, start time): of
    /// the servers that run its image, the one whose CLI (its root, or a process of its tree
    /// that runs the image, for a root that forks it: a shell, a wrapper) holds the container's
    /// id in its memory. The engine's create reply named it to that CLI alone, which keeps it
    /// to attach, start, wait and remove; no record of the engine names the CLI. A CLI whose
    /// own container was found already is not searched again. None when no server or more
    /// than one holds it (a CLI not the daemon's to read, one gone, an id planted by another):
    /// order decides then. `searched` counts the CLIs whose memory was read.
    fn creator_of(&self, c: &Container, searched: &std::cell::Cell<usize>) -> Option<(u32, (u32, u64))> {
        let mut holders = self.tracker.servers().filter(|s| runs(&s.command, c)).filter_map(|s| {
            let forked = self.tree.pids_of(s.id).into_iter().filter(|&p| p != s.root_pid && self.tree.get(p).is_some_and(|n| runs(&n.argv, c)));
            std::iter::once(s.root_pid)
                .chain(forked)
                .filter_map(|pid| Some((pid, procfs::start_ticks(pid)?)))
                .find(|&cli| match self.pairing.found_in.get(&cli) {
                    // Its own container again (the same id): known to hold it.
                    Some((_, id)) => *id == c.id,
                    None => {
                        searched.set(searched.get() + 1);
                        holds_id(cli.0, c)
                    }
                })
                .map(|cli| (s.id, cli))
        });
        let first = holders.next()?;
        holders.next().is_none().then_some(first)
    }

    /// The tracked server whose runner started a container of `c`'s image, as a first guess:
    /// `free`, the oldest launch that has no container yet; otherwise the newest with any. The
    /// pairing by reply corrects it for launches side by side.
    fn runner_of(&self, c: &Container, free: bool) -> Option<u32> {
        let fits = self.tracker.servers().filter(|s| runs(&s.command, c));
        if free {
            fits.filter(|s| s.containers.is_empty()).min_by_key(|s| (s.since, s.id)).map(|s| s.id)
        } else {
            fits.max_by_key(|s| (s.since, s.id)).map(|s| s.id)
        }
    }

    /// A container whose CLI is not tracked yet: a CLI that joined the session late (the hooks
    /// came on after its exec, so its own handshake is decided on a later message, which can
    /// come after its container's initialize). The oldest untracked `docker run` of the image
    /// with piped stdio is tracked now, as the handshake server its container proves it is.
    async fn untracked_runner(&mut self, c: &Container) -> Option<u32> {
        let runners: Vec<(u64, u32, u64, u64)> = procfs::pids()
            .into_iter()
            .filter(|&p| self.tracker.lookup(p).is_none_or(|i| i.server_id == PROVISIONAL_SERVER))
            .filter_map(|p| Some((p, procfs::process_info(p)?)))
            .filter(|(_, info)| runs(&info.argv, c))
            .filter_map(|(p, _)| match procfs::stdio_streams(p) {
                (Some(i), Some(o)) => Some((procfs::start_ticks(p).unwrap_or(u64::MAX), p, i, o)),
                _ => None,
            })
            .collect();
        // The one that holds the container's id, as for tracked CLIs; else the oldest.
        let holder = runners.iter().find(|r| holds_id(r.1, c));
        let (_, pid, i, o) = *holder.or_else(|| runners.iter().min())?;
        let intent = crate::discovery::adopt::handshake_root(pid, i, o);
        let sid = self.apply(intent).await?;
        // Its container read an MCP initialize through it: settled, not sniffed.
        self.identified(sid, None).await;
        tracing::info!(pid, server_id = sid, image = ?c.image, "container: its CLI is tracked through the container's handshake");
        Some(sid)
    }

    /// A container no tracked runner started, tracked as its own server: its processes carry it.
    pub(super) fn mark_container(&mut self, sid: u32, c: Arc<Container>) {
        for p in self.tree.pids_of(sid) {
            self.tree.set_container(p, c.clone());
        }
        if let Some(s) = self.tracker.server_mut(sid) {
            s.containers.push(c);
        }
    }

    /// A server is gone: its containers' streams are no longer relayed ones.
    pub(super) fn forget_relayed(&mut self, sid: u32) {
        self.relayed_stdio.retain(|_, r| r.sid != sid);
        let relayed = &self.relayed_stdio;
        self.pairing.replies.retain(|(ino, _)| relayed.contains_key(ino));
        self.pairing.clis.retain(|&(s, _)| s != sid);
        self.pairing.wrote.remove(&sid);
        self.pairing.found_in.retain(|_, (s, _)| *s != sid);
    }
}
