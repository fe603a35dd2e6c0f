//! Rule evaluation on one attributed kernel event: the path as the rules see it (resolved once
//! per inode and name), the rule context, profiles, the policy's verdict and actions, and the
//! alerts that follow.
use std::sync::Arc;

use super::{context, policy, Pipeline};
use crate::{
    events::{self, Event},
    output::{
        alert::{ProcessRef, RuleRef, ServerRef},
        record::EventLine,
        Alert,
    },
};

/// Entries in the resolved-path cache before it starts over.
const RESOLVED_CACHE: usize = 8192;

/// The cache key of a path as given (a 64-bit hash: a collision needs the same inode as well,
/// and then both names reach the same file). foldhash, not SipHash: it is asked for every open,
/// and SipHash with `DefaultHasher::new()`'s fixed keys protected nothing more.
fn path_key(p: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::default().hash_one(p)
}

impl Pipeline {
    /// The path of an open as the rules see it (only when rules are loaded): a protected file's
    /// known path, else resolved against the opener's cwd and dirfd, cached by inode and name.
    pub(super) fn resolve_path(&mut self, ev: &Event) -> Option<Arc<str>> {
        let policy = self.policy.as_ref()?;
        let events::Body::Open(o) = &ev.body else { return None };
        Some(match (policy.known_path(ev), o.inode) {
            (Some(known), _) => known.display().to_string().into(),
            (None, Some(inode)) => {
                let key = (inode, path_key(&o.path));
                if let Some(p) = self.resolved.get(&key) {
                    return Some(p.clone());
                }
                let p: Arc<str> = context::resolve_open(ev.header.pid, o.dirfd, &o.path, o.result.ret, o.inode).into();
                if self.resolved.len() >= RESOLVED_CACHE {
                    self.resolved.clear();
                }
                self.resolved.insert(key, p.clone());
                p
            }
            (None, None) => context::resolve_open(ev.header.pid, o.dirfd, &o.path, o.result.ret, None).into(),
        })
    }

    /// Runs the rules on one attributed event line; returns the alerts. `timed`: the event is
    /// one of those the stage timers sample (`stages.rs`).
    pub(super) fn evaluate(&mut self, line: &EventLine, timed: bool) -> Vec<Alert> {
        // One context kept across events: a new one per event zeroed and moved all its slots.
        let mut ctx = self.ctx.take().unwrap_or_default();
        let out = self.evaluate_in(line, timed, &mut ctx);
        self.ctx = Some(ctx);
        out
    }

    fn evaluate_in(&mut self, line: &EventLine, timed: bool, ctx: &mut crate::rules::Ctx) -> Vec<Alert> {
        let Some(policy) = self.policy.as_mut() else { return vec![] };
        let ev = &line.event;
        // A record that trails the server's exit (an open gate refusal) still names it.
        let server = self.tracker.server_or_gone(ev.header.server_id);
        let want = policy.fields_for(ev.kind());
        let path = line.resolved_path.as_ref();
        let root_runner = server.and_then(|s| self.runner_roots.get(&s.root_pid).copied());
        context::build(ctx, &context::Inputs { ev, tree: &self.tree, server, attribution: &line.mcp, path, want: Some(&want), root_runner });
        // Issue 13 hook: the injection → action chain (toolwatch/results.rs).
        let chain = self.tools_watch.results.annotate(ctx, &line.mcp, server, &self.tree, &self.corr);
        if let (Some(profiles), Some(s)) = (self.profiles.as_mut(), server) {
            let version = self.corr.session(s.id).and_then(|x| x.server_info.as_ref()).and_then(|i| i["version"].as_str().map(str::to_string));
            if let Some((list, value)) = profile_entry(ctx) {
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
        let t0 = timed.then(std::time::Instant::now);
        let fired = policy.evaluate(ev, ctx, |pid| tracker.lookup(pid).is_some());
        if let Some(t0) = t0 {
            let rules_ns = t0.elapsed().as_nanos() as u64;
            self.stats.stage_ns.add_sampled(super::stages::Stage::RulesEval, rules_ns);
            self.out.metrics().rule_eval(rules_ns as f64 / 1e9);
        }
        if fired.is_empty() {
            return vec![];
        }
        let server_ref = server.map(ServerRef::of).unwrap_or_else(|| ServerRef::id(ev.header.server_id));
        let mcp = serde_json::to_value(&line.mcp).ok();
        let event = serde_json::to_value(line).ok();
        let process = ProcessRef {
            pid: ev.header.pid,
            ppid: Some(Some(ev.header.ppid)),
            uid: ev.header.uid,
            exe: Some(ctx.get("proc.exe").map(|v| v.to_string())),
            argv: Some(context::argv_of(ev, &self.tree).to_vec()),
            ancestry: Some(self.tree.ancestry(ev.header.pid)),
        };
        let mut out = Vec::new();
        for (rule, action) in fired {
            // Learning: what the kernel refused this server is what it would need granted.
            if let (Some(p), Some(s)) = (self.profiles.as_mut().filter(|p| p.mode == crate::rules::profile::Mode::Learn), server) {
                if policy::enforced_in_kernel(&action) {
                    p.learn_grant(&s.name, &rule.id);
                }
            }
            let mut a = Alert::new(RuleRef::of(rule), action, rule.output.render(ctx), line.time.to_string());
            a.process = Some(process.clone());
            a.server = Some(server_ref.clone());
            a.mcp = mcp.clone();
            a.file = Some(ctx.get("file.path").map(|v| v.to_string()));
            a.event = event.clone();
            a.chain = chain.clone();
            tracing::warn!(rule = %rule.id, severity = ?rule.severity, summary = %a.summary, "alert");
            out.push(a);
        }
        *self.rule_alerts.entry(ev.header.server_id).or_default() += out.len() as u64;
        out
    }
}

/// What an event adds to (or is checked against) its server's profile: successful execs, opens
/// outside the paths its calls named, connects and sends.
fn profile_entry(ctx: &crate::rules::Ctx) -> Option<(&'static str, String)> {
    use crate::rules::Val;
    let s = |f: &str| match ctx.get(f) {
        Some(Val::Str(v)) => Some(v.to_string()),
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
