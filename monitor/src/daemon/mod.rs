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
use tokio::sync::mpsc;

mod containers;
pub mod context;
mod discover;
pub mod emit;
mod evaluate;
mod limits;
pub mod policy;
mod protection;
mod servers;
mod stages;
mod start;
mod toolwatch;
mod userdb;

pub use start::run;

use monitor_common::PROVISIONAL_SERVER;

use crate::{
    control::ControlMsg,
    correlation::{Carried, Correlator, Found, Outcome},
    discovery::adopt::Discoverer,
    events::{self, reader::Decoded},
    jsonrpc::session::Attribution,
    output::{
        format_rfc3339,
        record::{EventLine, Mcp, McpRecord, Stats as StatsRecord},
        Clock, Record,
    },
    sys::procfs,
    probes::Sensors,
    process_tree::{ProcessTree, TreeChange},
    tracker::Tracker,
};
use servers::Retire;
use stages::Stage;

/// Counters the daemon reports at exit (and, later, as metrics).
#[derive(Default, Debug)]
pub struct Stats {
    pub events: stages::KindCounts,
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
    pub stage_ns: stages::StageTimes,
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
    /// `--detach-pause-ms` (tests only).
    pub detach_pause: Duration,
    clock: Clock,
    /// The event lines' `time` (kept per second).
    stamps: crate::output::Stamps,
    /// Where finished records go: the writer, the tail, the metrics, the alert sinks.
    pub out: emit::Emitter,
    lost_map: PerCpuArray<MapData, u64>,
    /// Per-server loss totals at the last check, and when that was (the blind spot's window).
    lost_seen: std::collections::BTreeMap<u32, u64>,
    lost_checked: SystemTime,
    /// The events writer's failures (a full disk), whether the last check found it failing,
    /// and the lines it had lost by then.
    output_health: std::sync::Arc<crate::output::WriterHealth>,
    output_failing: bool,
    output_lost_seen: u64,
    pub on_loss: crate::cli::OnLoss,
    pub stats: Stats,
    /// Rules and actions (None: observe only).
    pub policy: Option<policy::Policy>,
    /// Rule alerts per server id.
    rule_alerts: std::collections::HashMap<u32, u64>,
    /// Baseline profiles (learned or enforced).
    pub profiles: Option<crate::rules::profile::Profiles>,
    /// Tracked pids found dead at the last reconcile (reaped if still there at the next).
    reap_suspects: std::collections::HashSet<u32>,
    /// Resolved paths of opens by (inode, path as given): a repeated open of the same file by
    /// the same name costs no /proc lookups. Same inode and same name cannot resolve elsewhere.
    resolved: foldhash::HashMap<(events::Inode, u64), std::sync::Arc<str>>,
    /// The rule context, kept across events (`evaluate`).
    ctx: Option<Box<crate::rules::Ctx>>,
    /// Each thread's last open the kernel may fold repeats into (by tid): a folded run's count
    /// goes out as that open's line with `folded`.
    fold_heads: foldhash::HashMap<u32, Box<EventLine>>,
    /// Stdio streams of containers joined to a server (inode → server id): the JSON-RPC on them
    /// is what the server's CLI relays, captured on the CLI's own streams; not parsed twice.
    relayed_stdio: std::collections::HashMap<u64, containers::Relayed>,
    /// Server roots by pid: whether their latest exec is a package runner's, as `note_runner`
    /// judged it (the rule context's `proc.is_runner` reads it rather than parsing the argv
    /// again for each of the root's events).
    runner_roots: foldhash::HashMap<u32, bool>,
    /// Pairing of launches of one image side by side (daemon/containers.rs): joined containers
    /// whose first reply went out, and CLIs that relayed one, each waiting for the other.
    pairing: containers::Pairing,
}

/// Threads whose last foldable open is kept; beyond this the table starts over (a count
/// without its open still goes out, as a `repeat` record).
const FOLD_HEADS: usize = 8192;

/// How long nothing must be tracked before the syscall hooks come off.
const IDLE_DETACH: Duration = Duration::from_secs(3);
/// How long after its exec a handshake candidate keeps the syscall hooks attached: servers read
/// their stdin within seconds of starting (a Python server's imports included). One that starts
/// reading later, after the hooks were detached, is not found by its handshake.
const CANDIDATE_YOUNG: Duration = Duration::from_secs(30);

const LOST_NAMES: [&str; LOST_REASONS as usize] = ["ringbuf_full", "pending_full", "tracked_full", "stdio_pipes_full"];
const _: () = assert!(LostReason::StdioFull as u32 + 1 == LOST_REASONS);

