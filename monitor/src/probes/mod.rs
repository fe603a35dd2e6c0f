//! Loads the eBPF object built from `monitor-ebpf`, fills in the kernel-specific globals, attaches
//! the programs of the one table (`monitor_common::programs`) this kernel takes, and hands the
//! maps to the stages that use them. Dropping [`Sensors`] detaches
//! and unloads everything (programs and links are owned by the `Ebpf` value, nothing is pinned).
pub mod btf;
pub mod cgroup;
pub mod ebpf_log;
pub mod fast;
pub mod guard;
mod handshake;
mod hold;
mod hook;
pub mod ia32;
pub mod maybe;
mod link;
pub mod lsm;
mod loaded;
pub mod ondemand;
pub mod features;
pub mod tracefs;
mod tracepoint;

use std::path::PathBuf;

use aya::{
    maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, PerCpuArray, RingBuf},
    programs::ProgramError,
    Ebpf, EbpfError, EbpfLoader,
};
use monitor_common::{
    globals as g,
    names::{
        MAP_CANDIDATE_COMMS, MAP_COMM_FILTER, MAP_EVENTS, MAP_LOST, MAP_NET_POLICY_V4, MAP_NET_POLICY_V6, MAP_POLICY, MAP_PROTECTED, MAP_GRANTS, MAP_PENDING_OPEN, MAP_HTTP_SOCKS,
        MAP_STDIO_PIPES, MAP_TRACKED,
    },
    programs::Lifetime,
    Comm, StdioPipe, TrackInfo, LOST_REASONS,
};

/// The eBPF object, compiled from source by build.rs for this build.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor-ebpf.o"));

