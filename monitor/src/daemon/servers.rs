//! Servers: taking a server under watch (hooks first, then the kernel's map, then the record),
//! retiring it (one path for an exit, an exit whose event was lost, and a candidate dropped), and
//! the view `mcpmon servers` shows.
use serde_json::{json, Value};

use super::Pipeline;
use crate::{
    output::{format_rfc3339, record::ServerTracked, Record},
    process_tree::ProcNode,
    sys::procfs,
    tracker::{Discovery, TrackAck, TrackError},
};

/// Why a server leaves the tracked set.
pub enum Retire {
    /// Its last process exited (the exit event arrived); `ts` is that event's time.
    Exited { ts: u64 },
    /// Its processes are gone but their exit events were lost (found by reconcile).
    ExitLost,
    /// A candidate that turned out not to be an MCP server: nothing it said is reported.
    Dropped { reason: String },
}

impl Pipeline {
    /// Tracks `pid`, seeds the process tree, and reports the new server.
    pub async fn track(&mut self, pid: u32, name: &str, how: Discovery, uid: u32) -> Result<TrackAck, TrackError> {
        self.track_with(pid, name, how, uid, |_| {}).await
    }

    /// `track`, letting the caller fill in what it knows about the server before it is reported.
    pub async fn track_with(
        &mut self,
        pid: u32,
        name: &str,
        how: Discovery,
        uid: u32,
        fill: impl FnOnce(&mut crate::tracker::ServerInfo),
    ) -> Result<TrackAck, TrackError> {
        self.track_or_ended(pid, name, how, uid, None, fill).await
    }

    /// `track_with`; `ended`: the process is gone, and this is what /proc showed of it earlier
    /// with its stdin and stdout ([`crate::tracker::Tracker::track_ended`]); the caller seeds
    /// its tree node from that ([`Self::seed_known`]).
    pub(super) async fn track_or_ended(
        &mut self,
        pid: u32,
        name: &str,
        how: Discovery,
        uid: u32,
        ended: Option<(procfs::ProcInfo, (u64, u64))>,
        fill: impl FnOnce(&mut crate::tracker::ServerInfo),
    ) -> Result<TrackAck, TrackError> {
        // Hooks first, then the map entry: the process is never tracked without its sensors.
        if !self.sensors.syscall_hooks_active() {
            let t = std::time::Instant::now();
            self.sensors.attach_syscall_hooks().map_err(|e| TrackError::Sensors(e.to_string()))?;
            tracing::info!(ms = t.elapsed().as_millis() as u64, "syscall hooks attached");
        }
        let ack = match ended {
            Some((p, streams)) => {
                tracing::info!(pid, server = name, "discovery: its session ended before it was decided on: tracked for the events it left");
                self.tracker.track_ended(pid, name, how, uid, p.argv, streams)
            }
            None => self.tracker.track(pid, name, how, uid)?,
        };
        // Grants follow the configured name; in place before the caller is acknowledged.
        self.sync_servers();
        if ack.already_tracked {
            return Ok(ack);
        }
        self.seed_tree(&ack.tracked_pids, ack.server_id);
        let Some(s) = self.tracker.server_mut(ack.server_id) else { return Ok(ack) };
        fill(s);
        let rec = ServerTracked {
            time: Self::now(),
            server_id: ack.server_id,
            server: ack.name.clone(),
            how,
            root_pid: pid,
            uid,
            tracked_pids: ack.tracked_pids.clone(),
            client: s.client.clone(),
            config: s.config.clone(),
            command: s.command.clone(),
            sniffing: s.sniffing,
            found: self.disc.found(s),
        };
        if matches!(how, Discovery::TrackPid | Discovery::Procfs | Discovery::Url) {
            self.corr.joined_midstream(ack.server_id);
        }
        tracing::info!(server = %ack.name, id = ack.server_id, how = ?how, root_pid = pid, processes = ack.tracked_pids.len(), "tracking server");
        self.out.emit(Record::ServerTracked(Box::new(rec))).await;
        Ok(ack)
    }

    /// Puts processes just taken under watch for server `id` into the process tree, as /proc
    /// shows them now (their later forks and execs come as events).
    pub(super) fn seed_tree(&mut self, pids: &[u32], id: u32) {
        for &p in pids {
            if let Some(info) = procfs::process_info(p) {
                self.tree.insert(ProcNode { pid: p, ppid: info.ppid, server_id: id, exe: info.exe.map(Into::into), argv: info.argv });
            }
        }
    }

