//! The daemon's half of the exec hold (monitor-ebpf/src/hold.rs): the kernel stops a provisional
//! server at exec while the on-demand syscall hooks are detached; the daemon keeps `HOOKS_LIVE`
//! true to the hooks' state and lists the stopped processes so that it can continue them once
//! the hooks are on.
use aya::maps::{Array, HashMap as BpfHashMap};
use monitor_common::names::{MAP_HELD, MAP_HOOKS_LIVE};

use super::Sensors;

impl Sensors {
    /// Tells the kernel whether the syscall hooks are attached. Cleared before a detach starts
    /// and set only after an attach completed, so the kernel never skips a hold it needed.
    pub(super) fn set_hooks_live(&mut self, on: bool) {
        let Some(map) = self.ebpf.map_mut(MAP_HOOKS_LIVE) else {
            tracing::error!(map = MAP_HOOKS_LIVE, "map missing: candidates are not held at exec");
            return;
        };
        match Array::<_, u32>::try_from(map) {
            Ok(mut a) => {
                if let Err(e) = a.set(0, u32::from(on), 0) {
                    tracing::error!(map = MAP_HOOKS_LIVE, error = %e, "setting the hooks-live flag");
                }
            }
            Err(e) => tracing::error!(map = MAP_HOOKS_LIVE, error = %e, "opening the hooks-live flag"),
        }
    }

    /// The daemon is stopping: the kernel must hold nothing more (its programs stay attached
    /// until the process is gone), and what it holds now is continued.
    ///
    /// Twice, a moment apart: a program that read the flag just before it was set stops its
    /// process and records it just after the first look (a sleep of a test's client found
    /// stopped for good after its daemon ended while tests ran side by side). A program runs to
    /// its end in microseconds, so by the second look every such hold is recorded.
    pub fn stop_holding(&mut self) {
        self.set_hooks_live(true);
        self.release_all();
        std::thread::sleep(std::time::Duration::from_millis(50));
        self.release_all();
    }

    fn release_all(&mut self) {
        if let Some(map) = self.ebpf.map_mut(MAP_HELD) {
            if let Ok(mut m) = BpfHashMap::<_, u32, u64>::try_from(map) {
                continue_all(&mut m);
            }
        }
    }

    /// Processes the kernel stopped at exec and not continued yet: (tgid, CLOCK_MONOTONIC ns
    /// of the stop).
    pub fn held(&mut self) -> Vec<(u32, u64)> {
        let Some(map) = self.ebpf.map_mut(MAP_HELD) else {
            return vec![];
        };
        match BpfHashMap::<_, u32, u64>::try_from(map) {
            Ok(m) => m.iter().filter_map(Result::ok).collect(),
            Err(_) => vec![],
        }
    }

    /// Continues a held process (SIGCONT) and forgets it.
    pub fn release(&mut self, pid: u32) {
        if let Some(map) = self.ebpf.map_mut(MAP_HELD) {
            if let Ok(mut m) = BpfHashMap::<_, u32, u64>::try_from(map) {
                continue_one(&mut m, pid);
            }
        }
    }
}

/// SIGCONT to `pid`, then its entry in `HELD` goes.
fn continue_one<T: std::borrow::BorrowMut<aya::maps::MapData>>(held: &mut BpfHashMap<T, u32, u64>, pid: u32) {
    // SAFETY: kill(2) with a pid from the kernel's hold table and a constant signal; a pid
    // that has exited (or been reused: SIGCONT on a running process is a no-op) is harmless.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let _ = held.remove(&pid);
}

/// `continue_one` for every process `HELD` lists (the daemon at its stop, and its guard when
/// the daemon is gone): how many there were.
pub(super) fn continue_all<T: std::borrow::BorrowMut<aya::maps::MapData>>(held: &mut BpfHashMap<T, u32, u64>) -> usize {
    let pids: Vec<u32> = held.keys().filter_map(Result::ok).collect();
    for pid in &pids {
        continue_one(held, *pid);
    }
    pids.len()
}