/// The same object production loads (benchmarks attach single programs of it).
pub fn object() -> &'static [u8] {
    EBPF_OBJECT
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("mcpmon must run as root to load eBPF programs (effective uid is {0}); try: sudo mcpmon run")]
    NotRoot(u32),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] EbpfError),
    #[error("the object has no program {0} (build mismatch)")]
    MissingProgram(&'static str),
    #[error("the kernel refused program {program} ({purpose}) for hook {hook}: {source}")]
    Program { program: &'static str, purpose: &'static str, hook: String, source: Box<ProgramError> },
    #[error("{0}: the kernel still holds this program's previous link (EEXIST) after retrying")]
    StillAttached(String),
    #[error("program {0} attaches with its deny family, not one hook at a time")]
    Family(&'static str),
    #[error("fentry/fexit observation was asked for but does not load: {0}")]
    Fast(String),
    #[error("map {0}: {1}")]
    Map(&'static str, String),
    #[error(transparent)]
    Log(#[from] ebpf_log::LogError),
}

#[derive(Clone, Debug)]
pub struct SensorConfig {
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ringbuf_bytes: u32,
    /// Never tracked, even if asked (the daemon itself).
    pub daemon_tgid: u32,
    /// Which programs observe syscalls.
    pub observe: fast::Observe,
    /// Size of `TRACKED` (default: the object's 65536). Tests shrink it to fill it.
    pub tracked_max: Option<u32>,
    /// Size of `STDIO_PIPES` (default: the object's 4096).
    pub stdio_pipes_max: Option<u32>,
    /// The kernel side's aya-log records go to the daemon's log (`run --ebpf-log`).
    pub ebpf_log: bool,
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self { ringbuf_bytes: 8 << 20, daemon_tgid: std::process::id(), observe: fast::Observe::Auto, tracked_max: None, stdio_pipes_max: None, ebpf_log: false }
    }
}

pub struct Sensors {
    ebpf: Ebpf,
    pub report: features::FeatureReport,
    pub tracefs: PathBuf,
    /// `category:name` of the hooks attached for the daemon's whole life.
    pub attached: Vec<String>,
    /// Syscall hooks, attached only while a process is tracked (exit hooks first).
    on_demand: Vec<hook::HookRef>,
    syscall_links: Vec<hook::Link>,
    /// The first hooks of `on_demand`, still attached from a detach that a new track cut short
    /// (ondemand.rs); `syscall_links` holds the rest.
    reclaimed: Vec<hook::OwnedLink>,
    /// Whether syscalls are observed by fentry/fexit (else by tracepoints).
    pub fast_path: bool,
    /// Which path connect/sendmsg deny takes on this machine.
    pub deny: cgroup::DenyPath,
    /// Whether the BPF-LSM `file_open` deny is attached.
    pub lsm_deny: bool,
    /// The deny programs' links while attached (with the syscall hooks).
    cgroup_links: cgroup::Links,
    lsm_links: lsm::Links,
    /// The thread releasing the last detached links, if still running.
    detaching: ondemand::PendingDetach,
    /// `mcpmon hold-guard`, which continues what the kernel held if this daemon dies (guard.rs).
    guard: Option<std::process::Child>,
}

impl Sensors {
    pub fn load(cfg: &SensorConfig) -> Result<Self, ProbeError> {
        // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(ProbeError::NotRoot(euid));
        }
        let tracefs = tracefs::ensure_mounted()?;
        let mut report = features::probe(&tracefs);
        let kbtf = btf::Btf::from_sys_fs()?;
        let task = btf::TaskOffsets::from_btf(&kbtf)?;
        let off = |cat, name, field| tracefs::field_offset(&tracefs, cat, name, field);
        let exec_filename = off("sched", "sched_process_exec", "filename")?;
        let exec_old_pid = off("sched", "sched_process_exec", "old_pid")?;
        // `group_dead` arrived in Linux 6.3; older kernels (Debian 12's 6.1) read signal->live.
        let exit_group_dead = match off("sched", "sched_process_exit", "group_dead") {
            Ok(o) => o,
            Err(_) => {
                tracing::info!("sched_process_exit has no group_dead field: reading task->signal->live instead");
                monitor_common::NO_FIELD
            }
        };
        let newtask_pid = off("task", "task_newtask", "pid")?;
        let newtask_flags = off("task", "task_newtask", "clone_flags")?;
        // io_uring may be compiled out; its hook is optional and these stay 0 then.
        let uring = |field| if tracefs::exists(&tracefs, "io_uring", "io_uring_create") { off("io_uring", "io_uring_create", field) } else { Ok(0) };
        let (uring_fd, uring_sq, uring_cq, uring_flags) = (uring("fd")?, uring("sq_entries")?, uring("cq_entries")?, uring("flags")?);

        let koffs = monitor_common::KernelOffsets {
            daemon_tgid: cfg.daemon_tgid,
            task_real_parent: task.real_parent,
            task_tgid: task.tgid,
            task_exit_code: task.exit_code,
            task_comm: task.comm,
            task_signal: task.task_signal,
            task_files: task.files,
            task_mm: task.task_mm,
            task_ti_status: task.ti_status,
            signal_live: task.signal_live,
            signal_tty: task.signal_tty,
            files_fdt: task.files_fdt,
            fdt_fd: task.fdt_fd,
            fdt_max_fds: task.fdt_max_fds,
            file_inode: task.file_inode,
            file_f_mode: task.file_f_mode,
            file_dentry: task.file_dentry,
            inode_ino: task.inode_ino,
            inode_mode: task.inode_mode,
            inode_sb: task.inode_sb,
            sb_dev: task.sb_dev,
            sb_magic: task.sb_magic,
            dentry_parent: task.dentry_parent,
            dentry_inode: task.dentry_inode,
            dentry_name: task.dentry_name,
            mm_exe_file: task.mm_exe_file,
            mm_arg_start: task.mm_arg_start,
            mm_arg_end: task.mm_arg_end,
            bprm_file: task.bprm_file,
            tp_exec_filename: exec_filename,
            tp_exec_old_pid: exec_old_pid,
            tp_exit_group_dead: exit_group_dead,
            tp_newtask_pid: newtask_pid,
            tp_newtask_flags: newtask_flags,
            tp_uring_fd: uring_fd,
            tp_uring_sq: uring_sq,
            tp_uring_cq: uring_cq,
            tp_uring_flags: uring_flags,
            file_private: task.unix.file_private,
            socket_sk: task.unix.socket_sk,
            unix_peer: task.unix.unix_peer,
            unix_path_dentry: task.unix.unix_path_dentry,
        };
        if task.unix.unix_peer == monitor_common::NO_FIELD {
            tracing::warn!("BTF has no unix_sock (AF_UNIX built as a module?): connects to protected sockets (container engines) are judged in user space only");
        }
        let mut ebpf = EbpfLoader::new()
            .override_global(g::KERNEL_OFFSETS, &koffs, true)
            .override_global(aya_log::LEVEL, &ebpf_log::level(cfg.ebpf_log), true)
            .map_max_entries(ebpf_log::MAP_LOGS, ebpf_log::ring_bytes(cfg.ebpf_log))
            .map_max_entries(MAP_EVENTS, cfg.ringbuf_bytes)
            .map_max_entries(MAP_TRACKED, cfg.tracked_max.unwrap_or(65536))
            .map_max_entries(MAP_STDIO_PIPES, cfg.stdio_pipes_max.unwrap_or(4096))
            .load(EBPF_OBJECT)?;
        // Before anything is reported loaded: `sensors_loaded` lists it with the rest.
        maybe::load(&mut ebpf)?;
        if cfg.ebpf_log {
            ebpf_log::start(&mut ebpf)?;
            tracing::info!("eBPF log records (--ebpf-log) go to this log");
        }

        // The table's programs, kind by kind: which ones observe depends on what loads here.
        let tracepoints = tracepoint::load(&mut ebpf, &tracefs)?;
        let fast = match cfg.observe {
            fast::Observe::Tracepoint => Err("syscall tracepoints asked for (--observe tracepoint)".to_string()),
            _ => fast::load(&mut ebpf),
        };
        let (hooks, fast_path) = match fast {
            // The process-tree tracepoints serve both paths; fentry/fexit replace the syscall ones.
            Ok(fast) => (tracepoints.into_iter().filter(|h| h.program.lifetime == Lifetime::Always).chain(fast).collect::<Vec<_>>(), Ok(())),
            Err(why) if cfg.observe == fast::Observe::Fentry => return Err(ProbeError::Fast(why)),
            Err(why) => (tracepoints.into_iter().chain(ia32::load(&mut ebpf)).collect(), Err(why)),
        };
        let (always, on_demand) = hook::by_lifetime(hooks);
        let mut attached = Vec::new();
        for h in always {
            hook::attach(&mut ebpf, h)?;
            attached.push(h.describe());
        }
        report.hooks = features::hook_choices(&fast_path);
        let lsm = lsm::load(&mut ebpf, &report.bpf_lsm);
        match &lsm {
            Ok(()) => {
                tracing::info!("open/exec deny: BPF-LSM file_open available, with bprm_check_security; attached while a server is tracked (deny rules fail the open or exec with EPERM)");
            }
            Err(why) => tracing::info!(reason = %why, "open/exec deny: BPF-LSM unavailable; deny rules on files fall back to kill at the open's exit, on executables to kill before the new image runs"),
        }
        if lsm.is_ok() {
            // The fentry kill at security_file_open leaves deny rules to the LSM (enforce.rs).
            let knobs = ebpf.map_mut(MAP_POLICY).ok_or(ProbeError::Map(MAP_POLICY, "missing".into()))?;
            let mut knobs: Array<_, u32> = Array::try_from(knobs).map_err(|e| ProbeError::Map(MAP_POLICY, e.to_string()))?;
            knobs.set(monitor_common::policy::LSM_ACTIVE, 1, 0).map_err(|e| ProbeError::Map(MAP_POLICY, e.to_string()))?;
        }
        let deny = cgroup::load_deny(&mut ebpf);
        match &deny {
            cgroup::DenyPath::Cgroup { root, programs } => {
                tracing::info!(root = %root.display(), points = %programs.join(", "), "connect/sendmsg deny: cgroup sock_addr programs, attached while a server is tracked");
            }
            cgroup::DenyPath::Unavailable(why) => {
                tracing::warn!(reason = %why, "connect/sendmsg deny unavailable; deny rules fall back to kill at syscall exit")
            }
        }
        let mut sensors = Self { ebpf, report, tracefs, attached, on_demand, fast_path: fast_path.is_ok(), syscall_links: vec![], reclaimed: vec![], deny, lsm_deny: lsm.is_ok(), cgroup_links: vec![], lsm_links: vec![], detaching: None, guard: None };
        // Prove now, not at the first tracked server, that the kernel takes every syscall hook.
        sensors.attach_syscall_hooks()?;
        sensors.detach_syscall_hooks()?;
        Ok(sensors)
    }

    pub fn take_tracked(&mut self) -> Result<BpfHashMap<MapData, u32, TrackInfo>, ProbeError> {
        let map = self.ebpf.take_map(MAP_TRACKED).ok_or(ProbeError::Map(MAP_TRACKED, "missing".into()))?;
        BpfHashMap::try_from(map).map_err(|e| ProbeError::Map(MAP_TRACKED, e.to_string()))
    }

    pub fn take_stdio_pipes(&mut self) -> Result<BpfHashMap<MapData, u64, StdioPipe>, ProbeError> {
        let map = self.ebpf.take_map(MAP_STDIO_PIPES).ok_or(ProbeError::Map(MAP_STDIO_PIPES, "missing".into()))?;
        BpfHashMap::try_from(map).map_err(|e| ProbeError::Map(MAP_STDIO_PIPES, e.to_string()))
    }

    pub fn take_candidate_comms(&mut self) -> Result<BpfHashMap<MapData, Comm, u32>, ProbeError> {
        let map = self.ebpf.take_map(MAP_CANDIDATE_COMMS).ok_or(ProbeError::Map(MAP_CANDIDATE_COMMS, "missing".into()))?;
        BpfHashMap::try_from(map).map_err(|e| ProbeError::Map(MAP_CANDIDATE_COMMS, e.to_string()))
    }

    pub fn take_comm_filter(&mut self) -> Result<aya::maps::Array<MapData, monitor_common::CommFilter>, ProbeError> {
        let map = self.ebpf.take_map(MAP_COMM_FILTER).ok_or(ProbeError::Map(MAP_COMM_FILTER, "missing".into()))?;
        aya::maps::Array::try_from(map).map_err(|e| ProbeError::Map(MAP_COMM_FILTER, e.to_string()))
    }

    /// The maps the tracker owns (the loader hands maps over; it builds none of their users).
    pub fn tracker_maps(&mut self) -> Result<crate::tracker::TrackerMaps, ProbeError> {
        let socks = self.ebpf.take_map(MAP_HTTP_SOCKS).ok_or(ProbeError::Map(MAP_HTTP_SOCKS, "missing".into()))?;
        let http_socks = BpfHashMap::try_from(socks).map_err(|e| ProbeError::Map(MAP_HTTP_SOCKS, e.to_string()))?;
        let maybe = maybe::MaybeTracked::of(&mut self.ebpf)?;
        Ok(crate::tracker::TrackerMaps { tracked: self.take_tracked()?, pipes: self.take_stdio_pipes()?, candidates: self.take_candidate_comms()?, comm_filter: self.take_comm_filter()?, http_socks, maybe })
    }

    /// Second handles (new fds on the same kernel maps) on `TRACKED`, `PENDING_OPEN` and
    /// `PROTECTED`, for the open gate's thread. Call before `tracker()` takes `TRACKED` and
    /// `policy_maps()` takes `PROTECTED`.
    pub fn gate_maps(&self) -> Result<crate::gate::GateMaps, ProbeError> {
        let reopen = |name: &'static str| -> Result<aya::maps::Map, ProbeError> {
            let Some(aya::maps::Map::HashMap(d)) = self.ebpf.map(name) else { return Err(ProbeError::Map(name, "missing or not a hash map".into())) };
            let id = d.info().map_err(|e| ProbeError::Map(name, e.to_string()))?.id();
            let data = MapData::from_id(id).map_err(|e| ProbeError::Map(name, e.to_string()))?;
            Ok(aya::maps::Map::HashMap(data))
        };
        let tracked = BpfHashMap::try_from(reopen(MAP_TRACKED)?).map_err(|e| ProbeError::Map(MAP_TRACKED, e.to_string()))?;
        let pending_open = BpfHashMap::try_from(reopen(MAP_PENDING_OPEN)?).map_err(|e| ProbeError::Map(MAP_PENDING_OPEN, e.to_string()))?;
        let root_tainted = self.lru_map(monitor_common::names::MAP_ROOT_TAINTED)?;
        let root_runners = self.lru_map(monitor_common::names::MAP_ROOT_RUNNERS)?;
        let root_images = self.lru_map(monitor_common::names::MAP_ROOT_IMAGES)?;
        let protected = BpfHashMap::try_from(reopen(MAP_PROTECTED)?).map_err(|e| ProbeError::Map(MAP_PROTECTED, e.to_string()))?;
        Ok(crate::gate::GateMaps { tracked, pending_open, root_tainted, root_runners, root_images, protected })
    }

    /// A second handle on an LRU hash map of the loaded object.
    fn lru_map<V: aya::Pod>(&self, name: &'static str) -> Result<BpfHashMap<MapData, u32, V>, ProbeError> {
        let Some(m) = self.ebpf.map(name) else { return Err(ProbeError::Map(name, "missing".into())) };
        let id = match m {
            aya::maps::Map::LruHashMap(d) => d.info().map_err(|e| ProbeError::Map(name, e.to_string()))?.id(),
            _ => return Err(ProbeError::Map(name, "not an LRU hash map".into())),
        };
        let data = MapData::from_id(id).map_err(|e| ProbeError::Map(name, e.to_string()))?;
        BpfHashMap::try_from(aya::maps::Map::LruHashMap(data)).map_err(|e| ProbeError::Map(name, e.to_string()))
    }

    /// A handle on `EXITED` (tracked threads that exited lately), for the persistence watch.
    pub fn exited_map(&self) -> Result<BpfHashMap<MapData, u32, TrackInfo>, ProbeError> {
        self.lru_map(monitor_common::names::MAP_EXITED)
    }

    /// The enforcement maps, for the actions stage.
    pub fn policy_maps(&mut self) -> Result<crate::actions::kernel::PolicyMaps, ProbeError> {
        let mut take = |name: &'static str| self.ebpf.take_map(name).ok_or(ProbeError::Map(name, "missing".into()));
        let protected = BpfHashMap::try_from(take(MAP_PROTECTED)?).map_err(|e| ProbeError::Map(MAP_PROTECTED, e.to_string()))?;
        let v4 = LpmTrie::try_from(take(MAP_NET_POLICY_V4)?).map_err(|e| ProbeError::Map(MAP_NET_POLICY_V4, e.to_string()))?;
        let v6 = LpmTrie::try_from(take(MAP_NET_POLICY_V6)?).map_err(|e| ProbeError::Map(MAP_NET_POLICY_V6, e.to_string()))?;
        let knobs = Array::try_from(take(MAP_POLICY)?).map_err(|e| ProbeError::Map(MAP_POLICY, e.to_string()))?;
        let grants = BpfHashMap::try_from(take(MAP_GRANTS)?).map_err(|e| ProbeError::Map(MAP_GRANTS, e.to_string()))?;
        let name = monitor_common::names::MAP_ROOT_READERS;
        let root_readers = BpfHashMap::try_from(take(name)?).map_err(|e| ProbeError::Map(name, e.to_string()))?;
        let name = monitor_common::names::MAP_ROOT_RUNNERS;
        let root_runners = BpfHashMap::try_from(take(name)?).map_err(|e| ProbeError::Map(name, e.to_string()))?;
        let name = monitor_common::names::MAP_UNSEEN_DIRS;
        let unseen_dirs = BpfHashMap::try_from(take(name)?).map_err(|e| ProbeError::Map(name, e.to_string()))?;
        let name = monitor_common::names::MAP_UNSEEN_NAMES;
        let unseen_names = BpfHashMap::try_from(take(name)?).map_err(|e| ProbeError::Map(name, e.to_string()))?;
        let name = monitor_common::names::MAP_AGENT_SOCKETS;
        let agent_sockets = Array::try_from(take(name)?).map_err(|e| ProbeError::Map(name, e.to_string()))?;
        let cgroup_deny = matches!(self.deny, cgroup::DenyPath::Cgroup { .. });
        Ok(crate::actions::kernel::PolicyMaps { protected, v4, v6, knobs, grants, root_readers, root_runners, unseen_dirs, unseen_names, agent_sockets, cgroup_deny })
    }

    /// Events the kernel could not deliver, per server id (LRU `LOST_BY_SERVER`).
    pub fn lost_by_server(&self) -> std::collections::BTreeMap<u32, u64> {
        let Some(m) = self.ebpf.map(monitor_common::names::MAP_LOST_BY_SERVER) else { return Default::default() };
        let Ok(m) = BpfHashMap::<_, u32, u64>::try_from(m) else { return Default::default() };
        m.iter().flatten().collect()
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self.ebpf.take_map(MAP_EVENTS).ok_or(ProbeError::Map(MAP_EVENTS, "missing".into()))?;
        RingBuf::try_from(map).map_err(|e| ProbeError::Map(MAP_EVENTS, e.to_string()))
    }

    pub fn take_lost(&mut self) -> Result<PerCpuArray<MapData, u64>, ProbeError> {
        let map = self.ebpf.take_map(MAP_LOST).ok_or(ProbeError::Map(MAP_LOST, "missing".into()))?;
        PerCpuArray::try_from(map).map_err(|e| ProbeError::Map(MAP_LOST, e.to_string()))
    }

    /// Kernel ids of the loaded programs (for detach checks and diagnostics).
    pub fn program_ids(&self) -> Vec<u32> {
        self.ebpf.programs().filter_map(|(_, p)| p.info().ok().map(|i| i.id())).collect()
    }
}

