//! The kernel's share of enforcement: the daemon writes the protected inodes, denied address
//! prefixes and knobs the rules ask for into the eBPF maps; the kernel acts on them alone.
use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData};
use monitor_common::{policy, InodeKey, NameKey, RootReaderKey, SockName, NAME_CAP};

use crate::events::Inode;

#[derive(Debug, thiserror::Error)]
#[error("kernel policy map {map}: {source}")]
pub struct PolicyError {
    map: &'static str,
    source: aya::maps::MapError,
}

fn err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> PolicyError {
    move |source| PolicyError { map, source }
}

/// Makes a kernel set (a hash map of `key -> 1`) hold exactly `want`, given `have`, what it
/// holds now: only the difference is written.
fn sync_set<K: aya::Pod + Ord>(map: &mut HashMap<MapData, K, u32>, have: &mut std::collections::BTreeSet<K>, want: std::collections::BTreeSet<K>, name: &'static str) -> Result<(), PolicyError> {
    for k in want.difference(have) {
        map.insert(k, 1, 0).map_err(err(name))?;
    }
    for k in have.difference(&want) {
        map.remove(k).map_err(err(name))?;
    }
    *have = want;
    Ok(())
}

/// Makes a kernel map keyed by inode hold exactly `want`, given `have`, what it holds now:
/// only the difference is written.
fn sync_inodes(map: &mut HashMap<MapData, InodeKey, u32>, have: &mut BTreeMap<InodeKey, u32>, want: &BTreeMap<Inode, u32>, name: &'static str) -> Result<(), PolicyError> {
    sync_map(map, have, want.iter().map(|(i, v)| (key(*i), *v)).collect(), name)
}

fn key(i: Inode) -> InodeKey {
    InodeKey { dev: i.dev, _pad: 0, ino: i.ino }
}

/// `sync_inodes` for any key.
fn sync_map<K: aya::Pod + Ord>(map: &mut HashMap<MapData, K, u32>, have: &mut BTreeMap<K, u32>, want: BTreeMap<K, u32>, name: &'static str) -> Result<(), PolicyError> {
    for (k, v) in &want {
        if have.get(k) != Some(v) {
            map.insert(k, v, 0).map_err(err(name))?;
        }
    }
    for k in have.keys().filter(|k| !want.contains_key(k)) {
        map.remove(k).map_err(err(name))?;
    }
    *have = want;
    Ok(())
}

/// An address prefix and its `net_policy` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NetEntry {
    pub addr: IpAddr,
    pub prefix: u8,
}

pub struct KernelPolicy {
    protected: HashMap<MapData, InodeKey, u32>,
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
    knobs: Array<MapData, u32>,
    /// Whether cgroup sock_addr programs are attached (connect deny works).
    pub cgroup_deny: bool,
    files: BTreeMap<InodeKey, u32>,
    nets: BTreeMap<NetEntry, u32>,
    /// `GRANTS` (server id << 32 | rule slot → 1); None only in unit tests' stand-ins.
    pub grants: Option<HashMap<MapData, u64, u32>>,
    granted: std::collections::BTreeSet<u64>,
    /// `ROOT_READERS`; None only in unit tests' stand-ins.
    pub root_readers: Option<HashMap<MapData, RootReaderKey, u32>>,
    readers: std::collections::BTreeSet<RootReaderKey>,
    /// `ROOT_RUNNERS` (LRU, tgid → exec stamp | runner); None only in unit tests' stand-ins.
    pub root_runners: Option<HashMap<MapData, u32, u64>>,
    /// `UNSEEN_DIRS` (secret directory → read policy; only without the open gate); None only
    /// in unit tests' stand-ins.
    pub unseen_dirs: Option<HashMap<MapData, InodeKey, u32>>,
    unseen: BTreeMap<InodeKey, u32>,
    /// `UNSEEN_NAMES` ((directory, literal name) → read policy); None only in unit tests'
    /// stand-ins.
    pub unseen_names: Option<HashMap<MapData, NameKey, u32>>,
    names: BTreeMap<NameKey, u32>,
    /// `AGENT_SOCKETS`; None only in unit tests' stand-ins.
    pub agent_sockets: Option<Array<MapData, SockName>>,
    sock_names: Vec<SockName>,
}

