//! `mcpmon run`'s pipeline: the stage that turns kernel events into records (start-up and the
//! main loop are in `start.rs`).
//!
//! ```text
//! kernel ──ring buffer──▶ events::reader ──mpsc──▶ Pipeline ──mpsc──▶ output::writer
//! control socket ──TrackRequest──▶ Pipeline (Tracker owns the TRACKED map)
//! ```
//! The pipeline is one task: it applies each event to the process tree, correlates it with the
//! JSON-RPC in flight, evaluates the rules and acts, and emits JSON lines; it also answers track
//! requests, so a server is registered before any of its events is processed.
use std::time::{Duration, SystemTime};

use aya::maps::{MapData, PerCpuArray};
use monitor_common::{LostReason, LOST_REASONS};
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub mod context;
mod discover;
mod limits;
pub mod policy;
mod protection;
mod start;
mod toolwatch;

pub use start::run;

use monitor_common::PROVISIONAL_SERVER;

use crate::{
    discovery::adopt::Discoverer,
    correlation::{Correlator, Outcome},
    control::ControlMsg,
    sys::procfs,
    events::{self, reader::Decoded, Event},
    output::{format_rfc3339, Clock},
    probes::Sensors,
    process_tree::{ProcNode, ProcessTree, TreeChange},
    tracker::{Discovery, TrackAck, TrackError, Tracker},
};

/// Counters the daemon reports at exit (and, later, as metrics).
#[derive(Default, Debug)]
pub struct Stats {
    pub events: std::collections::BTreeMap<&'static str, u64>,
    pub decode_errors: u64,
    /// Processes the kernel tracked provisionally that turned out not to be MCP servers.
    pub candidates_dropped: u64,
    /// Events of such processes, discarded.
    pub provisional_events_discarded: u64,
    /// Tracked processes found gone without their exit event (it was lost).
    pub exits_reconciled: u64,
    pub lost: [u64; LOST_REASONS as usize],
    /// Where the pipeline's time goes, per stage (nanoseconds in total): the profile behind the
    /// throughput figures of `cargo xtask bench`.
    pub stage_ns: std::collections::BTreeMap<&'static str, u64>,
}

pub struct Pipeline {
    /// Owned here so the syscall hooks can follow the tracked set; dropped last at shutdown.
    sensors: Sensors,
    tracker: Tracker,
    tree: ProcessTree,
    corr: Correlator,
    disc: Discoverer,
    tools_watch: toolwatch::ToolWatch,
    idle_since: Option<std::time::Instant>,
    clock: Clock,
    lines: mpsc::Sender<String>,
    lost_map: PerCpuArray<MapData, u64>,
    /// Per-server loss totals at the last check, and when that was (the blind spot's window).
    lost_seen: std::collections::BTreeMap<u32, u64>,
    lost_checked: SystemTime,
    pub on_loss: crate::cli::OnLoss,
    pub stats: Stats,
    /// Rules and actions (None: observe only).
    pub policy: Option<policy::Policy>,
    /// Rule alerts per server id.
    rule_alerts: std::collections::HashMap<u32, u64>,
    host: String,
    /// Baseline profiles (learned or enforced).
    pub profiles: Option<crate::rules::profile::Profiles>,
    /// Shared with the metrics endpoint.
    pub metrics: std::sync::Arc<std::sync::Mutex<crate::metrics::Metrics>>,
    /// Alert sinks besides the event stream (file, webhook).
    pub sinks: Option<crate::alerts::Sinks>,
    throttle: crate::alerts::throttle::Throttle,
    pub incidents: crate::alerts::incident::Incidents,
    /// Every emitted line, for live views (`mcpmon top`); lossy for slow readers by design.
    pub tail: tokio::sync::broadcast::Sender<String>,
    /// Tracked pids found dead at the last reconcile (reaped if still there at the next).
    reap_suspects: std::collections::HashSet<u32>,
    /// Resolved paths of opens by (inode, path as given): a repeated open of the same file by
    /// the same name costs no /proc lookups. Same inode and same name cannot resolve elsewhere.
    resolved: std::collections::HashMap<(events::Inode, u64), String>,
}

