//! The pipeline's side of zero-config discovery: acting on the kernel's provisional tracking,
//! sniffing handshakes, re-reading client configs.
use super::{containers::InContainer, servers::Retire, Pipeline};
use crate::{
    discovery::adopt::{HandshakeBytes, Intent, Seen},
    events::{Body, Direction, Event},
    output::{record::Mcp, Record},
    sys::procfs,
    tracker::{Discovery, TrackError},
};
use monitor_common::PROVISIONAL_SERVER;

impl Pipeline {
    /// Reads client configs, arms the kernel's exec filter, takes configured servers already running.
    pub async fn start_discovery(&mut self) {
        self.refresh_configs();
        let remote = self.disc.configs.remote().count();
        let n = self.disc.configs.servers.len() - remote;
        tracing::info!(stdio = n, remote, "discovery: servers configured in MCP clients on this host");
        for intent in self.disc.startup_scan() {
            self.apply(intent).await;
        }
        self.url_scan().await;
    }

    /// Takes servers listening on a local URL a client config names (started, or restarted,
    /// since the last tick).
    async fn url_scan(&mut self) {
        let tracker = &self.tracker;
        let intents = self.disc.url_scan(|pid| tracker.lookup(pid).is_some_and(|i| i.server_id != PROVISIONAL_SERVER));
        for intent in intents {
            self.apply(intent).await;
        }
    }

    fn refresh_configs(&mut self) {
        if let Some(c) = self.disc.refresh() {
            tracing::info!(servers = self.disc.configs.servers.len(), exec_filter = ?c, "discovery: client configs (re)read");
            self.tracker.set_candidates(&c);
        }
    }

    pub async fn discovery_tick(&mut self) {
        self.release_held(None);
        self.tracker.sweep_unclaimed_pipes();
        self.refresh_configs();
        self.url_scan().await;
        // Silence proves nothing (a lost record, a client that waits): the process stays
        // tracked, marked as an unidentified server, instead of leaving the monitor's sight.
        for id in self.disc.expired() {
            self.unidentified(id, "no MCP handshake on stdin within the sniffing window").await;
        }
        // The same for a handshake candidate whose first line does not come (read `{`, then
        // stalled; or its bytes were lost): dropped, it would leave the kernel's tracking too.
        for (pid, alive) in self.disc.handshakes_expired() {
            match alive {
                Some((intent, seen)) => {
                    if let Some(Some(id)) = self.settle_handshake(intent, seen).await {
                        self.unidentified(id, "its first stdin line did not come within the handshake window").await;
                    }
                }
                None => {
                    self.apply(Intent::Drop { pid, reason: "exited before its first stdin line came" }).await;
                }
            }
        }
    }

    /// A piped process exec'd while the syscall hooks were detached (handshake discovery): they
    /// are attached at once, before an interpreter gets to its first read of its stdin.
    pub(super) fn on_candidate(&mut self) {
        self.attach_hooks("a handshake candidate exec'd");
    }

    fn attach_hooks(&mut self, why: &'static str) {
        if self.sensors.syscall_hooks_active() {
            return;
        }
        let t = std::time::Instant::now();
        match self.sensors.attach_syscall_hooks() {
            Ok(()) => tracing::info!(ms = t.elapsed().as_millis() as u64, why, "syscall hooks attached"),
            Err(e) => tracing::error!(error = %e, why, "syscall hooks could not be attached"),
        }
    }

    /// Continues the candidates the kernel stopped at exec because the syscall hooks were
    /// detached (monitor-ebpf/src/hold.rs): `pid`, or with None every one held for over a second
    /// (its exec event lost or still queued behind a burst). The hooks are attached first; a
    /// failed attach still continues them, since a stopped process would hang its client.
    pub(super) fn release_held(&mut self, pid: Option<u32>) {
        let now = crate::output::monotonic_ns();
        let held: Vec<u32> = self
            .sensors
            .held()
            .into_iter()
            .filter(|(p, since)| pid.map_or(now.saturating_sub(*since) > 1_000_000_000, |want| *p == want))
            .map(|(p, _)| p)
            .collect();
        if held.is_empty() {
            return;
        }
        self.attach_hooks("a held candidate waits for them");
        for p in held {
            self.sensors.release(p);
            tracing::info!(pid = p, "continued: held at exec until the syscall hooks were on");
        }
    }