/// The enforcement maps, as the loader hands them over.
pub struct PolicyMaps {
    pub protected: HashMap<MapData, InodeKey, u32>,
    pub v4: LpmTrie<MapData, [u8; 4], u32>,
    pub v6: LpmTrie<MapData, [u8; 16], u32>,
    pub knobs: Array<MapData, u32>,
    pub grants: HashMap<MapData, u64, u32>,
    pub root_readers: HashMap<MapData, RootReaderKey, u32>,
    pub root_runners: HashMap<MapData, u32, u64>,
    pub unseen_dirs: HashMap<MapData, InodeKey, u32>,
    pub unseen_names: HashMap<MapData, NameKey, u32>,
    pub agent_sockets: Array<MapData, SockName>,
    /// Whether the cgroup connect deny programs loaded.
    pub cgroup_deny: bool,
}

impl KernelPolicy {
    pub fn from_maps(m: PolicyMaps) -> Self {
        let mut k = Self::new(m.protected, m.v4, m.v6, m.knobs, m.cgroup_deny);
        k.grants = Some(m.grants);
        k.root_readers = Some(m.root_readers);
        k.root_runners = Some(m.root_runners);
        k.unseen_dirs = Some(m.unseen_dirs);
        k.unseen_names = Some(m.unseen_names);
        k.agent_sockets = Some(m.agent_sockets);
        k
    }

    pub fn new(
        protected: HashMap<MapData, InodeKey, u32>,
        v4: LpmTrie<MapData, [u8; 4], u32>,
        v6: LpmTrie<MapData, [u8; 16], u32>,
        knobs: Array<MapData, u32>,
        cgroup_deny: bool,
    ) -> Self {
        Self { protected, v4, v6, knobs, cgroup_deny, files: BTreeMap::new(), nets: BTreeMap::new(), grants: None, granted: Default::default(), root_readers: None, readers: Default::default(), root_runners: None, unseen_dirs: None, unseen: BTreeMap::new(), unseen_names: None, names: BTreeMap::new(), agent_sockets: None, sock_names: Vec::new() }
    }

    /// Makes the `PROTECTED` map hold exactly `want` (changes only what differs, so a rescan
    /// never opens a window where a still-protected file is missing).
    pub fn sync_files(&mut self, want: &BTreeMap<Inode, u32>) -> Result<(), PolicyError> {
        sync_inodes(&mut self.protected, &mut self.files, want, "PROTECTED")
    }

    /// Makes `AGENT_SOCKETS` hold `want` in order, then an entry with policy 0 that ends it.
    /// Rewritten only when it changed (a rules reload): a connect judged meanwhile may see a
    /// mix of the two lists, never an entry half written (each update is one element's).
    pub fn sync_socket_names(&mut self, want: &[SockName]) -> Result<(), PolicyError> {
        let Some(map) = self.agent_sockets.as_mut() else { return Ok(()) };
        if self.sock_names == want {
            return Ok(());
        }
        let end = std::iter::once(SockName::default());
        for (i, n) in want.iter().copied().chain(end).take(monitor_common::SOCK_NAMES_MAX as usize).enumerate() {
            map.set(i as u32, n, 0).map_err(err("AGENT_SOCKETS"))?;
        }
        self.sock_names = want.to_vec();
        Ok(())
    }

    /// Makes `UNSEEN_NAMES` hold exactly `want` ((directory inode, name) → policy).
    pub fn sync_unseen_names(&mut self, want: &BTreeMap<(Inode, [u8; NAME_CAP]), u32>) -> Result<(), PolicyError> {
        let Some(map) = self.unseen_names.as_mut() else { return Ok(()) };
        let want = want.iter().map(|((dir, name), v)| (NameKey { dir: key(*dir), name: *name }, *v)).collect();
        sync_map(map, &mut self.names, want, "UNSEEN_NAMES")
    }

    /// Makes `UNSEEN_DIRS` hold exactly `want` (directory inode → policy).
    pub fn sync_unseen_dirs(&mut self, want: &BTreeMap<Inode, u32>) -> Result<(), PolicyError> {
        let Some(map) = self.unseen_dirs.as_mut() else { return Ok(()) };
        sync_inodes(map, &mut self.unseen, want, "UNSEEN_DIRS")
    }

    pub fn sync_nets(&mut self, want: &BTreeMap<NetEntry, u32>) -> Result<(), PolicyError> {
        for (e, v) in want {
            if self.nets.get(e) != Some(v) {
                self.insert_net(e, *v)?;
            }
        }
        for e in self.nets.keys().filter(|e| !want.contains_key(e)).copied().collect::<Vec<_>>() {
            match e.addr {
                IpAddr::V4(a) => self.v4.remove(&Key::new(e.prefix.into(), a.octets())).map_err(err("NET_POLICY_V4"))?,
                IpAddr::V6(a) => self.v6.remove(&Key::new(e.prefix.into(), a.octets())).map_err(err("NET_POLICY_V6"))?,
            }
        }
        self.nets = want.clone();
        Ok(())
    }