/// The cache key of a path as given (a 64-bit hash: a collision needs the same inode as well,
/// and then both names reach the same file).
fn path_key(p: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

/// Entries in the resolved-path cache before it starts over.
const RESOLVED_CACHE: usize = 8192;

/// How long nothing must be tracked before the syscall hooks come off.
const IDLE_DETACH: Duration = Duration::from_secs(3);

const LOST_NAMES: [&str; LOST_REASONS as usize] = ["ringbuf_full", "pending_full", "tracked_full", "stdio_pipes_full"];
const _: () = assert!(LostReason::StdioFull as u32 + 1 == LOST_REASONS);

impl Pipeline {
    pub fn new(
        sensors: Sensors,
        tracker: Tracker,
        disc: Discoverer,
        lost_map: PerCpuArray<MapData, u64>,
        lines: mpsc::Sender<String>,
    ) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        Self {
            sensors,
            tracker,
            tree: ProcessTree::new(),
            corr: Correlator::new(),
            disc,
            tools_watch: Default::default(),
            idle_since: None,
            clock: Clock::new(),
            lines,
            lost_map,
            lost_seen: Default::default(),
            lost_checked: SystemTime::now(),
            on_loss: Default::default(),
            stats: Stats::default(),
            policy: None,
            rule_alerts: Default::default(),
            host,
            profiles: None,
            metrics: Default::default(),
            sinks: None,
            throttle: crate::alerts::throttle::Throttle::new(Duration::from_secs(10)),
            incidents: crate::alerts::incident::Incidents::new(Duration::from_secs(5)),
            tail: tokio::sync::broadcast::channel(4096).0,
            reap_suspects: Default::default(),
            resolved: Default::default(),
        }
    }

    /// Hands the sensors back (to drop them, which detaches everything).
    pub fn into_sensors(self) -> Sensors {
        self.sensors
    }

    /// Catches up with exits whose events were lost (ring buffer full): processes that no longer
    /// exist leave the tree, and servers left empty are reported gone.
    ///
    /// Only after the kernel counted a loss (otherwise every exit event is still coming, maybe
    /// queued behind a backlog), and only for processes found dead on two consecutive ticks.
    pub async fn reconcile(&mut self) {
        if self.stats.lost.iter().all(|&n| n == 0) {
            return;
        }
        let suspects = std::mem::take(&mut self.reap_suspects);
        let (dead, gone) = self.tree.reap(|p| procfs::exists(p) || !suspects.contains(&p));
        self.reap_suspects = self.tree.pids().into_iter().filter(|p| !procfs::exists(*p)).collect();
        if dead.is_empty() {
            return;
        }
        self.stats.exits_reconciled += dead.len() as u64;
        tracing::warn!("{} tracked processes exited without an exit event (lost); reconciled", dead.len());
        for id in gone {
            self.tools_watch.tools.remove(&id);
            for r in self.corr.server_gone(id, crate::output::monotonic_ns()) {
                let r = self.decorate(r, crate::output::monotonic_ns());
                self.emit(r).await;
            }
            // Pin any loss on the server while its name is still known.
            self.check_blind_spots().await;
            if let Some(s) = self.tracker.forget(id) {
                self.emit(json!({"time": Self::now(), "kind": "server_gone", "server_id": id, "server": s.name, "exit_event_lost": true})).await;
            }
        }
    }

    /// Detaches the syscall hooks once the kernel has tracked nothing for `IDLE_DETACH`:
    /// untracked processes then pay nothing at all for mcpmon's syscall sensors. The grace period
    /// avoids flapping when servers come and go; the slow part of detaching runs off the pipeline.
    pub async fn check_idle(&mut self) {
        if !self.sensors.syscall_hooks_active() || !self.tracker.map_is_empty() {
            self.idle_since = None;
            return;
        }
        let since = *self.idle_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < IDLE_DETACH {
            return;
        }
        self.idle_since = None;
        match self.sensors.detach_syscall_hooks_in_background() {
            Ok(()) => tracing::info!("nothing tracked for {}s: detaching syscall hooks", IDLE_DETACH.as_secs()),
            Err(e) => tracing::error!("detaching syscall hooks: {e}"),
        }
    }

    async fn emit(&self, v: Value) {
        if let Ok(mut m) = self.metrics.lock() {
            m.record(&v);
        }
        let line = v.to_string();
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(line.clone());
        }
        // The writer only goes away at shutdown, after the pipeline.
        let _ = self.lines.send(line).await;
    }

    /// An alert: throttled (repeats folded into a count), then to the stream and every sink.
    async fn emit_alert(&mut self, v: Value) {
        if !self.throttle.admit(&v, std::time::Instant::now()) {
            if let Ok(mut m) = self.metrics.lock() {
                m.suppressed(1);
            }
            return;
        }
        let Some(v) = self.incidents.admit(v, std::time::Instant::now()) else {
            if let Ok(mut m) = self.metrics.lock() {
                m.folded(1);
            }
            return;
        };
        if let Some(s) = &self.sinks {
            s.send(&v.to_string());
        }
        self.emit(v).await;
    }

    /// Once a second: gauges for the metrics endpoint, and closed throttle windows.
    pub async fn metrics_tick(&mut self, force_flush: bool) {
        for mut r in self.incidents.flush(std::time::Instant::now(), force_flush) {
            r["time"] = Self::now().into();
            if let Some(s) = &self.sinks {
                s.send(&r.to_string());
            }
            self.emit(r).await;
        }
        for r in self.throttle.flush(std::time::Instant::now(), force_flush) {
            let mut r = r;
            r["time"] = Self::now().into();
            if let Some(s) = &self.sinks {
                s.send(&r.to_string());
            }
            self.emit(r).await;
        }
        let (protected, rules) = self.policy.as_ref().map(|p| (p.plan.files.len() as u64, p.rules.in_force() as u64)).unwrap_or((0, 0));
        let c = &self.corr.stats;
        let userspace = vec![
            ("decode_errors", self.stats.decode_errors),
            ("stdio_bytes_not_captured", c.bytes_not_captured),
            ("stdio_streams_dropped", c.streams_dropped),
            ("http_bytes_not_captured", self.corr.http.stats.bytes_lost),
            ("http_desyncs", self.corr.http.stats.desyncs),
            ("http_connections_not_captured", self.corr.http.stats.connections_not_captured + self.corr.http.stats.connections_dropped),
            ("http_sessions_dropped", self.corr.http.stats.sessions_dropped),
            ("jsonrpc_messages_truncated", c.truncated_messages),
            ("provisional_events_discarded", self.stats.provisional_events_discarded),
            ("stdio_pipes_full", self.tracker.stdio_pipes_full),
        ];
        let kernel = LOST_NAMES.iter().copied().zip(self.stats.lost.iter().copied()).collect();
        let g = crate::metrics::Gauges {
            servers: self.tracker.servers().count() as u64,
            processes: self.tree.len() as u64,
            protected_inodes: protected,
            rules,
            kernel_lost: kernel,
            userspace_lost: userspace,
        };
        if let Ok(mut m) = self.metrics.lock() {
            m.gauges = g;
        }
    }

    fn now() -> String {
        format_rfc3339(std::time::SystemTime::now())
    }

    pub async fn on_event(&mut self, ev: Decoded) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                self.stats.decode_errors += 1;
                tracing::warn!("undecodable kernel record: {e}");
                self.emit(json!({"time": Self::now(), "kind": "decode_error", "error": e.to_string()})).await;
                return;
            }
        };
        let mut ev = ev;
        if ev.header.server_id == PROVISIONAL_SERVER {
            match self.resolve_provisional(&ev).await {
                Some(id) => ev.header.server_id = id,
                None => return,
            }
        }
        *self.stats.events.entry(ev.kind()).or_default() += 1;
        if let Ok(mut m) = self.metrics.lock() {
            m.event(ev.kind());
        }
        let mut clock = std::time::Instant::now();
        let mut lap = |stats: &mut Stats, stage: &'static str| {
            let now = std::time::Instant::now();
            *stats.stage_ns.entry(stage).or_default() += (now - clock).as_nanos() as u64;
            clock = now;
        };
        let change = self.tree.apply(&ev);
        lap(&mut self.stats, "process_tree");
        let outcome = self.corr.handle(&ev);
        lap(&mut self.stats, "correlation");
        match outcome {
            Outcome::Consumed(records) => {
                for mut r in records {
                    self.sniff_check(&r).await;
                    if r["kind"] == "mcp_tools" {
                        self.check_tools(&mut r).await;
                    }
                    // Issue 13 hook: results are scanned (toolwatch/results.rs), not written out.
                    if r["kind"] == "mcp_result" {
                        self.check_result(r).await;
                        continue;
                    }
                    let r = self.decorate(r, ev.header.ts_mono_ns);
                    self.emit(r).await;
                }
            }
            Outcome::Event(attribution) => {
                let mut line = self.render(&ev);
                line["mcp"] = serde_json::to_value(&attribution).unwrap_or(Value::Null);
                lap(&mut self.stats, "render_json");
                let alerts = self.evaluate(&ev, &attribution, &mut line);
                lap(&mut self.stats, "context_and_rules");
                self.emit(line).await;
                for a in alerts {
                    self.emit_alert(a).await;
                }
                lap(&mut self.stats, "serialize_and_queue");
            }
        }
        if let TreeChange::ServerGone(id) = change {
            self.tools_watch.tools.remove(&id);
            for r in self.corr.server_gone(id, ev.header.ts_mono_ns) {
                let r = self.decorate(r, ev.header.ts_mono_ns);
                self.emit(r).await;
            }
            // Pin any loss on the server while its name is still known.
            self.check_blind_spots().await;
            if let Some(s) = self.tracker.forget(id) {
                self.emit(json!({"time": Self::now(), "kind": "server_gone", "server_id": id, "server": s.name})).await;
            }
        }
    }

    /// Runs the rules on one attributed event; returns the alert records. Adds the resolved path
    /// to the event line.
    fn evaluate(&mut self, ev: &Event, attribution: &crate::jsonrpc::session::Attribution, line: &mut Value) -> Vec<Value> {
        let Some(policy) = self.policy.as_mut() else { return vec![] };
        let path = match &ev.body {
            events::Body::Open(o) => {
                let p = match (policy.known_path(ev), o.inode) {
                    (Some(known), _) => known.display().to_string(),
                    (None, Some(inode)) => {
                        let key = (inode, path_key(&o.path));
                        match self.resolved.get(&key) {
                            Some(p) => p.clone(),
                            None => {
                                let p = context::resolve_open(ev.header.pid, o.dirfd, &o.path, o.result.ret, o.inode);
                                if self.resolved.len() >= RESOLVED_CACHE {
                                    self.resolved.clear();
                                }
                                self.resolved.insert(key, p.clone());
                                p
                            }
                        }
                    }
                    (None, None) => context::resolve_open(ev.header.pid, o.dirfd, &o.path, o.result.ret, None),
                };
                line["resolved_path"] = p.clone().into();
                Some(p)
            }
            _ => None,
        };
        let server = self.tracker.server(ev.header.server_id);
        let want = policy.fields_used();
        let mut ctx = context::build(&context::Inputs { ev, tree: &self.tree, server, attribution, path, want: Some(want) });
        // Issue 13 hook: the injection → action chain (toolwatch/results.rs).
        let chain = self.tools_watch.results.annotate(&mut ctx, attribution, server, &self.tree, &self.corr);
        if let (Some(profiles), Some(s)) = (self.profiles.as_mut(), server) {
            let version = self.corr.session(s.id).and_then(|x| x.server_info.as_ref()).and_then(|i| i["version"].as_str().map(str::to_string));
            if let Some((list, value)) = profile_entry(&ctx) {
                match profiles.mode {
                    crate::rules::profile::Mode::Learn => profiles.learn(&s.name, version.as_deref(), list, value),
                    crate::rules::profile::Mode::Enforce => {
                        let (exists, fits) = profiles.check(&s.name, version.as_deref(), list, &value);
                        ctx.set("profile.exists", crate::rules::Val::Bool(exists));
                        ctx.set("profile.fits", crate::rules::Val::Bool(fits));
                    }
                }
            }
        }
        let tracker = &self.tracker;
        let t0 = std::time::Instant::now();
        let fired = policy.evaluate(ev, &ctx, |pid| tracker.lookup(pid).is_some());
        let rules_ns = t0.elapsed().as_nanos() as u64;
        *self.stats.stage_ns.entry("rules_eval").or_default() += rules_ns;
        if let Ok(mut m) = self.metrics.lock() {
            m.rule_eval(rules_ns as f64 / 1e9);
        }
        if fired.is_empty() {
            return vec![];
        }
        let server_v = server
            .map(|s| json!({"id": s.id, "name": s.name, "how": s.how, "client": s.client, "root_pid": s.root_pid}))
            .unwrap_or(json!({"id": ev.header.server_id}));
        let mcp = line["mcp"].clone();
        let ancestry = self.tree.ancestry(ev.header.pid);
        let mut out = Vec::new();
        for (rule, action) in fired {
            // Learning: what the kernel refused this server is what it would need granted.
            if let (Some(p), Some(s)) = (self.profiles.as_mut().filter(|p| p.mode == crate::rules::profile::Mode::Learn), server) {
                if policy::enforced_in_kernel(&action) {
                    p.learn_grant(&s.name, &rule.id);
                }
            }
            let mut a = policy::alert_record(rule, action, &ctx, line.clone(), mcp.clone(), server_v.clone(), ancestry.clone());
            if let Some(c) = &chain {
                a["chain"] = c.clone();
            }
            a["time"] = line["time"].clone();
            a["host"] = self.host.clone().into();
            tracing::warn!("alert {} ({:?}): {}", rule.id, rule.severity, a["summary"].as_str().unwrap_or_default());
            out.push(a);
        }
        *self.rule_alerts.entry(ev.header.server_id).or_default() += out.len() as u64;
        out
    }

    /// Writes learned profiles (periodically and at shutdown).
    pub fn save_profiles(&mut self) {
        if let Some(p) = self.profiles.as_mut().filter(|p| p.mode == crate::rules::profile::Mode::Learn) {
            match p.save() {
                Ok(0) => {}
                Ok(n) => tracing::info!("profiles: {n} written to {}", p.dir.display()),
                Err(e) => tracing::error!("writing profiles to {}: {e}", p.dir.display()),
            }
        }
    }

    /// SIGHUP: reload the rules; a bad file leaves the old rules in force.
    pub async fn reload_rules(&mut self) {
        let Some(p) = self.policy.as_mut() else { return };
        let rec = match p.reload() {
            Ok(n) => {
                tracing::info!("rules reloaded: {n} rules");
                if let Ok(mut m) = self.metrics.lock() {
                    m.zero(&p.alert_labels(), &[]);
                }
                json!({"time": Self::now(), "kind": "rules_reloaded", "ok": true, "policy": p.summary()})
            }
            Err(e) => {
                tracing::error!("rules reload rejected, previous rules stay in force: {e}");
                json!({"time": Self::now(), "kind": "rules_reloaded", "ok": false, "error": e.to_string(), "policy": p.summary()})
            }
        };
        self.emit(rec).await;
    }

    /// Re-expands protected globs so new files (a key made after start-up) are protected.
    pub async fn rescan_protected(&mut self) -> bool {
        let Some(p) = self.policy.as_mut().filter(|p| p.rescan_due()) else { return false };
        let before = p.plan.files.clone();
        if let Err(e) = p.sync_kernel() {
            tracing::error!("updating kernel policy: {e}");
            return false;
        }
        if p.plan.files != before {
            let added: Vec<String> = p.plan.paths.iter().filter(|(i, _)| !before.contains_key(i)).map(|(_, path)| path.display().to_string()).collect();
            let rec = json!({"time": Self::now(), "kind": "protected_changed", "protected_inodes": p.plan.files.len(), "added": added});
            self.emit(rec).await;
        }
        true
    }

    /// Adds time and server name to a correlation record.
    fn decorate(&self, mut r: Value, ts: u64) -> Value {
        r["time"] = format_rfc3339(self.clock.wall(ts)).into();
        if let Some(id) = r["server_id"].as_u64() {
            if let Some(s) = self.tracker.server(id as u32) {
                r["server"] = s.name.clone().into();
            }
        }
        r
    }

    fn render(&self, ev: &Event) -> Value {
        let mut v = serde_json::to_value(ev).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("time".into(), format_rfc3339(self.clock.wall(ev.header.ts_mono_ns)).into());
            if let Some(s) = self.tracker.server(ev.header.server_id) {
                m.insert("server".into(), s.name.clone().into());
            }
            if let Some(n) = self.tree.get(ev.header.pid) {
                if let Some(exe) = &n.exe {
                    m.entry("exe").or_insert_with(|| exe.clone().into());
                }
            }
        }
        v
    }

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
        // Hooks first, then the map entry: the process is never tracked without its sensors.
        if !self.sensors.syscall_hooks_active() {
            let t = std::time::Instant::now();
            self.sensors.attach_syscall_hooks().map_err(|e| TrackError::Sensors(e.to_string()))?;
            tracing::info!("syscall hooks attached in {} ms", t.elapsed().as_millis());
        }
        let ack = self.tracker.track(pid, name, how, uid)?;
        // Grants follow the configured name; in place before the caller is acknowledged.
        self.sync_servers();
        if !ack.already_tracked {
            for &p in &ack.tracked_pids {
                if let Some(info) = procfs::process_info(p) {
                    self.tree.insert(ProcNode {
                        pid: p,
                        ppid: info.ppid,
                        server_id: ack.server_id,
                        exe: info.exe,
                        argv: info.argv,
                    });
                }
            }
            let mut rec = json!({
                "time": Self::now(), "kind": "server_tracked", "server_id": ack.server_id, "server": ack.name,
                "how": how, "root_pid": pid, "uid": uid, "tracked_pids": ack.tracked_pids,
            });
            if let Some(s) = self.tracker.server_mut(ack.server_id) {
                fill(s);
                rec["client"] = json!(s.client);
                rec["config"] = json!(s.config);
                rec["command"] = json!(s.command);
                rec["sniffing"] = json!(s.sniffing);
                rec["found"] = self.disc.found(s);
            }
            if matches!(how, Discovery::TrackPid | Discovery::Procfs) {
                self.corr.joined_midstream(ack.server_id);
            }
            tracing::info!("tracking server {} (id {}, {how:?}) root pid {pid}, {} processes", ack.name, ack.server_id, ack.tracked_pids.len());
            self.emit(rec).await;
        }
        Ok(ack)
    }

    pub async fn on_control(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::Track(req) => self.on_request(req).await,
            ControlMsg::Servers(reply) => {
                let _ = reply.send(self.servers_view());
            }
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

    pub async fn summary(&self) {
        let lost: serde_json::Map<String, Value> =
            LOST_NAMES.iter().zip(self.stats.lost.iter()).map(|(k, v)| (k.to_string(), json!(v))).collect();
        self.emit(json!({
            "time": Self::now(), "kind": "stats", "events": self.stats.events,
            "decode_errors": self.stats.decode_errors, "lost": lost, "mcp": self.corr.stats, "http": self.corr.http.stats,
            "candidates_dropped": self.stats.candidates_dropped,
            "provisional_events_discarded": self.stats.provisional_events_discarded,
            "exits_reconciled": self.stats.exits_reconciled,
            "alerts": self.policy.as_ref().map(|p| p.alerts), "kills": self.policy.as_ref().map(|p| p.kills),
            "stage_ns": self.stats.stage_ns,
        }))
        .await;
    }
}

/// What an event adds to (or is checked against) its server's profile: successful execs, opens
/// outside the paths its calls named, connects and sends.
fn profile_entry(ctx: &crate::rules::Ctx) -> Option<(&'static str, String)> {
    use crate::rules::Val;
    let s = |f: &str| match ctx.get(f) {
        Some(Val::Str(v)) => Some(v.clone()),
        _ => None,
    };
    let yes = |f: &str| matches!(ctx.get(f), Some(Val::Bool(true)));
    let net = match (ctx.get("net.addr"), ctx.get("net.port"), s("net.unix_path")) {
        (Some(Val::Ip(a)), Some(Val::Num(p)), _) => Some(format!("{a}:{p}")),
        (_, _, Some(u)) => Some(format!("unix:{u}")),
        _ => None,
    };
    let path = if yes("file.ok") && !yes("mcp.in_scope") { s("file.path") } else { None };
    crate::rules::profile::entry(ctx.event(), s("proc.exe").as_deref(), path.as_deref(), net)
}