impl Pipeline {
    pub fn new(
        sensors: Sensors,
        tracker: Tracker,
        disc: Discoverer,
        lost_map: PerCpuArray<MapData, u64>,
        lines: (mpsc::Sender<Vec<u8>>, crate::output::Spare, std::sync::Arc<crate::output::WriterHealth>),
    ) -> Self {
        Self {
            sensors,
            tracker,
            tree: ProcessTree::new(),
            corr: Correlator::new(),
            disc,
            tools_watch: Default::default(),
            idle_since: None,
            detach_pause: Duration::ZERO,
            clock: Clock::new(),
            stamps: Default::default(),
            out: emit::Emitter::new(lines.0, lines.1),
            output_health: lines.2,
            output_failing: false,
            output_lost_seen: 0,
            lost_map,
            lost_seen: Default::default(),
            lost_checked: SystemTime::now(),
            on_loss: Default::default(),
            stats: Stats::default(),
            policy: None,
            rule_alerts: Default::default(),
            profiles: None,
            reap_suspects: Default::default(),
            resolved: Default::default(),
            ctx: None,
            fold_heads: Default::default(),
            relayed_stdio: Default::default(),
            runner_roots: Default::default(),
            pairing: Default::default(),
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
        tracing::warn!(processes = dead.len(), "tracked processes exited without an exit event (lost); reconciled");
        for id in gone {
            self.retire(id, Retire::ExitLost).await;
        }
    }

    /// Detaches the syscall hooks once the kernel has tracked nothing for `IDLE_DETACH`:
    /// untracked processes then pay nothing at all for mcpmon's syscall sensors. The grace period
    /// avoids flapping when servers come and go; the slow part of detaching runs off the pipeline.
    pub async fn check_idle(&mut self) {
        if !self.sensors.syscall_hooks_active() || !Self::idle(&self.tracker, &mut self.sensors) {
            self.idle_since = None;
            return;
        }
        let since = *self.idle_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < IDLE_DETACH {
            return;
        }
        self.idle_since = None;
        if !self.detach_pause.is_zero() {
            tracing::info!(ms = self.detach_pause.as_millis() as u64, "idle: pausing before the syscall hooks come off");
            tokio::time::sleep(self.detach_pause).await;
        }
        // A server or candidate that exec'd since `idle` looked read the hooks-live flag still
        // set, so it was neither held nor reported late: with the flag now clear, look again
        // (the kernel reads the flag after its insert, so one of the two sees the other).
        let tracker = &self.tracker;
        match self.sensors.detach_syscall_hooks_in_background(|s| Self::idle(tracker, s)) {
            Ok(true) => tracing::info!(idle_s = IDLE_DETACH.as_secs(), "nothing tracked: detaching syscall hooks"),
            Ok(false) => tracing::info!("a server or candidate exec'd as the hooks were about to come off: kept attached"),
            Err(e) => tracing::error!(error = %e, "detaching syscall hooks"),
        }
    }

    /// Nothing is tracked in the kernel and no handshake candidate is young (one that has not
    /// read its stdin yet: the read hooks must see it).
    fn idle(tracker: &Tracker, sensors: &mut crate::probes::Sensors) -> bool {
        tracker.map_is_empty() && sensors.young_candidates(crate::output::monotonic_ns(), CANDIDATE_YOUNG.as_nanos() as u64) == 0
    }

    /// Once a second: gauges for the metrics endpoint, and closed throttle windows.
    pub async fn metrics_tick(&mut self, force_flush: bool) {
        self.out.flush(force_flush).await;
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
            ("events_not_written", self.output_health.lines_dropped()),
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
        let mut m = self.out.metrics();
        m.gauges = g;
        m.set_events(&self.stats.events.to_map());
    }

    fn now() -> String {
        format_rfc3339(std::time::SystemTime::now())
    }

    pub async fn on_event(&mut self, ev: Decoded) {
        let mut ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                self.stats.decode_errors += 1;
                tracing::warn!(error = %e, "undecodable kernel record");
                self.out.emit(Record::DecodeError { time: Self::now(), error: e.to_string() }).await;
                return;
            }
        };
        if let events::Body::Handshake(h) = &ev.body {
            if !h.json_in {
                return self.on_candidate();
            }
        }
        if ev.header.server_id == PROVISIONAL_SERVER {
            match self.resolve_provisional(&mut ev).await {
                Some(id) => ev.header.server_id = id,
                None => return,
            }
        }
        if let events::Body::Handshake(_) = &ev.body {
            return; // decided on above; its bytes follow as a stdio event
        }
        if let events::Body::Stdio(s) = &ev.body {
            if !self.relayed_stdio.is_empty() {
                if self.relayed_stdio.contains_key(&s.ino) {
                    return self.on_relayed(s.ino).await;
                }
                if s.dir == events::Direction::Out && self.pairing.first_out(ev.header.server_id) {
                    self.relayed_reply(ev.header.server_id).await;
                }
            }
        }
        if let events::Body::Repeat(r) = &ev.body {
            return self.on_repeat(&ev.header, r).await;
        }
        self.stats.events.add(&ev);
        // One event in `stages::SAMPLE` is timed (clock reads were 6.5% of a flood's cost).
        let mut clock = self.stats.stage_ns.sample().then(std::time::Instant::now);
        let timed = clock.is_some();
        let mut lap = |stats: &mut Stats, stage: Stage| {
            if let Some(c) = clock.as_mut() {
                let now = std::time::Instant::now();
                stats.stage_ns.add_sampled(stage, (now - *c).as_nanos() as u64);
                *c = now;
            }
        };
        let change = self.tree.apply(&ev);
        if let events::Body::Exec(x) = &ev.body {
            if x.result.ok {
                self.note_runner(ev.header.server_id, ev.header.pid, ev.header.ts_mono_ns, &x.argv);
            }
        }
        lap(&mut self.stats, Stage::ProcessTree);
        let outcome = self.corr.handle(&ev);
        lap(&mut self.stats, Stage::Correlation);
        let ts = ev.header.ts_mono_ns;
        match outcome {
            Outcome::Consumed(found) => {
                for f in found {
                    self.on_found(f).await;
                }
            }
            Outcome::Event(attribution) => {
                let line = self.event_line(ev, attribution);
                let alerts = self.evaluate(&line, timed);
                lap(&mut self.stats, Stage::ContextAndRules);
                self.out.emit_event(&line).await;
                for a in alerts {
                    self.out.alert(a).await;
                }
                // Asked here, not in the callee: the line (432 bytes) moves only when kept.
                if matches!(&line.event.body, events::Body::Open(o) if o.fold_sig != 0) {
                    self.keep_fold_head(line);
                }
                lap(&mut self.stats, Stage::RenderAndQueue);
            }
        }
        if let TreeChange::ServerGone(id) = change {
            self.retire(id, Retire::Exited { ts }).await;
        }
    }

    /// Keeps an open the kernel may fold later repeats into (its thread's last one).
    fn keep_fold_head(&mut self, line: EventLine) {
        let events::Body::Open(o) = &line.event.body else { return };
        if o.fold_sig == 0 {
            return;
        }
        if self.fold_heads.len() >= FOLD_HEADS {
            self.fold_heads.clear();
        }
        self.fold_heads.insert(line.event.header.tid, Box::new(line));
    }

    /// A folded run: its open's line again, with the count and the first and last time. The
    /// rules already judged that open; its repeats are the same open in the same call.
    async fn on_repeat(&mut self, h: &events::Header, r: &events::Repeat) {
        self.stats.events.add_kind(r.of, r.count);
        let folded = crate::output::record::Folded {
            count: r.count,
            first: format_rfc3339(self.clock.wall(r.first_ns)),
            last: format_rfc3339(self.clock.wall(r.last_ns)),
        };
        let head = self.fold_heads.remove(&h.tid);
        match head {
            Some(mut line) if matches!(&line.event.body, events::Body::Open(o) if o.fold_sig == r.fold_sig) => {
                line.time = folded.first.as_str().into();
                line.folded = Some(folded);
                self.out.emit_event(&line).await;
                line.folded = None;
                self.fold_heads.insert(h.tid, line);
            }
            other => {
                if let Some(line) = other {
                    self.fold_heads.insert(h.tid, line);
                }
                let rec = Record::Repeat { time: folded.first.clone(), server_id: h.server_id, pid: h.pid, tid: h.tid, of: r.of, folded };
                self.out.emit(rec).await;
            }
        }
    }

    /// A record of the JSON-RPC stage: discovery and the tool checks read it, result content is
    /// scanned (and not written out), the rest goes out with its time and server name.
    async fn on_found(&mut self, f: Found) {
        let Found { server_id, ts_mono_ns, what } = f;
        let mut body = match what {
            Carried::Result(r) => return self.check_result(server_id, r).await,
            Carried::Record(m) => m,
        };
        self.sniff_check(server_id, &body).await;
        if let Mcp::McpTools { detail, .. } = &mut body {
            let detail = std::mem::take(detail);
            self.check_tools(server_id, detail).await;
        }
        let rec = self.stamp(server_id, ts_mono_ns, body);
        self.out.emit(rec).await;
    }

    /// An MCP record with its time and server name.
    fn stamp(&self, server_id: u32, ts_mono_ns: u64, body: Mcp) -> Record {
        let server = self.tracker.server(server_id).map(|s| s.name.to_string());
        Record::Mcp(Box::new(McpRecord { time: format_rfc3339(self.clock.wall(ts_mono_ns)), server_id, server, body }))
    }

    /// A kernel event as it is written out: when, whose, which image, the call it belongs to, and
    /// for opens the path the rules see.
    fn event_line(&mut self, event: events::Event, mcp: Attribution) -> EventLine {
        let resolved_path = self.resolve_path(&event);
        EventLine {
            time: self.stamps.format_ns(self.clock.wall_ns(event.header.ts_mono_ns)),
            server: self.tracker.server_or_gone(event.header.server_id).map(|s| s.name.clone()),
            exe: self.tree.get(event.header.pid).and_then(|n| n.exe.clone()),
            container: self.tree.container(event.header.pid).cloned(),
            mcp,
            resolved_path,
            folded: None,
            event,
        }
    }

    /// Writes learned profiles (periodically and at shutdown).
    pub fn save_profiles(&mut self) {
        if let Some(p) = self.profiles.as_mut().filter(|p| p.mode == crate::rules::profile::Mode::Learn) {
            match p.save() {
                Ok(0) => {}
                Ok(n) => tracing::info!(profiles = n, dir = %p.dir.display(), "profiles written"),
                Err(e) => tracing::error!(dir = %p.dir.display(), error = %e, "writing profiles"),
            }
        }
    }

    /// SIGHUP: reload the rules; a bad file leaves the old rules in force.
    pub async fn reload_rules(&mut self) {
        let Some(p) = self.policy.as_mut() else { return };
        let rec = match p.reload() {
            Ok(n) => {
                tracing::info!(rules = n, "rules reloaded");
                self.out.metrics().zero(&p.alert_labels(), &[]);
                Record::RulesReloaded { time: Self::now(), ok: true, error: None, policy: p.summary() }
            }
            Err(e) => {
                tracing::error!(error = %e, "rules reload rejected, previous rules stay in force");
                Record::RulesReloaded { time: Self::now(), ok: false, error: Some(e.to_string()), policy: p.summary() }
            }
        };
        self.out.emit(rec).await;
    }

    /// Re-expands protected globs so new files (a key made after start-up) are protected.
    pub async fn rescan_protected(&mut self) -> bool {
        let Some(p) = self.policy.as_mut().filter(|p| p.rescan_due()) else { return false };
        let before = p.plan.files.clone();
        if let Err(e) = p.sync_kernel() {
            tracing::error!(error = %e, "updating kernel policy");
            return false;
        }
        if p.plan.files != before {
            let added: Vec<String> = p.plan.paths.iter().filter(|(i, _)| !before.contains_key(i)).map(|(_, path)| path.display().to_string()).collect();
            let rec = Record::ProtectedChanged { time: Self::now(), protected_inodes: Some(p.plan.files.len()), added, why: None };
            self.out.emit(rec).await;
        }
        true
    }

    pub async fn on_control(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::Track(req) => self.on_request(req).await,
            ControlMsg::Servers(reply) => {
                let _ = reply.send(self.servers_view());
            }
        }
    }

    pub async fn summary(&self) {
        let stats = StatsRecord {
            time: Self::now(),
            events: self.stats.events.to_map(),
            decode_errors: self.stats.decode_errors,
            lost: LOST_NAMES.iter().copied().zip(self.stats.lost.iter().copied()).collect(),
            mcp: serde_json::to_value(&self.corr.stats).unwrap_or_default(),
            http: serde_json::to_value(&self.corr.http.stats).unwrap_or_default(),
            candidates_dropped: self.stats.candidates_dropped,
            provisional_events_discarded: self.stats.provisional_events_discarded,
            exits_reconciled: self.stats.exits_reconciled,
            alerts: self.policy.as_ref().map(|p| p.alerts),
            kills: self.policy.as_ref().map(|p| p.kills),
            stage_ns: self.stats.stage_ns.to_map(),
        };
        self.out.emit(Record::Stats(Box::new(stats))).await;
    }
}
