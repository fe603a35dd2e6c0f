//! Where a user or the kernel could blind the monitor: track requests over the world-usable
//! control socket (a per-uid limit, so one user cannot fill the kernel's `TRACKED` table), and
//! kernel events lost to a full ring or table (an alert, never only a counter).
use super::{Pipeline, LOST_NAMES};
use crate::{
    output::{
        alert::{ActionRecord, ActionResult, ActionType, ProcessRef, RuleRef, ServerRef},
        format_rfc3339,
        record::LostCount,
        Alert, Record,
    },
    rules::Severity,
    tracker::{Discovery, TrackError, TrackRequest},
};

/// The monitor's own rule about the kernel's shared tables (defense evasion).
fn evasion_rule(id: &str, description: &str) -> RuleRef {
    RuleRef::builtin(id, Severity::High, description, &["defense_evasion", "T1562.001"], &["T1562.001"])
}

/// Servers one non-root user may have tracked through the control socket at once.
const MAX_SERVERS_PER_UID: usize = 256;

impl Pipeline {
    pub async fn on_request(&mut self, req: TrackRequest) {
        // The control socket is open to every user: one user's requests must not fill the
        // kernel's TRACKED table and leave other users' servers untracked.
        let mine = self.tracker.servers().filter(|s| s.uid == req.requester_uid && matches!(s.how, Discovery::Exec | Discovery::TrackPid)).count();
        if req.requester_uid != 0 && mine >= MAX_SERVERS_PER_UID {
            tracing::warn!(pid = req.pid, name = %req.name, uid = req.requester_uid, servers = mine, "track request refused: per-user limit");
            let _ = req.reply.send(Err(TrackError::Refused(req.pid, "this user already has the most tracked servers allowed")));
            let mut rule = evasion_rule("track-limit", "A user asked to track more servers than one user may (the kernel's table is shared by all users).");
            rule.severity = Severity::Medium;
            let summary = format!("uid {} asked to track pid {} ({}) with {mine} servers already tracked", req.requester_uid, req.pid, req.name);
            let mut a = Alert::new(rule, ActionRecord::new(ActionType::Deny, ActionResult::Refused), summary, Self::now());
            a.process = Some(ProcessRef { pid: req.pid, ppid: None, uid: req.requester_uid, exe: None, argv: None, ancestry: None });
            self.out.alert(a).await;
            return;
        }
        let r = self.track(req.pid, &req.name, req.how, req.requester_uid).await;
        if let Err(e) = &r {
            tracing::warn!(pid = req.pid, name = %req.name, error = %e, "track request refused");
        }
        let _ = req.reply.send(r);
    }

    /// Reads the kernel's lost-event counters and reports any increase.
    pub async fn check_lost(&mut self) {
        let now = crate::probes::read_lost(&self.lost_map);
        if now != self.stats.lost {
            let delta: Vec<u64> = now.iter().zip(self.stats.lost.iter()).map(|(a, b)| a - b).collect();
            tracing::warn!(totals = ?LOST_NAMES.iter().zip(now.iter()).collect::<Vec<_>>(), new = ?delta, "kernel lost events");
            let by_reason = LOST_NAMES.iter().enumerate().map(|(i, name)| (*name, LostCount { total: now[i], new: delta[i] })).collect();
            self.out.emit(Record::Lost { time: Self::now(), by_reason }).await;
            // A full table is what an attacker fills first (4096 threads blocked in opens, a
            // flood of track requests) before the act itself: never only a counter.
            for (i, name) in LOST_NAMES.iter().enumerate() {
                if delta[i] > 0 {
                    self.out.alert(table_full_alert(name, delta[i], now[i])).await;
                }
            }
            self.stats.lost = now;
        }
        self.check_blind_spots().await;
        self.check_output().await;
    }

    /// The events writer failing (a full disk) loses every record, alerts included: an alert
    /// when it starts, through the alert sinks (webhook, alert file) that may still work, and
    /// one when it ends with what was lost. Not one per check: each alert's own line would be
    /// lost too, and count as new loss.
    async fn check_output(&mut self) {
        let (failing, lost) = (self.output_health.failing(), self.output_health.lines_dropped());
        let new = lost.saturating_sub(self.output_lost_seen);
        self.output_lost_seen = lost;
        // `finding` tells them apart, for the throttle too (a recovery within its window is not
        // a repeat). A failure that began and ended between two checks (a burst cut by a full
        // disk, then room again) lost lines all the same: it says so once, in one alert.
        let error = self.output_health.last_error();
        let (finding, summary) = match (self.output_failing, failing) {
            (false, true) => ("failing", format!("the events output fails ({error}): records are being lost ({lost} lines so far)")),
            (true, false) => ("written_again", format!("the events output is written again; {lost} lines were lost in all")),
            (false, false) if new > 0 => ("failed_between_checks", format!("the events output failed ({error}) and is written again: {new} lines lost, {lost} in all")),
            _ => return,
        };
        self.output_failing = failing;
        let rule = evasion_rule("events-not-written", "The events output (file or stdout) could not be written: records and alerts are lost until it recovers (a full disk, possibly filled on purpose).");
        let a = Alert::new(rule, ActionRecord::alerted(), summary, Pipeline::now())
            .with("finding", finding)
            .with("lines_lost", new)
            .with("lines_lost_total", lost)
            .with("error", error);
        self.out.alert(a).await;
    }

