//! The hooks attached only while something is tracked (the table's `WhileTracked` programs): the
//! syscall hooks of the observation path taken (tracepoints or fentry/fexit), the cgroup
//! connect/sendmsg deny programs and the BPF-LSM open deny. Untracked processes pay nothing for
//! them while nothing is tracked; the price is that they come and go at run time, which has three
//! races this module owns:
//! - a server can exec just as the daemon decides nothing is tracked: it reads `HOOKS_LIVE` still
//!   set, so the kernel neither holds it nor reports it late. The flag is cleared before the
//!   daemon's last look at the tracked set and the candidates, and the kernel reads it after its
//!   insert, so one of the two sees the other (`detach_syscall_hooks_in_background`);
//! - releasing a link is slow (each tracepoint waits for RCU grace periods under the kernel's
//!   `event_mutex`: 3.4 s for the 45 hooks of the tracepoint path on a loaded 2-core machine),
//!   so the daemon releases them one by one on another thread. A server tracked meanwhile cuts
//!   that short: the links not yet released are still attached and are kept; only the one being
//!   released is waited for, and the released ones are attached again (attaching one still on
//!   its hook is refused with EEXIST). Waiting for the whole release instead held the track's
//!   answer past `mcpmon exec`'s 3 s, and `--require-monitor` refused to start the server;
//! - a child forked by another thread holds copies of the link fds until its exec closes them
//!   (they are close-on-exec), keeping the program on the hook for that moment. Attaching again
//!   in that window is refused the same way; it is retried for a bounded time.
use std::{
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    cgroup,
    hook::{self, HookRef, OwnedLink},
    link::still_attached,
    lsm, ProbeError, Sensors,
};

/// How long an attach refused because the program is still on its hook is retried.
// Generous: on a loaded machine (CI) a forked child can sit seconds between fork and exec.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(10);
const BUSY_RETRY_EVERY: Duration = Duration::from_millis(10);

fn program_busy(e: &ProbeError) -> bool {
    matches!(e, ProbeError::Program { source, .. } if still_attached(source))
}

impl Sensors {
    /// Whether the syscall tracepoints are attached (only while something is tracked).
    pub fn syscall_hooks_active(&self) -> bool {
        !self.syscall_links.is_empty() || !self.reclaimed.is_empty()
    }

    /// Whether the cgroup connect/sendmsg deny and the BPF-LSM open deny are attached now.
    pub fn deny_hooks_attached(&self) -> (bool, bool) {
        (!self.cgroup_links.is_empty(), !self.lsm_links.is_empty())
    }

    /// The syscall hooks attached on demand, as `HookRef::describe` names them.
    pub fn on_demand_hooks(&self) -> Vec<String> {
        self.on_demand.iter().map(HookRef::describe).collect()
    }

