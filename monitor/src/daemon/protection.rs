//! The pipeline's side of live protection: re-planning when homes, users or secret
//! directories change (inotify, `crate::watch`), the open gate's records (refusals to alert on,
//! files learned at their first open), and grants that follow the tracked servers.
use crate::output::Record;

use super::Pipeline;
use crate::{
    events::{Body, Event, Header, Open, SysResult},
    gate::{Denial, GateRecord},
    tracker::Discovery,
    watch::Change,
};

impl Pipeline {
    /// Users or the tree changed: reload the rules (new homes) or re-expand the plan now.
    /// `now`: plan at once (a server is about to be acknowledged, or the deferral is due);
    /// otherwise a change too soon after the last plan is deferred (`Policy::replan_at`).
    /// Returns whether the plan was rebuilt (the caller re-aims its watches).
    async fn on_watch(&mut self, c: Change, now: bool) -> bool {
        let Some(p) = self.policy.as_mut() else { return false };
        // A busy directory (a home's parent under /tmp), or users added in a loop, must not
        // turn into a re-plan per change: the rest are folded into the next one.
        if !now && std::time::Instant::now() < p.replan_at() {
            p.defer(c);
            return false;
        }
        let before = p.plan.files.clone();
        let c = match p.replan(c) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(change = ?c, error = %e, "re-planning protection");
                return false;
            }
        };
        if p.plan.files != before {
            let added: Vec<String> = p.plan.paths.iter().filter(|(i, _)| !before.contains_key(i)).map(|(_, path)| path.display().to_string()).collect();
            let rec = Record::ProtectedChanged { time: Self::now(), protected_inodes: Some(p.plan.files.len()), added, why: Some(format!("{c:?}").to_lowercase()) };
            self.out.emit(rec).await;
        }
        true
    }

    /// `on_watch`, then the watches re-aimed at the new plan's places when it was rebuilt.
    pub async fn on_watch_and_aim(&mut self, watcher: &mut crate::watch::Watcher, c: Change, now: bool) {
        if self.on_watch(c, now).await {
            self.aim(watcher);
        }
    }

    /// A change deferred by the rate limit, still to be planned.
    pub fn replan_pending(&self) -> Option<Change> {
        self.policy.as_ref().and_then(|p| p.deferred())
    }

    /// When the deferred change is due, if there is one.
    pub fn replan_due(&self) -> Option<tokio::time::Instant> {
        let p = self.policy.as_ref()?;
        p.deferred_at().map(Into::into)
    }

    /// Aims `watcher` where the plan wants inotify watches: for every change, and for new
    /// directories only (none without a plan).
    pub fn aim(&self, watcher: &mut crate::watch::Watcher) {
        match &self.policy {
            Some(p) => watcher.set(&p.plan.watch, &p.plan.watch_new_dirs),
            None => watcher.set(&Default::default(), &Default::default()),
        }
    }

    /// Grants are keyed on the name the operator gave (client config, `exec --name`,
    /// `--track-name`), never on a sniffed process's own name or its `serverInfo`.
    pub fn sync_servers(&mut self) {
        let servers: Vec<(u32, String)> = self
            .tracker
            .servers()
            .filter(|s| matches!(s.how, Discovery::Exec | Discovery::Config | Discovery::Procfs | Discovery::TrackPid | Discovery::Url))
            .map(|s| (s.id, s.name.to_string()))
            .collect();
        let from_profiles = self.profiles.as_ref().map(|p| p.grants()).unwrap_or_default();
        if let Some(p) = self.policy.as_mut() {
            if let Err(e) = p.set_servers(servers, from_profiles) {
                tracing::error!(error = %e, "updating grants");
            }
        }
    }

    pub async fn on_gate(&mut self, rec: GateRecord) {
        match rec {
            GateRecord::Learned { inode, path, policy, handle } => {
                if let Some(p) = self.policy.as_mut() {
                    if let Err(e) = p.learned(inode, path.clone(), policy, handle) {
                        tracing::error!(path = %path.display(), error = %e, "protecting a file learned at its first open");
                    }
                }
                self.out.emit(Record::ProtectedChanged { time: Self::now(), protected_inodes: None, added: vec![path.display().to_string()], why: Some("first_open".into()) }).await;
            }
            // The open's own kernel event carries the refusal; it is alerted from there.
            GateRecord::Placed(p) => {
                let ev = placed_open(&p, self.tree.get(p.tgid).map(|n| n.ppid).unwrap_or(0));
                let rec = Record::Quarantined { time: Self::now(), path: p.path.display().to_string(), to: p.quarantined.as_ref().map(|q| q.display().to_string()), how: p.how, pid: p.tgid, server_id: p.server_id };
                self.out.emit(rec).await;
                self.on_event(Ok(ev)).await;
            }
            GateRecord::Denied(d) if d.in_event => {}
            GateRecord::Denied(d) => {
                let ev = synthetic_open(&d, self.tree.get(d.tgid).map(|n| n.ppid).unwrap_or(0));
                self.on_event(Ok(ev)).await;
            }
        }
    }
}

/// An open event for a refusal no syscall hook saw (an io_uring open, or a pending table that
/// was full): the gate is the only witness, so it speaks for the kernel.
/// An entry placed in a persistence directory, as the open for writing it amounts to: the
/// rules (persistence-write) judge it like any other write there.
fn placed_open(p: &crate::gate::persist::Placed, ppid: u32) -> Event {
    Event {
        header: Header {
            ts_mono_ns: p.ts_mono_ns,
            pid: p.tgid,
            tid: p.tid,
            ppid,
            uid: p.uid,
            server_id: p.server_id,
            truncated: vec![],
            kernel_action: None,
            compat_syscall: false,
            gated: false,
        },
        body: Body::Open(Open {
            syscall: if p.how == "moved" { "rename_into" } else { "create_entry" },
            path: p.path.display().to_string().into(),
            dirfd: -100,
            flags: 0,
            // What the entry amounts to: a file written and created (O_WRONLY | O_CREAT).
            access: crate::events::Accesses::of(0o101),
            mode: 0,
            resolve: 0,
            inode: None,
            policy: 0,
            fold_sig: 0,
            result: SysResult::from_ret(0),
        }),
    }
}

fn synthetic_open(d: &Denial, ppid: u32) -> Event {
    Event {
        header: Header {
            ts_mono_ns: d.ts_mono_ns,
            pid: d.tgid,
            tid: d.tid,
            ppid,
            uid: d.uid,
            server_id: d.server_id,
            truncated: vec![],
            kernel_action: Some(if d.killed { crate::events::KernelAction::DeniedAndKilled } else { crate::events::KernelAction::Denied }),
            compat_syscall: false,
            gated: true,
        },
        body: Body::Open(Open {
            syscall: "gate",
            path: d.path.display().to_string().into(),
            dirfd: -100,
            flags: 0,
            access: crate::events::Accesses::of(0),
            mode: 0,
            resolve: 0,
            inode: Some(d.inode),
            policy: d.policy,
            fold_sig: 0,
            result: SysResult::from_ret(-(libc::EPERM as i64)),
        }),
    }
}
