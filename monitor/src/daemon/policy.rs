//! Rules and actions in the pipeline: evaluates every attributed kernel event, writes alerts, and
//! carries out kill/deny (in the kernel through the policy maps, or from user space via pidfd).
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    actions::{
        kernel::KernelPolicy,
        kill::{kill, Guard, KillOutcome},
        protect::{self, Plan},
    },
    events::{Body, Event},
    output::alert::{ActionRecord, ActionResult, ActionType, Where},
    rules::{Action, Ctx, LoadError, Rule, RuleSet},
};

/// How often protected globs are re-expanded (new keys, new users' homes): the backstop of the
/// inotify watch, which replans at once on the changes it sees.
pub const RESCAN: Duration = Duration::from_secs(2);
/// The scan runs on the daemon's one loop: spaced so that it takes at most a tenth of the
/// loop's time however slow the filesystems are (homes on NFS or 9p, a loaded machine). Events
/// and control requests wait while it runs.
const RESCAN_DUTY: u32 = 10;
/// The least time between re-plans for watched changes (`Policy::replan_at`).
const REPLAN_GAP: Duration = Duration::from_millis(100);

pub struct Policy {
    pub rules: RuleSet,
    dir: PathBuf,
    /// The user database: the homes `~/` expands to.
    users: super::userdb::UserDb,
    kernel: KernelPolicy,
    pub dry_run: bool,
    pub plan: Plan,
    guard: Guard,
    last_scan: Instant,
    /// How long the last plan took (spaces the next, `RESCAN_DUTY`).
    scan_cost: Duration,
    pub alerts: u64,
    pub kills: u64,
    /// The open gate (fanotify), where the kernel offers it: read-protected files refused
    /// before an fd exists, and protection that follows an inode through renames.
    pub gate: Option<crate::gate::Gate>,
    /// Entries placed in persistence directories without an open there (renames, links).
    pub persist: Option<crate::gate::persist::PersistWatch>,
    /// Tracked servers eligible for grants: (server id, configured name).
    servers: Vec<(u32, String)>,
    grants: std::collections::BTreeSet<(u32, u32)>,
    /// Without the gate: files the plan has seen in secret directories that no rule protects
    /// (`protect::unseen`), in the kernel map as `KNOWN`.
    known: std::collections::BTreeSet<crate::events::Inode>,
    /// Without the gate: the protected objects held open, as the gate holds them (`keep.rs`).
    keep: protect::keep::Keep,
    /// The other files the kernel's map names, held (`pins.rs`).
    pins: protect::pins::Pins,
    /// Grants not honoured on this machine (`honoured`), logged when they change.
    withheld: std::collections::BTreeSet<(u32, u32)>,
    /// Grants from reviewed profiles (server name → rule ids).
    profile_grants: std::collections::BTreeMap<String, Vec<String>>,
    /// A watched change that came too soon after the last re-plan, to be planned at
    /// `replan_at` (a change of users outranks one of the tree: it reloads the rules).
    deferred: Option<crate::watch::Change>,
    /// How long the last re-plan for a watched change took, rule reload included: the next
    /// one waits at least as long (`replan_at`).
    replan_cost: Duration,
    /// The path gate's answers for paths already seen, for these rules (emptied with them).
    gate_memo: crate::rules::gate::GateMemo,
    /// The globs of the plans for these rules (emptied with them).
    globs: protect::Globs,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("rules: {0}")]
    Load(#[from] LoadError),
    #[error(transparent)]
    Kernel(#[from] crate::actions::kernel::PolicyError),
}

impl Policy {
    pub fn load(dir: &Path, passwd: &Path, kernel: KernelPolicy, dry_run: bool, guard: Guard) -> Result<Self, PolicyError> {
        let mut users = super::userdb::UserDb::new(passwd);
        let rules = load_rules(dir, &mut users)?;
        let mut p = Self {
            rules,
            dir: dir.into(),
            users,
            kernel,
            dry_run,
            plan: Plan::default(),
            guard,
            last_scan: Instant::now(),
            scan_cost: Duration::ZERO,
            alerts: 0,
            kills: 0,
            gate: None,
            persist: None,
            servers: Vec::new(),
            grants: Default::default(),
            withheld: Default::default(),
            known: Default::default(),
            keep: Default::default(),
            pins: Default::default(),
            profile_grants: Default::default(),
            deferred: None,
            replan_cost: Duration::ZERO,
            gate_memo: Default::default(),
            globs: Default::default(),
        };
        p.sync_kernel()?;
        Ok(p)
    }

    /// SIGHUP, or a change of users: the new set replaces the old only if every file loads.
    pub fn reload(&mut self) -> Result<usize, PolicyError> {
        let mut rules = load_rules(&self.dir, &mut self.users)?;
        // Slots are what the kernel's events name: an event in flight must name the same rule.
        rules.keep_slots_of(&self.rules);
        self.rules = rules;
        self.gate_memo.clear();
        self.globs.clear();
        self.deferred = None;
        self.sync_kernel()?;
        Ok(self.rules.in_force())
    }

    /// Writes what the rules enforce in the kernel. In dry-run mode the maps stay empty: every
    /// enforcement becomes an alert saying what would have happened.
    pub fn sync_kernel(&mut self) -> Result<(), PolicyError> {
        let started = Instant::now();
        let mut plan = if self.dry_run { Plan::default() } else { protect::plan_with(&self.rules, &mut self.globs) };
        let grants = grants_for(&self.rules, &self.servers, &self.profile_grants);
        self.grants = self.honoured(grants, plan.io_uring_kill);
        if let Some(g) = self.gate.as_mut() {
            g.sync(&mut plan, self.grants.iter().copied().collect());
            // Files kept after a rename (or learned at their first open) stay in the kernel map.
            for (i, p, path) in g.held_files() {
                plan.files.entry(i).or_insert(p);
                plan.paths.entry(i).or_insert_with(|| path.to_path_buf());
            }
        }
        if let Some(w) = self.persist.as_mut() {
            let of = |bit: u32| -> Vec<std::path::PathBuf> { plan.files.iter().filter(|(_, p)| **p & bit != 0).filter_map(|(i, _)| plan.paths.get(i).cloned()).collect() };
            w.sync(&of(monitor_common::protect::KILL_DIR_WRITE), &of(monitor_common::protect::KILL_WRITE));
        }
        // `mcpmon exec` registers its process, then execs the server: it runs none of the
        // server's code, so a root that passed through it keeps the launchers' allowances.
        for me in own_images() {
            *plan.files.entry(me).or_insert(0) |= monitor_common::protect::ROOT_VIA;
        }
        // Without the gate, nothing else would keep a renamed key (`keep.rs`) or judge a file
        // no plan has seen (`unseen.rs`).
        let mut unseen = if self.gate.is_none() && !self.dry_run {
            self.keep.apply(&mut plan);
            let mut u = protect::unseen::unseen(&plan, false);
            self.keep.hold_known(&mut u.known);
            u
        } else {
            // The gate holds its own (and the first plan, made before the gate starts, took
            // these): let them go. Literal names are the kernel's with the gate too.
            self.keep = Default::default();
            protect::unseen::unseen(&plan, true)
        };
        // The directories the kernel judges new files in are held too, so their numbers stay
        // theirs (`pins.rs`).
        self.pins.apply_dirs(&mut unseen);
        for (i, p, path) in unseen.classified {
            plan.files.entry(i).or_insert(p);
            plan.paths.entry(i).or_insert(path);
        }
        // Every other file the map will name is held too, so its number stays its own.
        match self.gate.as_ref() {
            Some(g) => self.pins.apply(&mut plan, |i| g.holds(i)),
            None => {
                let keep = &self.keep;
                self.pins.apply(&mut plan, |i| keep.holds(i));
            }
        }
        self.known = unseen.known.into_keys().collect();
        // Readers first: a file newly protected is never refused to its launcher meanwhile.
        self.kernel.sync_root_readers(&plan.root_readers)?;
        // The files (the known ones among them) before the directories: a file the plan has
        // seen is never refused as unseen meanwhile.
        self.sync_files(&plan.files)?;
        // The names before their directories' `NAMED`, for the same reason.
        self.kernel.sync_unseen_names(&unseen.names)?;
        self.kernel.sync_socket_names(&plan.socket_names)?;
        self.kernel.sync_unseen_dirs(&unseen.dirs)?;
        // Known files no plan names any more, and deleted ones, are out of the map: their inodes
        // may go now.
        self.keep.synced();
        self.pins.synced();
        if let Some(g) = self.gate.as_mut() {
            g.synced();
        }
        self.kernel.sync_nets(&plan.nets)?;
        self.kernel.set_io_uring_kill(plan.io_uring_kill)?;
        self.kernel.set_gate_active(self.gate.is_some())?;
        self.kernel.set_foreign_proc_kill(plan.foreign_proc_kill)?;
        self.kernel.set_proc_access_kill(plan.proc_access_kill)?;
        self.kernel.sync_grants(&self.grants)?;
        self.plan = plan;
        self.last_scan = Instant::now();
        let cost = started.elapsed();
        tracing::debug!(us = cost.as_micros() as u64, files = self.plan.files.len(), "protected-file scan");
        if cost >= Duration::from_secs(1) && self.scan_cost < Duration::from_secs(1) {
            tracing::warn!(ms = cost.as_millis() as u64, next_in_s = (cost * RESCAN_DUTY).as_secs(), "protected-file scan is slow (slow filesystems or a loaded machine): rescans spaced out; the inotify watch still replans at once");
        }
        self.scan_cost = cost;
        // A deferred change of users still needs its reload: only a reload clears it.
        if self.deferred == Some(crate::watch::Change::Tree) {
            self.deferred = None;
        }
        Ok(())
    }

    /// The tracked servers changed: grants follow their configured names. Called before a
    /// new server is acknowledged, so a grant is in place at its first instruction.
    pub fn set_servers(&mut self, servers: Vec<(u32, String)>, from_profiles: std::collections::BTreeMap<String, Vec<String>>) -> Result<(), PolicyError> {
        if servers == self.servers && from_profiles == self.profile_grants {
            return Ok(());
        }
        self.servers = servers;
        self.profile_grants = from_profiles;
        let grants = grants_for(&self.rules, &self.servers, &self.profile_grants);
        let grants = self.honoured(grants, self.plan.io_uring_kill);
        if grants != self.grants {
            self.grants = grants;
            self.kernel.sync_grants(&self.grants)?;
            if let Some(g) = self.gate.as_mut() {
                g.set_grants(self.grants.iter().copied().collect());
            }
        }
        Ok(())
    }

    /// The grants the kernel may honour. Without the open gate the opens of an io_uring ring
    /// pass no check at all: a server granted the io_uring rule could read any key through
    /// its ring (the secrets suite's granted ring did, with fanotify_init refused). That grant
    /// is withheld there, and the ring is killed at setup as if none were given.
    fn honoured(&mut self, mut grants: std::collections::BTreeSet<(u32, u32)>, io_uring_kill: u32) -> std::collections::BTreeSet<(u32, u32)> {
        let mut withheld = std::collections::BTreeSet::new();
        if self.gate.is_none() && io_uring_kill != 0 {
            let slot = io_uring_kill >> monitor_common::protect::SLOT_SHIFT;
            withheld = grants.extract_if(.., |(_, s)| *s == slot).collect();
        }
        if withheld != self.withheld && !withheld.is_empty() {
            let servers: Vec<&str> = self.servers.iter().filter(|(id, _)| withheld.iter().any(|(w, _)| w == id)).map(|(_, n)| n.as_str()).collect();
            tracing::warn!(?servers, "io_uring grant withheld: without the open gate a ring's opens pass no check, so its server could read any protected file through it");
        }
        self.withheld = withheld;
        grants
    }

    /// A file the gate judged protected at its first open: into the kernel map at once.
    pub fn learned(&mut self, inode: crate::events::Inode, path: PathBuf, policy: u32, handle: std::os::fd::OwnedFd) -> Result<(), PolicyError> {
        if let Some(g) = self.gate.as_mut() {
            g.learn(inode, path.clone(), policy, handle);
        }
        self.plan.files.entry(inode).or_insert(policy);
        self.plan.paths.entry(inode).or_insert(path);
        let files = std::mem::take(&mut self.plan.files);
        let synced = self.sync_files(&files);
        self.plan.files = files;
        synced
    }

    /// `PROTECTED`: the plan's files, and the known ones (only without the gate) as `KNOWN`.
    fn sync_files(&mut self, files: &std::collections::BTreeMap<crate::events::Inode, u32>) -> Result<(), PolicyError> {
        if self.known.is_empty() {
            return Ok(self.kernel.sync_files(files)?);
        }
        let mut all = files.clone();
        for i in &self.known {
            all.entry(*i).or_insert(monitor_common::protect::KNOWN);
        }
        Ok(self.kernel.sync_files(&all)?)
    }

    /// Whether the server root `tgid`'s exec (by its event's time) is its package runner's
    /// launch (`ROOT_RUNNERS`); None forgets the root.
    pub fn mark_runner(&mut self, tgid: u32, judged: Option<(u64, bool)>) -> Result<(), crate::actions::kernel::PolicyError> {
        self.kernel.mark_runner(tgid, judged)
    }

    /// Grants by server: (server id, rule slot) for every tracked server whose configured name
    /// holds a grant.
    pub fn grants(&self) -> &std::collections::BTreeSet<(u32, u32)> {
        &self.grants
    }

    /// The fields the rules on events of `kind` read (what the context builder computes).
    pub fn fields_for(&self, kind: &str) -> crate::rules::FieldSet {
        self.rules.wanted(kind)
    }

    /// The periodic rescan (the backstop of the watches); deferred changes have their own time.
    pub fn rescan_due(&self) -> bool {
        self.last_scan.elapsed() >= RESCAN.max(self.scan_cost * RESCAN_DUTY)
    }

    /// When a re-plan for a watched change may run: `REPLAN_GAP` after the last plan, or as long
    /// after it as the last re-plan took, whichever is longer. A burst of changes (users added
    /// and removed in a loop, a busy home) then takes at most half of the loop's time, and the
    /// events and control requests in between are served; each waited behind every change of
    /// the burst before (a `mcpmon exec` went unanswered for 7.6 s, past its own timeout).
    pub fn replan_at(&self) -> Instant {
        self.last_scan + REPLAN_GAP.max(self.replan_cost)
    }

    /// A change came too soon after the last plan: it is planned at `replan_at`, folded
    /// with any other change deferred meanwhile.
    pub fn defer(&mut self, c: crate::watch::Change) {
        self.deferred = Some(merge(self.deferred, c));
    }

    /// A change still to be planned: one deferred, or homes that left the user database
    /// whose settle time is up (a read lets them go).
    pub fn deferred(&self) -> Option<crate::watch::Change> {
        let settled = self.settle_at().is_some_and(|t| t <= Instant::now());
        self.deferred.or(settled.then_some(crate::watch::Change::Users))
    }

    /// When the next re-plan without a watched change is due (`deferred`).
    pub fn deferred_at(&self) -> Option<Instant> {
        let deferred = self.deferred.map(|_| self.replan_at());
        [deferred, self.settle_at()].into_iter().flatten().min()
    }

    /// When leaving homes may be let go. Spaced like any re-plan: under a churn of users each
    /// reload sees another home leave, and a re-plan per settle time on top of the rate-limited
    /// ones would grow without bound.
    fn settle_at(&self) -> Option<Instant> {
        self.users.settle_at().map(|t| t.max(self.replan_at()))
    }

    /// Plans `c` now, with any deferred change folded in: users reload the rules (`~/` expands
    /// to the new homes), the tree re-expands the plan. Returns the change planned.
    pub fn replan(&mut self, c: crate::watch::Change) -> Result<crate::watch::Change, PolicyError> {
        let c = merge(self.deferred.take(), c);
        let started = Instant::now();
        let r = match c {
            crate::watch::Change::Users => self.reload().map(|_| ()),
            crate::watch::Change::Tree => self.sync_kernel(),
        };
        self.replan_cost = started.elapsed();
        tracing::debug!(change = ?c, us = self.replan_cost.as_micros() as u64, "re-planned");
        r.map(|()| c)
    }

    /// (rule id, severity, action) of every rule in force: the alert series exported at 0.
    pub fn alert_labels(&self) -> Vec<(String, String, String)> {
        let sev = |r: &crate::rules::Rule| serde_json::to_value(r.severity).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        self.rules.rules.iter().filter(|r| !r.retired()).map(|r| (r.id.clone(), sev(r), action_name(r.action).to_string())).collect()
    }

    pub fn summary(&self) -> Value {
        json!({
            "rules": self.rules.in_force(), "files": self.rules.files, "dry_run": self.dry_run,
            "protected_inodes": self.kernel.protected_count(), "denied_prefixes": self.plan.nets.len(),
            "io_uring_kill": self.plan.io_uring_kill != 0, "cgroup_deny": self.kernel.cgroup_deny,
            "open_gate": self.gate.as_ref().map(|g| { let (f, d) = g.counts(); json!({"files": f, "dirs": d}) }),
            "grants": self.rules.grants,
        })
    }

    pub fn known_path(&self, ev: &Event) -> Option<&Path> {
        match &ev.body {
            Body::Open(o) => o.inode.and_then(|i| self.plan.paths.get(&i)).map(PathBuf::as_path),
            _ => None,
        }
    }

    /// Rules that fire for this event, with what was done: `(rule, action record)`.
    pub fn evaluate(&mut self, ev: &Event, ctx: &Ctx, still_tracked: impl Fn(u32) -> bool) -> Vec<(&Rule, ActionRecord)> {
        let mut out = Vec::new();
        // The kernel already acted: name the rule whose policy it applied, even if the path as
        // the process wrote it would not match the rule's globs (that is the point of inodes).
        let kernel_slot = kernel_slot(ev, &self.rules);
        if let (Some(slot), Some(what)) = (kernel_slot, ev.header.kernel_action) {
            if let Some(r) = self.rules.rules.get(slot) {
                let mut rec = ActionRecord::new(r.action.into(), ActionResult::in_kernel(what)).dry_run(false);
                // The gate refused the open before an fd existed (and, under a kill rule, killed
                // the opener while it waited in the kernel).
                if ev.header.gated {
                    rec.at = Some(Where::OpenGate);
                    rec.bytes_read = Some(0);
                }
                out.push((slot, rec));
            }
        }
        for (slot, r) in self.rules.eval_memo(ctx, &mut self.gate_memo) {
            if Some(slot) == kernel_slot && ev.header.kernel_action.is_some() {
                continue;
            }
            // A grant (by the server's configured name) lifts the rule's enforcement for this
            // server; what it did is still on record.
            if r.action != Action::Alert && self.grants.contains(&(ev.header.server_id, slot as u32)) {
                out.push((slot, ActionRecord::new(ActionType::Alert, ActionResult::AllowedByGrant).dry_run(self.dry_run)));
                continue;
            }
            let rec = match (r.action, self.dry_run) {
                (Action::Alert, _) => ActionRecord::alerted(),
                (Action::Kill, true) => ActionRecord::new(ActionType::Kill, ActionResult::WouldKill).dry_run(true),
                (Action::Deny, true) => ActionRecord::new(ActionType::Deny, ActionResult::WouldDeny).dry_run(true),
                (Action::Deny, false) => match ev.header.kernel_action {
                    Some(k) => ActionRecord::new(ActionType::Deny, ActionResult::as_is(k)),
                    None => ActionRecord { why: Some(not_denied_why(ev)), ..ActionRecord::new(ActionType::Deny, ActionResult::NotDenied) },
                },
                (Action::Kill, false) => {
                    let t0 = crate::output::monotonic_ns();
                    let outcome = kill(ev.header.pid, &self.guard, &still_tracked);
                    let now = crate::output::monotonic_ns();
                    let mut v = ActionRecord::new(ActionType::Kill, ActionResult::Killed).dry_run(false);
                    v.at = Some(Where::Userspace);
                    match outcome {
                        KillOutcome::Killed => {
                            self.kills += 1;
                            v.latency_us = Some(now.saturating_sub(ev.header.ts_mono_ns) / 1000);
                            v.signal_us = Some(now.saturating_sub(t0) / 1000);
                        }
                        KillOutcome::Refused { reason } => (v.result, v.reason) = (ActionResult::Refused, Some(reason)),
                        KillOutcome::Gone => v.result = ActionResult::Gone,
                        KillOutcome::Failed { error } => (v.result, v.error) = (ActionResult::Failed, Some(error)),
                    }
                    v
                }
            };
            out.push((slot, rec));
        }
        self.alerts += out.len() as u64;
        if ev.header.kernel_action.is_some_and(|k| k.killed()) {
            self.kills += 1;
        }
        out.into_iter().filter_map(|(slot, v)| self.rules.rules.get(slot).map(|r| (r, v))).collect()
    }
}

/// Why a deny rule's match was not refused, as the event shows it.
fn not_denied_why(ev: &Event) -> &'static str {
    match &ev.body {
        // A credential file that is not there (a tool probing its usual config): nothing to refuse.
        Body::Open(o) if !o.result.ok => "the open failed on its own (no file to refuse)",
        Body::Open(_) => "the file was not protected by inode when it was opened (made or renamed since the last scan)",
        Body::Exec(_) => "the executable is not in the rule's kernel list",
        _ => "the address is not in the rule's kernel list or cgroup deny is unavailable",
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Alert => "alert",
        Action::Kill => "kill",
        Action::Deny => "deny",
    }
}