    /// Attaches every on-demand hook, cutting short a release still in progress (see the module
    /// comment). Syscall hooks are all-or-nothing; a deny program the kernel refuses for another
    /// reason than "still attached" is logged and its rules fall back to kill.
    pub fn attach_syscall_hooks(&mut self) -> Result<(), ProbeError> {
        if self.syscall_hooks_active() {
            return Ok(());
        }
        if let Some(r) = self.detaching.take() {
            let t = Instant::now();
            // Taken under the lock, so the thread releases nothing more than the link it holds.
            let kept = std::mem::take(&mut *r.left.lock().unwrap_or_else(|p| p.into_inner()));
            let _ = r.thread.join();
            tracing::info!(ms = t.elapsed().as_millis() as u64, kept = kept.len(), of = self.on_demand.len(), "cut the previous detach short: kept the hooks it had not released");
            self.reclaimed = kept;
        }
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            tries += 1;
            match self.attach_once() {
                Ok(()) => {
                    self.set_hooks_live(true);
                    if tries > 1 {
                        tracing::info!(tries, ms = start.elapsed().as_millis() as u64, "hooks attached after retries: the kernel still held the previous links");
                    }
                    return Ok(());
                }
                Err((busy, e)) => {
                    self.detach_syscall_hooks()?;
                    if !busy || start.elapsed() > BUSY_RETRY_FOR {
                        return Err(e);
                    }
                    std::thread::sleep(BUSY_RETRY_EVERY);
                }
            }
        }
    }

    /// One attempt; on failure says whether it was "still attached" (worth retrying).
    fn attach_once(&mut self) -> Result<(), (bool, ProbeError)> {
        if self.lsm_deny {
            match lsm::attach(&mut self.ebpf) {
                Ok(l) => self.lsm_links = l,
                Err(e) if e.busy => return Err((true, ProbeError::StillAttached(e.to_string()))),
                Err(e) => tracing::error!(error = %e, "attaching the open/exec deny"),
            }
        }
        if let cgroup::DenyPath::Cgroup { root, .. } = &self.deny {
            let root = root.clone();
            match cgroup::attach(&mut self.ebpf, &root) {
                Ok(l) => self.cgroup_links = l,
                Err(e) if e.busy => return Err((true, ProbeError::StillAttached(e.to_string()))),
                Err(e) => tracing::error!(error = %e, "attaching the connect deny"),
            }
        }
        // The first hooks may still be attached from before a detach cut short (`reclaimed`).
        for i in self.reclaimed.len()..self.on_demand.len() {
            match hook::attach(&mut self.ebpf, self.on_demand[i]) {
                Ok(link) => self.syscall_links.push(link),
                Err(e) => return Err((program_busy(&e), e)),
            }
        }
        Ok(())
    }

    /// Detaches now, on this thread. Entry hooks come out first (reverse attach order).
    pub fn detach_syscall_hooks(&mut self) -> Result<(), ProbeError> {
        let mut links = self.take_syscall_links()?;
        while let Some(link) = links.pop() {
            drop(link);
        }
        Ok(())
    }

    /// Detaches as far as the daemon is concerned at once and releases the links on another
    /// thread (seconds for the tracepoint path's 45), keeping the event pipeline flowing. The
    /// next attach takes those not released yet and waits for the one being released.
    /// `still_idle` is asked once the hooks-live flag is clear: a process that exec'd before
    /// that found the flag set (not held, not reported late) and is only seen by looking again;
    /// if it says no, nothing is detached (`false`).
    pub fn detach_syscall_hooks_in_background(&mut self, still_idle: impl FnOnce(&mut Self) -> bool) -> Result<bool, ProbeError> {
        self.set_hooks_live(false);
        if !still_idle(self) {
            self.set_hooks_live(true);
            return Ok(false);
        }
        let left = Arc::new(Mutex::new(self.take_syscall_links()?));
        let queue = Arc::clone(&left);
        let thread = std::thread::spawn(move || {
            let t = Instant::now();
            let mut n = 0;
            // One at a time, the lock not held while one is released (a `while let` would hold
            // it through the body): an attach takes the rest meanwhile.
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(link) = next else { break };
                drop(link);
                n += 1;
            }
            tracing::info!(ms = t.elapsed().as_millis() as u64, released = n, "syscall hooks released");
        });
        self.detaching = Some(Releasing { left, thread });
        Ok(true)
    }

    /// Every syscall link, in attach order (exit hooks first): release them from the end.
    fn take_syscall_links(&mut self) -> Result<Vec<OwnedLink>, ProbeError> {
        self.set_hooks_live(false);
        let links = std::mem::take(&mut self.cgroup_links);
        cgroup::detach(&mut self.ebpf, links);
        let links = std::mem::take(&mut self.lsm_links);
        lsm::detach(&mut self.ebpf, links);
        let mut out = std::mem::take(&mut self.reclaimed);
        let mut rest = Vec::new();
        while let Some(link) = self.syscall_links.pop() {
            rest.push(hook::take(&mut self.ebpf, link)?);
        }
        out.extend(rest.into_iter().rev());
        Ok(out)
    }
}

/// The links of the last detach still being released on another thread.
pub(super) struct Releasing {
    /// Those not released yet, in attach order: the thread takes them from the end.
    left: Arc<Mutex<Vec<OwnedLink>>>,
    thread: JoinHandle<()>,
}

pub(super) type PendingDetach = Option<Releasing>;
