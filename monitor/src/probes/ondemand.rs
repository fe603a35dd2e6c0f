//! The hooks attached only while something is tracked: the syscall tracepoints, the cgroup
//! connect/sendmsg deny programs and the BPF-LSM open deny. Untracked processes pay nothing for
//! them while nothing is tracked; the price is that they come and go at run time, which has two
//! races this module owns:
//! - releasing a link is slow (each tracepoint waits for an RCU grace period), so the daemon
//!   releases them on another thread; a server tracked meanwhile must wait for that release, or
//!   the kernel refuses the same program on the same hook with EEXIST;
//! - a child forked by another thread holds copies of the link fds until its exec closes them
//!   (they are close-on-exec), keeping the program on the hook for that moment. Attaching again
//!   in that window is refused the same way; it is retried for a bounded time.
use std::{
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::programs::{
    fentry::FEntryLinkId, fexit::FExitLinkId, raw_trace_point::RawTracePointLinkId, trace_point::TracePointLinkId, FEntry, FExit,
    RawTracePoint, TracePoint,
};
use monitor_common::names::{FastSpec, Hook, ProgramSpec};

use super::{
    cgroup,
    link::still_attached,
    lsm, program, refused, tracepoint, ProbeError, Sensors,
};

const RAW_PURPOSE: &str = "ia32 syscalls (raw tracepoint)";
const ENTRY_PURPOSE: &str = "syscall entry (fast path)";
const EXIT_PURPOSE: &str = "syscall result (fast path)";

/// How long an attach refused because the program is still on its hook is retried.
// Generous: on a loaded machine (CI) a forked child can sit seconds between fork and exec.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(10);
const BUSY_RETRY_EVERY: Duration = Duration::from_millis(10);

/// One on-demand hook: a syscall tracepoint (the fallback), or one half of a syscall's
/// fentry/fexit pair (the fast path).
#[derive(Clone, Copy, Debug)]
pub enum OnDemand {
    Tp(&'static ProgramSpec, Hook),
    /// (program, raw tracepoint): the ia32 syscalls on the tracepoint path.
    Raw(&'static str, &'static str),
    FEntry(&'static FastSpec),
    FExit(&'static FastSpec),
}

impl OnDemand {
    fn describe(&self) -> String {
        match self {
            OnDemand::Tp(_, Hook::TracePoint { category, name }) => format!("{category}:{name}"),
            OnDemand::Raw(_, tp) => format!("raw_tp:{tp}"),
            OnDemand::FEntry(s) => format!("fentry:{}", s.function),
            OnDemand::FExit(s) => format!("fexit:{}", s.function),
        }
    }
}

/// An attached on-demand hook.
pub enum Link {
    Tp(&'static ProgramSpec, TracePointLinkId),
    Raw(&'static str, RawTracePointLinkId),
    FEntry(&'static FastSpec, FEntryLinkId),
    FExit(&'static FastSpec, FExitLinkId),
}

/// A released link, owned: dropping it detaches (slow, see `detach_syscall_hooks_in_background`).
type OwnedLink = Box<dyn Send>;

fn program_busy(e: &ProbeError) -> bool {
    matches!(e, ProbeError::Program { source, .. } if still_attached(source))
}

impl Sensors {
    /// Whether the syscall tracepoints are attached (only while something is tracked).
    pub fn syscall_hooks_active(&self) -> bool {
        !self.syscall_links.is_empty()
    }

    /// Whether the cgroup connect/sendmsg deny and the BPF-LSM open deny are attached now.
    pub fn deny_hooks_attached(&self) -> (bool, bool) {
        (!self.cgroup_links.is_empty(), !self.lsm_links.is_empty())
    }

    /// The syscall hooks attached on demand (`category:name`, `fentry:FUNCTION`, `fexit:FUNCTION`).
    pub fn on_demand_hooks(&self) -> Vec<String> {
        self.on_demand.iter().map(OnDemand::describe).collect()
    }

    /// Attaches every on-demand hook, waiting out a release still in progress (see the module
    /// comment). Syscall hooks are all-or-nothing; a deny program the kernel refuses for another
    /// reason than "still attached" is logged and its rules fall back to kill.
    pub fn attach_syscall_hooks(&mut self) -> Result<(), ProbeError> {
        if self.syscall_hooks_active() {
            return Ok(());
        }
        if let Some(pending) = self.detaching.take() {
            let t = Instant::now();
            let _ = pending.join();
            tracing::info!("waited {} ms for the previous detach to finish", t.elapsed().as_millis());
        }
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            tries += 1;
            match self.attach_once() {
                Ok(()) => {
                    self.set_hooks_live(true);
                    if tries > 1 {
                        tracing::info!("hooks attached after {tries} tries ({} ms): the kernel still held the previous links", start.elapsed().as_millis());
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
                Err(e) => tracing::error!("open/exec deny: {e}"),
            }
        }
        if let cgroup::DenyPath::Cgroup { root, .. } = &self.deny {
            let root = root.clone();
            match cgroup::attach(&mut self.ebpf, &root) {
                Ok(l) => self.cgroup_links = l,
                Err(e) if e.busy => return Err((true, ProbeError::StillAttached(e.to_string()))),
                Err(e) => tracing::error!("connect deny: {e}"),
            }
        }
        for i in 0..self.on_demand.len() {
            let hook = self.on_demand[i];
            match self.attach_one(hook) {
                Ok(link) => self.syscall_links.push(link),
                Err(e) => return Err((program_busy(&e), e)),
            }
        }
        Ok(())
    }

    fn attach_one(&mut self, hook: OnDemand) -> Result<Link, ProbeError> {
        let failed = |name, purpose, e| refused(name, purpose, hook.describe(), e);
        match hook {
            OnDemand::Tp(spec, Hook::TracePoint { category, name }) => {
                let prog = tracepoint(&mut self.ebpf, spec)?;
                prog.attach(category, name).map(|l| Link::Tp(spec, l)).map_err(|e| failed(spec.name, spec.purpose, e))
            }
            OnDemand::Raw(name, tp) => {
                let prog: &mut RawTracePoint = program(&mut self.ebpf, name, RAW_PURPOSE)?;
                prog.attach(tp).map(|l| Link::Raw(name, l)).map_err(|e| failed(name, RAW_PURPOSE, e))
            }
            OnDemand::FEntry(s) => {
                let prog: &mut FEntry = program(&mut self.ebpf, s.entry, ENTRY_PURPOSE)?;
                prog.attach().map(|l| Link::FEntry(s, l)).map_err(|e| failed(s.entry, ENTRY_PURPOSE, e))
            }
            OnDemand::FExit(s) => {
                let prog: &mut FExit = program(&mut self.ebpf, s.exit, EXIT_PURPOSE)?;
                prog.attach().map(|l| Link::FExit(s, l)).map_err(|e| failed(s.exit, EXIT_PURPOSE, e))
            }
        }
    }

    /// Detaches now, on this thread. Entry hooks come out first (reverse attach order).
    pub fn detach_syscall_hooks(&mut self) -> Result<(), ProbeError> {
        let links = self.take_syscall_links()?;
        drop(links);
        Ok(())
    }

    /// Detaches as far as the daemon is concerned at once and releases the links on another
    /// thread (over a second for 18 tracepoints here), keeping the event pipeline flowing. The
    /// next attach waits for that thread.
    pub fn detach_syscall_hooks_in_background(&mut self) -> Result<(), ProbeError> {
        let links = self.take_syscall_links()?;
        self.detaching = Some(std::thread::spawn(move || {
            let t = Instant::now();
            drop(links);
            tracing::info!("syscall hooks released ({} ms)", t.elapsed().as_millis());
        }));
        Ok(())
    }

    fn take_syscall_links(&mut self) -> Result<Vec<OwnedLink>, ProbeError> {
        self.set_hooks_live(false);
        let links = std::mem::take(&mut self.cgroup_links);
        cgroup::detach(&mut self.ebpf, links);
        let links = std::mem::take(&mut self.lsm_links);
        lsm::detach(&mut self.ebpf, links);
        let mut out = Vec::new();
        while let Some(link) = self.syscall_links.pop() {
            let owned: OwnedLink = match link {
                Link::Tp(spec, id) => {
                    let p: &mut TracePoint = tracepoint(&mut self.ebpf, spec)?;
                    Box::new(p.take_link(id).map_err(|e| refused(spec.name, spec.purpose, "(detach)".into(), e))?)
                }
                Link::Raw(name, id) => {
                    let p: &mut RawTracePoint = program(&mut self.ebpf, name, RAW_PURPOSE)?;
                    Box::new(p.take_link(id).map_err(|e| refused(name, RAW_PURPOSE, "(detach)".into(), e))?)
                }
                Link::FEntry(s, id) => {
                    let p: &mut FEntry = program(&mut self.ebpf, s.entry, ENTRY_PURPOSE)?;
                    Box::new(p.take_link(id).map_err(|e| refused(s.entry, ENTRY_PURPOSE, "(detach)".into(), e))?)
                }
                Link::FExit(s, id) => {
                    let p: &mut FExit = program(&mut self.ebpf, s.exit, EXIT_PURPOSE)?;
                    Box::new(p.take_link(id).map_err(|e| refused(s.exit, EXIT_PURPOSE, "(detach)".into(), e))?)
                }
            };
            out.push(owned);
        }
        Ok(out)
    }
}

/// The thread releasing the last detached links (it owns them; nothing else to clean up).
pub(super) type PendingDetach = Option<JoinHandle<()>>;
