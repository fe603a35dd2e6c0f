//! The daemon's half of handshake discovery (monitor-ebpf/src/handshake.rs): switching it on in
//! the kernel, and counting the candidates young enough to keep the syscall hooks attached.
use aya::maps::{Array, HashMap};
use monitor_common::{
    names::{MAP_HANDSHAKE, MAP_HANDSHAKE_ON},
    HandshakeCandidate,
};

use super::Sensors;

impl Sensors {
    /// `--handshake-discovery`: whether the kernel makes piped processes candidates at exec.
    pub fn set_handshake_discovery(&mut self, on: bool) -> Result<(), aya::maps::MapError> {
        let Some(map) = self.ebpf.map_mut(MAP_HANDSHAKE_ON) else {
            return Err(aya::maps::MapError::InvalidName { name: MAP_HANDSHAKE_ON.into() });
        };
        Array::<_, u32>::try_from(map)?.set(0, u32::from(on), 0)
    }

    /// Candidates that exec'd less than `young_ns` ago (CLOCK_MONOTONIC `now_ns`). They have not
    /// read their stdin yet: while any exists the read hooks must stay attached.
    pub fn young_candidates(&mut self, now_ns: u64, young_ns: u64) -> usize {
        let Some(map) = self.ebpf.map_mut(MAP_HANDSHAKE) else { return 0 };
        let Ok(m) = HashMap::<_, u32, HandshakeCandidate>::try_from(map) else { return 0 };
        m.iter().filter_map(Result::ok).filter(|(_, c)| now_ns.saturating_sub(c.since_ns) < young_ns).count()
    }
}