    /// An event carrying the kernel's provisional server id: decide on the exec, or map the event
    /// to the server its process was adopted into. None: discard it.
    pub(super) async fn resolve_provisional(&mut self, ev: &mut Event) -> Option<u32> {
        if let Some(n) = self.tree.get(ev.header.pid) {
            return Some(n.server_id);
        }
        // Handshake discovery: its first stdin read opened a JSON object; those bytes follow.
        // An MCP `initialize` makes it a server (sniffed like a client's child, under the
        // highest ancestor on the same streams), and these first bytes are its first captured
        // message; anything else drops it before any record names it.
        if let Body::Handshake(h) = &mut ev.body {
            let seen = h.seen.take().map(|s| *s);
            self.disc.handshake_seen(ev.header.pid, ev.header.ppid, (h.in_ino, h.out_ino), h.late, seen);
            return None;
        }
        if let Body::Stdio(s) = &mut ev.body {
            match self.disc.handshake_bytes(ev.header.pid, &s.data) {
                Some(HandshakeBytes::Wait) => return None,
                Some(HandshakeBytes::Decided { intent, bytes, seen }) => {
                    let adopted = self.settle_handshake(intent, seen).await?;
                    if adopted.is_none() {
                        self.stats.provisional_events_discarded += 1;
                    }
                    // Read in pieces: the whole first message goes on as this record, from 0.
                    if let Some(b) = bytes {
                        s.stream_off = 0;
                        s.offset = 0;
                        s.total_len = b.len() as u64;
                        s.data = b;
                    }
                    return adopted;
                }
                None => {}
            }
        }
        // A failed exec (a PATH search trying each directory) changes nothing: only a new image
        // is decided on.
        if let Body::Exec(x) = &ev.body {
            if !x.result.ok {
                self.stats.provisional_events_discarded += 1;
                return None;
            }
            // Under a handshake candidate whose first line is still coming (it read `{`): the
            // decision is that root's, on its bytes. Decided on this exec alone, the process
            // would be dropped as no configured server and untracked in the kernel before its
            // next syscall (a shell that read `{` and runs `cat ~/.ssh/id_ed25519`, or execs it).
            if self.tracker.lookup(ev.header.pid).is_some_and(|i| self.disc.handshake_pending(i.root_tgid)) {
                self.release_held(Some(ev.header.pid));
                self.stats.provisional_events_discarded += 1;
                return None;
            }
            // The event's filename and argv are this exec's; /proc may already show a later
            // image of the same launch (npx: `env node npx`, then `node npx`, then its title).
            let intent = self.disc.on_provisional_exec(ev.header.pid, Some((x.filename.as_str(), x.argv.as_slice())));
            let adopted = self.apply(intent).await;
            // Continued only now, adopted (hooks on, pipes registered) or dropped: held, it
            // could not exit or act before the decision.
            self.release_held(Some(ev.header.pid));
            if let Some(id) = adopted {
                return Some(id);
            }
        }
        if ev.header.kernel_action.is_some() {
            // The kernel already killed or refused it (a protected file read before the daemon
            // decided what the process is): that is reported whatever becomes of the process,
            // not discarded with the rest of an undecided one. It goes out under the
            // provisional id, with no server name.
            return Some(PROVISIONAL_SERVER);
        }
        self.stats.provisional_events_discarded += 1;
        None
    }

    /// Carries out what a handshake candidate was decided to be. None: a container's process
    /// joined its `docker run` CLI's server (what it read is what the CLI relayed, already
    /// captured on the CLI's stdin); otherwise the server it was adopted into, if any.
    async fn settle_handshake(&mut self, intent: Intent, seen: Seen) -> Option<Option<u32>> {
        let at_read = seen.root.clone().map(|r| (r, seen.streams));
        let (intent, container) = match self.container_handshake(intent, seen).await {
            Ok(InContainer::Joined) => return None,
            Ok(InContainer::Own(intent, c)) => (intent, Some(c)),
            Err(intent) => (intent, None),
        };
        let adopted = self.apply_seen(intent, at_read).await;
        if let (Some(id), Some(c)) = (adopted, container) {
            self.mark_container(id, c);
        }
        Some(adopted)
    }

    pub(super) async fn apply(&mut self, intent: Intent) -> Option<u32> {
        self.apply_seen(intent, None).await
    }