/// The rule slot the kernel acted for: the policy value carried by the event, or for io_uring
/// the first io_uring kill rule.
fn kernel_slot(ev: &Event, rules: &RuleSet) -> Option<usize> {
    ev.header.kernel_action?;
    let p = match &ev.body {
        Body::Open(o) => o.policy,
        Body::Exec(x) => x.policy,
        Body::Connect(c) | Body::Send(c) => c.policy,
        Body::IoUring(_) => return rules.rules.iter().position(|r| r.kernel.as_ref().map(|k| k.io_uring).unwrap_or(false)),
        Body::ProcAccess(_) => return rules.rules.iter().position(|r| r.kernel.as_ref().map(|k| k.proc_access).unwrap_or(false)),
        _ => 0,
    };
    (p != 0).then_some((p >> monitor_common::protect::SLOT_SHIFT) as usize)
}

/// Grants from the rules (`grants:`) and from reviewed profiles, for the tracked servers. A
/// profile can only grant what a rules file could: rules that enforce files, io_uring or /proc.
fn grants_for(rules: &RuleSet, servers: &[(u32, String)], profiles: &std::collections::BTreeMap<String, Vec<String>>) -> std::collections::BTreeSet<(u32, u32)> {
    let mut out = std::collections::BTreeSet::new();
    for (id, name) in servers {
        out.extend(rules.granted_slots(name).into_iter().map(|slot| (*id, slot)));
        for rid in profiles.get(name).into_iter().flatten() {
            if let Some(slot) = rules.rules.iter().position(|r| &r.id == rid && r.grantable()) {
                out.insert((*id, slot as u32));
            }
        }
    }
    out
}

