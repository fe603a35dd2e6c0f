//! The pipeline's stage timers: nanoseconds in total per stage, the profile behind the
//! throughput figures of `cargo xtask bench`. A fixed array indexed by stage, not a map keyed
//! by name: they are added to several times per kernel event, and the map's string compares
//! were a visible share of a flood's profile.
//!
//! One kernel event in `SAMPLE` is timed, and its stages count for the `SAMPLE` events it
//! stands for: the clock reads (seven per event, one vDSO call each) were 6.5% of the daemon's
//! time in a flood. Totals over thousands of events are unbiased; a handful of events is
//! rounded to whole samples.
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    ProcessTree,
    Correlation,
    ContextAndRules,
    RulesEval,
    RenderAndQueue,
    ResultScan,
}

impl Stage {
    const ALL: [Stage; 6] =
        [Stage::ProcessTree, Stage::Correlation, Stage::ContextAndRules, Stage::RulesEval, Stage::RenderAndQueue, Stage::ResultScan];

    /// The name in the `stats` record.
    pub fn name(self) -> &'static str {
        match self {
            Stage::ProcessTree => "process_tree",
            Stage::Correlation => "correlation",
            Stage::ContextAndRules => "context_and_rules",
            Stage::RulesEval => "rules_eval",
            Stage::RenderAndQueue => "render_and_queue",
            Stage::ResultScan => "result_scan",
        }
    }
}

/// Kernel events per timed one.
pub const SAMPLE: u64 = 16;

#[derive(Clone, Debug, Default)]
pub struct StageTimes {
    ns: [u64; Stage::ALL.len()],
    /// The sampler's state; 0 before the first event.
    lcg: u64,
}

impl StageTimes {
    /// Time taken by a stage that runs rarely (every run timed).
    pub fn add(&mut self, stage: Stage, ns: u64) {
        self.ns[stage as usize] += ns;
    }

    /// Asked once per kernel event: whether to time this one (the first, then one in `SAMPLE`
    /// at random). Not every `SAMPLE`th: the loop takes events in batches of 32, and a fixed
    /// stride always timed the same place in a batch (its first event, after the loop's other
    /// work, with colder caches), which read 20% above the untimed events.
    pub fn sample(&mut self) -> bool {
        let first = self.lcg == 0;
        // A 64-bit LCG (Knuth's MMIX constants), its high half taken (the low bits of an LCG
        // repeat with short periods). Never 0 again within 2^64 steps.
        self.lcg = self.lcg.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        first || (self.lcg >> 32).is_multiple_of(SAMPLE)
    }

    /// A timed event's stage, counted for the `SAMPLE` events it stands for.
    pub fn add_sampled(&mut self, stage: Stage, ns: u64) {
        self.ns[stage as usize] += ns * SAMPLE;
    }

    /// The stages that ran, by name (a stage that never ran is left out, as before).
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        Stage::ALL.iter().filter(|s| self.ns[**s as usize] > 0).map(|s| (s.name(), self.ns[*s as usize])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_has_its_own_slot_and_name() {
        let mut t = StageTimes::default();
        for (i, s) in Stage::ALL.iter().enumerate() {
            t.add(*s, i as u64 + 1);
        }
        let m = t.to_map();
        assert_eq!(m.len(), Stage::ALL.len());
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(m[s.name()], i as u64 + 1);
        }
        assert!(StageTimes::default().to_map().is_empty());
    }

    #[test]
    fn one_event_in_sample_is_timed_and_stands_for_all_of_them() {
        let mut t = StageTimes::default();
        let timed = (0..SAMPLE * 1000).filter(|_| t.sample()).count() as u64;
        assert!((900..=1100).contains(&timed), "{timed} of {} timed", SAMPLE * 1000);
        // No stride: among the events timed, every place in a batch of 32 comes up.
        let mut t = StageTimes::default();
        let places: std::collections::HashSet<u64> = (0..SAMPLE * 1000).filter(|_| t.sample()).map(|n| n % 32).collect();
        assert_eq!(places.len(), 32);
        let mut t = StageTimes::default();
        assert!(t.sample(), "the first event is timed");
        t.add_sampled(Stage::RulesEval, 100);
        assert_eq!(t.to_map()["rules_eval"], 100 * SAMPLE);
    }
}

/// Kernel events taken, by kind: an array slot per kind, for the same reason as the stage
/// timers (a map keyed by name was looked up with string compares for every event).
#[derive(Clone, Debug, Default)]
pub struct KindCounts([u64; KIND_SLOTS]);

/// `Event::KINDS`, then one slot for any other kind (a handshake; none reaches the counts).
const KIND_SLOTS: usize = crate::events::Event::KINDS.len() + 1;

impl KindCounts {
    pub fn add(&mut self, ev: &crate::events::Event) {
        self.0[ev.kind_index()] += 1;
    }

    /// `n` events of `kind` (a folded run's repeats).
    pub fn add_kind(&mut self, kind: &str, n: u64) {
        self.0[crate::events::Event::index_of_kind(kind)] += n;
    }

    /// The kinds seen, with their counts (the `stats` record, the metrics).
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        let names = crate::events::Event::KINDS.iter().copied().chain(["other"]);
        names.zip(self.0).filter(|(_, n)| *n > 0).collect()
    }
}