    fn insert_net(&mut self, e: &NetEntry, v: u32) -> Result<(), PolicyError> {
        match e.addr {
            IpAddr::V4(a) => self.v4.insert(&Key::new(e.prefix.into(), a.octets()), v, 0).map_err(err("NET_POLICY_V4")),
            IpAddr::V6(a) => self.v6.insert(&Key::new(e.prefix.into(), a.octets()), v, 0).map_err(err("NET_POLICY_V6")),
        }
    }

    /// 0 turns it off; otherwise 1 | rule slot << 16.
    pub fn set_io_uring_kill(&mut self, value: u32) -> Result<(), PolicyError> {
        self.knobs.set(policy::IO_URING_KILL, value, 0).map_err(err("POLICY"))
    }

    /// Whether the open gate runs (`POLICY[GATE_ACTIVE]`): the kernel's checks at
    /// `security_file_open` then leave a server root's read that waits on the daemon's
    /// judgement of its exec to the gate, which holds it until that judgement is in.
    pub fn set_gate_active(&mut self, on: bool) -> Result<(), PolicyError> {
        self.knobs.set(policy::GATE_ACTIVE, u32::from(on), 0).map_err(err("POLICY"))
    }

    /// Makes `ROOT_READERS` hold exactly `want` (executable, rule slot) pairs.
    pub fn sync_root_readers(&mut self, want: &std::collections::BTreeSet<(Inode, u32)>) -> Result<(), PolicyError> {
        let Some(map) = self.root_readers.as_mut() else { return Ok(()) };
        let want = want.iter().map(|(i, slot)| RootReaderKey { dev: i.dev, slot: *slot, ino: i.ino }).collect();
        sync_set(map, &mut self.readers, want, "ROOT_READERS")
    }

    /// The daemon's judgement of a server root's exec (`ROOT_RUNNERS`): `Some((ts_mono_ns of
    /// the exec event, runner))` for every successful exec of a root, runner or not, so the open
    /// gate knows the exec was judged; None forgets the root. The kernel holds a judgement only
    /// while it names the root's latest exec (`ROOT_IMAGES`).
    pub fn mark_runner(&mut self, tgid: u32, judged: Option<(u64, bool)>) -> Result<(), PolicyError> {
        let Some(map) = self.root_runners.as_mut() else { return Ok(()) };
        if let Some((ts, runner)) = judged {
            return map.insert(tgid, monitor_common::runner_judgement(ts, runner), 0).map_err(err("ROOT_RUNNERS"));
        }
        // Never judged (a root that exited before its first exec was handled) is no error. aya
        // reports the kernel's ENOENT as a failed syscall, not as `KeyNotFound`.
        match map.remove(&tgid) {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map_err(err("ROOT_RUNNERS")),
        }
    }

    /// Makes `GRANTS` hold exactly `want` (server id, rule slot) pairs.
    pub fn sync_grants(&mut self, want: &std::collections::BTreeSet<(u32, u32)>) -> Result<(), PolicyError> {
        let Some(map) = self.grants.as_mut() else { return Ok(()) };
        let want = want.iter().map(|(s, slot)| ((*s as u64) << 32) | *slot as u64).collect();
        sync_set(map, &mut self.granted, want, "GRANTS")
    }

    /// 0 turns it off; otherwise 1 | rule slot << 16.
    pub fn set_foreign_proc_kill(&mut self, value: u32) -> Result<(), PolicyError> {
        self.knobs.set(policy::FOREIGN_PROC_KILL, value, 0).map_err(err("POLICY"))
    }

    /// 0 turns it off; otherwise 1 | rule slot << 16.
    pub fn set_proc_access_kill(&mut self, value: u32) -> Result<(), PolicyError> {
        self.knobs.set(policy::PROC_ACCESS_KILL, value, 0).map_err(err("POLICY"))
    }

    /// `--on-loss kill`: the kernel kills a tracked process whose event it could not deliver.
    pub fn set_on_loss_kill(&mut self, on: bool) -> Result<(), PolicyError> {
        self.knobs.set(policy::ON_LOSS_KILL, u32::from(on), 0).map_err(err("POLICY"))
    }

    /// `--fold-window-ms`: how long the kernel may fold identical opens into one event (0 = off).
    pub fn set_fold_window_ms(&mut self, ms: u32) -> Result<(), PolicyError> {
        self.knobs.set(policy::FOLD_WINDOW_MS, ms, 0).map_err(err("POLICY"))
    }

    pub fn protected_count(&self) -> usize {
        self.files.len()
    }
}