    /// The root's node as /proc showed it earlier (`p`), if /proc now has no command line for
    /// it (a zombie, or gone): alerts on its events name its image and arguments.
    pub(super) fn seed_known(&mut self, p: procfs::ProcInfo, id: u32) {
        if self.tree.get(p.pid).is_some_and(|n| n.server_id != id || !n.argv.is_empty()) {
            return;
        }
        self.tree.insert(ProcNode { pid: p.pid, ppid: p.ppid, server_id: id, exe: p.exe.map(Into::into), argv: p.argv });
    }

    /// Tells the kernel whether a server root's new image is still the package runner it was
    /// launched through (`npx -y PKG` runs as `node npx …`: the argv says so, the image does
    /// not), the same judgement as `proc.is_runner`. While it is, it may read its registry login
    /// (`kernel.runner_may_read`). Asked at every successful exec of a root; the judgement
    /// names the exec by its event's time (`ts`), and holds for no later one.
    pub(super) fn note_runner(&mut self, server_id: u32, pid: u32, ts: u64, argv: &[String]) {
        let Some(p) = self.policy.as_mut() else { return };
        if self.tracker.server(server_id).is_none_or(|s| s.root_pid != pid) {
            return;
        }
        let runner = super::context::is_runner(argv);
        self.runner_roots.insert(pid, runner);
        if let Err(e) = p.mark_runner(pid, Some((ts, runner))) {
            tracing::warn!(pid, error = %e, "could not mark a runner for the kernel");
        }
    }

    /// Takes a server out of the tracked set: its open calls are closed (as unanswered) and
    /// reported, any loss is pinned on it while its name is still known, and its map entries go.
    pub async fn retire(&mut self, id: u32, why: Retire) {
        if let Some(s) = self.tracker.server(id) {
            self.runner_roots.remove(&s.root_pid);
        }
        if let (Some(p), Some(s)) = (self.policy.as_mut(), self.tracker.server(id)) {
            let _ = p.mark_runner(s.root_pid, None);
        }
        self.tools_watch.tools.remove(&id);
        self.forget_relayed(id);
        if let Retire::Dropped { reason } = why {
            let Some(s) = self.tracker.server(id).cloned() else { return };
            tracing::info!(pid = s.root_pid, server = %s.name, %reason, "discovery: dropped");
            // Nothing it said was MCP: no call records to report.
            drop(self.corr.server_gone(id, 0));
            self.tree.remove_server(id);
            self.tracker.drop_tree(s.root_pid, id);
            self.stats.candidates_dropped += 1;
            self.out.emit(Record::ServerDropped { time: Self::now(), server_id: id, server: s.name.to_string(), root_pid: s.root_pid, reason }).await;
            return;
        }
        let (ts, exit_event_lost) = match why {
            Retire::Exited { ts } => (ts, false),
            _ => (crate::output::monotonic_ns(), true),
        };
        // Only finished calls (closed as unanswered) come out of a server's end.
        for f in self.corr.server_gone(id, ts) {
            if let crate::correlation::Carried::Record(m) = f.what {
                let rec = self.stamp(f.server_id, f.ts_mono_ns, m);
                self.out.emit(rec).await;
            }
        }
        self.check_blind_spots().await;
        if let Some(s) = self.tracker.forget(id) {
            self.out.emit(Record::ServerGone { time: Self::now(), server_id: id, server: s.name.to_string(), exit_event_lost }).await;
        }
    }

    /// What `mcpmon servers` shows: every tracked server, its processes, tools and counts.
    pub fn servers_view(&self) -> Value {
        let mut list: Vec<Value> = self
            .tracker
            .servers()
            .map(|s| {
                let session = self.corr.session(s.id);
                json!({
                    "id": s.id, "name": s.name, "how": s.how, "found": self.disc.found(s), "client": s.client, "config": s.config,
                    "root_pid": s.root_pid, "pids": self.tree.pids_of(s.id), "uid": s.uid, "sniffing": s.sniffing,
                    "since": format_rfc3339(s.since), "command": s.command,
                    "server_info": session.and_then(|x| x.server_info.clone()),
                    "tools": self.tools_watch.tools.get(&s.id).map(|t| t.iter().map(|t| t.name.clone()).collect::<Vec<_>>()).unwrap_or_default(),
                    "grants": self.policy.as_ref().map(|p| p.grants().iter().filter(|(id, _)| *id == s.id).filter_map(|(_, slot)| p.rules.rules.get(*slot as usize).map(|r| r.id.clone())).collect::<Vec<_>>()).unwrap_or_default(),
                    "calls": session.map(|x| x.calls).unwrap_or(0),
                    "calls_in_flight": session.map(|x| x.in_flight()).unwrap_or(0),
                    "alerts": self.tools_watch.alerts.get(&s.id).copied().unwrap_or(0) + self.rule_alerts.get(&s.id).copied().unwrap_or(0),
                })
            })
            .collect();
        list.sort_by_key(|v| v["id"].as_u64());
        Value::Array(list)
    }
}