    /// [`Self::apply`], knowing what /proc showed of the server's root at its first read, and
    /// its streams (`at_read`, a handshake's): the root may have exited since. A zombie's /proc
    /// has no command line, image or owner to track it with; a reaped one has no entry at all,
    /// and its queued events (its calls, the kernel's kills) still need their server.
    pub(super) async fn apply_seen(&mut self, intent: Intent, at_read: Option<(procfs::ProcInfo, (u64, u64))>) -> Option<u32> {
        let uid = |pid| procfs::uid_of(pid).unwrap_or(0);
        self.disc.note_origin(&intent);
        let r = match intent {
            Intent::Track { pid, name, how, client, config, .. } => {
                self.track_with(pid, &name, how, uid(pid), |s| {
                    s.client = client;
                    s.config = config;
                })
                .await
            }
            Intent::Sniff { pid, name, how, .. } => {
                let known = at_read.filter(|(p, _)| p.pid == pid);
                let argv = known.as_ref().map(|(p, _)| p.argv.clone()).unwrap_or_default();
                let owner = known.as_ref().map_or_else(|| uid(pid), |(p, _)| p.uid);
                let sniff = |argv: Vec<String>| {
                    move |s: &mut crate::tracker::ServerInfo| {
                        s.sniffing = true;
                        if s.command.is_empty() {
                            s.command = argv;
                        }
                    }
                };
                let mut r = self.track_or_ended(pid, &name, how, owner, None, sniff(argv.clone())).await;
                if let (Err(TrackError::NoSuchProcess(_)), Some(k)) = (&r, &known) {
                    // Reaped already: tracked from what its first read showed.
                    r = self.track_or_ended(pid, &name, how, owner, Some(k.clone()), sniff(argv)).await;
                }
                if let (Ok(ack), Some((p, _))) = (&r, known) {
                    self.seed_known(p, ack.server_id);
                }
                r
            }
            Intent::Drop { pid, reason } => {
                tracing::debug!(pid, %reason, "discovery: not an MCP server");
                self.tracker.drop_tree(pid, PROVISIONAL_SERVER);
                self.stats.candidates_dropped += 1;
                return None;
            }
        };
        match r {
            Ok(ack) => {
                if self.tracker.server(ack.server_id).is_some_and(|s| s.sniffing) {
                    self.disc.sniff_started(ack.server_id);
                }
                Some(ack.server_id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "discovery: tracking failed");
                None
            }
        }
    }

    /// Settles a sniffing server on the first MCP record of its stdin, and names servers from
    /// their handshake.
    pub(super) async fn sniff_check(&mut self, id: u32, r: &Mcp) {
        let sniffing = self.disc.is_sniffing(id);
        match r {
            Mcp::McpInitialize { client, .. } => {
                let client = client["name"].as_str().map(str::to_string);
                if sniffing {
                    self.identified(id, client).await;
                } else if let Some(s) = self.tracker.server_mut(id) {
                    if s.client.is_none() {
                        s.client = client;
                    }
                    s.sniffing = false;
                }
            }
            Mcp::McpInitialized { server_info } => {
                // A sniffed server is named by what it says it is, plus its command.
                if let Some(s) = self.tracker.server_mut(id) {
                    if matches!(s.how, Discovery::Sniffed | Discovery::Handshake) {
                        if let (Some(n), false) = (server_info["name"].as_str(), s.name.contains(" (")) {
                            s.name = format!("{n} ({})", s.name).into();
                        }
                    }
                }
            }
            // Only what comes in on stdin (from the client) decides: the process controls what
            // it writes, so a line of garbage on its stdout must not get it dropped.
            Mcp::McpInvalid { direction: Direction::In, .. } if sniffing => {
                self.reject(id, "its first stdin message is not an MCP initialize").await;
            }
            _ => {}
        }
    }

    /// A sniffed server spoke MCP (`client`: the clientInfo name of its initialize).
    pub(super) async fn identified(&mut self, id: u32, client: Option<String>) {
        self.disc.sniff_result(id);
        let Some(s) = self.tracker.server_mut(id) else { return };
        s.sniffing = false;
        if client.is_some() {
            s.client = client;
        }
        let (name, client, root) = (s.name.clone(), s.client.clone(), s.root_pid);
        tracing::info!(pid = root, server = %name, client = ?client, "discovery: speaks MCP: tracked as a server");
        self.out.emit(Record::ServerIdentified { time: Self::now(), server_id: id, server: name.to_string(), client, root_pid: root }).await;
    }

    async fn unidentified(&mut self, id: u32, reason: &'static str) {
        self.disc.sniff_result(id);
        let Some(s) = self.tracker.server_mut(id) else { return };
        s.sniffing = false;
        let (name, root) = (s.name.clone(), s.root_pid);
        tracing::info!(pid = root, server = %name, reason, "discovery: kept tracked as unidentified");
        self.out.emit(Record::ServerUnidentified { time: Self::now(), server_id: id, server: name.to_string(), root_pid: root, reason }).await;
    }

    async fn reject(&mut self, id: u32, reason: &str) {
        self.disc.sniff_result(id);
        self.retire(id, Retire::Dropped { reason: reason.into() }).await;
    }
}