/// Totals of the kernel's lost-event counters, indexed by `LostReason`.
pub fn read_lost(map: &PerCpuArray<MapData, u64>) -> [u64; LOST_REASONS as usize] {
    let mut out = [0u64; LOST_REASONS as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(per_cpu) = map.get(&(i as u32), 0) {
            *slot = per_cpu.iter().sum();
        }
    }
    out
}

/// Program `name` of the object as its type (every program lookup goes through this).
pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str, purpose: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name).ok_or(ProbeError::MissingProgram(name))?.try_into().map_err(|e| refused(name, purpose, "(program type)".into(), e))
}

fn refused(program: &'static str, purpose: &'static str, hook: String, e: ProgramError) -> ProbeError {
    ProbeError::Program { program, purpose, hook, source: Box::new(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_program_and_the_hook() {
        let e = refused("mcpm_open_x", "file: open result", "syscalls:sys_exit_openat".into(), ProgramError::NotLoaded);
        let msg = e.to_string();
        assert!(msg.contains("mcpm_open_x") && msg.contains("syscalls:sys_exit_openat") && msg.contains("open result"), "{msg}");
        assert!(ProbeError::NotRoot(1000).to_string().contains("must run as root"));
    }

    #[test]
    fn missing_btf_says_what_the_kernel_needs() {
        let e = ProbeError::from(btf::Btf::from_file(std::path::Path::new("/nonexistent/vmlinux")).err().unwrap());
        assert!(e.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{e}");
    }
}
