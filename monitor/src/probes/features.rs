//! Start-up feature probing: what this kernel offers for observation and enforcement, and which
//! path mcpmon takes for each hook family. The report is logged at start-up and kept for `status`
//! style output; the choice of path is made here so every later stage sees one event stream.
use std::path::Path;

use aya::programs::{LsmAttachType, ProgramType};
use serde::Serialize;

/// Outcome of one probe.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Probe {
    pub available: bool,
    /// Why not, or how it was established.
    pub detail: String,
}

impl Probe {
    fn yes(detail: impl Into<String>) -> Self {
        Self { available: true, detail: detail.into() }
    }
    fn no(detail: impl Into<String>) -> Self {
        Self { available: false, detail: detail.into() }
    }
}

/// The path taken for one hook family.
#[derive(Clone, Debug, Serialize)]
pub struct HookChoice {
    pub family: &'static str,
    pub observe: String,
    /// Why the better paths were not taken.
    pub fallback_reason: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FeatureReport {
    pub kernel: String,
    pub btf: Probe,
    pub ringbuf: Probe,
    pub tracepoint: Probe,
    pub fentry: Probe,
    pub bpf_lsm: Probe,
    pub kprobe: Probe,
    pub cgroup_sock_addr: Probe,
    pub hooks: Vec<HookChoice>,
    /// Enforcement paths this kernel offers (used by the rules stage).
    pub enforcement: Vec<(String, Probe)>,
}

fn prog(t: ProgramType) -> Probe {
    match aya::sys::is_program_supported(t) {
        Ok(true) => Probe::yes("program loads"),
        Ok(false) => Probe::no("program type rejected by the kernel"),
        Err(e) => Probe::no(format!("probe failed: {e}")),
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

pub fn probe(tracefs: &Path) -> FeatureReport {
    let btf = if Path::new(super::btf::VMLINUX).exists() {
        Probe::yes(super::btf::VMLINUX)
    } else {
        Probe::no(format!("{} missing (CONFIG_DEBUG_INFO_BTF)", super::btf::VMLINUX))
    };
    let ringbuf = match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
        Ok(true) => Probe::yes("map type loads"),
        Ok(false) => Probe::no("BPF_MAP_TYPE_RINGBUF needs Linux 5.8"),
        Err(e) => Probe::no(format!("probe failed: {e}")),
    };
    let tracepoint = prog(ProgramType::TracePoint);
    let fentry = prog(ProgramType::Tracing);
    let lsm_active = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let bpf_lsm = if !lsm_active.split(',').any(|l| l.trim() == "bpf") {
        Probe::no(format!("\"bpf\" not in the active LSMs ({}); boot with lsm=...,bpf", lsm_active.trim()))
    } else {
        prog(ProgramType::Lsm(LsmAttachType::Mac))
    };
    let kprobe = if tracefs.join("kprobe_events").exists() {
        prog(ProgramType::KProbe)
    } else {
        Probe::no("no kprobe_events in tracefs (CONFIG_KPROBE_EVENTS off)")
    };
    let cgroup_sock_addr = prog(ProgramType::CgroupSockAddr);

    let send_signal = if tracepoint.available {
        Probe::yes("bpf_send_signal from syscall tracepoints (kill before the syscall returns)")
    } else {
        Probe::no("no tracepoint programs")
    };
    let enforcement = vec![
        ("in-kernel kill".to_string(), send_signal),
        ("connect deny (cgroup sock_addr)".to_string(), cgroup_sock_addr.clone()),
        ("open deny (BPF-LSM file_open)".to_string(), bpf_lsm.clone()),
        ("exec deny (BPF-LSM bprm_check_security)".to_string(), bpf_lsm.clone()),
        ("userspace kill (pidfd)".to_string(), Probe::yes("pidfd_send_signal")),
    ];
    // The path per family is known once the programs load (`Sensors::load` fills it in).
    FeatureReport { kernel: kernel_release(), btf, ringbuf, tracepoint, fentry, bpf_lsm, kprobe, cgroup_sock_addr, hooks: vec![], enforcement }
}

/// The observation path of each hook family, given whether the fentry/fexit programs loaded
/// (and why not).
pub fn hook_choices(fast: &Result<(), String>) -> Vec<HookChoice> {
    let on_demand = "attached only while a server is tracked";
    let syscalls = |family: &'static str, names: &str| match fast {
        Ok(()) => HookChoice { family, observe: format!("fentry/fexit on __x64_sys_{{{names}}} ({on_demand})"), fallback_reason: None },
        Err(why) => HookChoice {
            family,
            observe: format!("tracepoints syscalls:sys_{{enter,exit}}_{{{names}}} ({on_demand})"),
            fallback_reason: Some(format!("fentry/fexit: {why}")),
        },
    };
    vec![
        HookChoice { family: "process tree (fork, exit, exec)", observe: "tracepoints task:task_newtask, sched:sched_process_{exit,exec} (always attached; they fire only on their event)".into(), fallback_reason: None },
        syscalls("exec (arguments, failures)", "execve,execveat"),
        syscalls("file open", "open,creat,openat,openat2"),
        syscalls("connect/send", "connect,sendto,sendmsg,sendmmsg"),
        syscalls("stdio JSON-RPC", "read,write"),
    ]
}

impl FeatureReport {
    /// One log line per probe and per hook family.
    pub fn log(&self) {
        let show = |feature: &str, p: &Probe| tracing::info!(kernel = %self.kernel, feature, available = p.available, detail = %p.detail, "kernel feature");
        show("BTF", &self.btf);
        show("ring buffer", &self.ringbuf);
        show("tracepoint programs", &self.tracepoint);
        show("fentry/fexit", &self.fentry);
        show("BPF-LSM", &self.bpf_lsm);
        show("kprobes", &self.kprobe);
        show("cgroup sock_addr", &self.cgroup_sock_addr);
        for h in &self.hooks {
            match &h.fallback_reason {
                Some(why) => tracing::info!(family = h.family, observe = %h.observe, fallback = %why, "hook family"),
                None => tracing::info!(family = h.family, observe = %h.observe, "hook family"),
            }
        }
        for (name, p) in &self.enforcement {
            tracing::info!(enforcement = %name, available = p.available, detail = %p.detail, "enforcement path");
        }
    }
}