/// Whether the kernel (or the gate) enforced this rule for this event: what a server being
/// learned would need granted.
pub fn enforced_in_kernel(action: &ActionRecord) -> bool {
    action.result.in_kernel_result()
}

fn load_rules(dir: &Path, users: &mut super::userdb::UserDb) -> Result<RuleSet, LoadError> {
    crate::rules::load_dir(dir, &users.homes(Instant::now()))
}

/// This binary's inodes: the image running and the file now at its path (an upgrade in place
/// leaves the daemon on the old one while `mcpmon exec` runs the new).
fn own_images() -> Vec<crate::events::Inode> {
    let mut out: Vec<_> = protect::inode_of(std::path::Path::new("/proc/self/exe")).into_iter().collect();
    if let Ok(p) = std::env::current_exe() {
        let p = p.to_string_lossy();
        if let Some(i) = protect::inode_of(std::path::Path::new(p.trim_end_matches(" (deleted)"))) {
            out.push(i);
        }
    }
    out
}

/// Two changes as one re-plan: users outrank the tree (a reload re-plans the tree too).
fn merge(a: Option<crate::watch::Change>, b: crate::watch::Change) -> crate::watch::Change {
    use crate::watch::Change;
    if a == Some(Change::Users) { Change::Users } else { b }
}