    /// A server whose own events were lost gets an alert naming it, with the window in which
    /// it went unseen; under `--on-loss kill` the kernel has killed the process whose event was
    /// lost, and the rest of that server's tree dies here.
    pub(super) async fn check_blind_spots(&mut self) {
        let by_server = self.sensors.lost_by_server();
        let (from, to) = (self.lost_checked, std::time::SystemTime::now());
        self.lost_checked = to;
        for (&sid, &total) in &by_server {
            let seen = self.lost_seen.get(&sid).copied().unwrap_or(0);
            // LRU eviction can drop a count and restart it: anything new counts.
            let new = if total >= seen { total - seen } else { total };
            if new == 0 {
                continue;
            }
            let server = self.tracker.servers().find(|s| s.id == sid).map(|s| (s.name.to_string(), s.root_pid));
            let name = server.as_ref().map(|s| s.0.clone()).unwrap_or_else(|| format!("server-{sid}"));
            let mut killed = Vec::new();
            if self.on_loss == crate::cli::OnLoss::Kill {
                let guard = crate::actions::kill::Guard::new(std::process::id());
                for pid in self.tree.pids_of(sid) {
                    let still = |p: u32| self.tracker.lookup(p).is_some_and(|t| t.server_id == sid);
                    if crate::actions::kill::kill(pid, &guard, still) == crate::actions::kill::KillOutcome::Killed {
                        killed.push(pid);
                    }
                }
            }
            let a = blind_spot_alert(sid, &name, server.map(|s| s.1), new, total, (from, to), self.on_loss, &killed);
            self.out.alert(a).await;
            self.out.metrics().blind_spot(&name, new);
        }
        self.lost_seen = by_server;
    }
}

#[allow(clippy::too_many_arguments)]
fn blind_spot_alert(sid: u32, name: &str, root: Option<u32>, new: u64, total: u64, (from, to): (std::time::SystemTime, std::time::SystemTime), on_loss: crate::cli::OnLoss, killed: &[u32]) -> Alert {
    let kill = on_loss == crate::cli::OnLoss::Kill;
    let rule = evasion_rule("blind-spot", "Kernel events of this server could not be delivered (ring buffer or a table full): what it did in this window was not all seen, and rules could not act on it.");
    let action = if kill { ActionRecord { tree_killed: Some(killed.to_vec()), ..ActionRecord::new(ActionType::Kill, ActionResult::KilledInKernel) } } else { ActionRecord::alerted() };
    let (from, to) = (format_rfc3339(from), format_rfc3339(to));
    let summary = format!("{name}: {new} events lost between {from} and {to}{}", if kill { " (the process that lost them was killed in the kernel)" } else { "" });
    let mut a = Alert::new(rule, action, summary, Pipeline::now());
    a.server = Some(ServerRef { root_pid: Some(root), ..ServerRef::named(sid, name) });
    a.with("window", serde_json::json!({"from": from, "to": to})).with("lost_new", new).with("lost_total", total)
}

/// An alert for kernel events lost to a full table or ring: what was missed could be the one
/// syscall that mattered. Secrets do not depend on these tables (the open gate and the open's
/// own check see every open), but rules in user space do.
fn table_full_alert(table: &str, new: u64, total: u64) -> Alert {
    let what = match table {
        "ringbuf_full" => "the event ring buffer was full: kernel events were dropped before user space saw them",
        "pending_full" => "the pending-syscall table was full: syscalls of tracked processes went without their entry record",
        "stdio_pipes_full" => "the stdio pipe table was full: a server's JSON-RPC could not be captured",
        _ => "the tracked-process table was full: processes of tracked servers could not be tracked",
    };
    let rule = evasion_rule("sensor-table-full", "A kernel table or the ring buffer was full; events were lost (possibly on purpose, to blind the monitor).");
    Alert::new(rule, ActionRecord::alerted(), format!("{what} ({new} new, {total} in all)"), Pipeline::now()).with("table", table).with("lost_new", new).with("lost_total", total)
}
